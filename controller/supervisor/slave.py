"""The slave's supervisor: camera B and the spectrometer on the master's slot plan, files into the spool.

The slave needs the master for two things only: the slot plan and its time. Once it has both it keeps capturing
into its spool when the link drops (degraded), with the last measured offset, and the link ships the backlog when
it is back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controller.acquisition import SlotPlan
from controller.errors import LinkError
from controller.link.slave import SlaveLink
from controller.link.spool import Spool
from controller.storage.atomic import atomic_write_text
from controller.storage.names import ImageName, SpectrumName
from controller.supervisor.actions import SupervisorActions
from controller.supervisor.base import Supervisor
from controller.supervisor.disk import DiskService
from controller.supervisor.services import LinkService
from controller.timekeeping import TimeSource, make_time_source, time_agreement

PLAN_FILE = "plan.json"
SYNC_RETRY_S = 5.0  # clock seconds between offset measurements while out of tolerance
FLUSH_TIMEOUT_S = 120.0


class SlaveSupervisor(Supervisor):
    role = "slave"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.spool: Spool | None = None
        self.actions = SupervisorActions(self)
        self.last_sync = -1e18  # local monotonic of the last offset measurement
        self.rtt_s: float | None = None
        self.sync_failures = 0
        self._stopped_by_master = asyncio.Event()
        self._offset_fault_noted = False
        self._chrony_update: float | None = None  # chrony's ref time when we last read it
        self.time_source: TimeSource = make_time_source(self.cfg, self.clock, self.link_sample)

    async def boot_services(self) -> None:
        from controller.disk_policy import DiskPolicy
        from controller.extport import protocol
        from controller.extport.control import DeviceControl, ext_request_handler
        from controller.hardware import factory
        from controller.power.handoff import slave_stop_handler
        from controller.settings import SettingsStore

        loop = asyncio.get_running_loop()
        self.settings = SettingsStore(self.state_dir, self.base_cfg)
        cfg = self.cfg
        self.spool = Spool(cfg.storage.spool_dir)
        # Unsent files are never deleted: a full spool disk pauses captures until the master has drained it.
        policy = DiskPolicy(
            cfg.storage, cfg.storage.spool_dir, today=lambda: "", is_processed=lambda p: False,
            is_transferred=lambda p: False,
        )  # fmt: skip
        self.disk = await self.services.start(DiskService(self.ctx, policy))
        if "sim" in (cfg.camera.backend, cfg.spectrometer.backend):
            self.scene = await loop.run_in_executor(None, factory.make_scene, cfg)
        self.add_device("B", lambda: factory.open_camera(self.cfg, "B", self.clock, scene=self.scene), self._store)
        if cfg.spectrometer.backend != "none":
            self.add_device("S", lambda: factory.open_spectrometer(self.cfg, self.clock, scene=self.scene), self._store)
        await self.open_devices()
        self._load_plan()
        self.link = SlaveLink(cfg, self.clock, self.spool)
        self.link.add_listener(self._link_event)
        self.link.on_request("schedule", self._schedule_request)
        self.link.on_request("status", self._status_request)
        self.link.on_request(
            "ext", ext_request_handler(DeviceControl(self.settings, self.actions, protocol.SLAVE_IDENTITIES))
        )
        self.link.on_request("stop", slave_stop_handler(self._flush_for_stop, self._stopped))
        await self.services.start(LinkService(self.link))

    def link_sample(self) -> tuple[float, float] | None:
        """The last offset to the master measured over the link and when (clock monotonic), or None."""
        return None if self.rtt_s is None else (self.offset_s, self.last_sync)

    # ---------------------------------------------------------------------------------------------- events

    def _link_event(self, event: str, info: dict) -> None:
        if event == "disconnected":
            self.note_link_down(info)
        self.kick.set()

    async def _schedule_request(self, body: dict) -> dict:
        try:
            plan = SlotPlan.from_dict(body)
        except (KeyError, TypeError, ValueError) as e:
            return {"ok": False, "error": f"bad schedule: {e}"}
        if plan != self.plan:
            self.plan = plan
            self._save_plan()
            self.log.info("schedule_received", **plan.to_dict())
        self.kick.set()
        if self.slot_loop is not None:
            self.slot_loop.wake()
        return {"ok": True}

    async def _status_request(self, body: dict) -> dict:
        spool = self.spool
        # The date folders still waiting here: the master's disk policy never counts those days as complete.
        days = await asyncio.get_running_loop().run_in_executor(None, spool.days) if spool is not None else []
        return {"state": self.station.state, "spool": len(spool) if spool is not None else None, "spool_days": days}

    async def _flush_for_stop(self, timeout_s: float) -> bool:
        # The master is stopping us: no more captures, then everything in the spool must reach it.
        self.request_stop("master stop request")
        await self.stop_slot_loop()
        await self.actions.wait_idle(timeout_s / 2)
        return bool(await self.link.flush(timeout_s))

    def _stopped(self) -> None:
        self._stopped_by_master.set()
        self.kick.set()

    async def _store(self, name: ImageName | SpectrumName, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.spool.add, name, data)
        self.link.spool_notify()

    def _save_plan(self) -> None:
        # The plan survives a slave restart: with the link down it still knows when to capture.
        try:
            atomic_write_text(self.state_dir / PLAN_FILE, json.dumps(self.plan.to_dict()))
        except OSError as e:
            self.log.warning("plan_save_failed", error=str(e))

    def _load_plan(self) -> None:
        try:
            self.plan = SlotPlan.from_dict(json.loads((self.state_dir / PLAN_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            self.plan = None

    # ---------------------------------------------------------------------------------------------- clock

    async def measure(self) -> bool:
        """chrony's state and the offset to the master measured over the link; True when chrony is synchronised,
        the link's offset is within tolerance and both agree. The project never sets the clock: chrony does."""
        if not self.link.connected:
            return self.offset_ok  # keep the last good offset while the link is down
        chrony = await asyncio.get_running_loop().run_in_executor(None, self.time_source.status)
        self.clock_source = chrony
        try:
            offset, rtt = await self.link.measure_offset(self.cfg.clock.sync_samples)
        except (LinkError, TimeoutError) as e:
            self.log.warning("offset_measure_failed", error=str(e))
            return self.offset_ok
        self.last_sync = self.clock.monotonic()
        self.rtt_s = rtt
        self.offset_s = offset
        tolerance = self.cfg.clock.tolerance_ms / 1000.0
        ok, why = time_agreement(chrony, offset, tolerance)
        stepped = chrony.get("last_offset_s") if chrony.get("ref_time_s") != self._chrony_update else None
        self._chrony_update = chrony.get("ref_time_s")
        if stepped is not None and abs(stepped) > tolerance:
            # chrony corrected this clock by more than the tolerance since we last looked (a step, or the first sync).
            self.note_fault("clock_offset", {"offset_ms": round(stepped * 1000, 1), "why": "corrected by chrony"})
        elif abs(offset) > tolerance and not self._offset_fault_noted:
            # Once per bad spell (note_fault wakes the main loop: noting every attempt would spin the sync phase).
            # chrony not synchronised yet is a wait, not a fault.
            self.note_fault("clock_offset", {"offset_ms": round(offset * 1000, 1), "why": why})
        self._offset_fault_noted = abs(offset) > tolerance
        if ok != self.offset_ok:
            self.log.info(
                "clock_offset", offset_ms=round(offset * 1000, 3), rtt_ms=round(rtt * 1000, 3), ok=ok, why=why,
                chrony_synchronised=bool(chrony.get("synchronised")), chrony_selected=chrony.get("selected"),
            )  # fmt: skip
        self.offset_ok = ok
        return ok

    # --------------------------------------------------------------------------------------------- phases

    async def sync_phase(self) -> None:
        while self.station.state == "sync":
            if self.stop_requested:
                self.station.fire_if("stop", reason=self.stop_requested)
                return
            if self.link.connected and await self.measure():
                self.station.fire_if("synced", reason=f"offset {self.offset_s * 1000:.1f} ms")
                return
            if self.link.connected:
                self.sync_failures += 1
                self.station.fire_if("offset_bad", reason=f"offset {self.offset_s * 1000:.1f} ms")
            await self.wait_kick(SYNC_RETRY_S)

    def in_window(self) -> bool:
        return self.plan is not None and self.plan.in_window(self.master_time())

    async def running_phase(self) -> None:
        self.start_slot_loop()
        resync_s = self.cfg.clock.resync_s
        while self.station.state in ("acquire", "degraded", "paused"):
            self.check_disk(only_while_paused=True)
            if self._stopped_by_master.is_set():
                self.request_stop("master stop request")
            if self.clock.monotonic() - self.last_sync >= resync_s and self.link.connected:
                if not await self.measure():
                    self.station.fire_if("clock_lost", reason=f"offset {self.offset_s * 1000:.1f} ms")
                    break
            ended = await self.reconcile_running()
            if ended:
                break
            plan = self.plan
            until_end = None if plan is None or plan.end_s is None else plan.end_s - self.master_time()
            until_sync = resync_s - (self.clock.monotonic() - self.last_sync)
            until_recheck = self.suspended_recheck_s()
            waits = [w for w in (until_end, until_sync, until_recheck) if w is not None]
            await self.wait_kick(max(0.0, min(waits)) if waits else None)
        if self.station.state != "acquire":
            await self.stop_slot_loop()

    async def process_phase(self) -> None:
        # The slave's process phase: make sure the master has every file.
        if self.link.connected:
            await self.link.flush(FLUSH_TIMEOUT_S / max(self.clock.scale(), 1e-9))
        self.station.fire_if("processed", reason=f"spool {len(self.spool)} files")

    async def sleep_phase(self) -> None:
        plan = self.plan
        until = None
        if plan is not None and plan.start_s is not None and plan.start_s > self.master_time():
            until = plan.start_s - self.master_time()
        await self.wait_kick(until)
        if self.stop_requested or self._stopped_by_master.is_set():
            self.station.fire_if("stop", reason=self.stop_requested or "master stop request")
        elif self.in_window():
            self.station.fire_if("window_start", reason="acquisition window")

    def shutdown_after_process(self) -> bool:
        return self.stop_requested is not None or self._stopped_by_master.is_set()

    async def shutdown_phase(self) -> None:
        await self.stop_slot_loop()
        await self.actions.wait_idle(self.stop_time_left(FLUSH_TIMEOUT_S / max(self.clock.scale(), 1e-9)))
        flushed = None
        if self.link is not None and self.link.connected and len(self.spool):
            flushed = await self.link.flush(self.stop_time_left(FLUSH_TIMEOUT_S / max(self.clock.scale(), 1e-9)))
        if self.stop_requested == "master stop request":
            # Let the "flushed" answer reach the master before the link closes.
            try:
                await asyncio.wait_for(self._stopped_by_master.wait(), 5.0)
            except TimeoutError:
                self.log.warning("stop_reply_not_confirmed")
            await asyncio.sleep(0.1)
        await self.services.stop_all()
        await self.close_devices()
        self.station.fire_if("halted", reason=f"spool flushed={flushed}, {len(self.spool)} left")
        if self.restart_requested:
            self.exit_code = 75

    def extra_status(self) -> dict:
        return {
            "spool": len(self.spool) if self.spool is not None else None,
            "rtt_ms": None if self.rtt_s is None else round(self.rtt_s * 1000, 3),
            "sync_failures": self.sync_failures,
        }
