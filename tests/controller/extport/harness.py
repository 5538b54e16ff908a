"""A two-Pi external-port harness: master and slave SettingsStores, recording StationActions, a fake link."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from controller.config import Config, NetworkConfig
from controller.errors import LinkError
from controller.extport import protocol
from controller.extport.control import DeviceControl, MasterControl, RemoteDeviceControl, ext_request_handler
from controller.extport.server import ExtServer
from controller.settings import SettingsStore


def run(coro: Awaitable[Any], timeout_s: float = 20.0) -> Any:
    """Run one async test body with an overall timeout (a hang fails the test instead of stalling CI)."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


class RecordingActions:
    """The supervisor's StationActions as a test double: records every call; `refuse` makes a hook raise."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.refuse: dict[str, Exception] = {}
        self.files: dict[str, str] = {}  # device -> the file name a single capture reports

    async def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] in self.refuse:
            raise self.refuse[call[0]]

    async def capture_single(self, device: str, kind: str) -> str | None:
        await self._record("capture_single", device, kind)
        return self.files.get(device)

    async def start_continuous(self, kind: str) -> None:
        await self._record("start_continuous", kind)

    async def stop_continuous(self, kind: str) -> None:
        await self._record("stop_continuous", kind)

    async def dark_series(self, kind: str) -> None:
        await self._record("dark_series", kind)

    async def restart_backend(self, kind: str) -> None:
        await self._record("restart_backend", kind)

    async def exit(self) -> None:
        await self._record("exit")

    async def restart(self) -> None:
        await self._record("restart")


def make_config(**network: Any) -> Config:
    base = Config()
    return dataclasses.replace(base, network=dataclasses.replace(NetworkConfig(), **network))


class FakeLink:
    """The link's `request` as the master sees it, delivering to the slave's ext handler; `up` cuts it."""

    def __init__(self, handler: Callable[[dict], Awaitable[dict]]):
        self.handler = handler
        self.up = True
        self.hang = False
        self.requests: list[tuple[str, dict]] = []

    async def request(self, kind: str, body: dict, timeout_s: float) -> dict:
        self.requests.append((kind, body))
        if not self.up:
            raise LinkError("link down")
        if self.hang:
            await asyncio.sleep(timeout_s)  # a link that never answers: the link's own timeout
            raise LinkError(f"no answer within {timeout_s} s")
        return await self.handler(body)


@dataclasses.dataclass
class Station:
    cfg: Config
    master_store: SettingsStore
    slave_store: SettingsStore
    master_actions: RecordingActions
    slave_actions: RecordingActions
    link: FakeLink
    control: MasterControl
    server: ExtServer
    port: int = 0


def build_station(state_root: Path, cfg: Config | None = None, ports: tuple[int, ...] = (0,), **kw: Any) -> Station:
    """Stores under state_root/{master,slave}; the server is not started yet."""
    cfg = cfg or make_config()
    master_store = SettingsStore(state_root / "master", cfg)
    slave_store = SettingsStore(state_root / "slave", cfg)
    master_actions, slave_actions = RecordingActions(), RecordingActions()
    slave = DeviceControl(slave_store, slave_actions, protocol.SLAVE_IDENTITIES)
    link = FakeLink(ext_request_handler(slave))
    remote = RemoteDeviceControl(link.request, timeout_s=kw.pop("remote_timeout_s", 5.0))
    control = MasterControl(DeviceControl(master_store, master_actions, protocol.MASTER_IDENTITIES), remote)
    server = ExtServer(cfg, control, ports=ports, bind="127.0.0.1", **kw)
    return Station(cfg, master_store, slave_store, master_actions, slave_actions, link, control, server)
