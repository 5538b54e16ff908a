"""The parts a supervisor runs, each one object with one owner: `async start()`, `async stop()`, `status() -> dict`.

A supervisor composes them in a `ServiceGroup`: started in order, stopped in reverse order, each stop logged and
survived when it fails (one part failing to close must not keep the others open).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from controller.clock import Clock


@dataclass(frozen=True)
class ServiceContext:
    """What a service may use of its supervisor: the clock, the log, noting a fault (for `pycam status`) and waking
    the supervisor's main coroutine to re-evaluate the station's state."""

    clock: Clock
    log: Any
    note_fault: Callable[[str, dict], None]
    kick: asyncio.Event


@runtime_checkable
class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class ServiceGroup:
    """The services of one supervisor, in start order."""

    def __init__(self, log: Any):
        self._log = log
        self.started: list[Service] = []

    async def start(self, service: Service) -> Service:
        """Start `service` and keep it for `stop_all` (not kept when its start raised)."""
        await service.start()
        self.started.append(service)
        self._log.info("service_started", service=service.name)
        return service

    async def stop_all(self) -> None:
        """Stop every started service, last started first; a failure is logged and the next one stopped."""
        while self.started:
            service = self.started.pop()
            try:
                await service.stop()
            except Exception as e:  # noqa: BLE001 - each part is closed whatever the others do
                self._log.error("service_stop_failed", service=service.name, error=repr(e))
            else:
                self._log.info("service_stopped", service=service.name)

    def status(self) -> dict[str, dict[str, Any]]:
        return {s.name: s.status() for s in self.started}

    def __contains__(self, name: str) -> bool:
        return any(s.name == name for s in self.started)


class LinkLike(Protocol):
    state: str
    connected: bool

    @property
    def peer(self) -> dict[str, Any]: ...

    async def start(self) -> Any: ...

    async def stop(self) -> None: ...


class LinkService:
    """The master<->slave link (controller/link) as one of the supervisor's services."""

    name = "link"

    def __init__(self, link: LinkLike):
        self.link = link

    async def start(self) -> None:
        await self.link.start()

    async def stop(self) -> None:
        await self.link.stop()

    def status(self) -> dict[str, Any]:
        return {"state": self.link.state, "connected": bool(self.link.connected), "peer": self.link.peer}
