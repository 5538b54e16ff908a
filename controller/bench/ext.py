"""External control port round trip on loopback (target: p99 under 20 ms).

`run_ext_bench(n)` starts a real ExtServer with a real SettingsStore (temporary state dir, so every setting is
fsynced as in service) and an in-process slave behind `RemoteDeviceControl` (no link: that is `bench link`), and
times three commands from an `ExtClient`, each measured until its end marker arrives:
  ping       LOG 0                      (framing, one client task, no device)
  setting    SSA <us>                   (master device: validation + atomic write of settings.json)
  forwarded  PXC <n>                    (both cameras: master + the slave's handler, both persisted)

`python -m controller.bench.ext --json` prints the figures; `pycam bench ext` (S2's bench group) calls this.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.extport import protocol
from controller.extport.client import ExtClient
from controller.extport.control import DeviceControl, MasterControl, RemoteDeviceControl, ext_request_handler
from controller.extport.server import ExtServer
from controller.settings import SettingsStore

TARGET_P99_MS = 20.0


class _IdleActions:
    """StationActions that do nothing: the bench times the port, not the station."""

    async def capture_single(self, device: str, kind: str) -> None:
        return None

    async def start_continuous(self, kind: str) -> None:
        return None

    async def stop_continuous(self, kind: str) -> None:
        return None

    async def dark_series(self, kind: str) -> None:
        return None

    async def restart_backend(self, kind: str) -> None:
        return None

    async def exit(self) -> None:
        return None

    async def restart(self) -> None:
        return None


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(ms[-1], 3),
    }


async def _bench(n: int, state_root: Path) -> dict[str, Any]:
    cfg = Config()
    master = SettingsStore(state_root / "master", cfg)
    master.update({"camera": {"auto_exposure": False}})
    slave = DeviceControl(SettingsStore(state_root / "slave", cfg), _IdleActions(), protocol.SLAVE_IDENTITIES)
    handler = ext_request_handler(slave)

    async def request(kind: str, body: dict, timeout_s: float) -> dict:
        return await handler(body)

    control = MasterControl(
        DeviceControl(master, _IdleActions(), protocol.MASTER_IDENTITIES), RemoteDeviceControl(request)
    )
    server = ExtServer(cfg, control, ports=(0,), bind="127.0.0.1")
    port = await server.start()
    commands = {
        "ping": lambda i: [],
        "setting": lambda i: [("SSA", 1000 + i)],
        "forwarded": lambda i: [("PXC", 1 + i % 10_000)],
    }
    results: dict[str, Any] = {}
    try:
        async with ExtClient("127.0.0.1", port, timeout_s=10.0) as client:
            for _ in range(min(50, n)):  # warm-up: first connections, page cache, JIT-free but allocator warm
                await client.ping()
            for name, make in commands.items():
                samples = []
                for i in range(n):
                    t0 = time.perf_counter()
                    replies = await client.command(make(i))
                    samples.append(time.perf_counter() - t0)
                    if any("ERR" in r for r in replies):
                        raise RuntimeError(f"bench command {name} refused: {replies}")
                results[name] = _stats(samples)
    finally:
        await server.stop()
    return results


def run_ext_bench(n: int = 1000) -> dict[str, Any]:
    """Round trips on loopback: {"n", "ping"|"setting"|"forwarded": {median_ms, p99_ms, max_ms, meets_target}, ...}.

    "setting" and "forwarded" include the fsyncs that make a setting survive a power cut; on a shared disk they
    dominate (the in-process slave also writes to the same disk, where on the station it has its own).
    """
    with tempfile.TemporaryDirectory(prefix="pycam-bench-ext-") as tmp:
        figures = asyncio.run(_bench(n, Path(tmp)))
    for values in figures.values():
        values["meets_target"] = values["p99_ms"] < TARGET_P99_MS
    return {"bench": "ext", "n": n, **figures, "target_p99_ms": TARGET_P99_MS}


def main(argv: list[str] | None = None) -> None:
    import argparse

    import click

    from controller.logging import configure_logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")  # one log line per command would be timed too
    figures = run_ext_bench(args.n)
    click.echo(json.dumps(figures, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
