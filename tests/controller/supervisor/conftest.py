"""In-process master + slave supervisors on loopback with a fast ScaledClock."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path

import pytest

from controller.config import Config, config_from_dict
from controller.link.auth import create_key
from controller.supervisor.base import RunOptions
from controller.timekeeping.clock import ScaledClock

# 2024-06-01T10:59:50Z: ten seconds before a window opens (half a second of real time at the usual factor 20).
START_EPOCH = 1717239590.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station_config(tmp: Path, role: str, link_port: int, ext_port: int, **over: dict) -> Config:
    data = {
        "station": {"role": role, "name": "test"},
        "network": {
            "master_host": "127.0.0.1", "link_bind": "127.0.0.1", "ext_bind": "127.0.0.1", "link_port": link_port,
            "ext_port": ext_port, "ext_port_fallbacks": [], "heartbeat_s": 0.5, "link_timeout_s": 2.0,
            "backoff_max_s": 0.2, "link_key_file": str(create_key(tmp / "link.key")),
        },
        "storage": {
            "data_root": str(tmp / role / "data"), "state_dir": str(tmp / role / "state"),
            "spool_dir": str(tmp / role / "spool"), "allow_fallback": True, "min_free_mb": 0, "resume_free_mb": 0,
        },
        "schedule": {"period_s": 4.0, "windows_utc": [["11:00", "12:00"]], "dark_time_utc": "23:30"},
        "camera": {"backend": "sim", "width": 96, "height": 72, "saturation_rows": 10},
        "spectrometer": {"backend": "sim"},
        "gpio": {"backend": "mock"},
        "power": {"hello_timeout_s": 20.0, "wake_retries": 1, "stop_timeout_s": 30.0},
        "clock": {"backend": "sim", "tolerance_ms": 50.0, "sync_samples": 3, "resync_s": 60.0},
        "processing": {"enabled": False},
        "logging": {"format": "console", "level": "warning"},
    }  # fmt: skip
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


@dataclasses.dataclass
class Pair:
    master_cfg: Config
    slave_cfg: Config
    clock_args: tuple[float, float, float]  # epoch, factor, real start

    def clock(self, offset_s: float = 0.0) -> ScaledClock:
        c = ScaledClock(self.clock_args[0], self.clock_args[1], self.clock_args[2])
        c.offset_s = offset_s
        return c

    def master(self, **opts):
        from controller.supervisor.master import MasterSupervisor

        return MasterSupervisor(self.master_cfg, self.clock(), RunOptions(**opts))

    def slave(self, offset_s: float = 0.0, **opts):
        from controller.supervisor.slave import SlaveSupervisor

        return SlaveSupervisor(self.slave_cfg, self.clock(offset_s), RunOptions(**opts))


@pytest.fixture
def station(tmp_path):
    def make(factor: float = 20.0, start: float = START_EPOCH, **over) -> Pair:
        lp, ep = free_port(), free_port()
        return Pair(
            station_config(tmp_path, "master", lp, ep, **over),
            station_config(tmp_path, "slave", lp, ep, **over),
            (start, factor, time.time()),
        )

    return make


async def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Wait (real seconds) until predicate() is true, re-checking on every loop tick of 20 ms."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def run_async(fn):
    """Run an async test function in a fresh event loop (no pytest-asyncio in this project)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper
