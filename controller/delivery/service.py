"""Delivery to the observatory: results (and optionally raw data) pushed with rsync over SSH as they are written.

The service scans its sources every `delivery.scan_interval_s` real seconds, queues new or changed files in the
persistent queue (controller/delivery/queue.py) and sends the oldest first, a batch per rsync run:

- resumable: `--partial-dir` keeps a cut transfer's partial file on the server (outside the final names) and the
  next run continues from it; rsync writes each file under a temporary name and renames it when whole;
- bandwidth-limited (`--bwlimit`), with an I/O timeout so a dead uplink fails the run instead of hanging it;
- retried with exponential backoff while the uplink is down (`retry_initial_s` doubling up to `retry_max_s`);
- never deletes anything local (no `--remove-source-files`; the disk policy alone frees space).

Remote layout: `<remote_dir>/<station name>/<source>/<relative path>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.delivery.queue import QUEUE_NAME, DeliveryQueue, Pending
from controller.logging import get_logger
from controller.storage.atomic import TEMP_PREFIX

PARTIAL_DIR = ".rsync-partial"
RSYNC_VANISHED = 24  # "some files vanished before they could be transferred": the rest went through


@dataclass(frozen=True)
class Source:
    """A local folder whose files are delivered to `<remote>/<name>/`; `names` limits it to those file names."""

    name: str
    root: Path
    names: tuple[str, ...] = ()


def scan_source(src: Source) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of the deliverable files under the source (temp and hidden files skipped)."""
    out: list[tuple[str, int, int]] = []
    root = Path(src.root)
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith((".", TEMP_PREFIX)) or (src.names and fn not in src.names):
                continue
            path = Path(dirpath) / fn
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between the listing and the stat
            out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def backoff_s(failures: int, initial_s: float, max_s: float) -> float:
    """Delay before the next attempt after `failures` failed runs in a row."""
    return min(max_s, initial_s * 2 ** max(0, failures - 1))


class DeliveryService:
    """A supervisor service: `async start()`, `async stop()`, `status()`."""

    def __init__(self, cfg: Any, station: str, sources: list[Source], state_dir: Path, now: Callable = time.time):
        self.cfg = cfg  # the [delivery] section
        self.station = station
        self.sources = {s.name: s for s in sources}
        self.state_dir = Path(state_dir)
        self._now = now
        self._log = get_logger("delivery")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery")
        self._queue: DeliveryQueue | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self.state = "stopped"
        self.failures = 0
        self.next_retry_at: float | None = None
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self.last_lag_s: float | None = None
        self.runs = 0
        self._backlog: dict = {}

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._queue = await self._call(DeliveryQueue, self.state_dir / QUEUE_NAME)
        self._backlog = await self._call(self._queue.backlog)
        self._set_state("idle", "started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="delivery")

    async def stop(self, final_push: bool = True) -> None:
        """Stop; unless the uplink is failing, first one last push of what was written since the last scan (the
        process phase's products, the final status), bounded by twice `timeout_s`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._kill_rsync()
        if final_push and self._queue is not None and self.failures == 0:
            try:
                await asyncio.wait_for(self._push_all(), 2 * self.cfg.timeout_s)
            except TimeoutError:
                await self._kill_rsync()
                self._log.warning("delivery_final_push_timeout", timeout_s=2 * self.cfg.timeout_s)
        if self._queue is not None:
            await self._call(self._queue.close)
            self._queue = None
        self._executor.shutdown(wait=True)
        self._set_state("stopped", "stop")

    def notify(self) -> None:
        """Something new was written: scan now rather than at the next interval (not during a backoff)."""
        if self.state == "idle":
            self._wake.set()

    def status(self) -> dict:
        now = self._now()
        b = self._backlog
        return {
            "state": self.state,
            "target": f"{self.cfg.user}@{self.cfg.host}:{self.cfg.port}",
            "backlog_files": b.get("backlog_files", 0),
            "backlog_bytes": b.get("backlog_bytes", 0),
            "delivered_files": b.get("delivered_files", 0),
            # Lag: how long the oldest file still waiting has waited (0 with an empty queue).
            "lag_s": b.get("oldest_pending_s", 0.0),
            "last_lag_s": self.last_lag_s,
            "last_success_at": self.last_success_at,
            "failures_in_a_row": self.failures,
            "next_retry_in_s": round(max(0.0, self.next_retry_at - now), 1) if self.next_retry_at else None,
            "last_error": self.last_error,
            "runs": self.runs,
        }

    # ------------------------------------------------------------------------------------------------ loop

    async def _call(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _set_state(self, new: str, reason: str) -> None:
        if new != self.state:
            self._log.info("state_change", machine="delivery", old=self.state, new=new, trigger=reason)
            self.state = new

    async def _run(self) -> None:
        while True:
            result = await self._push_once()
            if result is None:
                self._set_state("idle", "queue empty")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.cfg.scan_interval_s)
            elif not result:
                delay = backoff_s(self.failures, self.cfg.retry_initial_s, self.cfg.retry_max_s)
                self.next_retry_at = self._now() + delay
                self._set_state("backoff", self.last_error or "failed")
                self._log.warning("delivery_failed", error=self.last_error, failures=self.failures, retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _push_all(self) -> None:
        while await self._push_once():
            pass

    async def _push_once(self) -> bool | None:
        """Scan, then send one batch: None when there was nothing to send, else whether it went through."""
        queued = await self._call(self._scan)
        if queued:
            self._log.info("delivery_queued", files=queued)
        batch = await self._call(self._queue.pending, self.cfg.batch_files)
        try:
            if not batch:
                return None
            self._set_state("sending", f"{len(batch)} files")
            error = await self._send(batch)
            if error is None:
                now = self._now()
                self.last_lag_s = round(max(now - it.queued_at for it in batch), 1)
                self.last_success_at = now
                await self._call(self._queue.mark_delivered, batch, now)
                self.failures, self.next_retry_at, self.last_error = 0, None, None
                self._log.info("delivered", files=len(batch), lag_s=self.last_lag_s)
                return True
            await self._call(self._queue.mark_failed, batch)
            self.failures += 1
            self.last_error = error
            return False
        finally:
            self._backlog = await self._call(self._queue.backlog)

    def _scan(self) -> int:
        queued = 0
        now = self._now()
        for src in self.sources.values():
            for rel, size, mtime_ns in scan_source(src):
                queued += self._queue.offer(src.name, rel, size, mtime_ns, now)
        return queued

    # ----------------------------------------------------------------------------------------------- rsync

    def ssh_command(self) -> list[str]:
        c = self.cfg
        known = c.known_hosts or str(self.state_dir / "known_hosts")
        alive = max(1, round(c.timeout_s / 3))
        return [
            "ssh", "-p", str(c.port), "-i", c.key_file, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            # The observatory's host key is pinned at the first contact (or given in known_hosts).
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known}",
            "-o", f"ConnectTimeout={max(1, round(c.timeout_s))}", "-o", f"ServerAliveInterval={alive}",
            "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip

    def rsync_command(self, source: Source) -> list[str]:
        c = self.cfg
        cmd = ["rsync", "-rt", "--mkpath", f"--partial-dir={PARTIAL_DIR}", "--from0", "--files-from=-"]
        cmd += [f"--timeout={max(1, round(c.timeout_s))}", "-e", shlex.join(self.ssh_command())]
        if c.bwlimit_kbps:
            cmd.append(f"--bwlimit={c.bwlimit_kbps}")
        remote = f"{c.remote_dir.rstrip('/')}/{self.station}/{source.name}/"
        return [*cmd, f"{source.root}/", f"{c.user}@{c.host}:{remote}"]

    async def _send(self, batch: list[Pending]) -> str | None:
        """Send the batch (one rsync run per source); None when all went through, else the error line."""
        by_source: dict[str, list[Pending]] = {}
        for it in batch:
            by_source.setdefault(it.source, []).append(it)
        self.runs += 1
        for name, items in by_source.items():
            source = self.sources.get(name)
            if source is None:
                continue  # a source no longer configured: its entries are marked and left behind
            files = b"\0".join(it.rel.encode() for it in items) + b"\0"
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.rsync_command(source), stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                _, err = await self._proc.communicate(files)
                code = self._proc.returncode
            except OSError as e:
                return f"cannot run rsync: {e}"
            except asyncio.CancelledError:
                await self._kill_rsync()  # stopping: the partial file stays on the server for the next run
                raise
            self._proc = None
            if code not in (0, RSYNC_VANISHED):
                lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
                return f"rsync exit {code}: {lines[0] if lines else 'no message'}"
        return None

    async def _kill_rsync(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
