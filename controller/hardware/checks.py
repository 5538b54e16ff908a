"""Sanity checks on what a device returned, so a torn or garbage frame never reaches storage."""

from __future__ import annotations

import numpy as np

from controller.errors import HardwareError
from controller.hardware.interfaces import Frame, Spectrum


def check_frame(frame: Frame, width: int, height: int) -> Frame:
    """Raise HardwareError when the frame is not (height, width) uint16 within its bit depth."""
    device = f"camera {frame.band}"
    px = frame.pixels
    if px.dtype != np.uint16 or px.shape != (height, width):
        raise HardwareError(device, f"garbage frame: {px.dtype} {px.shape}, expected uint16 ({height}, {width})")
    if int(px.max(initial=0)) >= (1 << frame.bit_depth):
        raise HardwareError(device, f"garbage frame: value {int(px.max())} exceeds {frame.bit_depth} bits")
    return frame


def check_spectrum(spectrum: Spectrum, n_pixels: int | None = None) -> Spectrum:
    """Raise HardwareError when wavelengths and counts disagree, are not finite, or have the wrong length."""
    wl, counts = spectrum.wavelengths_nm, spectrum.counts
    if wl.shape != counts.shape or wl.ndim != 1:
        raise HardwareError("spectrometer", f"garbage spectrum: wavelengths {wl.shape} vs counts {counts.shape}")
    if n_pixels is not None and wl.size != n_pixels:
        raise HardwareError("spectrometer", f"garbage spectrum: {wl.size} pixels, expected {n_pixels}")
    if not (np.isfinite(wl).all() and np.isfinite(counts).all()):
        raise HardwareError("spectrometer", "garbage spectrum: non-finite values")
    return spectrum
