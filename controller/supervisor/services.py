"""The parts a supervisor runs, each one object with one owner: `async start()`, `async stop()`, `status() -> dict`.

A supervisor composes them in a `ServiceGroup`: started in order, stopped in reverse order, each stop logged and
survived when it fails (one part failing to close must not keep the others open).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from controller.timekeeping.clock import Clock


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel a service's background task and wait until it is gone (None: nothing to do)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=Startable)


class ServiceGroup:
    """The services of one supervisor, in start order."""

    def __init__(self, log: Any):
        self._log = log
        self.started: list[tuple[str, Service]] = []

    async def start(self, service: S, name: str | None = None) -> S:
        """Start `service` (named `name`, else its `name`) and keep it for `stop_all` (not when its start raised)."""
        name = name or service.name
        await service.start()
        self.started.append((name, service))
        self._log.info("service_started", service=name)
        return service

    async def stop_all(self, limit_s: float | None = None) -> None:
        """Stop every started service, last started first, each for at most `limit_s` real seconds; a failure or a
        timeout is logged and the next one stopped (a hung part cannot hold the others)."""
        while self.started:
            name, service = self.started.pop()
            try:
                await asyncio.wait_for(service.stop(), limit_s)
            except TimeoutError:
                self._log.error("shutdown_step_timeout", step=name, limit_s=limit_s)
            except Exception as e:  # noqa: BLE001 - each part is closed whatever the others do
                self._log.error("shutdown_step_failed", step=name, error=repr(e))
            else:
                self._log.info("service_stopped", service=name)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: service.status() for name, service in self.started}

    def __contains__(self, name: str) -> bool:
        return any(n == name for n, _ in self.started)


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
        return link_status(self.link)


def link_status(link: LinkLike | None) -> dict[str, Any]:
    """The link's part of the status file (also before the link exists)."""
    if link is None:
        return {"state": None, "connected": False, "peer": None, "stats": {}, "refused": {}}
    return {
        "state": link.state, "connected": bool(link.connected), "peer": link.peer,
        # transfers, and peers refused (no key, a second slave, unproven master): forged attempts show here
        "stats": dict(getattr(link, "stats", None) or {}), "refused": dict(getattr(link, "refused", None) or {}),
    }  # fmt: skip
