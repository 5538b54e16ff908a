"""What both supervisors share: the station machine, the reconcile loop of the running phase, the status file,
signals, sd_notify and systemd's watchdog, the service group and the bounded shutdown.

Only the event loop changes state: every trigger is fired from the supervisor's main coroutine, never from a
thread or a link callback (those only set `kick`, which wakes the main coroutine to re-evaluate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from controller.storage.atomic import atomic_write_text
from controller.supervisor.disk import DiskService
from controller.supervisor.faultlog import FaultLog
from controller.supervisor.services import ServiceContext, ServiceGroup, cancel, link_status
from controller.supervisor.statusfile import StatusWriter, read_temperatures
from controller.supervisor.suspender import Suspender, station_trigger
from controller.supervisor.watchdog import Watchdog, sd_notify
from controller.timekeeping.clock import Clock
from states.runtime import MachineRuntime
from states.station import TABLE as STATION

if TYPE_CHECKING:
    from controller.bootguard import BootGuard
    from controller.link.endpoint import LinkEndpoint
    from controller.settings import SettingsStore
    from controller.sim.scene import SimScene

RUNNING = ("acquire", "degraded", "paused")
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
    boot_guard: BootGuard | None = None  # S1's BootGuard: tripped after repeated start-ups that never got healthy


class Supervisor:
    """Base of MasterSupervisor and SlaveSupervisor. Subclasses implement the role-specific phases."""

    role = "?"

    def __init__(self, cfg: Config, clock: Clock, options: RunOptions | None = None):
        self.base_cfg = cfg
        self.clock = clock
        self.options = options or RunOptions()
        self.state_dir = Path(self.options.state_dir or cfg.storage.state_dir)
        self.log = get_logger("supervisor", role=self.role)
        self.settings: SettingsStore | None = None
        self.devices: dict[str, DeviceRunner] = {}
        self.scene: SimScene | None = (
            None  # the sim scene (its devices' plugs), when a backend is sim: factory.make_scene
        )
        self.slot_loop: SlotLoop | None = None
        self._slot_task: asyncio.Task | None = None
        self.plan: SlotPlan | None = None
        self.kick = asyncio.Event()
        self.stop_requested: str | None = None
        self.restart_requested = False
        self.faultlog = FaultLog()
        self.storage_check: dict = {}
        self.services = ServiceGroup(self.log)
        self.ctx = ServiceContext(clock, self.log, self.note_fault, self.kick)
        self.disk: DiskService | None = None  # the disk suspender (controller/supervisor/disk.py)
        self.offset_s = 0.0
        self.offset_ok = False
        self.clock_source: dict = {}
        self.link: LinkEndpoint | None = None
        self.exit_code = 0
        self.shutdown_budget_s = SHUTDOWN_BUDGET_S
        self.stop_step_limit_s = STOP_STEP_LIMIT_S
        self._stop_deadline: float | None = None  # time.monotonic() by which the stop must be over
        self.journal = CaptureJournal(self.state_dir / "captures.jsonl")
        self.capture_names = capture_seconds(self.state_dir)  # durable: no name is ever used twice
        self.slot_clock = TimelineClock(clock, lambda: self.slot_loop)  # master time as the slave must see it
        self.status = StatusWriter(self.state_dir, self.collect_status)
        conditions = {
            "in_window": self.in_window,
            "slave_ready": self.healthy,
            "sync_retries_exhausted": self.sync_retries_exhausted,
            "shutdown_after_process": self.shutdown_after_process,
        }
        self.station = MachineRuntime(STATION, "station", clock, conditions, logger=self.log)
        self.station.add_listener(self._state_changed)
        self._tasks: list[asyncio.Task] = []
        # Called with the supervisor once its loop runs; `pycam run` adds the sim fault driver when a backend is sim.
        self.start_hooks: list[Callable[[Supervisor], None]] = []
        self._ready_notified = False
        self._watchdog = Watchdog(None, self.log)  # replaced in run() by one that watches the main task
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

    @property
    def faults(self) -> deque[dict]:
        return self.faultlog.faults

    @property
    def fault_counts(self) -> Counter[str]:
        return self.faultlog.counts

    def note_fault(self, kind: str, info: dict | None = None) -> None:
        """Remember a fault for `pycam status` (the fault log) and log it."""
        self.faultlog.note(kind, self.clock.time(), info)
        fields = {k: v for k, v in (info or {}).items() if isinstance(v, str | int | float) and k != "event"}
        self.log.warning("fault", fault=kind, **fields)
        self.kick.set()

    def _carry_faults(self) -> None:
        """A restarted supervisor keeps the faults of its previous run and says when it ended without a clean exit."""
        crashed = self.faultlog.carry(self.state_dir)
        if crashed is not None:
            info = {"previous_pid": crashed.get("pid"), "previous_state": crashed.get("state")}
            self.note_fault("restarted_after_crash", info)

    def device_event(self, event: str, info: dict) -> None:
        # A failed retry (recovering -> error/unplugged) is the same fault still going on, not a new one.
        if event == "device_state" and info.get("new") in ("error", "unplugged") and info.get("old") != "recovering":
            self.note_fault("device_" + info["new"], info)
        elif event == "device_state":
            self.kick.set()
        elif event == "store_failed":
            self.note_fault("store_failed", info)
            self.check_disk()  # a write failed: perhaps the disk filled between two checks

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
        await cancel(task)

    def blocked(self) -> str | None:
        """Why captures must not run now (None: they may)."""
        if self.station.state not in RUNNING:
            return f"station in {self.station.state}"
        active = [x for x in self.suspenders if x.active]
        if active:
            return f"suspended ({active[0].reason()})"
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
        self.check_disk()

    @property
    def suspenders(self) -> list[Suspender]:
        """What may pause acquisition (disk space now; low battery next): one generic shape, one record each."""
        return [self.disk.suspender] if self.disk is not None else []

    def check_disk(self, only_while_paused: bool = False) -> None:
        """The disk suspender's check (controller/supervisor/disk.py); `only_while_paused`: the running phase's
        re-check (no slots run while paused, so no slot triggers it)."""
        if self.disk is not None and (self.disk.paused or not only_while_paused):
            self.disk.check()

    def suspended_recheck_s(self) -> float | None:
        """How long the running phase may wait before re-checking an active suspender (one slot period)."""
        return self.cfg.schedule.period_s if any(x.active for x in self.suspenders) else None

    async def close_devices(self) -> None:
        for key, runner in self.devices.items():
            try:
                await runner.close()
            except Exception as e:  # noqa: BLE001 - shutdown closes each device whatever the others do
                self.log.error("device_close_failed", device=key, error=repr(e))

    # ------------------------------------------------------------------------------------------------ status

    def collect_status(self) -> dict:
        return {
            "role": self.role,
            "station_name": self.cfg.station.name,
            "state": self.station.state,
            "state_since": self.station.since,
            "clock_time": self.clock.time(),
            "master_time": self.master_time(),
            "machines": self.machines(),
            "link": link_status(self.link),
            "clock": {
                "offset_ms": round(self.offset_s * 1000.0, 3),
                "offset_ok": self.offset_ok,
                "tolerance_ms": self.cfg.clock.tolerance_ms,
                "source": self.clock_source,
            },
            "storage": {
                **self.storage_check,
                **(self.disk.status() if self.disk else {"free_mb": None, "paused": False}),
            },
            "services": self.services.status(),
            "temperatures": read_temperatures(),
            "devices": {k: d.info() for k, d in self.devices.items()},
            "captures": {k: d.captures for k, d in self.devices.items()},
            "slots": self.slot_loop.slots if self.slot_loop else 0,
            "slot_loop": self.slot_loop.info() if self.slot_loop else None,
            "plan": self.plan.to_dict() if self.plan else None,
            **self.faultlog.status(),
            "history": self.station.recent(30),
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

    def sd_notify(self, message: str) -> None:
        sd_notify(message)

    # --------------------------------------------------------------------------------------------------- run

    async def run(self) -> int:
        """Run the station until it is off; returns the process exit code."""
        self._main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        for hook in self.start_hooks:  # e.g. the sim fault driver (controller/sim/faulthook.py), sim only
            hook(self)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._carry_faults()
        self.status.start()
        self._watchdog = Watchdog(self._main_task, self.log)  # begins at READY (notify_ready)
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
                        self.station.fire_if("stop", reason=self.stop_requested)
            await self.bounded_shutdown()
        finally:
            await self.stop_slot_loop()
            for t in self._tasks:
                t.cancel()
            await self._watchdog.stop()
            self.sd_notify("STOPPING=1")
            await self.status.stop()
            self._write_exit()
        return self.exit_code

    def _write_exit(self) -> None:
        data = self.status.snapshot()
        data["exited"] = True
        try:
            atomic_write_text(self.status.path, json.dumps(data, default=str, indent=1))
        except PycamError as e:
            self.log.warning("status_write_failed", error=str(e))

    async def fault_phase(self) -> None:
        # The whole delay whatever kicks the loop (the failed boot's own fault does): only a stop ends it early.
        until = self.clock.monotonic() + self.options.fault_retry_s
        while not self.stop_requested and (left := until - self.clock.monotonic()) > 0:
            await self.wait_kick(left)
        if self.stop_requested:
            self.station.fire_if("stop", reason=self.stop_requested)
        else:
            self.station.fire_if("retry", reason="fault retry")
            await self.boot()

    async def boot(self) -> None:
        """boot -> sync (services up) or fault (why is logged, in status and in the fault list)."""
        if self._booted:
            self.station.fire_if("booted", reason="fault cleared")
            return
        guard = self.options.boot_guard
        if guard is not None and getattr(guard, "tripped", False):
            # A boot loop: stay up in a safe, diagnosable state (status file) instead of a restart storm.
            self.note_fault("boot_loop", {"guard": str(getattr(guard, "path", ""))})
            self.station.fire_if("boot_loop", reason="repeated start-ups never got healthy")
            return
        try:
            await self.boot_services()
        except (PycamError, OSError, ImportError) as e:
            self.log.error("boot_failed", error=str(e))
            self.note_fault("boot_failed", {"error": str(e)})
            self.station.fire_if("boot_failed", reason=str(e))
            return
        self._booted = True
        self.station.fire_if("booted", reason="hardware open, storage checked")
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
            self._watchdog.begin()
            guard = self.options.boot_guard
            if guard is not None:
                guard.ok()

    async def reconcile_running(self) -> str | None:
        """In acquire/degraded/paused: fire whatever the current facts call for. Returns a phase-ending trigger."""
        st = self.station
        if self.stop_requested:
            st.fire_if("stop", reason=self.stop_requested)
            return "stop"
        plan = self.plan
        if plan is not None and plan.end_s is not None and self.master_time() >= plan.end_s:
            st.fire_if("window_end", reason="acquisition window over")
            return "window_end"
        entered_by = st.history[-1][3] if st.history else None
        suspend = station_trigger(self.suspenders, st.state, entered_by)
        if suspend is not None:
            st.fire_if(*suspend)
        healthy = self.healthy()
        if st.state == "acquire" and not healthy:
            st.fire_if("degrade", reason=self.degraded_reason())
        elif st.state == "degraded" and healthy:
            st.fire_if("recover", reason="link and devices back")
        if self.slot_loop is not None:
            self.slot_loop.wake()
        return None

    def degraded_reason(self) -> str:
        if self.link is None or not getattr(self.link, "connected", False):
            return "link down"
        bad = [f"{d.name} ({d.state})" for d in self.devices.values() if not d.usable and d.state != "absent"]
        return "device lost: " + ", ".join(bad)
