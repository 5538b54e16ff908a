"""The master's supervisor: camera A, the data store, the link server, the external port, the processing worker,
the power handoff of the slave and the disk policy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.acquisition import SlotPlan
from controller.errors import LinkError, PycamError, StorageError
from controller.storage.atomic import atomic_write_text
from controller.supervisor.actions import SupervisorActions
from controller.supervisor.base import Supervisor, next_window_start, window_bounds

WORKER_DRAIN_S = 600.0  # clock seconds the process phase waits for the worker's backlog
WORKER_BACKOFF_S = (0.5, 2.0, 10.0, 30.0)  # real seconds before restarting a crashed worker (n-th crash in a row)
WORKER_MAX_CRASHES = 5  # crashes in a row before the worker is disabled until the next start
WORKER_STABLE_S = 300.0  # real seconds of running after which a crash no longer counts as "in a row"
DARKS_FILE = "last_darks.txt"  # the date (YYYY-MM-DD) of the last daily dark series
EXT_FAULT_EVENTS = ("ext_bad_message", "ext_refused", "ext_client_refused")


class MasterSupervisor(Supervisor):
    role = "master"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.datastore: Any = None
        self.receiver: Any = None
        self.handoff: Any = None
        self.power_lines: Any = None
        self.power_board: Any = None  # controller.power.board.PowerBoardMonitor
        self.ext_server: Any = None
        self.ext_port: int | None = None
        self.worker: Any = None
        self.worker_machine: Any = None  # the "worker" machine (states/worker.py) of self.worker
        self._worker_restart: asyncio.TimerHandle | None = None
        self._worker_crashes = 0  # in a row
        self._worker_up_at = 0.0
        self._drain_waiters: dict[int, asyncio.Future] = {}  # rescan token -> future set by its ("idle", n, token)
        self._drain_tokens = 0
        self.worker_pairs = 0  # pairs the worker reported processed (its "pair" events)
        self.actions = SupervisorActions(self)
        self._wake_task: asyncio.Task | None = None
        self.stored_from_slave = 0
        self.duplicates_from_slave = 0
        self.scene: Any = None
        self._journal_cache: tuple[float, Any] | None = None
        self.day_ledger: Any = None
        self._last_ext_fault = 0.0
        self.last_dark_day: str | None = None
        self.web: Any = None  # controller.web.service.WebService when [web] is enabled
        self.delivery: Any = None  # controller.delivery.DeliveryService when [delivery] is enabled
        with contextlib.suppress(OSError):
            self.last_dark_day = (self.state_dir / DARKS_FILE).read_text().strip() or None

    # ------------------------------------------------------------------------------------------------- boot

    async def boot_services(self) -> None:
        from controller.settings import SettingsStore

        loop = asyncio.get_running_loop()
        self.settings = SettingsStore(self.state_dir, self.base_cfg)
        cfg = self.cfg
        self.storage_check = await loop.run_in_executor(None, check_storage, cfg)
        if not self.storage_check.get("ok", False):
            raise PycamError(f"storage check failed: {self.storage_check.get('reason')}")
        from controller.link.master import MasterLink
        from controller.link.receiver import FileReceiver, open_store

        self.datastore = open_store(cfg.storage.data_root, cfg.storage.flat_copy_dir)
        # Files from the slave are refused (nack "storage": the slave keeps them in its spool) while paused.
        self.receiver = FileReceiver(_PausableStore(self.datastore, lambda: self.disk_paused))
        from controller.hardware import factory

        if cfg.camera.backend == "sim":
            self.scene = await loop.run_in_executor(None, factory.make_scene, cfg)
        self.add_device("A", lambda: factory.open_camera(self.cfg, "A", self.clock, scene=self.scene), self._store)
        await self.open_devices()
        self.link = MasterLink(cfg, self.slot_clock, self.receiver)  # time answers on the slot timeline
        self.link.add_listener(self._link_event)
        self.link.on_request("status", self._status_request)
        self.link.on_request("announce", self._announce_request)
        await self.link.start()
        await self._start_ext()
        await self._start_web_and_delivery()
        self._start_worker()
        self._start_disk_policy()
        await self._start_power()
        from controller.power.board import PowerBoardMonitor

        self.power_board = PowerBoardMonitor()
        await self.power_board.start()

    async def _announce_request(self, body: dict) -> dict:
        """The slave's "dark series finished" (DFC/DFS) for the external clients; nothing else is relayed."""
        from controller.supervisor.actions import ANNOUNCE_KEYS

        keys = set(body) - {"IDN"}
        if not keys or not keys <= ANNOUNCE_KEYS or body.get("IDN") not in ("CM2", "SPC"):
            return {"ok": False, "error": f"not an announcement: {sorted(body)}"}
        if self.ext_server is not None:
            self.ext_server.broadcast({k: body[k] for k in (*sorted(keys), "IDN")})
        return {"ok": True}

    async def _start_ext(self) -> None:
        from controller.extport import protocol
        from controller.extport.control import DeviceControl, MasterControl, RemoteDeviceControl
        from controller.extport.server import ExtServer

        local = DeviceControl(self.settings, self.actions, protocol.MASTER_IDENTITIES)
        remote = RemoteDeviceControl(self.link.request)
        # Bad input on the port (garbage, refused clients or keys) also becomes a (rate-limited) fault.
        self.ext_server = ExtServer(self.settings.config, MasterControl(local, remote), on_bad_input=self._ext_event)
        try:
            self.ext_port = await self.ext_server.start()
        except OSError as e:
            # The station acquires without its control port rather than not at all; status says so.
            self.log.error("ext_port_unavailable", error=str(e))
            self.note_fault("ext_port_unavailable", {"error": str(e)})
            self.ext_server = None

    async def _start_web_and_delivery(self) -> None:
        from controller.web.outward import start_outward

        self.web, self.delivery = await start_outward(self)

    async def _stop_web_and_delivery(self) -> None:
        from controller.web.outward import stop_outward

        await stop_outward(self.web, self.delivery)  # kept: the final status shows what they did

    def _start_worker(self) -> None:
        cfg = self.cfg
        if not cfg.processing.enabled:
            return
        try:
            from processing.worker import ProcessingWorker
        except ImportError as e:
            self.log.warning("worker_unavailable", error=str(e))
            return
        from states.driver import MachineDriver
        from states.worker import TABLE

        loop = asyncio.get_running_loop()
        self.worker_machine = MachineDriver(TABLE, "worker", self.clock, logger=self.log)
        # The supervisor restarts the child itself (auto_restart off), so every step goes through the machine.
        self.worker = ProcessingWorker(
            cfg, cfg.storage.data_root, self.processing_out_dir(),
            crashed=lambda code: loop.call_soon_threadsafe(self._worker_crashed, code), auto_restart=False,
        )  # fmt: skip
        # The child's events are consumed as they come (its pump thread hops here), not only by the drain step.
        self.worker.on_event = lambda event: loop.call_soon_threadsafe(self._worker_event, event)
        self.worker_machine.fire("start", reason="boot")
        self._spawn_worker()

    def _spawn_worker(self) -> None:
        """In starting/restarting: spawn the child (started) or count it as a crash."""
        try:
            self.worker.start()
        except (PycamError, OSError) as e:
            self.log.error("worker_start_failed", error=str(e))
            self._worker_crashed(None, str(e))
            return
        self._worker_up_at = time.monotonic()
        # The child may already have died (its crash callback is queued behind us): then this does nothing.
        self.worker_machine.fire("started", reason=f"pid {self.worker.pid}")
        for token in self._drain_waiters:  # a drain's rescan died with the previous child: ask the new one
            self.worker.rescan(token)

    def _worker_event(self, event: tuple) -> None:
        """An event of the worker child (on the loop): backlog/idle drive the machine, idle ends a drain."""
        kind = event[0] if event else None
        if kind == "pair":
            self.worker_pairs += 1
            if self.delivery is not None:
                self.delivery.notify()  # new results: pushed now, not at the next scan
        elif kind == "backlog":
            self.worker_machine.fire("behind", reason=f"{event[1]} pairs to process")
        elif kind == "idle":
            self.worker_machine.fire("caught_up", reason=f"idle after {event[1]} pairs")
            if len(event) > 2:
                fut = self._drain_waiters.pop(event[2], None)
                if fut is not None and not fut.done():
                    fut.set_result(event[1])

    def _worker_crashed(self, exitcode: int | None, error: str | None = None) -> None:
        """The child died unasked (on the loop: the worker's watcher thread hops here)."""
        if not self.worker_machine.fire("crash", reason=error or f"exit code {exitcode}"):
            return  # stopping or already crashed: not a crash to act on
        if time.monotonic() - self._worker_up_at >= WORKER_STABLE_S:
            self._worker_crashes = 0  # it had been running fine: a fresh crash, not one of a series
        self._worker_crashes += 1
        self.note_fault("worker_crashed", {"exitcode": exitcode, "crashes_in_a_row": self._worker_crashes})
        if self._worker_crashes > WORKER_MAX_CRASHES:
            self.worker_machine.fire("give_up", reason=f"{self._worker_crashes} crashes in a row")
            self.note_fault("worker_disabled", {"crashes_in_a_row": self._worker_crashes})
            return
        delay = WORKER_BACKOFF_S[min(self._worker_crashes - 1, len(WORKER_BACKOFF_S) - 1)]
        self._worker_restart = asyncio.get_running_loop().call_later(delay, self._restart_worker)

    def _restart_worker(self) -> None:
        self._worker_restart = None
        if self.worker_machine.fire("restart", reason=f"crash {self._worker_crashes} in a row"):
            self._spawn_worker()

    def processing_out_dir(self) -> Path:
        return Path(self.cfg.storage.data_root).parent / "processed"

    def _start_disk_policy(self) -> None:
        from controller.disk_policy import LEDGER_NAME, DayLedger, DiskPolicy

        self.day_ledger = DayLedger(self.state_dir / LEDGER_NAME)
        self.disk_policy = DiskPolicy(
            self.cfg.storage, self.cfg.storage.data_root, today=self._today, is_processed=self._is_processed,
            day_complete=lambda day: day in self.day_ledger,
            delete=self.datastore.remove,  # drops the flat copy too: its hard link would keep the space in use
        )  # fmt: skip
        self._check_disk()

    def _today(self) -> str:
        return datetime.fromtimestamp(self.master_time(), tz=UTC).strftime("%Y-%m-%d")

    def _worker_journal(self) -> Any:
        """The worker's journal (re-read when it changed), or None: then nothing counts as processed."""
        if self.worker is None:
            return None
        try:
            from processing.worker import JOURNAL_NAME, Journal

            journal_path = self.processing_out_dir() / JOURNAL_NAME
            mtime = journal_path.stat().st_mtime
            if self._journal_cache is None or self._journal_cache[0] != mtime:
                self._journal_cache = (mtime, Journal(journal_path))
        except (OSError, ImportError):
            return None
        return self._journal_cache[1]

    def _is_processed(self, path: Path) -> bool:
        """From the worker's journal: the pair (or spectrum) of this file's slot was processed."""
        from controller.storage.names import ImageName, parse_name

        journal = self._worker_journal()
        try:
            name = parse_name(path.name)
        except ValueError:
            return False
        kind = "pairs" if isinstance(name, ImageName) else "spectra"
        return journal is not None and (kind, name.time_key) in journal

    async def record_completed_days(self) -> list[str]:
        """Record the days that are processed and all on the master (the disk policy's durable knowledge)."""
        from controller.disk_policy import record_completed_days

        journal = self._worker_journal()
        if journal is None or self.day_ledger is None:
            return []
        pending = await self.slave_spool_days()
        days = await asyncio.get_running_loop().run_in_executor(
            None, record_completed_days, self.cfg.storage.data_root, self.day_ledger, self._today(),
            lambda kind, key: (kind, key) in journal, pending, self.cfg.processing.pair_tolerance_s,
        )  # fmt: skip
        return days

    async def slave_spool_days(self) -> set[str] | None:
        """The date folders of the files still in the slave's spool; None when unknown (link down)."""
        if self.link is None or not self.link.connected:
            return None
        try:
            reply = await self.link.request("status", {}, 10.0)
        except (LinkError, TimeoutError) as e:
            self.log.warning("slave_spool_unknown", error=str(e))
            return None
        days = reply.get("spool_days")
        return {str(d) for d in days} if isinstance(days, list) else None

    async def _start_power(self) -> None:
        from controller.hardware import factory
        from controller.hardware.gpio_service import PowerLinesService
        from controller.power.handoff import PowerHandoff

        # A busy line or an lgpio that cannot load is retried with backoff by the service (error event + fault).
        self.power_lines = PowerLinesService(lambda: factory.open_power_lines(self.cfg), self.log, self.note_fault)
        await self.power_lines.start()
        self.handoff = PowerHandoff(self.power_lines, self.cfg, self.clock, self.link)
        # Waking may take minutes (or never succeed): the station goes on with camera A meanwhile.
        self._wake_task = asyncio.get_running_loop().create_task(self._wake(), name="wake-slave")

    async def _wake(self) -> None:
        up = await self.handoff.wake_slave()
        if not up:
            self.note_fault("slave_never_woke", {"pulses": getattr(self.handoff, "pulses", None)})
        self.kick.set()

    # --------------------------------------------------------------------------------------------- events

    def _link_event(self, event: str, info: dict) -> None:
        if event == "connected":
            asyncio.get_running_loop().create_task(self._slave_connected())
        elif event == "disconnected":
            self.note_link_down(info)
            if self.handoff is not None:
                asyncio.get_running_loop().create_task(self.handoff.link_changed(False))
        elif event == "file_stored" and (info or {}).get("status") == "duplicate":
            self.duplicates_from_slave += 1
        elif event == "file_stored":
            self.stored_from_slave += 1
            self._notify_worker((info or {}).get("name"))
        self.kick.set()

    def _ext_event(self, event: str, kw: dict) -> None:
        if event not in EXT_FAULT_EVENTS:
            return
        now = time.monotonic()
        if now - self._last_ext_fault >= 1.0:  # a stream of garbage is one fault, not hundreds
            self._last_ext_fault = now
            info = {k: v for k, v in kw.items() if isinstance(v, str | int | float)}
            self.note_fault("ext_bad_input", {"ext_event": event, **info})

    async def _slave_connected(self) -> None:
        if self.handoff is not None:
            await self.handoff.link_changed(True)  # idempotent: wake_slave() may report the same hello
        await self.send_schedule()
        self.kick.set()

    async def send_schedule(self) -> None:
        if self.plan is None or self.link is None or not self.link.connected:
            return
        try:
            await self.link.request("schedule", self.plan.to_dict(), 5.0)
        except (LinkError, TimeoutError) as e:
            self.log.warning("schedule_send_failed", error=str(e))

    async def _status_request(self, body: dict) -> dict:
        return {"state": self.station.state, "plan": self.plan.to_dict() if self.plan else None}

    async def _store(self, name: str, data: bytes) -> None:
        from controller.storage.atomic import NameTaken

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.datastore.save_bytes, name, data)
        except NameTaken:
            # Another capture already holds this name: never replaced; this one is kept aside (logged there).
            await loop.run_in_executor(None, self.datastore.keep_aside, name, data)
            return
        self._notify_worker(name)

    def _notify_worker(self, name: str | None) -> None:
        notify = getattr(self.worker, "notify", None)
        if notify is not None and name:
            with contextlib.suppress(OSError, ValueError):
                notify(name)

    # ------------------------------------------------------------------------------------------- phases

    def make_plan(self) -> SlotPlan | None:
        cfg = self.cfg
        now = self.master_time()
        bounds = window_bounds(now, cfg.schedule.windows_utc)
        if bounds is None:
            return None
        return SlotPlan(cfg.schedule.period_s, 0.0, bounds[0], bounds[1])

    async def sync_phase(self) -> None:
        self.clock_source = await asyncio.get_running_loop().run_in_executor(None, master_clock_status, self.cfg)
        self.offset_s, self.offset_ok = 0.0, True  # the master's clock is the station's time
        self.plan = self.make_plan()
        await self.send_schedule()
        await self.station.fire("synced", reason=f"clock source {self.clock_source.get('source')}")

    async def running_phase(self) -> None:
        self.start_slot_loop()
        while self.station.state in ("acquire", "degraded", "paused"):
            if self.disk_paused:
                self._check_disk()  # no slots run while paused: the suspender is re-checked here
            ended = await self.reconcile_running()
            if ended:
                break
            plan = self.plan
            until_end = None if plan is None or plan.end_s is None else plan.end_s - self.master_time()
            waits = [w for w in (until_end, self.cfg.schedule.period_s if self.disk_paused else None) if w is not None]
            await self.wait_kick(min(waits) if waits else None)
        await self.stop_slot_loop()

    async def process_phase(self) -> None:
        if self.stop_requested is None:
            # Today's darks, when their time falls between this window's end and the next window.
            now, dark_at = self.master_time(), self.next_dark_time()
            taken_today = self.last_dark_day == self._today()
            if not taken_today and now < dark_at < next_window_start(now, self.cfg.schedule.windows_utc):
                await self.wait_kick(dark_at - now)
            await self.run_darks_if_due()
            await self._drain_worker()
            days = await self.record_completed_days()
            if days:
                self.log.info("days_complete", days=days)
            self._check_disk()
        await self.station.fire("processed", reason="darks, backlog, products, housekeeping")

    def next_dark_time(self) -> float:
        """Master time of the next daily dark series not yet taken (today's, or tomorrow's once done)."""
        h, m = (int(x) for x in self.cfg.schedule.dark_time_utc.split(":"))
        now = self.master_time()
        day = datetime.fromtimestamp(now, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        dark_at = day.timestamp() + h * 3600 + m * 60
        if day.strftime("%Y-%m-%d") == self.last_dark_day:
            dark_at += 86400
        return dark_at

    async def run_darks_if_due(self) -> None:
        """The daily dark series, once a day, when its time has come and the station is not acquiring."""
        if self.master_time() < self.next_dark_time():
            return
        self.last_dark_day = self._today()
        # Remembered across restarts: a restarted master does not take the day's darks twice.
        with contextlib.suppress(OSError):
            atomic_write_text(self.state_dir / DARKS_FILE, self.last_dark_day)
        await self.actions.run_dark_series("cameras", announce=False)
        await self.actions.run_dark_series("spectrometer", announce=False)

    async def _drain_worker(self) -> None:
        """Wait (bounded) until the worker has processed the backlog of the day."""
        worker = self.worker
        if worker is None or self.worker_machine.state not in ("running", "backlog"):
            return
        self._drain_tokens += 1
        token = self._drain_tokens
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters[token] = fut
        worker.rescan(token)
        real_timeout = WORKER_DRAIN_S / max(self.clock.scale(), 1e-9)
        try:
            await asyncio.wait_for(fut, real_timeout)
            idle = True
        except TimeoutError:
            idle = False
        finally:
            self._drain_waiters.pop(token, None)
        self.log.info("worker_drained" if idle else "worker_drain_timeout", timeout_s=round(real_timeout, 1))

    async def sleep_phase(self) -> None:
        now = self.master_time()
        start = next_window_start(now, self.cfg.schedule.windows_utc)
        await self.wait_kick(min(start, self.next_dark_time()) - now)
        if self.stop_requested:
            await self.station.fire("stop", reason=self.stop_requested)
            return
        await self.run_darks_if_due()
        if self.master_time() >= start or self.in_window_now():
            await self.station.fire("window_start", reason="acquisition window")

    def in_window_now(self) -> bool:
        return window_bounds(self.master_time(), self.cfg.schedule.windows_utc) is not None

    async def shutdown_phase(self) -> None:
        await self.stop_slot_loop()
        if self._wake_task is not None:
            self._wake_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wake_task
        flushed = None
        if self.handoff is not None:
            try:
                flushed = await self.handoff.stop_slave()
            except (PycamError, OSError) as e:
                self.log.error("stop_slave_failed", error=str(e))
        self.log.info("slave_stopped", flushed=flushed)
        await self.close_all(
            [
                ("worker", self._stop_worker),
                ("ext_port", self._stop_ext),
                ("web_delivery", self._stop_web_and_delivery),
                ("link", self.stop_link),
                ("devices", self.close_devices),
                ("power_lines", self._close_lines),
                ("power_board", self._stop_power_board),
            ]
        )
        await self.station.fire("halted", reason=f"slave flushed={flushed}")
        if self.restart_requested:
            self.exit_code = 75  # systemd restarts on failure; the unit treats 75 as "restart me"

    async def _stop_worker(self) -> None:
        if self.worker is None:
            return
        if self._worker_restart is not None:
            self._worker_restart.cancel()
            self._worker_restart = None
        self.worker_machine.fire("stop", reason="shutdown")
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)
        self.worker_machine.fire("exited")

    async def _stop_ext(self) -> None:
        if self.ext_server is not None:
            await self.ext_server.stop()

    async def _stop_power_board(self) -> None:
        if self.power_board is not None:
            await self.power_board.stop()

    async def _close_lines(self) -> None:
        if self.power_lines is not None:
            await self.power_lines.stop()

    # ------------------------------------------------------------------------------------------- status

    def machines(self) -> dict:
        out = super().machines()
        if self.handoff is not None:
            out["power"] = self.handoff.state
        if self.worker_machine is not None:
            out["worker"] = self.worker_machine.state
        return out

    def extra_status(self) -> dict:
        return {
            "ext_port": self.ext_port,
            "worker": self.worker_machine.state if self.worker_machine is not None else "not configured",
            "worker_history": self.worker_machine.recent() if self.worker_machine is not None else [],
            "stored_from_slave": self.stored_from_slave,
            "duplicates_from_slave": self.duplicates_from_slave,
            "data_root": str(self.cfg.storage.data_root),
            "power_board": self.power_board.status() if self.power_board is not None else None,
            "power_lines": self.power_lines.status() if self.power_lines is not None else None,
            "worker_pairs": self.worker_pairs,
            "web": self.web.status() if self.web is not None else None,
            "delivery": self.delivery.status() if self.delivery is not None else None,
        }


class _PausableStore:
    """The data store as the link receiver sees it: refuses writes while the disk policy pauses acquisition."""

    def __init__(self, store: Any, paused: Any):
        self._store = store
        self._paused = paused

    def save_bytes(self, name: str, data: bytes) -> Path:
        if self._paused():
            raise StorageError(f"{name}: the master's disk is full (acquisition paused); keep it and resend later")
        return self._store.save_bytes(name, data)

    def temp_for(self, name: str) -> Path:
        if self._paused():
            raise StorageError(f"{name}: the master's disk is full (acquisition paused); keep it and resend later")
        return self._store.temp_for(name)

    def save_file(self, name: str, tmp: str | Path) -> Path:
        if self._paused():
            raise StorageError(f"{name}: the master's disk is full (acquisition paused); keep it and resend later")
        return self._store.save_file(name, tmp)

    def exists(self, name: str) -> bool:
        return self._store.exists(name)

    def path_for(self, name: str) -> Path:
        return self._store.path_for(name)


def check_storage(cfg: Any) -> dict:
    """Is data_root on the SSD (or an allowed fallback)? controller/mounts.py decides and says which."""
    from controller.storage import mounts

    return mounts.check_storage(cfg.storage)


def master_clock_status(cfg: Any) -> dict:
    """The master's clock source (RTC, chrony, GPS) through S1's clocksource module."""
    from controller.timekeeping import clocksource

    try:
        return clocksource.clock_status(clocksource.master_sources(cfg))
    except (PycamError, OSError) as e:
        return {"best": None, "error": str(e)}
