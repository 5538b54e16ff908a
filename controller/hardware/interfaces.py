"""The small protocols every backend implements, and the records they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One raw camera frame. `pixels` is uint16 (height, width) holding raw sensor values."""

    pixels: np.ndarray
    exposure_us: int
    gain: float
    timestamp: float  # epoch seconds on the capturing Pi's clock, at exposure start
    band: str  # "A" (on-band, fltrA) or "B" (off-band, fltrB)
    sensor_temperature_c: float | None = None
    bit_depth: int = 10
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Spectrum:
    """One co-added spectrum: `wavelengths_nm` and mean `counts` of the same length (float64)."""

    wavelengths_nm: np.ndarray
    counts: np.ndarray
    integration_ms: int
    coadd: int
    timestamp: float
    serial: str = ""
    model: str = ""

    def as_array(self) -> np.ndarray:
        """The (2, N) float64 array the original PyCam saves."""
        return np.vstack([self.wavelengths_nm, self.counts]).astype(np.float64)


@runtime_checkable
class Camera(Protocol):
    band: str

    def set_exposure(self, exposure_us: int) -> int:
        """Set the shutter speed; returns the exposure the sensor will actually use."""

    def set_gain(self, gain: float) -> float: ...

    def capture(self) -> Frame:
        """Capture one raw frame (blocking; run it in an executor thread)."""

    def set_dark(self, dark: bool) -> bool:
        """Take the next frames with the lens covered (dark) or not, where the device can: True when it did; False
        when it has no way to (its darks rely on the dark series' time of day)."""

    def close(self) -> None:
        """Release the device. Idempotent."""


@runtime_checkable
class Spectrometer(Protocol):
    serial: str
    model: str
    min_integration_ms: float
    max_integration_ms: float

    def set_integration_ms(self, integration_ms: int) -> int: ...

    def wavelengths(self) -> np.ndarray: ...

    def capture(self, coadd: int = 1) -> Spectrum:
        """Co-add `coadd` scans (blocking)."""

    def set_dark(self, dark: bool) -> bool:
        """Scan with the shutter closed (dark) or open, where the device can: True when it did (see Camera)."""

    def close(self) -> None: ...


@runtime_checkable
class PowerLines(Protocol):
    """GPIO lines of the power handoff."""

    def pulse_wake(self, seconds: float) -> None:
        """Master: pull the slave's GPIO 3 low for `seconds` (wakes a halted Pi)."""

    def pulse_halt(self, seconds: float) -> None:
        """Master: ask the slave to halt through the gpio-shutdown line."""

    def close(self) -> None: ...


@runtime_checkable
class ClockSource(Protocol):
    name: str

    def status(self) -> dict:
        """What the source knows: {'source': ..., 'synchronised': bool, 'offset_s': float | None, ...}."""
