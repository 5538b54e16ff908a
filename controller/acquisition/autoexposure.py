"""Auto exposure (cameras) and auto integration (spectrometer), the original PyCam algorithm as pure functions.

The original: take the N-th brightest value (N = saturation_pixels) in the configured rows (RWC: + rows from the
top, - rows from the bottom) or inside the spectrometer's wavelength window; above max_saturation × max value step
the exposure down the list, below min_saturation × max value step it up, else keep it; clamp at the list ends.
One adjustment per frame.

One deviation, so a station converges within a few frames instead of hundreds (the shutter list has ~270
entries): the step skips along the list to the entry whose predicted level (counts ∝ exposure) is nearest the
middle of the allowed band, by at most a factor of `MAX_FACTOR` per frame (a saturated frame says only "too
bright", so it takes the full factor down). Inside the band nothing changes, exactly as the original.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from controller.config import CameraConfig, SpectrometerConfig

MAX_FACTOR = 10.0


def brightest(values: np.ndarray, n: int) -> float:
    """The n-th brightest value (the original's saturation measure)."""
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        raise ValueError("no pixels to measure")
    n = min(max(1, n), flat.size)
    return float(np.partition(flat, flat.size - n)[flat.size - n])


def saturation_rows(pixels: np.ndarray, rows: int) -> np.ndarray:
    """RWC: the first `rows` rows when positive, the last |rows| when negative."""
    return pixels[:rows] if rows > 0 else pixels[rows:]


def nearest_index(values: Sequence[int], current: float) -> int:
    """Index of the list entry nearest `current` (a sensor reports a slightly different exposure than asked)."""
    i = bisect.bisect_left(values, current)
    if i == 0:
        return 0
    if i == len(values):
        return len(values) - 1
    return i if values[i] - current < current - values[i - 1] else i - 1


def _step(level: float, current: float, values: Sequence[int], lo: float, hi: float, max_value: float) -> int:
    """The next list value for a measured `level` at setting `current`."""
    idx = nearest_index(values, current)
    if lo * max_value <= level <= hi * max_value:
        return int(values[idx])
    target = 0.5 * (lo + hi) * max_value
    # a clipped level only says "too bright": take the full step down
    factor = 1.0 / MAX_FACTOR if level >= max_value else target / max(level, 1e-9)
    factor = min(max(factor, 1.0 / MAX_FACTOR), MAX_FACTOR)
    predicted = values[idx] * factor
    new = nearest_index(values, predicted)
    # always at least one entry in the right direction (the original's single step), clamped at the ends
    if level > hi * max_value:
        new = min(new, max(idx - 1, 0))
    else:
        new = max(new, min(idx + 1, len(values) - 1))
    return int(values[new])


def next_shutter(
    pixels: np.ndarray, current_us: int, shutter_list: Sequence[int], cfg: CameraConfig, max_value: int
) -> int:
    """The shutter speed (µs, from `shutter_list`) for the next frame, given this frame's raw `pixels`."""
    level = brightest(saturation_rows(pixels, cfg.saturation_rows), cfg.saturation_pixels)
    return _step(level, current_us, list(shutter_list), cfg.min_saturation, cfg.max_saturation, max_value)


def next_integration(counts: np.ndarray, wavelengths: np.ndarray, current_ms: int, cfg: SpectrometerConfig) -> int:
    """The integration time (ms, from cfg.integration_list_ms) for the next spectrum."""
    lo_nm, hi_nm = cfg.saturation_window_nm
    window = (wavelengths >= lo_nm) & (wavelengths <= hi_nm)
    level = brightest(np.asarray(counts)[window], cfg.saturation_pixels)
    return _step(level, current_ms, list(cfg.integration_list_ms), cfg.min_saturation, cfg.max_saturation,
                 cfg.max_counts)  # fmt: skip
