"""Simulated camera and spectrometer: real, selectable backends driven by a SimScene.

They are deterministic (the scene is seeded; each frame's noise is seeded by band, time and exposure), record a
`history` of (time, event, details) tests can assert on, and accept injected faults:
"unplug" (every call, opening included, raises DeviceUnavailable until "replug"), "stall" (captures and opens wait
`stall_timeout_s`, then raise DeviceTimeout, until "replug"), "garbage" (the next capture returns a malformed frame /
spectrum), "replug". Faults live in the device's `SimPlug` (one per device of a scene), so they survive a reopen.
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


class SimPlug:
    """The simulated device's connection (its USB/CSI port), shared by every object opened for that device in one
    sim world (scene): a fault survives closing and reopening the device, as it does on the real bus, so the
    supervisor recovers a sim device by the same path as a real one (release, reopen after a backoff)."""

    def __init__(self) -> None:
        self.unplugged = False
        self.stalled = False
        self.garbage_next = False
        self.stall_timeout_s = 0.0
        self.cond = threading.Condition()

    def inject(self, kind: str) -> None:
        """A fault: "unplug", "replug", "stall" or "garbage"."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        with self.cond:
            if kind == "unplug":
                self.unplugged = True
            elif kind == "replug":
                self.unplugged = self.stalled = self.garbage_next = False
            elif kind == "stall":
                self.stalled = True
            else:
                self.garbage_next = True
            self.cond.notify_all()


def plug_of(scene: SimScene, device_name: str) -> SimPlug:
    """The plug of `device_name` in this sim world (one per device, made on first use)."""
    return scene.plugs.setdefault(device_name, SimPlug())


class _SimDevice:
    """Fault state (its plug's) and history shared by the sim devices."""

    device_name = "sim device"

    def __init__(self, clock: Clock, plug: SimPlug):
        self.clock = clock
        self.plug = plug
        self.history: list[tuple[float, str, dict]] = []
        self._closed = False
        self._log = get_logger("hardware", device=self.device_name, backend="sim")
        self._check_usable("open")
        self._wait_while_stalled("open")

    @property
    def stall_timeout_s(self) -> float:
        return self.plug.stall_timeout_s

    @stall_timeout_s.setter
    def stall_timeout_s(self, seconds: float) -> None:
        self.plug.stall_timeout_s = float(seconds)

    def _record(self, event: str, **details) -> None:
        self.history.append((self.clock.time(), event, details))

    def inject_fault(self, kind: str) -> None:
        """Inject a fault into this device's plug: "unplug", "replug", "stall" or "garbage"."""
        self.plug.inject(kind)
        self._record("fault", kind=kind)
        self._log.warning("fault_injected", kind=kind)

    def _check_usable(self, action: str) -> None:
        if self._closed:
            raise DeviceUnavailable(self.device_name, f"{action}: device is closed")
        if self.plug.unplugged:
            self._record("error", action=action, error="unplugged")
            raise DeviceUnavailable(self.device_name, f"{action}: device not found (unplugged)")

    def _wait_while_stalled(self, action: str) -> None:
        """A stalled device answers nothing: wait (on the plug's condition, not a sleep) until it is replugged, this
        object is closed, or the stall times out."""
        plug = self.plug
        with plug.cond:
            plug.cond.wait_for(lambda: not plug.stalled or self._closed, plug.stall_timeout_s)
            stalled = plug.stalled
        if stalled:
            self._record("error", action=action, error="timeout")
            raise DeviceTimeout(self.device_name, f"{action}: no answer within {plug.stall_timeout_s} s")

    def _check_capture(self) -> bool:
        """Raise for unplug/stall faults; True when this capture must return garbage."""
        self._check_usable("capture")
        self._wait_while_stalled("capture")
        with self.plug.cond:
            garbage, self.plug.garbage_next = self.plug.garbage_next, False
        return garbage

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self.plug.cond:
                self.plug.cond.notify_all()  # a call of this object still waiting on a stall gives up
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
        self.scene = scene
        super().__init__(clock, plug_of(scene, self.device_name))
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

    def set_dark(self, dark: bool) -> bool:
        """The sim camera's lens cover: dark frames while covered."""
        self.lens_covered = bool(dark)
        return True

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
        self.scene = scene
        super().__init__(clock, plug_of(scene, self.device_name))
        self.cfg = cfg
        self.integration_ms = int(cfg.integration_ms)
        self.shutter_closed = False
        self._record("open", backend="sim", serial=self.serial)

    def set_integration_ms(self, integration_ms: int) -> int:
        self._check_usable("set_integration_ms")
        self.integration_ms = int(min(max(integration_ms, self.min_integration_ms), self.max_integration_ms))
        self._record("set_integration_ms", requested_ms=int(integration_ms), actual_ms=self.integration_ms)
        return self.integration_ms

    def set_dark(self, dark: bool) -> bool:
        """The sim spectrometer's shutter: dark scans while closed."""
        self.shutter_closed = bool(dark)
        return True

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
