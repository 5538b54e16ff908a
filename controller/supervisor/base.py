"""What both supervisors share: the station machine, the reconcile loop of the running phase, the status file,
signals, sd_notify, the sim fault hook and the per-device shutdown.

Only the event loop changes state: every trigger is fired from the supervisor's main coroutine, never from a
thread or a link callback (those only set `kick`, which wakes the main coroutine to re-evaluate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.acquisition import (
    CaptureJournal,
    DeviceRunner,
    SlotLoop,
    SlotPlan,
    TimelineClock,
    wait_event_or_sleep,
)
from controller.acquisition.naming import capture_seconds
from controller.config import Config
from controller.errors import PycamError
from controller.logging import get_logger
from controller.supervisor.statusfile import StatusWriter, read_temperatures
from controller.timekeeping.clock import Clock

RUNNING = ("acquire", "degraded", "paused")
FAULT_FILE = "sim-fault.json"
# The whole stop (SIGTERM to exit) takes at most this many real seconds - well inside the units' TimeoutStopSec
# (master 180 s, slave 120 s) - and each closing step at most STOP_STEP_LIMIT_S: a hung device, link or worker
# cannot hold it. STOP_RESERVE_S of the budget is kept for the closing steps after the slave/spool flush.
SHUTDOWN_BUDGET_S = 90.0
STOP_STEP_LIMIT_S = 15.0
STOP_RESERVE_S = 30.0


@dataclass
class RunOptions:
    """Options of `pycam run` that are not station config (sim and test hooks)."""

    state_dir: Path | None = None
    fault_retry_s: float = 30.0  # clock seconds in fault before booting again
    boot_guard: Any = None  # S1's BootGuard: tripped after repeated start-ups that never got healthy


def window_bounds(t: float, windows_utc: tuple[tuple[str, str], ...]) -> tuple[float, float] | None:
    """The acquisition window (start, end epoch s) containing `t`, or None."""
    day = datetime.fromtimestamp(t, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for offset_days in (-1, 0):
        base = day + timedelta(days=offset_days)
        for start_s, end_s in windows_utc:
            start = base + _hhmm(start_s)
            end = base + _hhmm(end_s)
            if end <= start:
                end += timedelta(days=1)
            if start.timestamp() <= t < end.timestamp():
                return start.timestamp(), end.timestamp()
    return None


def next_window_start(t: float, windows_utc: tuple[tuple[str, str], ...]) -> float:
    day = datetime.fromtimestamp(t, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [
        (day + timedelta(days=d) + _hhmm(s)).timestamp() for d in (0, 1, 2) for s, _ in windows_utc
    ]  # fmt: skip
    return min(s for s in starts if s > t)


def _hhmm(text: str) -> timedelta:
    h, m = text.split(":")
    return timedelta(hours=int(h), minutes=int(m))


class StationDriver:
    """The station machine from states/station.py; `fire` is the only way the supervisor changes state."""

    def __init__(self, conditions: dict, log, clock: Clock, on_change):
        from states.machine import StateModel, build_machine
        from states.station import TABLE

        self.table = TABLE
        self.model = StateModel()
        wrapped = {k: (lambda *a, _f=f, **kw: bool(_f())) for k, f in conditions.items()}
        self.machine = build_machine(self.model, TABLE, name="station", logger=log, conditions=wrapped)
        self._clock = clock
        self._on_change = on_change
        self.since = clock.time()
        self.history: list[tuple[float, str, str, str]] = []

    @property
    def state(self) -> str:
        return self.model.state

    async def fire(self, trigger: str, reason: str | None = None) -> bool:
        """Fire `trigger` if the current state accepts it; True when the state changed."""
        old = self.state
        if trigger not in self.table.allowed(old):
            return False
        kwargs = {"reason": reason} if reason else {}
        await self.model.trigger(trigger, **kwargs)
        new = self.state
        if new != old:
            self.since = self._clock.time()
            self.history.append((self.since, old, new, trigger))
            self._on_change(old, new, trigger, reason)
        return new != old


class Supervisor:
    """Base of MasterSupervisor and SlaveSupervisor. Subclasses implement the role-specific phases."""

    role = "?"

    def __init__(self, cfg: Config, clock: Clock, options: RunOptions | None = None):
        self.base_cfg = cfg
        self.clock = clock
        self.options = options or RunOptions()
        self.state_dir = Path(self.options.state_dir or cfg.storage.state_dir)
        self.log = get_logger("supervisor", role=self.role)
        self.settings: Any = None
        self.devices: dict[str, DeviceRunner] = {}
        self.slot_loop: SlotLoop | None = None
        self._slot_task: asyncio.Task | None = None
        self.plan: SlotPlan | None = None
        self.kick = asyncio.Event()
        self.stop_requested: str | None = None
        self.restart_requested = False
        self.faults: deque[dict] = deque(maxlen=50)
        self.fault_counts: Counter[str] = Counter()  # every fault kind since the state folder was new
        self.storage_check: dict = {}
        self.disk_paused = False
        self.disk_policy: Any = None
        self.free_mb: float | None = None
        self.offset_s = 0.0
        self.offset_ok = False
        self.clock_source: dict = {}
        self.link: Any = None
        self.exit_code = 0
        self.shutdown_budget_s = SHUTDOWN_BUDGET_S
        self.stop_step_limit_s = STOP_STEP_LIMIT_S
        self._stop_deadline: float | None = None  # time.monotonic() by which the stop must be over
        self.journal = CaptureJournal(self.state_dir / "captures.jsonl")
        self.capture_names = capture_seconds(self.state_dir)  # durable: no name is ever used twice
        self.slot_clock = TimelineClock(clock, lambda: self.slot_loop)  # master time as the slave must see it
        self.status = StatusWriter(self.state_dir, self.collect_status)
        self.station = StationDriver(
            {
                "in_window": self.in_window,
                "slave_ready": self.healthy,
                "sync_retries_exhausted": self.sync_retries_exhausted,
                "shutdown_after_process": self.shutdown_after_process,
            },
            self.log,
            clock,
            self._state_changed,
        )
        self._tasks: list[asyncio.Task] = []
        self._ready_notified = False
        self._booted = False

    # ------------------------------------------------------------------------------------------------ config

    @property
    def cfg(self) -> Config:
        return self.settings.config if self.settings is not None else self.base_cfg

    # ---------------------------------------------------------------------------------------------- conditions

    def in_window(self) -> bool:
        plan = self.plan
        return plan is not None and plan.in_window(self.master_time())

    def healthy(self) -> bool:
        """Nothing missing: the link is up and every local device that exists captures."""
        link_ok = self.link is not None and bool(getattr(self.link, "connected", False))
        return link_ok and all(d.usable for d in self.devices.values() if d.state != "absent")

    def sync_retries_exhausted(self) -> bool:
        return False  # the station keeps trying (and says so in status) rather than giving up on a clock

    def shutdown_after_process(self) -> bool:
        return bool(self.cfg.schedule.shutdown_after_process) or self.stop_requested is not None

    def master_time(self) -> float:
        return self.clock.time() + self.offset_s

    # ------------------------------------------------------------------------------------------------- events

    def _state_changed(self, old: str, new: str, trigger: str, reason: str | None) -> None:
        # disk_full is noted by the disk check itself (also when the pause does not change the state).
        if (
            new in ("fault", "degraded", "paused") or trigger in ("clock_lost", "offset_bad")
        ) and trigger != "disk_full":
            self.note_fault(trigger, {"old": old, "new": new, "reason": reason})
        self.status.write_now()

    def note_fault(self, kind: str, info: dict | None = None) -> None:
        """Remember a fault for `pycam status` (faults, last_fault, fault_counts) and log it."""
        entry = {"time": self.clock.time(), "real_time": time.time(), "kind": kind, **(info or {})}
        self.faults.append(entry)
        self.fault_counts[kind] += 1
        fields = {k: v for k, v in (info or {}).items() if isinstance(v, str | int | float) and k != "event"}
        self.log.warning("fault", fault=kind, **fields)
        self.kick.set()

    def _carry_faults(self) -> None:
        """A restarted supervisor keeps the faults of its previous run (status.json), and says when that run
        ended without a clean exit (kill -9, power cut, crash)."""
        from controller.supervisor.statusfile import read_status

        old, _ = read_status(self.state_dir)
        if not old:
            return
        for entry in (old.get("faults") or [])[-self.faults.maxlen :]:
            if isinstance(entry, dict):
                self.faults.append(entry)
        counts = old.get("fault_counts") or {}
        self.fault_counts.update({str(k): int(v) for k, v in counts.items() if isinstance(v, int)})
        if not old.get("exited"):
            self.note_fault(
                "restarted_after_crash", {"previous_pid": old.get("pid"), "previous_state": old.get("state")}
            )

    def device_event(self, event: str, info: dict) -> None:
        # A failed retry (recovering -> error/unplugged) is the same fault still going on, not a new one.
        if event == "device_state" and info.get("new") in ("error", "unplugged") and info.get("old") != "recovering":
            self.note_fault("device_" + info["new"], info)
        elif event == "device_state":
            self.kick.set()
        elif event == "store_failed":
            self.note_fault("store_failed", info)
            self._check_disk()  # a write failed: perhaps the disk filled between two checks

    def request_stop(self, reason: str, restart: bool = False) -> None:
        if self.stop_requested is None:
            self.log.info("stop_requested", reason=reason, restart=restart)
            self.stop_requested = reason
            self.restart_requested = restart
        self.kick.set()

    async def wait_kick(self, timeout_s: float | None) -> None:
        """Wait (clock seconds) until something happens that may change the state."""
        await wait_event_or_sleep(self.kick, self.clock, timeout_s)

    # ----------------------------------------------------------------------------------------------- devices

    def add_device(self, key: str, opener, sink) -> DeviceRunner:
        runner = DeviceRunner(
            key, opener, lambda: self.cfg, self.clock, sink, self.journal, offset=lambda: self.offset_s,
            on_event=self.device_event, names=self.capture_names,
        )  # fmt: skip
        self.devices[key] = runner
        return runner

    async def open_devices(self) -> None:
        await asyncio.gather(*(d.open() for d in self.devices.values()))

    def start_slot_loop(self) -> None:
        if self._slot_task is not None and not self._slot_task.done():
            return
        self.slot_loop = SlotLoop(
            self.clock, self.devices, plan=lambda: self.plan, offset=lambda: self.offset_s, blocked=self.blocked,
            on_slot=self.on_slot, period=self.device_period, continue_timeline=self.role == "master",
        )  # fmt: skip
        self._slot_task = asyncio.get_running_loop().create_task(self.slot_loop.run(), name="slot-loop")
        self._slot_task.add_done_callback(self._slot_loop_done)

    def device_period(self, key: str) -> float | None:
        """The spectrometer's own slot period from FRS (spectrometer.frame_rate_hz); the cameras follow the plan."""
        if key != "S":
            return None
        from controller.extport.protocol import slot_period_s

        return slot_period_s(self.cfg.spectrometer.frame_rate_hz)

    def _slot_loop_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("slot_loop_crashed", error=repr(task.exception()))
            self.note_fault("slot_loop_crashed", {"error": repr(task.exception())})

    async def stop_slot_loop(self) -> None:
        task, self._slot_task = self._slot_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def blocked(self) -> str | None:
        """Why captures must not run now (None: they may)."""
        if self.station.state not in RUNNING:
            return f"station in {self.station.state}"
        if self.disk_paused:
            return "disk full"
        if not self.offset_ok:
            return "clock offset unknown or too large"
        return None

    def note_link_down(self, info: dict | None) -> None:
        """A link drop is a fault, except the one that ends a deliberate shutdown (the peer stopping)."""
        details = {k: v for k, v in (info or {}).items() if isinstance(v, str | int | float)}
        if self.station.state in ("shutdown", "off"):
            self.log.info("link_closed_at_shutdown", **details)
            return
        self.note_fault("link_lost", details)

    def on_slot(self, k: int, t: float) -> None:
        """After each slot: cheap checks that may need the main coroutine (free space: one statvfs)."""
        self._check_disk()

    def _check_disk(self) -> None:
        """The disk suspender (controller/disk_policy.py): pause acquisition below min_free_mb, resume above
        resume_free_mb. The master may first delete old processed data; the slave never deletes its spool."""
        if self.disk_policy is None:
            return
        try:
            res = self.disk_policy.check()
        except OSError as e:
            self.log.warning("disk_check_failed", error=str(e))
            return
        self.free_mb = round(res.free_mb, 1)
        if res.changed:
            self.disk_paused = res.paused
            if res.paused:
                self.note_fault("disk_full", {"free_mb": self.free_mb})
            self.kick.set()

    async def close_devices(self) -> None:
        for key, runner in self.devices.items():
            try:
                await runner.close()
            except Exception as e:  # noqa: BLE001 - shutdown closes each device whatever the others do
                self.log.error("device_close_failed", device=key, error=repr(e))

    # ------------------------------------------------------------------------------------------------ status

    def collect_status(self) -> dict:
        link = self.link
        return {
            "role": self.role,
            "station_name": self.cfg.station.name,
            "state": self.station.state,
            "state_since": self.station.since,
            "clock_time": self.clock.time(),
            "master_time": self.master_time(),
            "machines": self.machines(),
            "link": {
                "state": getattr(link, "state", None),
                "connected": bool(getattr(link, "connected", False)),
                "peer": getattr(link, "peer", None),
                # transfers, and peers refused (no key, a second slave, unproven master): forged attempts show here
                "stats": dict(getattr(link, "stats", None) or {}),
                "refused": dict(getattr(link, "refused", None) or {}),
            },
            "clock": {
                "offset_ms": round(self.offset_s * 1000.0, 3),
                "offset_ok": self.offset_ok,
                "tolerance_ms": self.cfg.clock.tolerance_ms,
                "source": self.clock_source,
            },
            "storage": {**self.storage_check, "free_mb": self.free_mb, "paused": self.disk_paused},
            "temperatures": read_temperatures(),
            "devices": {k: d.info() for k, d in self.devices.items()},
            "captures": {k: d.captures for k, d in self.devices.items()},
            "slots": self.slot_loop.slots if self.slot_loop else 0,
            "slot_loop": self.slot_loop.info() if self.slot_loop else None,
            "plan": self.plan.to_dict() if self.plan else None,
            "faults": list(self.faults),
            "last_fault": self.faults[-1] if self.faults else None,
            "fault_counts": dict(self.fault_counts),
            "history": [{"time": t, "old": o, "new": n, "trigger": tr} for t, o, n, tr in self.station.history[-30:]],
            **self.extra_status(),
        }

    def machines(self) -> dict:
        out = {"station": self.station.state}
        if self.link is not None:
            out["link"] = getattr(self.link, "state", None)
        for d in self.devices.values():
            out[d.machine.name] = d.state
        return out

    def extra_status(self) -> dict:
        return {}

    # -------------------------------------------------------------------------------------------- sd_notify

    def sd_notify(self, message: str) -> None:
        from controller import bootguard

        bootguard.sd_notify(message)

    async def _watchdog(self) -> None:
        """Ping systemd's watchdog only while the loop is responsive and the main coroutine alive."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec <= 0:
            return
        interval = usec / 2e6
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = loop.time() - before - interval
            if lag < interval and (self._main_task is None or not self._main_task.done()):
                self.sd_notify("WATCHDOG=1")
            else:
                self.log.warning("watchdog_withheld", loop_lag_s=round(lag, 3))

    # ------------------------------------------------------------------------------------------- sim faults

    def _sim_fault_signal(self) -> None:
        """SIGUSR1: read state_dir/sim-fault.json and inject that fault (the sim station's fault driver)."""
        path = self.state_dir / FAULT_FILE
        try:
            fault = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            self.log.warning("sim_fault_unreadable", error=str(e))
            return
        self._tasks.append(asyncio.get_running_loop().create_task(self.inject_fault(fault)))

    async def inject_fault(self, fault: dict) -> None:
        kind = fault.get("kind")
        self.log.warning("sim_fault_injected", **{k: v for k, v in fault.items() if isinstance(v, str | int | float)})
        self.note_fault("injected_" + str(kind), dict(fault))
        if kind in ("unplug", "replug", "stall", "garbage"):
            runner = self.devices.get(str(fault.get("device", "")))
            dev = getattr(runner, "device", None)
            if dev is not None and hasattr(dev, "inject_fault"):
                dev.inject_fault(kind)
        elif kind == "clock_step" and hasattr(self.clock, "offset_s"):
            self.clock.offset_s += float(fault.get("seconds", 0.0))
            self.kick.set()
        elif kind == "drop_link" and self.link is not None:
            drop = getattr(self.link, "inject_fault", None)
            if drop is not None:
                drop("drop")
            else:
                await self.link.stop()
                await asyncio.sleep(float(fault.get("seconds", 5.0)))
                await self.link.start()

    # --------------------------------------------------------------------------------------------------- run

    async def run(self) -> int:
        """Run the station until it is off; returns the process exit code."""
        self._main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
            loop.add_signal_handler(signal.SIGUSR1, self._sim_fault_signal)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._carry_faults()
        self.status.start()
        self._tasks.append(loop.create_task(self._watchdog(), name="watchdog"))
        try:
            await self.boot()
            while self.station.state not in ("shutdown", "off"):
                state = self.station.state
                if state == "sync":
                    await self.sync_phase()
                elif state in RUNNING:
                    await self.running_phase()
                elif state == "process":
                    await self.process_phase()
                elif state == "sleep":
                    await self.sleep_phase()
                elif state == "fault":
                    await self.fault_phase()
                else:  # diagnose: status and control port only, until stopped
                    await self.wait_kick(None)
                    if self.stop_requested:
                        await self.station.fire("stop", reason=self.stop_requested)
            await self.bounded_shutdown()
        finally:
            await self.stop_slot_loop()
            for t in self._tasks:
                t.cancel()
            self.sd_notify("STOPPING=1")
            await self.status.stop()
            self._write_exit()
        return self.exit_code

    def _write_exit(self) -> None:
        from controller.storage.atomic import atomic_write_text

        data = self.status.snapshot()
        data["exited"] = True
        try:
            atomic_write_text(self.status.path, json.dumps(data, default=str, indent=1))
        except PycamError as e:
            self.log.warning("status_write_failed", error=str(e))

    async def fault_phase(self) -> None:
        await self.wait_kick(self.options.fault_retry_s)
        if self.stop_requested:
            await self.station.fire("stop", reason=self.stop_requested)
        else:
            await self.station.fire("retry", reason="fault retry")
            await self.boot()

    async def boot(self) -> None:
        """boot -> sync (services up) or fault (why is logged, in status and in the fault list)."""
        if self._booted:
            await self.station.fire("booted", reason="fault cleared")
            return
        guard = self.options.boot_guard
        if guard is not None and getattr(guard, "tripped", False):
            # A boot loop: stay up in a safe, diagnosable state (status file) instead of a restart storm.
            self.note_fault("boot_loop", {"guard": str(getattr(guard, "path", ""))})
            await self.station.fire("boot_loop", reason="repeated start-ups never got healthy")
            return
        try:
            await self.boot_services()
        except (PycamError, OSError, ImportError) as e:
            self.log.error("boot_failed", error=str(e))
            self.note_fault("boot_failed", {"error": str(e)})
            await self.station.fire("boot_failed", reason=str(e))
            return
        self._booted = True
        await self.station.fire("booted", reason="hardware open, storage checked")
        self.notify_ready()

    async def close_all(self, steps: list[tuple[str, Any]]) -> None:
        """Shutdown: run each closer in turn, each for at most stop_step_limit_s real seconds, logging a failure
        or a timeout and going on (one owner closes each part; a hung one cannot hold the others)."""
        for name, closer in steps:
            try:
                await asyncio.wait_for(closer(), self.stop_step_limit_s)
            except TimeoutError:
                self.log.error("shutdown_step_timeout", step=name, limit_s=self.stop_step_limit_s)
            except Exception as e:  # noqa: BLE001 - each part is closed whatever the others do
                self.log.error("shutdown_step_failed", step=name, error=repr(e))

    def stop_time_left(self, cap_s: float) -> float:
        """Real seconds a waiting stop step (flush, stopping the slave) may take: at most `cap_s`, and never so
        long that the closing steps after it would run past the shutdown budget."""
        if self._stop_deadline is None:
            return cap_s
        return max(0.0, min(cap_s, self._stop_deadline - time.monotonic() - STOP_RESERVE_S))

    async def bounded_shutdown(self) -> None:
        """shutdown_phase within the budget; past it the process exits anyway (files are atomic, spool kept)."""
        self._stop_deadline = time.monotonic() + self.shutdown_budget_s
        try:
            await asyncio.wait_for(self.shutdown_phase(), self.shutdown_budget_s)
        except TimeoutError:
            self.log.error("shutdown_over_budget", budget_s=self.shutdown_budget_s)

    async def stop_link(self) -> None:
        if self.link is not None:
            await self.link.stop()

    # Subclasses implement these.
    async def boot_services(self) -> None:
        raise NotImplementedError

    async def sync_phase(self) -> None:
        raise NotImplementedError

    async def running_phase(self) -> None:
        raise NotImplementedError

    async def process_phase(self) -> None:
        raise NotImplementedError

    async def sleep_phase(self) -> None:
        raise NotImplementedError

    async def shutdown_phase(self) -> None:
        raise NotImplementedError

    def notify_ready(self) -> None:
        if not self._ready_notified:
            self._ready_notified = True
            self.sd_notify("READY=1")
            guard = self.options.boot_guard
            if guard is not None:
                guard.ok()

    async def reconcile_running(self) -> str | None:
        """In acquire/degraded/paused: fire whatever the current facts call for. Returns a phase-ending trigger."""
        st = self.station
        if self.stop_requested:
            await st.fire("stop", reason=self.stop_requested)
            return "stop"
        plan = self.plan
        if plan is not None and plan.end_s is not None and self.master_time() >= plan.end_s:
            await st.fire("window_end", reason="acquisition window over")
            return "window_end"
        if self.disk_paused and st.state in ("acquire", "degraded"):
            await st.fire("disk_full", reason=f"free {self.free_mb} MB")
        elif not self.disk_paused and st.state == "paused":
            await st.fire("disk_ok", reason=f"free {self.free_mb} MB")
        healthy = self.healthy()
        if st.state == "acquire" and not healthy:
            await st.fire("degrade", reason=self.degraded_reason())
        elif st.state == "degraded" and healthy:
            await st.fire("recover", reason="link and devices back")
        if self.slot_loop is not None:
            self.slot_loop.wake()
        return None

    def degraded_reason(self) -> str:
        if self.link is None or not getattr(self.link, "connected", False):
            return "link down"
        bad = [f"{d.name} ({d.state})" for d in self.devices.values() if not d.usable and d.state != "absent"]
        return "device lost: " + ", ".join(bad)
