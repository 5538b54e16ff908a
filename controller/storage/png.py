"""16-bit single-channel PNG files, written and read through OpenCV (cv2.imencode / cv2.imdecode).

OpenCV is installed on both Pis (opencv-python-headless is a base dependency). Files are written at OpenCV's own
default PNG settings: on the station's 648 x 486 frames that is the fastest of its settings and as small as any
fast one (`pycam bench supervisor` prints the figure). The files are plain 16-bit grayscale PNGs, read unchanged by
the original PyCam's loaders (cv2.imread(path, -1)) and pyplis. cv2 is imported at the first file, not at import:
`pycam --help` and the WittyPi hooks stay light.
"""

from __future__ import annotations

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png16(arr: np.ndarray) -> bytes:
    """A single-channel 16-bit PNG of a 2-D uint16 array."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise ValueError(f"expected a 2-D uint16 array, got {arr.dtype} {arr.shape}")
    import cv2

    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} uint16 array as PNG")
    return buf.tobytes()


def decode_png16(data: bytes) -> np.ndarray:
    """Pixels of a grayscale PNG (8 or 16 bit) as a 2-D array (uint16 for 16-bit, uint8 for 8-bit)."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("corrupt PNG: OpenCV cannot decode it")
    if arr.ndim != 2:
        raise ValueError(f"only grayscale PNG is supported (got {arr.shape[2]} channels)")
    return arr
