"""Simulated camera and spectrometer: real, selectable backends driven by a SimScene.

They are deterministic (the scene is seeded; each frame's noise is seeded by band, time and exposure), record a
`history` of (time, event, details) tests can assert on, and accept injected faults:
"unplug" (every call raises DeviceUnavailable until "replug"), "stall" (captures wait `stall_timeout_s`, then raise
DeviceTimeout, until "replug"), "garbage" (the next capture returns a malformed frame / spectrum), "replug".
"""

from __future__ import annotations

import threading

import numpy as np

from controller.config import CameraConfig, SpectrometerConfig
from controller.errors import DeviceTimeout, DeviceUnavailable
from controller.hardware.interfaces import Frame, Spectrum
from controller.logging import get_logger
from controller.sim.scene import SimScene
from controller.timekeeping.clock import Clock

FAULT_KINDS = ("unplug", "replug", "stall", "garbage")


class _SimDevice:
    """Fault state and history shared by the sim devices."""

    device_name = "sim device"

    def __init__(self, clock: Clock):
        self.clock = clock
        self.history: list[tuple[float, str, dict]] = []
        self._unplugged = False
        self._stalled = False
        self._garbage_next = False
        self._closed = False
        self._stall_release = threading.Event()
        self.stall_timeout_s = 0.0
        self._log = get_logger("hardware", device=self.device_name, backend="sim")

    def _record(self, event: str, **details) -> None:
        self.history.append((self.clock.time(), event, details))

    def inject_fault(self, kind: str) -> None:
        """Inject a fault: "unplug", "replug", "stall" or "garbage"."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        self._record("fault", kind=kind)
        self._log.warning("fault_injected", kind=kind)
        if kind == "unplug":
            self._unplugged = True
        elif kind == "replug":
            self._unplugged = self._stalled = self._garbage_next = False
            self._stall_release.set()
        elif kind == "stall":
            self._stalled = True
            self._stall_release.clear()
        else:
            self._garbage_next = True

    def _check_usable(self, action: str) -> None:
        if self._closed:
            raise DeviceUnavailable(self.device_name, f"{action}: device is closed")
        if self._unplugged:
            self._record("error", action=action, error="unplugged")
            raise DeviceUnavailable(self.device_name, f"{action}: device not found (unplugged)")

    def _check_capture(self) -> bool:
        """Raise for unplug/stall faults; True when this capture must return garbage."""
        self._check_usable("capture")
        if self._stalled:
            # a stalled device answers nothing: wait (on an event, not a sleep) until replugged or timed out
            self._stall_release.wait(self.stall_timeout_s)
            if self._stalled:
                self._record("error", action="capture", error="timeout")
                raise DeviceTimeout(self.device_name, f"capture: no answer within {self.stall_timeout_s} s")
        garbage, self._garbage_next = self._garbage_next, False
        return garbage

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stall_release.set()
            self._record("close")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reported_exposure_us(requested_us: int) -> int:
    """The exposure a sensor reports for a request: slightly shorter for long exposures, like the real
    OV5647 (1400000 µs requested -> 1399829 µs reported)."""
    return max(1, int(requested_us) - int(requested_us) // 10_000)


class SimCamera(_SimDevice):
    """Camera A or B looking at the SimScene. `lens_covered=True` takes dark frames."""

    def __init__(self, scene: SimScene, band: str, clock: Clock, cfg: CameraConfig):
        if band not in ("A", "B"):
            raise ValueError(f"band must be 'A' or 'B', not {band!r}")
        self.device_name = f"camera {band}"
        super().__init__(clock)
        self.scene = scene
        self.band = band
        self.cfg = cfg
        self.exposure_us = reported_exposure_us(cfg.shutter_us)
        self.gain = float(cfg.gain)
        self.lens_covered = False
        self._record("open", backend="sim", band=band)

    def set_exposure(self, exposure_us: int) -> int:
        self._check_usable("set_exposure")
        self.exposure_us = reported_exposure_us(exposure_us)
        self._record("set_exposure", requested_us=int(exposure_us), actual_us=self.exposure_us)
        return self.exposure_us

    def set_gain(self, gain: float) -> float:
        self._check_usable("set_gain")
        self.gain = float(min(max(gain, 1.0), 16.0))
        self._record("set_gain", gain=self.gain)
        return self.gain

    def capture(self) -> Frame:
        garbage = self._check_capture()
        t = self.clock.time()
        if garbage:
            # a torn transfer: half the rows, values outside the sensor's bit depth
            rng = np.random.default_rng([self.scene.sim.seed, round(t * 1000)])
            pixels = rng.integers(0, 65535, (self.cfg.height // 2, self.cfg.width), dtype=np.uint16)
        else:
            pixels = self.scene.render_raw(self.band, t, self.exposure_us, self.gain, dark=self.lens_covered)
        self._record("capture", exposure_us=self.exposure_us, gain=self.gain, garbage=garbage,
                     dark=self.lens_covered)  # fmt: skip
        return Frame(
            pixels=pixels, exposure_us=self.exposure_us, gain=self.gain, timestamp=t, band=self.band,
            sensor_temperature_c=35.0, bit_depth=self.cfg.bit_depth, metadata={"backend": "sim", "garbage": garbage},
        )  # fmt: skip


class SimSpectrometer(_SimDevice):
    """The Flame-S like spectrometer looking at the scene's field of view."""

    device_name = "spectrometer"
    serial = "SIM-FLMS00001"
    model = "FLAME-S (sim)"
    min_integration_ms = 1.0
    max_integration_ms = 65_000.0

    def __init__(self, scene: SimScene, clock: Clock, cfg: SpectrometerConfig):
        super().__init__(clock)
        self.scene = scene
        self.cfg = cfg
        self.integration_ms = int(cfg.integration_ms)
        self.shutter_closed = False
        self._record("open", backend="sim", serial=self.serial)

    def set_integration_ms(self, integration_ms: int) -> int:
        self._check_usable("set_integration_ms")
        self.integration_ms = int(min(max(integration_ms, self.min_integration_ms), self.max_integration_ms))
        self._record("set_integration_ms", requested_ms=int(integration_ms), actual_ms=self.integration_ms)
        return self.integration_ms

    def wavelengths(self) -> np.ndarray:
        self._check_usable("wavelengths")
        return self.scene.spectrometer_wavelengths_nm

    def capture(self, coadd: int = 1) -> Spectrum:
        garbage = self._check_capture()
        t = self.clock.time()
        wl, counts = self.scene.render_spectrum(t, self.integration_ms, coadd, dark=self.shutter_closed)
        if garbage:
            counts = np.full(counts.size // 3, np.nan)
            wl = wl[: counts.size]
        self._record("capture", integration_ms=self.integration_ms, coadd=coadd, garbage=garbage)
        return Spectrum(wl, counts, self.integration_ms, coadd, t, self.serial, self.model)
