"""Helpers for the link tests: fast link timers, free ports, valid station file names, a running pair."""

from __future__ import annotations

import contextlib
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.config import Config, config_from_dict
from controller.link.auth import create_key
from controller.link.master import MasterLink
from controller.link.receiver import FileReceiver
from controller.link.slave import SlaveLink
from controller.link.spool import Spool
from controller.sim.faults import FaultyProxy, faulty_proxy
from controller.storage.names import ImageName, SpectrumName
from controller.timekeeping.clock import SystemClock

FAST = {"heartbeat_s": 0.05, "link_timeout_s": 0.4, "backoff_max_s": 0.1}
# For tests whose point is that nothing reconnects: a peer counts as silent only after 5 s, so a busy machine (an
# event loop held up longer than FAST's 0.4 s) cannot cause a reconnect the test did not make. Heartbeats stay fast.
STEADY = {"link_timeout_s": 5.0}
_KEY: dict[str, Path] = {}  # the link key every test station shares, made once per test session


@pytest.fixture(autouse=True, scope="session")
def _link_key(tmp_path_factory):
    _KEY["file"] = create_key(tmp_path_factory.mktemp("linkkey") / "link.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_config(port: int, **network) -> Config:
    net = {
        "master_host": "127.0.0.1", "link_bind": "127.0.0.1", "link_port": port, "link_key_file": str(_KEY["file"]),
        **FAST, **network,
    }  # fmt: skip
    return config_from_dict({"network": net})


def station_names(n: int, start: datetime | None = None) -> list[str]:
    """n distinct valid names, in capture order: B images and spectra, one slot every 4 s."""
    t0 = start or datetime(2024, 3, 26, 14, 0, 0, tzinfo=UTC)
    names = []
    for i in range(n):
        t = t0 + timedelta(seconds=4 * (i // 2))
        if i % 2 == 0:
            names.append(str(ImageName(t, "B", 1, 1000 + i, "Plume")))
        else:
            names.append(str(SpectrumName(t, 100, 1, "Plume")))
    return names


class LinkPair:
    """A master and a slave on temp dirs; either can be replaced by a new object on the same dirs."""

    def __init__(self, tmp: Path, master_cfg: Config, slave_cfg: Config | None = None, window: int = 8):
        self.data_root = tmp / "data"
        self.spool_dir = tmp / "spool"
        self.master_cfg = master_cfg
        self.slave_cfg = slave_cfg or master_cfg
        self.window = window
        self.master: MasterLink | None = None
        self.slave: SlaveLink | None = None
        self.spool = Spool(self.spool_dir)

    async def start_master(self) -> MasterLink:
        self.master = MasterLink(self.master_cfg, SystemClock(), FileReceiver(self.data_root))
        await self.master.start()
        return self.master

    async def start_slave(self) -> SlaveLink:
        self.spool = Spool(self.spool_dir)
        self.slave = SlaveLink(self.slave_cfg, SystemClock(), self.spool, window=self.window)
        await self.slave.start()
        return self.slave

    async def stop(self) -> None:
        if self.slave is not None:
            await self.slave.stop()
        if self.master is not None:
            await self.master.stop()

    def stored(self) -> dict[str, Path]:
        files = [p for p in self.data_root.rglob("*") if p.is_file()]
        by_name: dict[str, Path] = {}
        for p in files:
            assert p.name not in by_name, f"{p.name} stored twice"
            by_name[p.name] = p
        return by_name


class EventCounter:
    """Counts one listener event of a link end; tests wait on it instead of polling."""

    def __init__(self, link, event: str):
        import asyncio

        self.event = event
        self.infos: list[dict] = []
        self._changed = asyncio.Event()
        link.add_listener(self._on_event)

    def _on_event(self, event: str, info: dict) -> None:
        if event == self.event:
            self.infos.append(info)
            self._changed.set()

    async def wait(self, count: int = 1, timeout_s: float = 30.0) -> None:
        import asyncio

        async def reached() -> None:
            while len(self.infos) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reached(), timeout_s)


@pytest.fixture
def port() -> int:
    return free_port()


def run(coro, timeout_s: float = 60.0):
    """Run a coroutine in a fresh loop with a hard timeout (no pytest-asyncio in this project). On timeout the
    stacks of all tasks are printed, so a hang shows where it waits."""
    import asyncio

    async def bounded():
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait([task], timeout=timeout_s)
        if not done:
            for other in asyncio.all_tasks():
                if other is not asyncio.current_task():
                    other.print_stack(limit=4)
            task.cancel()
            raise TimeoutError(f"scenario did not finish within {timeout_s} s")
        return task.result()

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def proxied_pair(tmp: Path, port: int, network: dict | None = None, **pair_kwargs):
    """A running master on `port` and a fault-injecting proxy in front of it; the slave (not started) dials
    the proxy. `network` overrides link settings of both ends. Everything is stopped on exit."""
    pair = LinkPair(tmp, link_config(port, **(network or {})), **pair_kwargs)
    await pair.start_master()
    proxy: FaultyProxy
    async with faulty_proxy("127.0.0.1", port) as proxy:
        pair.slave_cfg = link_config(proxy.port, **(network or {}))
        try:
            yield pair, proxy
        finally:
            await pair.stop()
