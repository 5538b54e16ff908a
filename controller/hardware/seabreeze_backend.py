"""Spectrometer backend on python-seabreeze (Ocean Optics Flame-S, USB). Imported only when opened."""

from __future__ import annotations

import numpy as np

from controller.config import SpectrometerConfig
from controller.errors import DeviceUnavailable, HardwareError
from controller.hardware.interfaces import Spectrum
from controller.logging import get_logger
from controller.timekeeping.clock import Clock

DEVICE = "spectrometer"


class SeabreezeSpectrometer:
    """The first (or the given serial's) Ocean Optics spectrometer."""

    def __init__(self, cfg: SpectrometerConfig, clock: Clock, serial: str | None = None):
        self.cfg = cfg
        self.clock = clock
        self._log = get_logger("hardware", device=DEVICE, backend="seabreeze")
        self._spec = None
        try:
            from seabreeze.spectrometers import Spectrometer, list_devices
        except ImportError as e:
            raise DeviceUnavailable(DEVICE, "seabreeze is not installed (pip install seabreeze)") from e
        try:
            devices = list_devices()
            if serial:
                devices = [d for d in devices if getattr(d, "serial_number", None) == serial]
            if not devices:
                raise DeviceUnavailable(
                    DEVICE, "no Ocean Optics spectrometer on USB" + (f" ({serial})" if serial else "")
                )
            self._spec = Spectrometer(devices[0])
            lo_us, hi_us = self._spec.integration_time_micros_limits
            self.min_integration_ms = lo_us / 1000.0
            self.max_integration_ms = hi_us / 1000.0
            self.serial = str(self._spec.serial_number)
            self.model = str(self._spec.model)
            self._wavelengths = np.asarray(self._spec.wavelengths(), dtype=np.float64)
        except DeviceUnavailable:
            raise
        except Exception as e:  # seabreeze raises its own SeaBreezeError (an Exception) from the USB layer
            self.close()
            raise DeviceUnavailable(DEVICE, f"cannot open: {e}") from e
        self.integration_ms = self.set_integration_ms(cfg.integration_ms)
        self._log.info("spectrometer_opened", serial=self.serial, model=self.model)

    def _require_open(self):
        if self._spec is None:
            raise DeviceUnavailable(DEVICE, "spectrometer is closed")
        return self._spec

    def set_integration_ms(self, integration_ms: int) -> int:
        """Set the integration time, clamped to the device's limits; returns the time used (ms)."""
        spec = self._require_open()
        ms = min(max(float(integration_ms), self.min_integration_ms), self.max_integration_ms)
        try:
            spec.integration_time_micros(int(round(ms * 1000)))
        except Exception as e:  # SeaBreezeError
            raise HardwareError(DEVICE, f"cannot set integration time {ms} ms: {e}") from e
        self.integration_ms = int(round(ms))
        return self.integration_ms

    def wavelengths(self) -> np.ndarray:
        self._require_open()
        return self._wavelengths.copy()

    def capture(self, coadd: int = 1) -> Spectrum:
        """The mean of `coadd` scans (the original's co-adding)."""
        spec = self._require_open()
        t = self.clock.time()
        total = np.zeros_like(self._wavelengths)
        try:
            for _ in range(max(1, coadd)):
                total += np.asarray(spec.intensities(), dtype=np.float64)
        except Exception as e:  # SeaBreezeError / USB errors
            raise HardwareError(DEVICE, f"capture failed: {e}") from e
        return Spectrum(self._wavelengths.copy(), total / max(1, coadd), self.integration_ms, coadd, t,
                        self.serial, self.model)  # fmt: skip

    def close(self) -> None:
        spec, self._spec = self._spec, None
        if spec is None:
            return
        try:
            spec.close()
        except Exception as e:  # SeaBreezeError; closing must never raise
            self._log.warning("spectrometer_close_failed", error=str(e))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
