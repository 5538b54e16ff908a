"""One runner per device: open, capture, recover with backoff, singles and dark series; its state is the
`acquisition.<device>` machine. A device that fails is retried with backoff while the others go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from controller.acquisition.caller import CAPTURE_FRAMES, OPEN_FACTOR, DeviceCaller
from controller.acquisition.journal import CaptureJournal, CaptureRecord
from controller.acquisition.naming import CaptureSeconds
from controller.config import Config
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError, PycamError, StorageError
from controller.logging import get_logger
from controller.storage.names import ImageName, SpectrumName, check_type
from controller.storage.png import encode_png16
from controller.timekeeping.clock import Clock
from states.runtime import MachineRuntime

# The dark series takes at most this many exposures per device, spread over its shutter/integration list.
DARK_STEPS = 12

BACKOFF_START_S = 2.0

BACKOFF_MAX_S = 120.0


def _iso_utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def encode_spectrum(array_2xn: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array_2xn, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def dark_steps(values: tuple[int, ...], steps: int = DARK_STEPS) -> list[int]:
    """At most `steps` values of an ascending list, spread evenly on a log scale (all when it is short)."""
    if len(values) <= steps:
        return list(values)
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, steps)).astype(int))
    return [values[i] for i in idx]


Sink = Callable[[str, bytes], Awaitable[None]]


USABLE_STATES = ("idle", "continuous", "single", "dark_series")


class DeviceRunner:
    """One capture device: opened and captured in its own thread with a time limit per call (DeviceCaller),
    captured per slot, retried with backoff on failure (a call over its limit is a failure like any other).

    `key` is "A", "B" (cameras) or "S" (spectrometer). `settings()` returns the effective Config (SettingsStore).
    `sink(name, data)` stores the encoded file (master: data store; slave: spool). Its state is the machine
    "acquisition.<key>" of states/acquisition.py, changed only here and only on the event loop.
    """

    def __init__(
        self,
        key: str,
        opener: Callable[[], Any],
        settings: Callable[[], Config],
        clock: Clock,
        sink: Sink,
        journal: CaptureJournal | None = None,
        offset: Callable[[], float] = lambda: 0.0,
        on_event: Callable[[str, dict], None] | None = None,
        names: CaptureSeconds | None = None,
    ):
        from states.acquisition import TABLE

        self.key = key
        self.name = {"A": "camera A", "B": "camera B", "S": "spectrometer"}[key]
        self._opener = opener
        self._settings = settings
        self._clock = clock
        self._sink = sink
        self._journal = journal
        self._offset = offset
        self._on_event = on_event or (lambda e, i: None)
        # Which seconds this device's names use (shared per Pi, durable in its state folder): nothing is renamed.
        self.names = names if names is not None else CaptureSeconds()
        self.device: Any = None
        self.captures = 0
        self.failures = 0
        self.last: str | None = None
        self.last_error: str | None = None
        self._retry_at = 0.0  # local clock monotonic
        self._backoff = BACKOFF_START_S
        self._lock = asyncio.Lock()  # one capture at a time per device
        self._want_continuous = True  # the operator's choice (external port SPC/STC ...)
        self._scheduled = False  # the slot loop runs
        self.lateness_ms: deque[float] = deque(maxlen=256)
        self.device_cpu_s = 0.0
        self._log = get_logger("acquisition", device=self.name)
        self._caller = DeviceCaller(self.name)
        self.machine = MachineRuntime(
            TABLE, f"acquisition.{key}", clock, conditions={"continuous_wanted": self.continuous_wanted},
            logger=self._log,
        )  # fmt: skip
        self.machine.add_listener(self._state_changed)

    # ----------------------------------------------------------------------------------------------- state

    @property
    def state(self) -> str:
        return self.machine.state

    @property
    def usable(self) -> bool:
        return self.state in USABLE_STATES

    def continuous_wanted(self) -> bool:
        return self._want_continuous and self._scheduled

    @property
    def continuous(self) -> bool:
        """Wanted continuous (the slot loop captures it while it runs)."""
        return self._want_continuous

    @continuous.setter
    def continuous(self, value: bool) -> None:
        self._want_continuous = bool(value)
        self._sync_continuous()

    @property
    def busy(self) -> bool:
        """A capture (or a restart) holds the device now."""
        return self._lock.locked()

    def set_scheduled(self, scheduled: bool) -> None:
        """The slot loop started (True) or stopped (False)."""
        self._scheduled = scheduled
        self._sync_continuous()

    def _sync_continuous(self) -> None:
        if self.continuous_wanted():
            self.machine.fire_if("start_continuous", reason="slot loop running")
        else:
            self.machine.fire_if("stop_continuous", reason="slot loop stopped or continuous off")

    def _state_changed(self, old: str, new: str, trigger: str, reason: str | None) -> None:
        self._on_event("device_state", {"device": self.key, "old": old, "new": new, "trigger": trigger})

    # ----------------------------------------------------------------------------------------------- time limits

    def call_limit_s(self) -> float:
        """Real seconds one device call (a setting, close) may take."""
        cfg = self._settings()
        return float(cfg.spectrometer.call_timeout_s if self.key == "S" else cfg.camera.call_timeout_s)

    def capture_limit_s(self, exposure: int | None = None) -> float:
        """Real seconds a capture may take: a few frame (scan) times at the longest exposure that may be in force,
        plus the call limit."""
        cfg = self._settings()

        def known(*values: Any) -> float:
            return float(max((v for v in values if isinstance(v, int | float)), default=0))

        dev = self.device
        if self.key == "S":
            ms = known(exposure, getattr(dev, "integration_ms", None), cfg.spectrometer.integration_ms)
            frame_s = ms * int(cfg.spectrometer.coadd) / 1000.0
        else:
            frame_s = known(exposure, getattr(dev, "exposure_us", None), cfg.camera.shutter_us) / 1e6
        return CAPTURE_FRAMES * frame_s + self.call_limit_s()

    async def _call(self, fn: Callable[..., Any], *args: Any, limit_s: float | None = None) -> Any:
        return await self._caller.call(self.call_limit_s() if limit_s is None else limit_s, fn, *args)

    def _close_late(self, dev: Any) -> None:
        """A device whose open returned after its time limit: nobody uses it, release it (in that thread)."""
        if dev is None:
            return
        try:
            dev.close()
        except (PycamError, OSError) as e:
            self._log.warning("late_device_close_failed", error=str(e))

    # ----------------------------------------------------------------------------------------------- lifecycle

    async def _open_device(self) -> BaseException | None:
        """Open the device (its thread, time-limited) and apply the settings; the error when that failed."""
        try:
            limit = OPEN_FACTOR * self.call_limit_s()
            self.device = await self._caller.call(limit, self._opener, late=self._close_late)
            if self.device is not None:
                await self._apply_settings(initial=True)
        except (PycamError, OSError) as e:
            return e
        return None

    async def open(self) -> bool:
        """Open at boot: idle, absent (no device configured) or error/unplugged (retried after a backoff)."""
        error = await self._open_device()
        if error is not None:
            self._failed(error, opening=True)
            return False
        if self.device is None:  # e.g. spectrometer backend "none"
            self.machine.fire_if("no_device", reason="no such device on this Pi")
            return False
        self.machine.fire_if("opened")
        self._backoff = BACKOFF_START_S
        return True

    async def _release(self) -> None:
        dev, self.device = self.device, None
        if dev is not None:
            try:
                await self._call(dev.close)
            except (PycamError, OSError) as e:
                self._log.warning("device_close_failed", error=str(e))

    async def close(self) -> None:
        """Release the device for good (shutdown)."""
        await self._release()
        self._caller.shutdown()
        self.machine.fire_if("close", reason="shutdown")

    async def restart(self) -> bool:
        """Close and reopen the device now (external port: restart the backend)."""
        async with self._lock:
            if not self.machine.fire_if("recover", reason="backend restart"):
                return False
            await self._release()
            return await self._reopen()

    async def _reopen(self) -> bool:
        """In recovering: open the device again; reopened, or back to error/unplugged with a longer backoff."""
        error = await self._open_device()
        if error is None and self.device is None:
            error = DeviceUnavailable(self.name, "the backend returned no device")
        if error is not None:
            self._failed(error, opening=True)
            return False
        self._reopened()
        return True

    def _reopened(self) -> None:
        self._backoff = BACKOFF_START_S
        self.machine.fire_if("reopened")

    def _failed(self, e: BaseException, opening: bool = False) -> None:
        self.failures += 1
        self.last_error = str(e)
        self._retry_at = self._clock.monotonic() + self._backoff
        self._log.warning(
            "device_failed", error=str(e), opening=opening, retry_in_s=self._backoff, failures=self.failures,
            timed_out=isinstance(e, DeviceTimeout), hung_calls=self._caller.hung,
        )  # fmt: skip
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        if isinstance(e, DeviceUnavailable):
            self.machine.fire_if("unplug", reason=str(e))
        else:
            trigger = {"opening": "open_failed", "recovering": "reopen_failed"}.get(self.state, "capture_failed")
            self.machine.fire_if(trigger, reason=str(e))

    async def _recover(self) -> bool:
        """Try to get the device back (called when its backoff has passed); True when a capture may be tried."""
        if self._clock.monotonic() < self._retry_at:
            return False
        if not self.machine.fire_if("recover", reason="backoff over"):
            return False
        await self._release()
        return await self._reopen()

    async def _apply_settings(self, initial: bool = False) -> None:
        cfg = self._settings()
        dev = self.device
        if dev is None:
            return
        if self.key in ("A", "B"):
            if initial or not cfg.camera.auto_exposure:
                await self._call(dev.set_exposure, int(cfg.camera.shutter_us))
            if initial:
                await self._call(dev.set_gain, float(cfg.camera.gain))
        elif initial or not cfg.spectrometer.auto_integration:
            await self._call(dev.set_integration_ms, int(cfg.spectrometer.integration_ms))

    # ------------------------------------------------------------------------------------------------ capture

    async def capture(self, slot_time: float | None, kind: str = "Plume", exposure: int | None = None) -> str | None:
        """Capture, encode and store one file named with `slot_time` (master time; None: now, a single capture).
        None if skipped or failed."""
        check_type(kind)
        if slot_time is not None:
            return await self._capture(slot_time, kind, exposure)
        single = self.machine.fire_if("capture_single", reason=kind)
        try:
            return await self._capture(None, kind, exposure)
        finally:
            if single:
                self.machine.fire_if("single_done")

    async def _capture(self, slot_time: float | None, kind: str, exposure: int | None) -> str | None:
        if not self.usable and not await self._recover():
            return None
        async with self._lock:
            if self.device is None or not (self.usable or self.state == "recovering"):
                return None  # lost (or closed) while this capture waited for the device
            loop = asyncio.get_running_loop()
            dev = self.device
            try:
                await self._apply_settings()
                if exposure is not None:
                    await self._call(dev.set_exposure if self.key != "S" else dev.set_integration_ms, int(exposure))
                cfg = self._settings()
                args = (int(cfg.spectrometer.coadd),) if self.key == "S" else ()
                result = await self._call(self._timed_capture, dev, args, limit_s=self.capture_limit_s(exposure))
            except HardwareError as e:
                self._failed(e)
                return None
            except OSError as e:
                self._failed(HardwareError(self.name, str(e)))
                return None
            if self.state == "recovering":
                self._reopened()  # the probe capture worked: the device is back
            offset = self._offset()
            capture_time = float(getattr(result, "timestamp", self._clock.time())) + offset
            if slot_time is not None and not self.names.claim_slot(self.key, slot_time):
                self._log.warning("slot_second_taken", slot_time=slot_time, why="a file of this second exists")
                return None
            stamp = slot_time if slot_time is not None else self._single_stamp(capture_time)
            name = f"{self.key}@{stamp:.0f}"  # for the log until the real name is known
            try:
                record, data = await loop.run_in_executor(None, self._encode_named, result, stamp, kind)
                name = str(record)
                await self._sink(record, data)  # the name as a record: the store does not parse it again
            except (StorageError, OSError) as e:
                self._log.error("capture_store_failed", file=name, error=str(e))
                self._on_event("store_failed", {"device": self.key, "file": name, "error": str(e)})
                return None
            if kind == "Plume":
                await self._auto_adjust(result)
        self.captures += 1
        self.last = name
        if slot_time is not None:
            self.lateness_ms.append((capture_time - slot_time) * 1000.0 / max(self._clock.scale(), 1e-9))
        if self._journal is not None:
            rec = CaptureRecord(name, self.key, slot_time, capture_time, hashlib.sha256(data).hexdigest(), len(data))
            self._journal.append(rec)
        self._on_event("captured", {"device": self.key, "file": name})
        return name

    def _timed_capture(self, dev: Any, args: tuple) -> Any:
        # The device's own CPU time (a sim device renders its scene here): benchmarks subtract it.
        t0 = time.thread_time()
        try:
            return dev.capture(*args)
        finally:
            self.device_cpu_s += time.thread_time() - t0

    def _single_stamp(self, capture_time: float) -> float:
        """A single capture's name time: the first second from its capture time no other capture of this device
        names (NoFreeSecond when there is none)."""
        return float(self.names.claim_single(self.key, capture_time))

    def _encode_named(self, result: Any, stamp: float, kind: str) -> tuple[ImageName | SpectrumName, bytes]:
        """Encode, after the newest named second is durable (a restart never names that second again)."""
        self.names.persist()
        return self._encode(result, stamp, kind)

    def _encode(self, result: Any, stamp: float, kind: str) -> tuple[ImageName | SpectrumName, bytes]:
        when = _iso_utc(stamp)
        if self.key == "S":
            name = SpectrumName(when, int(result.integration_ms), int(result.coadd), kind)
            return name, encode_spectrum(result.as_array())
        name = ImageName(when, self.key, int(round(result.gain)), int(result.exposure_us), kind)
        return name, encode_png16(result.pixels)

    async def _auto_adjust(self, result: Any) -> None:
        cfg = self._settings()
        try:
            from controller.acquisition import autoexposure
        except ImportError:
            return
        try:
            if self.key == "S":
                if cfg.spectrometer.auto_integration:
                    new = autoexposure.next_integration(
                        result.counts, result.wavelengths_nm, int(result.integration_ms), cfg.spectrometer
                    )
                    if new != result.integration_ms:
                        await self._call(self.device.set_integration_ms, int(new))
            elif cfg.camera.auto_exposure:
                max_value = (1 << int(getattr(result, "bit_depth", cfg.camera.bit_depth))) - 1
                new = autoexposure.next_shutter(
                    result.pixels, int(result.exposure_us), cfg.camera.shutter_list_us, cfg.camera, max_value
                )
                if new != result.exposure_us:
                    await self._call(self.device.set_exposure, int(new))
        except HardwareError as e:
            self._failed(e)

    async def dark_series(self) -> list[str]:
        """Darks over the device's shutter (integration) list, thinned to DARK_STEPS values."""
        cfg = self._settings()
        if self.key == "S":
            values, in_use = cfg.spectrometer.integration_list_ms, cfg.spectrometer.integration_ms
        else:
            values, in_use = cfg.camera.shutter_list_us, cfg.camera.shutter_us
        # The value in use always gets its dark (fixed-exposure stations need exactly that one).
        steps = sorted(set(dark_steps(tuple(values))) | {int(in_use)})
        names = []
        dev = self.device
        # Covered where the device can (Camera/Spectrometer.set_dark); otherwise the darks rely on their time.
        covered = dev is not None and dev.set_dark(True)
        started = self.machine.fire_if("start_darks", reason=f"{len(steps)} exposures")
        done = False
        try:
            for value in steps:
                name = await self._capture(None, "Dark", exposure=value)
                if name:
                    names.append(name)
            done = True
        finally:
            if covered:
                dev.set_dark(False)
            if started:
                self.machine.fire_if("darks_done" if done else "abort_darks", reason=f"{len(names)} darks")
            if self.device is not None and self.usable:
                await self._apply_settings(initial=True)
        return names

    def info(self) -> dict:
        return {
            "state": self.state,
            "usable": self.usable,
            "captures": self.captures,
            "failures": self.failures,
            "last": self.last,
            "last_error": self.last_error,
            "continuous": self.continuous,
            "device_cpu_s": round(self.device_cpu_s, 3),
            "timeouts": self._caller.timeouts,
            "hung_calls": self._caller.hung,
            "history": self.machine.recent(),
        }
