"""Atomic file writes: temp file in the same folder + fsync + rename + fsync of the folder.

A file under its final name is always complete; a crash leaves at most a `.tmp-*` file that readers ignore.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from controller.errors import StorageError

TEMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> Path:
    """Write `path` atomically; `write` receives an open binary file. Raises StorageError naming the file."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise StorageError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    return atomic_write_with(path, lambda fh: fh.write(data), mode)


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def is_temp_or_locked(path: Path) -> bool:
    """Readers skip files being written: our temp files and the original's `<name>.lock` sidecars."""
    if path.name.startswith(TEMP_PREFIX) or path.suffix == ".lock":
        return True
    return path.with_name(path.name + ".lock").exists()
