"""Keeping the worker's resident memory flat: glibc heap settings for a process that allocates many large arrays.

Each pair allocates and frees a few dozen full-frame arrays (0.3-2.5 MB). glibc serves blocks above its mmap
threshold with mmap (returned to the kernel on free), but raises that threshold dynamically up to 32 MB after the
first such free, so later frames land on the heap, which fragments and never shrinks: the worker's RSS crept from
~300 MB to ~480 MB over 1000 Villarrica pairs. Fixing the threshold (which also switches the dynamic rise off) and
trimming the heap after each pair keeps it flat. Elsewhere than glibc these are no-ops.

The threshold is fixed at glibc's own maximum (32 MB), not low: below the frame size every full-frame array was a
fresh mmap, page-faulted in on first touch, which cost ~30 % of the chain's CPU (Villarrica, 1000 pairs in the
bench's worker-like child: 31.8 ms per pair at 256 KB, 28.0 ms at 32 MB, the peak RSS 409 vs 412 MB, flat).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if lib is None or not hasattr(lib, "mallopt") or not hasattr(lib, "malloc_trim"):
        return None
    return lib


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every block above `threshold_bytes` with mmap, for the life of the process. True when applied."""
    lib = _libc()
    return bool(lib and lib.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))


def trim_heap() -> None:
    """Give the free heap pages back to the kernel (cheap: about 0.1 ms)."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
