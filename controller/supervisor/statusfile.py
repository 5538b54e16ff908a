"""The supervisor's local status file (state_dir/status.json), read by `pycam status`.

Written atomically every few (real) seconds and on every state change, so a reader never sees half a file and can
tell a dead supervisor from a live one by `updated_at` and `pid`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from controller.logging import get_logger
from controller.storage.atomic import atomic_write_text

STATUS_NAME = "status.json"
WRITE_INTERVAL_S = 3.0
# A status older than this (real seconds) means the supervisor is not running (or hung).
STALE_AFTER_S = 15.0


def read_temperatures(thermal_root: Path = Path("/sys/class/thermal")) -> dict[str, float]:
    """CPU/SoC temperatures in °C from the kernel's thermal zones (empty when there are none)."""
    temps: dict[str, float] = {}
    for zone in sorted(thermal_root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            temps[kind] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return temps


class StatusWriter:
    """Owns status.json: `write_now()` on state changes, and a periodic task while the supervisor runs."""

    def __init__(self, state_dir: Path, collect: Callable[[], dict], interval_s: float = WRITE_INTERVAL_S):
        self.path = Path(state_dir) / STATUS_NAME
        self._collect = collect
        self._interval_s = interval_s
        self._task: asyncio.Task | None = None
        self._log = get_logger("status")
        self._wake = asyncio.Event()

    def snapshot(self) -> dict:
        data = self._collect()
        data["pid"] = os.getpid()
        data["updated_at"] = time.time()  # real wall time: staleness is judged against the reader's real clock
        data["stale_after_s"] = STALE_AFTER_S
        return data

    def write_now(self) -> None:
        """Write the status file at once (small file; fine on the loop)."""
        try:
            atomic_write_text(self.path, json.dumps(self.snapshot(), default=str, indent=1))
        except OSError as e:
            self._log.warning("status_write_failed", path=str(self.path), error=str(e))

    def request_write(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="status-writer")

    async def _run(self) -> None:
        while True:
            self.write_now()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            except TimeoutError:
                pass

    async def stop(self, final: dict | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.write_now()


def read_status(state_dir: Path) -> tuple[dict | None, str]:
    """Read status.json: (data or None, verdict) with verdict "running", "stale", "stopped" or "missing"."""
    path = Path(state_dir) / STATUS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError):
        return None, "missing"
    if data.get("exited"):
        return data, "stopped"
    age = time.time() - float(data.get("updated_at", 0))
    alive = _pid_alive(int(data.get("pid", -1)))
    if not alive:
        return data, "stopped"
    if age > float(data.get("stale_after_s", STALE_AFTER_S)):
        return data, "stale"
    return data, "running"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
