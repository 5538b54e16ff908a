"""The master's supervisor: camera A, the data store, and its services (link server, disk suspender, external port,
processing worker, power handoff of the slave, daily darks), started in that order and stopped in reverse."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.acquisition import SlotPlan
from controller.config import Config
from controller.errors import LinkError, PycamError
from controller.hardware.gpio_service import PowerLinesService
from controller.link.master import MasterLink
from controller.link.receiver import FileReceiver, open_store
from controller.power.board import PowerBoardMonitor
from controller.power.handoff import PowerHandoff
from controller.schedule import StationSchedule
from controller.storage.datastore import DataStore
from controller.storage.index import FileName
from controller.storage.names import ImageName
from controller.supervisor.actions import SupervisorActions
from controller.supervisor.base import Supervisor
from controller.supervisor.darks import DarkSchedule
from controller.supervisor.disk import DiskService
from controller.supervisor.extservice import ExtService
from controller.supervisor.powerservice import PowerService
from controller.supervisor.services import LinkService
from controller.supervisor.store import StationStore
from controller.supervisor.workerservice import WorkerService, processing_out_dir

if TYPE_CHECKING:
    from controller.delivery.service import DeliveryService
    from controller.disk_policy import DayLedger
    from controller.extport.server import ExtServer
    from controller.web.service import WebService
    from processing.worker import Journal


class MasterSupervisor(Supervisor):
    role = "master"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.actions = SupervisorActions(self)
        self.store: StationStore | None = None
        self.receiver: FileReceiver | None = None
        self.ext: ExtService | None = None
        self.worker_service: WorkerService | None = None
        self.power: PowerService | None = None
        self.power_board: PowerBoardMonitor | None = None
        self.web: WebService | None = None  # when [web] is enabled
        self.delivery: DeliveryService | None = None  # when [delivery] is enabled
        self.darks = DarkSchedule(self.state_dir, lambda: self.cfg, self.master_time, self._run_darks, self.log)
        self.day_ledger: DayLedger | None = None  # from boot on
        self.stored_from_slave = 0
        self.duplicates_from_slave = 0

    @property
    def schedule(self) -> StationSchedule:
        return StationSchedule(self.cfg)

    @property
    def ext_port(self) -> int | None:
        return self.ext.port if self.ext is not None else None

    @property
    def ext_server(self) -> ExtServer | None:
        return self.ext.server if self.ext is not None else None

    @property
    def handoff(self) -> PowerHandoff | None:
        return self.power.handoff if self.power is not None else None

    @property
    def power_lines(self) -> PowerLinesService | None:
        return self.power.lines if self.power is not None else None

    # ------------------------------------------------------------------------------------------------- boot

    async def boot_services(self) -> None:
        from controller.settings import SettingsStore

        loop = asyncio.get_running_loop()
        self.settings = SettingsStore(self.state_dir, self.base_cfg)
        cfg = self.cfg
        await self._start_outward()  # first: the page also shows a boot that fails (fault, retries)
        self.storage_check = await loop.run_in_executor(None, check_storage, cfg)
        if not self.storage_check.get("ok", False):
            raise PycamError(f"storage check failed: {self.storage_check.get('reason')}")
        datastore = open_store(cfg.storage.data_root, cfg.storage.flat_copy_dir)
        await loop.run_in_executor(None, datastore.index.scan)  # once, before anything is written or deleted
        self.store = StationStore(datastore, lambda: self.disk is not None and self.disk.paused)
        self.receiver = FileReceiver(self.store)
        from controller.hardware import factory

        if cfg.camera.backend == "sim":
            self.scene = await loop.run_in_executor(None, factory.make_scene, cfg)
        self.add_device("A", lambda: factory.open_camera(self.cfg, "A", self.clock, scene=self.scene), self.store.sink)
        await self.open_devices()
        self.link = MasterLink(cfg, self.slot_clock, self.receiver)  # time answers on the slot timeline
        self.link.add_listener(self._link_event)
        self.link.on_request("status", self._status_request)
        await self.services.start(LinkService(self.link))
        self.disk = await self.services.start(self._disk_service(datastore))
        self.ext = await self.services.start(ExtService(self.ctx, self.settings, self.actions, self.link))
        if cfg.processing.enabled:
            self.worker_service = await self.services.start(WorkerService(self.ctx, cfg))
            self.store.consumers.append(self.worker_service.notify)  # store -> worker
            if self.delivery is not None:
                self.worker_service.on_pair.append(self.delivery.notify)  # new results pushed now
        self.power = await self.services.start(PowerService(self.ctx, cfg, self.link))
        self.power_board = await self.services.start(PowerBoardMonitor(), name="power_board")
        await self.services.start(self.darks)

    async def _start_outward(self) -> None:
        """The status page and the delivery to the observatory, each when its config enables it; one that cannot
        start is a fault and the station acquires without it (status says so)."""
        from controller.web.outward import make_outward

        for name, service in make_outward(self).items():
            if service is None or name in self.services:  # disabled, or a boot retried after a fault: running
                continue
            try:
                setattr(self, name, await self.services.start(service, name=name))
            except OSError as e:
                self.log.error(f"{name}_unavailable", error=str(e))
                self.note_fault(f"{name}_unavailable", {"error": str(e)})

    def _disk_service(self, datastore: DataStore) -> DiskService:
        from controller.disk_policy import LEDGER_NAME, DayLedger, DiskPolicy

        self.day_ledger = DayLedger(self.state_dir / LEDGER_NAME)
        policy = DiskPolicy(
            self.cfg.storage, self.cfg.storage.data_root, today=self._today, is_processed=self._is_processed,
            day_complete=lambda day: day in self.day_ledger, index=datastore.index,
            delete=datastore.remove,  # drops the flat copy too: its hard link would keep the space in use
        )  # fmt: skip
        return DiskService(self.ctx, policy)

    def processing_out_dir(self) -> Path:
        return processing_out_dir(self.cfg)

    def _today(self) -> str:
        return datetime.fromtimestamp(self.master_time(), tz=UTC).strftime("%Y-%m-%d")

    def _worker_journal(self) -> Journal | None:
        return self.worker_service.journal() if self.worker_service is not None else None

    def _is_processed(self, name: FileName) -> bool:
        """From the worker's journal: the pair (or spectrum) of this file's slot was processed (`name` is the
        data store's record: parsed once, when the store wrote or first scanned it)."""
        journal = self._worker_journal()
        kind = "pairs" if isinstance(name, ImageName) else "spectra"
        return journal is not None and (kind, name.time_key) in journal

    async def record_completed_days(self) -> list[str]:
        """Record the days that are processed and all on the master (the disk policy's durable knowledge)."""
        from controller.disk_policy import record_completed_days

        journal = self._worker_journal()
        if journal is None or self.day_ledger is None or self.store is None:
            return []
        pending = await self.slave_spool_days()
        days = await asyncio.get_running_loop().run_in_executor(
            None, record_completed_days, self.store.index, self.day_ledger, self._today(),
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

    # --------------------------------------------------------------------------------------------- events

    def _link_event(self, event: str, info: dict) -> None:
        if event == "connected":
            asyncio.get_running_loop().create_task(self._slave_connected())
        elif event == "disconnected":
            self.note_link_down(info)
            if self.power is not None:
                asyncio.get_running_loop().create_task(self.power.link_changed(False))
        elif event == "file_stored" and (info or {}).get("status") == "duplicate":
            self.duplicates_from_slave += 1
        elif event == "file_stored":
            self.stored_from_slave += 1
        self.kick.set()

    async def _slave_connected(self) -> None:
        if self.power is not None:
            await self.power.link_changed(True)  # idempotent: wake_slave() may report the same hello
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

    # ------------------------------------------------------------------------------------------- phases

    def make_plan(self) -> SlotPlan | None:
        """The slot plan of the window we are in (controller/schedule.py: UTC windows and solar elevation)."""
        bounds = self.schedule.window_bounds(self.master_time())
        if bounds is None:
            return None
        return SlotPlan(self.cfg.schedule.period_s, 0.0, bounds[0], bounds[1])

    async def sync_phase(self) -> None:
        self.clock_source = await asyncio.get_running_loop().run_in_executor(None, master_clock_status, self.cfg)
        self.offset_s, self.offset_ok = 0.0, True  # the master's clock is the station's time
        self.plan = self.make_plan()
        await self.send_schedule()
        self.station.fire_if("synced", reason=f"clock source {self.clock_source.get('source')}")

    async def running_phase(self) -> None:
        self.start_slot_loop()
        while self.station.state in ("acquire", "degraded", "paused"):
            self.check_disk(only_while_paused=True)
            ended = await self.reconcile_running()
            if ended:
                break
            plan = self.plan
            until_end = None if plan is None or plan.end_s is None else plan.end_s - self.master_time()
            waits = [w for w in (until_end, self.suspended_recheck_s()) if w is not None]
            await self.wait_kick(min(waits) if waits else None)
        await self.stop_slot_loop()

    async def process_phase(self) -> None:
        if self.stop_requested is None:
            # Today's darks, when their time falls between this window's end and the next window.
            now, dark_at = self.master_time(), self.darks.next_time()
            if not self.darks.taken_today() and now < dark_at < self.schedule.next_window_start(now):
                await self.wait_kick(dark_at - now)
            await self.darks.run_if_due()
            if self.worker_service is not None:
                await self.worker_service.drain()
            days = await self.record_completed_days()
            if days:
                self.log.info("days_complete", days=days)
            self.check_disk()
        self.station.fire_if("processed", reason="darks, backlog, products, housekeeping")

    async def _run_darks(self) -> None:
        await self.actions.run_dark_series("cameras", announce=False)
        await self.actions.run_dark_series("spectrometer", announce=False)

    async def sleep_phase(self) -> None:
        now = self.master_time()
        start = self.schedule.next_window_start(now)
        await self.wait_kick(min(start, self.darks.next_time()) - now)
        if self.stop_requested:
            self.station.fire_if("stop", reason=self.stop_requested)
            return
        await self.darks.run_if_due()
        if self.master_time() >= start or self.schedule.in_window(self.master_time()):
            self.station.fire_if("window_start", reason="acquisition window")

    async def shutdown_phase(self) -> None:
        await self.stop_slot_loop()
        # The slave is flushed and stopped first, bounded by the whole stop's budget (not one step's limit).
        flushed = await self.power.stop_slave() if self.power is not None else None
        await self.services.stop_all(self.stop_step_limit_s)  # each for at most one step's limit, the link last
        await self.close_all([("devices", self.close_devices)])
        self.station.fire_if("halted", reason=f"slave flushed={flushed}")
        if self.restart_requested:
            self.exit_code = 75  # systemd restarts on failure; the unit treats 75 as "restart me"

    # ------------------------------------------------------------------------------------------- status

    def machines(self) -> dict:
        out = super().machines()
        if self.handoff is not None:
            out["power"] = self.handoff.state
        if self.worker_service is not None:
            out["worker"] = self.worker_service.machine.state
        return out

    def extra_status(self) -> dict:
        worker = self.worker_service
        return {
            "ext_port": self.ext_port,
            "worker": worker.machine.state if worker is not None else "not configured",
            "worker_history": worker.machine.recent() if worker is not None else [],
            "stored_from_slave": self.stored_from_slave,
            "duplicates_from_slave": self.duplicates_from_slave,
            "data_root": str(self.cfg.storage.data_root),
            "power_board": self.power_board.status() if self.power_board is not None else None,
            "power_lines": self.power_lines.status() if self.power_lines is not None else None,
            "worker_pairs": worker.pairs if worker is not None else 0,
            "web": self.web.status() if self.web is not None else None,
            "delivery": self.delivery.status() if self.delivery is not None else None,
        }


def check_storage(cfg: Config) -> dict:
    """Is data_root on the SSD (or an allowed fallback)? controller/storage/mounts.py decides and says which."""
    from controller.storage import mounts

    return mounts.check_storage(cfg.storage)


def master_clock_status(cfg: Config) -> dict:
    """The master's clock source (RTC, chrony, GPS) through the clocksource module."""
    from controller.timekeeping import clocksource

    try:
        return clocksource.clock_status(clocksource.master_sources(cfg))
    except (PycamError, OSError) as e:
        return {"best": None, "error": str(e)}
