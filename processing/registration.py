"""Registering camera B's images onto camera A's pixel grid, always in floating point.

The matrix is a 2x3 affine in OpenCV's ECC convention (`cv2.findTransformECC(template=A, input=B)`): it maps A pixel
coordinates to B pixel coordinates, so B is resampled with WARP_INVERSE_MAP. The original's `registration_cv.npy`
uses this convention. The original cast optical-depth images to uint16 here, destroying negative and fractional
values; this module refuses integer input instead.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from controller.errors import ConfigError, ProcessingError
from controller.logging import get_logger

log = get_logger("processing.registration")

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class Registration:
    """Resample B images onto A's grid with a fixed 2x3 affine matrix (float in, same float dtype out)."""

    def __init__(self, matrix: np.ndarray | None = None, source: str = "identity") -> None:
        m = IDENTITY if matrix is None else np.asarray(matrix, dtype=np.float64)
        if m.shape != (2, 3) or not np.all(np.isfinite(m)):
            raise ProcessingError(f"registration matrix must be a finite 2x3 array, got shape {m.shape}")
        self.matrix = m
        self.source = source
        self.is_identity = bool(np.allclose(m, IDENTITY))

    @classmethod
    def from_file(cls, path: str | Path) -> Registration:
        try:
            m = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConfigError("processing.registration", f"cannot read {path}: {e}") from e
        try:
            return cls(m, source=str(path))
        except ProcessingError as e:
            raise ConfigError("processing.registration", f"{path}: {e}") from e

    @classmethod
    def from_ecc(
        cls, img_a: np.ndarray, img_b: np.ndarray, motion: int = cv2.MOTION_AFFINE, iterations: int = 200
    ) -> Registration:
        """Find the matrix with ECC (enhanced correlation coefficient) between two images of the same scene."""
        a = _normalise(img_a)
        b = _normalise(img_b)
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
        try:
            _, warp = cv2.findTransformECC(a, b, warp, motion, criteria, None, 5)
        except cv2.error as e:
            raise ProcessingError(f"ECC registration did not converge: {e}") from e
        return cls(warp.astype(np.float64), source="ecc")

    def apply(self, img_b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """B resampled onto A's grid (into `out` when it has the result's shape and dtype: a buffer reused pair after
        pair). Float32/64 only: optical depths are never cast to an integer type."""
        if not np.issubdtype(img_b.dtype, np.floating):
            raise TypeError(f"registration needs a float image (optical depth), got {img_b.dtype}")
        if self.is_identity:
            return img_b
        src = img_b if img_b.dtype in (np.float32, np.float64) else img_b.astype(np.float64)
        h, w = src.shape
        if out is not None and (out.shape != src.shape or out.dtype != src.dtype or out is src):
            out = None
        return cv2.warpAffine(
            src,
            self.matrix,
            (w, h),
            dst=out,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )


def _normalise(img: np.ndarray) -> np.ndarray:
    a = img.astype(np.float32)
    a -= float(a.mean())
    sd = float(a.std())
    return a / sd if sd > 0 else a
