"""Captures on master time: the slot plan, one runner per device, and the slot loop that drives them.

Both Pis run the same `SlotLoop`. The master's plan is sent to the slave ("schedule" request); each Pi sleeps until
slot k on ITS clock corrected by the measured offset (master - local; 0 on the master), captures in an executor
thread and names the file with the slot's master time, so A and B of one slot carry the same timestamp string.
A device that fails is retried with backoff while the others go on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.clock import Clock
from controller.config import Config
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError, PycamError, StorageError
from controller.logging import get_logger
from controller.storage.names import ImageName, SpectrumName, check_type
from controller.storage.png import encode_png16
from states.machine import MachineTable, StateModel, build_machine

# The dark series takes at most this many exposures per device, spread over its shutter/integration list.
DARK_STEPS = 12
BACKOFF_START_S = 2.0
BACKOFF_MAX_S = 120.0
# A capture may wait for up to this many frame (scan) times: a fresh frame after a setting change.
CAPTURE_FRAMES = 3
# Opening (firmware, configuration, stream start) gets this many times the device's call limit.
OPEN_FACTOR = 3
# Calls of one device still hung in a vendor call after their time limit: beyond this many, further calls fail at
# once instead of tying up one more thread each.
MAX_HUNG_CALLS = 2
# The slot loop waits for a slot's captures until this fraction of a period before the next slot.
SLOT_WAIT_MARGIN = 0.25


@dataclass(frozen=True)
class SlotPlan:
    """Slots on master time: slot k is at `epoch_s + k * period_s`; captures only inside [start_s, end_s)."""

    period_s: float
    epoch_s: float
    start_s: float | None = None
    end_s: float | None = None

    def slot_time(self, k: int) -> float:
        return self.epoch_s + k * self.period_s

    def next_slot(self, t: float) -> tuple[int, float]:
        """The first slot at or after master time `t` (and not before the window start)."""
        if self.start_s is not None:
            t = max(t, self.start_s)
        k = math.ceil((t - self.epoch_s) / self.period_s - 1e-9)
        return k, self.slot_time(k)

    def in_window(self, t: float) -> bool:
        return (self.start_s is None or t >= self.start_s) and (self.end_s is None or t < self.end_s)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SlotPlan:
        def num(key: str) -> float | None:
            v = data.get(key)
            return None if v is None else float(v)

        period = float(data["period_s"])
        if not (0 < period <= 3600):
            raise ValueError(f"period_s {period!r} out of range")
        return cls(period, float(data["epoch_s"]), num("start_s"), num("end_s"))


@dataclass
class CaptureRecord:
    """One saved capture, as written to the capture journal (captures.jsonl)."""

    name: str
    device: str
    slot_time: float | None
    capture_time: float  # master time at exposure start
    sha256: str
    size: int


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


class CaptureJournal:
    """Append-only JSON lines of every capture saved on this Pi (what the sim and the e2e tests count)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def append(self, rec: CaptureRecord) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec)) + "\n")
        self.count += 1

    @staticmethod
    def read(path: Path) -> list[dict]:
        out = []
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill -9: the capture behind it is in the spool/store anyway
        return out


Sink = Callable[[str, bytes], Awaitable[None]]


class DeviceCaller:
    """Runs one device's blocking calls, one at a time, in the device's own daemon thread, each with a time limit.

    A call over its limit raises DeviceTimeout at once; its thread is abandoned (it is stuck in the vendor call and
    never reused) and the next call gets a fresh thread, so one hung device never holds another device, the slot
    loop or start-up. Abandoned threads are daemons: a hung vendor call cannot keep the process from exiting.
    """

    def __init__(self, name: str):
        self.name = name
        self._queue: Any = None  # queue.SimpleQueue of the current worker thread
        self._hung: list[concurrent.futures.Future] = []  # timed-out calls still running in abandoned threads
        self.timeouts = 0

    def _thread(self) -> Any:
        if self._queue is None:
            import queue

            self._queue = queue.SimpleQueue()
            name = f"device-{self.name}"
            threading.Thread(target=_device_worker, args=(self._queue,), name=name, daemon=True).start()
        return self._queue

    @property
    def hung(self) -> int:
        """Abandoned calls still stuck in the vendor library."""
        self._hung = [f for f in self._hung if not f.done()]
        return len(self._hung)

    async def _wait_for_hung(self, timeout_s: float) -> None:
        """Too many calls stuck: wait (within this call's limit) for one to return, else DeviceTimeout."""
        if self.hung < MAX_HUNG_CALLS:
            return
        waiters = [asyncio.wrap_future(f) for f in self._hung]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self.hung >= MAX_HUNG_CALLS:
            raise DeviceTimeout(self.name, f"{self.hung} earlier calls still hung in the device library")

    async def call(
        self, timeout_s: float, fn: Callable[..., Any], *args: Any, late: Callable[[Any], None] | None = None
    ) -> Any:
        """`fn(*args)` in the device thread, limited to `timeout_s` real seconds (DeviceTimeout beyond it).
        `late(result)` gets the result of a timed-out call that returns after all (e.g. to close a late device)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._wait_for_hung(timeout_s)
        timeout_s = max(0.0, timeout_s - (loop.time() - start))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._thread().put((fut, fn, args))
        wrapped = asyncio.wrap_future(fut)
        done, _ = await asyncio.wait({wrapped}, timeout=timeout_s)
        if done:
            return wrapped.result()
        wrapped.cancel()  # also cancels `fut` when it has not started (and detaches it from this loop)
        # The thread is stuck in this call (or in an earlier one): never give it another call.
        self._abandon()
        if not fut.done():
            self._hung.append(fut)
        if late is not None and not fut.cancelled():
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() is not None or late(f.result()))
        self.timeouts += 1
        raise DeviceTimeout(self.name, f"{getattr(fn, '__name__', 'call')}: no answer within {timeout_s:.3g} s")

    def _abandon(self) -> None:
        if self._queue is not None:
            self._queue.put(None)  # the worker ends once its call returns, if it ever does
        self._queue = None

    def shutdown(self) -> None:
        """End the worker thread after its queued calls (shutdown)."""
        if self._queue is not None:
            self._queue.put(None)
        self._queue = None


def _device_worker(q: Any) -> None:
    while True:
        item = q.get()
        if item is None:
            return
        fut, fn, args = item
        if not fut.set_running_or_notify_cancel():
            continue  # timed out while queued: never started
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine, which decides
            fut.set_exception(e)
        else:
            fut.set_result(result)


async def wait_event_or_sleep(event: asyncio.Event, clock: Clock, seconds: float | None) -> None:
    """Wait until `event` is set or `seconds` of clock time pass (None: no limit); clears the event."""
    if not event.is_set():
        tasks = {asyncio.ensure_future(event.wait())}
        if seconds is not None:
            tasks.add(asyncio.ensure_future(clock.sleep(max(0.0, seconds))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
    event.clear()


class MachineDriver:
    """A declared table (states/) run as a `build_machine` machine that only the event loop changes.

    `fire` is the only way its state changes: it fires `trigger` when the current state accepts it (False
    otherwise), so callers act on facts ("the capture failed") without re-checking the state. It refuses to run
    outside the event loop's thread: executor threads hop to the loop with `call_soon_threadsafe` first.
    Every change is one `state_change` event (build_machine) and is passed to `on_change(old, new, trigger)`.
    """

    def __init__(
        self,
        table: MachineTable,
        name: str,
        clock: Clock,
        conditions: dict[str, Callable[[], bool]] | None = None,
        on_change: Callable[[str, str, str], None] | None = None,
        logger: Any = None,
    ):
        self.table = table
        self.name = name
        self._clock = clock
        self._on_change = on_change or (lambda old, new, trigger: None)
        self.model = StateModel()
        self.machine = build_machine(
            self.model, table, name=name, logger=logger or get_logger("machine"), asynchronous=False,
            conditions=conditions,
        )  # fmt: skip
        self.since = clock.time()
        self.history: deque[tuple[float, str, str, str]] = deque(maxlen=200)
        self._waiters: list[asyncio.Future] = []

    @property
    def state(self) -> str:
        return self.model.state

    async def wait_for(self, state: str, timeout_s: float) -> bool:
        """Wait (real seconds) until the machine is in `state`; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.state != state:
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError:
                return self.state == state
        return True

    def recent(self, n: int = 20) -> list[dict]:
        """The last `n` changes (for the status file)."""
        return [{"time": t, "old": o, "new": new, "trigger": tr} for t, o, new, tr in list(self.history)[-n:]]

    def can(self, trigger: str) -> bool:
        return trigger in self.table.allowed(self.state)

    def fire(self, trigger: str, reason: str | None = None) -> bool:
        """Fire `trigger` if the current state accepts it; True when the state changed."""
        asyncio.get_running_loop()  # RuntimeError in an executor thread: only the loop changes state
        old = self.state
        if not self.can(trigger):
            return False
        self.model.trigger(trigger, **({"reason": reason} if reason else {}))
        new = self.state
        if new != old:
            self.since = self._clock.time()
            self.history.append((self.since, old, new, trigger))
            self._on_change(old, new, trigger)
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(new)
        return new != old


# A device in these states has an open, working device: it captures.
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
        self.machine = MachineDriver(
            TABLE, f"acquisition.{key}", clock, conditions={"continuous_wanted": self.continuous_wanted},
            on_change=self._state_changed, logger=self._log,
        )  # fmt: skip

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

    def set_scheduled(self, scheduled: bool) -> None:
        """The slot loop started (True) or stopped (False)."""
        self._scheduled = scheduled
        self._sync_continuous()

    def _sync_continuous(self) -> None:
        if self.continuous_wanted():
            self.machine.fire("start_continuous", reason="slot loop running")
        else:
            self.machine.fire("stop_continuous", reason="slot loop stopped or continuous off")

    def _state_changed(self, old: str, new: str, trigger: str) -> None:
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
            self.machine.fire("no_device", reason="no such device on this Pi")
            return False
        self.machine.fire("opened")
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
        self.machine.fire("close", reason="shutdown")

    async def restart(self) -> bool:
        """Close and reopen the device now (external port: restart the backend)."""
        async with self._lock:
            if not self.machine.fire("recover", reason="backend restart"):
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
        self.machine.fire("reopened")

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
            self.machine.fire("unplug", reason=str(e))
        else:
            trigger = {"opening": "open_failed", "recovering": "reopen_failed"}.get(self.state, "capture_failed")
            self.machine.fire(trigger, reason=str(e))

    async def _recover(self) -> bool:
        """Try to get the device back (called when its backoff has passed); True when a capture may be tried."""
        if self._clock.monotonic() < self._retry_at:
            return False
        if not self.machine.fire("recover", reason="backoff over"):
            return False
        if self.device is not None and hasattr(self.device, "inject_fault"):
            # A sim device keeps its plugged/unplugged state in the object: the next capture is the probe.
            return True
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
        single = self.machine.fire("capture_single", reason=kind)
        try:
            return await self._capture(None, kind, exposure)
        finally:
            if single:
                self.machine.fire("single_done")

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
            stamp = slot_time if slot_time is not None else capture_time
            name, data = await loop.run_in_executor(None, self._encode, result, stamp, kind)
            try:
                await self._sink(name, data)
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

    def _encode(self, result: Any, stamp: float, kind: str) -> tuple[str, bytes]:
        when = _iso_utc(stamp)
        if self.key == "S":
            name = SpectrumName(when, int(result.integration_ms), int(result.coadd), kind)
            return str(name), encode_spectrum(result.as_array())
        name = ImageName(when, self.key, int(round(result.gain)), int(result.exposure_us), kind)
        return str(name), encode_png16(result.pixels)

    async def _auto_adjust(self, result: Any) -> None:
        cfg = self._settings()
        try:
            from controller import autoexposure
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
        # Sim devices take darks with the lens covered / the shutter closed; real ones rely on the dark time.
        cover = next((a for a in ("lens_covered", "shutter_closed") if hasattr(dev, a)), None)
        started = self.machine.fire("start_darks", reason=f"{len(steps)} exposures")
        done = False
        if cover is not None:
            setattr(dev, cover, True)
        try:
            for value in steps:
                name = await self._capture(None, "Dark", exposure=value)
                if name:
                    names.append(name)
            done = True
        finally:
            if cover is not None:
                setattr(dev, cover, False)
            if started:
                self.machine.fire("darks_done" if done else "abort_darks", reason=f"{len(names)} darks")
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


@dataclass
class SingleRequest:
    device: str
    kind: str
    future: asyncio.Future


class SlotLoop:
    """Sleeps until each slot (master time mapped to the local clock) and captures on every continuous device.

    `plan()` returns the current SlotPlan or None; `offset()` is master - local in seconds; `blocked()` returns a
    reason string while captures must not run (disk full, clock unsynchronised). Single captures requested from
    outside are taken right after the next slot's continuous captures (or at once when nothing is continuous).
    Each capture runs as its own task: the loop waits for a slot's captures at most until the next slot, and a
    device still busy with an earlier capture (a slow or hung device, until its time limit) skips its slots
    while the others capture on theirs.
    """

    def __init__(
        self,
        clock: Clock,
        devices: dict[str, DeviceRunner],
        plan: Callable[[], SlotPlan | None],
        offset: Callable[[], float] = lambda: 0.0,
        blocked: Callable[[], str | None] = lambda: None,
        on_slot: Callable[[int, float], None] | None = None,
    ):
        self.clock = clock
        self.devices = devices
        self._plan = plan
        self._offset = offset
        self._blocked = blocked
        self._on_slot = on_slot or (lambda k, t: None)
        self._wake = asyncio.Event()
        self._singles: deque[SingleRequest] = deque()
        self._busy: dict[str, asyncio.Task] = {}  # device key -> its slot capture still running
        self._single_tasks: set[asyncio.Task] = set()
        self.skipped: dict[str, int] = {}  # device key -> slots skipped because it was still busy
        self.slots = 0
        self.last_slot: int | None = None
        self._log = get_logger("slot_loop")

    def wake(self) -> None:
        """Re-read the plan / singles now (plan changed, single capture queued, unblocked)."""
        self._wake.set()

    def request_single(self, device: str, kind: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._singles.append(SingleRequest(device, check_type(kind), fut))
        self.wake()
        return fut

    async def _sleep_or_wake(self, seconds: float | None) -> None:
        await wait_event_or_sleep(self._wake, self.clock, seconds)

    async def _take_singles(self) -> None:
        """Start the queued single captures; each waits for its device (never for the slot loop)."""
        while self._singles:
            req = self._singles.popleft()
            runner = self.devices.get(req.device)
            if runner is None:
                if not req.future.done():
                    req.future.set_exception(DeviceUnavailable(req.device, "no such device on this Pi"))
                continue
            task = asyncio.ensure_future(self._single(runner, req))
            self._single_tasks.add(task)
            task.add_done_callback(self._single_tasks.discard)
        await asyncio.sleep(0)  # let them take their device's lock before the next slot's capture queues on it

    async def _single(self, runner: DeviceRunner, req: SingleRequest) -> None:
        try:
            name = await runner.capture(None, req.kind)
        except asyncio.CancelledError:
            req.future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the capture path: logged, the loop and other devices go on
            self._log.error("single_capture_crashed", device=req.device, error=repr(e))
            name = None
        if not req.future.done():
            req.future.set_result(name)

    def _start_captures(self, devices: list[DeviceRunner], k: int, t_slot: float) -> list[asyncio.Task]:
        started = []
        for d in devices:
            busy = self._busy.get(d.key)
            if busy is not None and not busy.done():
                self.skipped[d.key] = self.skipped.get(d.key, 0) + 1
                self._log.warning("slot_skipped_device_busy", device=d.key, slot=k)
                continue
            if busy is not None and busy.exception() is not None:
                raise busy.exception()  # a bug in the capture path: the supervisor notes slot_loop_crashed
            task = asyncio.ensure_future(d.capture(t_slot))
            self._busy[d.key] = task
            started.append(task)
        return started

    async def _wait_captures(self, tasks: list[asyncio.Task], until_s: float) -> None:
        """Wait for this slot's captures, but not past `until_s` clock seconds (the next slot)."""
        if not tasks:
            return
        timer = asyncio.ensure_future(self.clock.sleep(max(0.0, until_s)))
        waiter = asyncio.ensure_future(asyncio.wait(tasks))
        try:
            await asyncio.wait({timer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _cancel_captures(self) -> None:
        tasks = [t for t in (*self._busy.values(), *self._single_tasks) if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._busy.clear()

    async def run(self) -> None:
        """Capture on the plan until cancelled; the devices are scheduled (continuous when wanted) meanwhile."""
        for device in self.devices.values():
            device.set_scheduled(True)
        try:
            await self._run()
        finally:
            await self._cancel_captures()
            for device in self.devices.values():
                device.set_scheduled(False)

    async def _run(self) -> None:
        last_k: int | None = None
        while True:
            await self._take_singles()
            plan = self._plan()
            reason = self._blocked()
            continuous = [d for d in self.devices.values() if d.continuous]
            if plan is None or reason is not None or not continuous:
                await self._sleep_or_wake(None if plan is None or reason is None else plan.period_s)
                continue
            offset = self._offset()
            master_now = self.clock.time() + offset
            k, t_slot = plan.next_slot(master_now)
            if last_k is not None and k <= last_k:
                k, t_slot = last_k + 1, plan.slot_time(last_k + 1)
            if not plan.in_window(t_slot):
                # Outside the window: wait for a plan change (the supervisor moves on at the window's end).
                await self._sleep_or_wake(None if plan.end_s is not None and t_slot >= plan.end_s else plan.period_s)
                continue
            await self._sleep_or_wake(t_slot - master_now)
            if self._singles or self._plan() != plan:
                continue  # woken early: take singles / re-plan, then come back to this slot
            offset = self._offset()
            # asyncio may wake a hair early; never capture before the slot on master time.
            early = t_slot - (self.clock.time() + offset)
            if early > 0.0005:
                await self.clock.sleep(early)
            last_k = k
            self.last_slot = k
            self.slots += 1
            started = self._start_captures(continuous, k, t_slot)
            # Stop waiting a little before the next slot, so that slot is not already past when it is planned.
            until_next = plan.slot_time(k + 1) - SLOT_WAIT_MARGIN * plan.period_s - (self.clock.time() + offset)
            await self._wait_captures(started, until_next)
            self._on_slot(k, t_slot)
