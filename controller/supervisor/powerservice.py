"""The master's power handoff of the slave as a service: the GPIO lines, the power machine (controller/power.py),
waking the slave at start (in the background: the station acquires with camera A meanwhile) and stopping it
(flushed over the link, or halted by the halt line) when the service stops."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from controller.config import Config
from controller.errors import PycamError
from controller.power import LinkLike, PowerHandoff
from controller.supervisor.services import ServiceContext


class PowerLines(Protocol):
    def pulse_wake(self, seconds: float) -> None: ...

    def pulse_halt(self, seconds: float) -> None: ...

    def close(self) -> None: ...


class NoLines:
    """Power lines that do nothing: the GPIO could not be opened (status reports it)."""

    def pulse_wake(self, seconds: float) -> None:
        return None

    def pulse_halt(self, seconds: float) -> None:
        return None

    def close(self) -> None:
        return None


class PowerService:
    name = "power"

    def __init__(self, ctx: ServiceContext, cfg: Config, link: LinkLike):
        self.ctx = ctx
        self.cfg = cfg
        self.link = link
        self.lines: PowerLines | None = None
        self.handoff: PowerHandoff | None = None
        self.flushed: bool | None = None  # the slave's answer when it was stopped
        self._wake_task: asyncio.Task | None = None

    async def start(self) -> None:
        from controller.hardware import factory

        try:
            self.lines = factory.open_power_lines(self.cfg)
        except (PycamError, OSError) as e:
            self.ctx.log.error("power_lines_unavailable", error=str(e))
            self.ctx.note_fault("power_lines_unavailable", {"error": str(e)})
            self.lines = NoLines()
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

    async def stop(self) -> None:
        """Stop the slave (its spool flushed to us, or the halt line), then release the lines."""
        if self._wake_task is not None:
            self._wake_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wake_task
        try:
            if self.handoff is not None:
                self.flushed = await self.handoff.stop_slave()
        except (PycamError, OSError) as e:
            self.ctx.log.error("stop_slave_failed", error=str(e))
        finally:
            self.ctx.log.info("slave_stopped", flushed=self.flushed)
            if self.lines is not None:
                self.lines.close()

    def status(self) -> dict[str, Any]:
        handoff = self.handoff
        return {"state": handoff.state if handoff else None, "pulses": handoff.pulses if handoff else 0}
