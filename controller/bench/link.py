"""Link benchmark: backlog throughput on loopback and reconnection time after a peer restart.

Figures, not pass/fail: `run_link_bench()` returns a dict that `pycam bench link --json` prints.

- throughput: a spool backlog of image-size files (a 648x486 uint16 PNG is ~630 KB) drained to a master on
  loopback, sha256 on both sides, atomic fsynced writes on the master. Both link ends run in this one process
  and event loop (on the station they are two Pis), so the figure is a lower bound.
- reconnect: the master is stopped, stays down long enough for the slave's backoff to reach its cap, and is
  started again (new object, same port); the time from its listening socket being up to the slave's link being
  up. Also the time from a restarted slave to the master seeing the new session.
- request round trip: master -> slave request/reply (the path of forwarded camera B / spectrometer commands),
  median and p99.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.config import Config, config_from_dict
from controller.link.auth import create_key
from controller.link.master import MasterLink
from controller.link.receiver import FileReceiver
from controller.link.slave import DEFAULT_WINDOW, SlaveLink
from controller.link.spool import Spool
from controller.storage.names import ImageName
from controller.timekeeping.clock import SystemClock

IMAGE_BYTES = 630_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bench_config(backoff_max_s: float, root: Path) -> Config:
    return config_from_dict(
        {
            "network": {
                "link_key_file": str(create_key(root / "link.key")),
                "master_host": "127.0.0.1",
                "link_bind": "127.0.0.1",
                "link_port": _free_port(),
                "heartbeat_s": 0.5,
                "link_timeout_s": 3.0,
                "backoff_max_s": backoff_max_s,
            }
        }
    )


def _image_names(n: int) -> list[str]:
    t0 = datetime(2024, 3, 26, 12, 0, 0, tzinfo=UTC)
    return [str(ImageName(t0 + timedelta(seconds=4 * i), "B", 1, 10_000, "Plume")) for i in range(n)]


async def _throughput(root: Path, files: int, file_bytes: int, window: int, backoff_max_s: float) -> dict[str, Any]:
    cfg = _bench_config(backoff_max_s, root)
    spool = Spool(root / "spool")
    # Incompressible bytes of PNG size: the link neither knows nor cares what is inside.
    payload = os.urandom(file_bytes)
    for i, name in enumerate(_image_names(files)):
        spool.add(name, i.to_bytes(4, "big") + payload[4:])
    master = MasterLink(cfg, SystemClock(), FileReceiver(root / "data"))
    slave = SlaveLink(cfg, SystemClock(), spool, window=window)
    await master.start()
    t0 = time.perf_counter()
    await slave.start()
    drained = await slave.flush(timeout_s=600)
    elapsed = time.perf_counter() - t0
    await slave.stop()
    await master.stop()
    stored = sum(1 for p in (root / "data").rglob("*.png"))
    total = files * file_bytes
    return {
        "files": files,
        "file_bytes": file_bytes,
        "window_files": window,
        "drained": drained and stored == files,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(total / elapsed / 1e6, 1),
        "files_per_s": round(files / elapsed, 1),
    }


async def _request_rtt(root: Path, n: int) -> dict[str, Any]:
    cfg = _bench_config(0.5, root)
    master = MasterLink(cfg, SystemClock(), FileReceiver(root / "qdata"))
    slave = SlaveLink(cfg, SystemClock(), Spool(root / "qspool"))

    async def status(body: dict[str, Any]) -> dict[str, Any]:
        return {"state": "acquire", "echo": body}

    slave.on_request("status", status)
    await master.start()
    await slave.start()
    if not await master.wait_connected(10):
        raise RuntimeError("bench: the slave never connected")
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await master.request("status", {"i": i}, timeout_s=5)
        samples.append(time.perf_counter() - t0)
    await slave.stop()
    await master.stop()
    samples.sort()
    return {
        "requests": n,
        "median_ms": round(statistics.median(samples) * 1e3, 3),
        "p99_ms": round(samples[min(n - 1, int(0.99 * n))] * 1e3, 3),
    }


async def _reconnect(root: Path, restarts: int, backoff_max_s: float) -> dict[str, Any]:
    cfg = _bench_config(backoff_max_s, root)
    # down long enough for the slave's backoff to reach its cap: the worst case for the reconnect
    down_s = backoff_max_s * 1.5 + 0.2
    receiver = FileReceiver(root / "rdata")
    master = MasterLink(cfg, SystemClock(), receiver)
    await master.start()
    slave = SlaveLink(cfg, SystemClock(), Spool(root / "rspool"))
    await slave.start()
    if not await slave.wait_connected(10):
        raise RuntimeError("bench: the slave never connected")
    master_side: list[float] = []
    for _ in range(restarts):
        await master.stop()
        await asyncio.sleep(down_s)
        master = MasterLink(cfg, SystemClock(), receiver)
        await master.start()
        t0 = time.perf_counter()
        if not await slave.wait_connected(10 + backoff_max_s):
            raise RuntimeError("bench: the slave did not come back")
        master_side.append(time.perf_counter() - t0)
    slave_side: list[float] = []
    for _ in range(restarts):
        await slave.stop()
        slave = SlaveLink(cfg, SystemClock(), Spool(root / "rspool"))
        t0 = time.perf_counter()
        await slave.start()
        while master.peer.get("boot_id") != slave.boot_id:
            if not await master.wait_connected(10):
                raise RuntimeError("bench: the master never saw the restarted slave")
            await asyncio.sleep(0.001)
        slave_side.append(time.perf_counter() - t0)
    await slave.stop()
    await master.stop()
    return {
        "restarts": restarts,
        "backoff_max_s": backoff_max_s,
        "master_down_s": round(down_s, 3),
        "after_master_restart_median_s": round(statistics.median(master_side), 4),
        "after_master_restart_max_s": round(max(master_side), 4),
        "after_slave_restart_median_s": round(statistics.median(slave_side), 4),
        "after_slave_restart_max_s": round(max(slave_side), 4),
    }


def run_link_bench(
    files: int = 200,
    file_bytes: int = IMAGE_BYTES,
    restarts: int = 5,
    requests: int = 1000,
    backoff_max_s: float = 0.5,
    window: int = DEFAULT_WINDOW,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run both link benchmarks; figures as a JSON-able dict. `work_dir` (a temp dir by default) should be
    on the disk the data root would be on, since the master fsyncs every file."""
    root = Path(tempfile.mkdtemp(prefix="pycam-bench-link-", dir=work_dir))
    try:
        throughput = asyncio.run(_throughput(root, files, file_bytes, window, backoff_max_s))
        reconnect = asyncio.run(_reconnect(root, restarts, backoff_max_s))
        rtt = asyncio.run(_request_rtt(root, requests))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "link_throughput": throughput,
        "link_reconnect": reconnect,
        "link_request_round_trip": rtt,
        "targets": {"throughput_mb_per_s": 100, "reconnect_s": 2.0},
        "notes": "both link ends in one process on loopback; sha256 checked on both ends; master fsyncs each file",
    }
