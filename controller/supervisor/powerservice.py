"""The master's power handoff of the slave as a service: the GPIO lines (their own retrying service), the power
machine (controller/power/handoff.py), waking the slave at start (in the background: the station acquires with
camera A meanwhile); `stop_slave` (flushed over the link, or halted by the halt line) before the services stop."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.config import Config
from controller.errors import PycamError
from controller.hardware.gpio_service import PowerLinesService
from controller.power.handoff import LinkLike, PowerHandoff
from controller.supervisor.services import ServiceContext, cancel


class PowerService:
    name = "power"

    def __init__(self, ctx: ServiceContext, cfg: Config, link: LinkLike):
        self.ctx = ctx
        self.cfg = cfg
        self.link = link
        self.lines: PowerLinesService | None = None
        self.handoff: PowerHandoff | None = None
        self.flushed: bool | None = None  # the slave's answer when it was stopped
        self._wake_task: asyncio.Task | None = None

    async def start(self) -> None:
        from controller.hardware import factory

        # A busy line or an lgpio that cannot load is retried with backoff by the lines' service (error + fault).
        self.lines = PowerLinesService(lambda: factory.open_power_lines(self.cfg), self.ctx.log, self.ctx.note_fault)
        await self.lines.start()
        self.handoff = PowerHandoff(self.lines, self.cfg, self.ctx.clock, self.link)
        # Waking may take minutes (or never succeed): the station goes on with camera A meanwhile.
        self._wake_task = asyncio.get_running_loop().create_task(self._wake(), name="wake-slave")

    async def _wake(self) -> None:
        up = await self.handoff.wake_slave()
        if not up:
            self.ctx.note_fault("slave_never_woke", {"pulses": self.handoff.pulses})
        self.ctx.kick.set()

    async def link_changed(self, connected: bool) -> None:
        if self.handoff is not None:
            await self.handoff.link_changed(connected)

    async def _stop_waking(self) -> None:
        task, self._wake_task = self._wake_task, None
        await cancel(task)

    async def stop_slave(self) -> bool | None:
        """Stop the slave: True when it confirmed its spool was flushed to us; False when not (or the halt line had
        to be used); None when there was nothing to stop with."""
        await self._stop_waking()
        try:
            if self.handoff is not None:
                self.flushed = await self.handoff.stop_slave()
        except (PycamError, OSError) as e:
            self.ctx.log.error("stop_slave_failed", error=str(e))
        self.ctx.log.info("slave_stopped", flushed=self.flushed)
        return self.flushed

    async def stop(self) -> None:
        """Release the lines (the slave was stopped before: `stop_slave`)."""
        await self._stop_waking()
        if self.lines is not None:
            await self.lines.stop()

    def status(self) -> dict[str, Any]:
        handoff = self.handoff
        return {"state": handoff.state if handoff else None, "pulses": handoff.pulses if handoff else 0}
