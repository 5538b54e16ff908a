"""The simulated station's processes: each Pi's supervisor as a child process, and their CPU/memory monitor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path


class Proc:
    """One supervisor process (`pycam run`), its log file and how to (re)start it."""

    def __init__(self, role: str, config: Path, out: Path, clock_args: list[str], netns: str | None):
        self.role = role
        self.config = config
        self.log_path = out / "logs" / f"{role}.log"
        self.clock_args = clock_args
        self.netns = netns
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    async def start(self, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-c", "from controller.cli import main; main()", "run", "--role", self.role]
        cmd += ["--config", str(self.config), *self.clock_args, *(extra or [])]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed below after the spawn
        try:
            self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=fh, stderr=fh, start_new_session=True)
        finally:
            fh.close()
        self.starts += 1

    def kill9(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def kill9_worker(self) -> bool:
        """kill -9 the supervisor's processing worker child (a multiprocessing spawn child); True when one was."""
        import psutil

        if not self.running:
            return False
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
            workers = [k for k in kids if "spawn_main" in " ".join(k.cmdline())]
            for k in workers:
                k.kill()
        except psutil.Error:
            return False
        return bool(workers)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self.exit_codes.append(code)
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class ProcessMonitor:
    """Samples each supervisor process (and its children: the processing worker) every `every_s` real seconds:
    peak resident memory and CPU time, summed over the restarts of a role (kill -9 included: the last sample
    before the kill counts)."""

    def __init__(self, procs: dict[str, Proc], every_s: float = 0.5):
        self.procs = procs
        self.every_s = every_s
        self.peak_rss: Counter = Counter()
        self.peak_children_rss: Counter = Counter()
        self.cpu: dict[tuple[str, int], float] = {}  # (role, pid) -> last CPU seconds seen
        self.children_cpu: dict[tuple[str, int], float] = {}

    def sample(self) -> None:
        import psutil

        for role, proc in self.procs.items():
            if not proc.running:
                continue
            try:
                p = psutil.Process(proc.proc.pid)
                with p.oneshot():
                    rss, times = p.memory_info().rss, p.cpu_times()
                kids = p.children(recursive=True)
                kid_rss = sum(k.memory_info().rss for k in kids)
                kid_cpu = sum(sum(k.cpu_times()[:2]) for k in kids)
            except psutil.Error:
                continue  # it just exited (or was killed): its last sample stands
            self.peak_rss[role] = max(self.peak_rss[role], rss)
            self.peak_children_rss[role] = max(self.peak_children_rss[role], kid_rss)
            # Children that exited were reaped into children_user/system of the parent.
            self.cpu[(role, p.pid)] = times.user + times.system
            self.children_cpu[(role, p.pid)] = max(
                self.children_cpu.get((role, p.pid), 0.0), kid_cpu + times.children_user + times.children_system
            )

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def figures(self, real_s: float) -> dict:
        out = {}
        for role, proc in self.procs.items():
            cpu = sum(v for (r, _), v in self.cpu.items() if r == role)
            kids = sum(v for (r, _), v in self.children_cpu.items() if r == role)
            out[role] = {
                "peak_rss_mb": round(self.peak_rss[role] / 2**20, 1),
                "cpu_s": round(cpu, 1),
                "cpu_percent_of_one_core": round(100.0 * cpu / max(real_s, 1e-9), 1),
                "children_peak_rss_mb": round(self.peak_children_rss[role] / 2**20, 1),
                "children_cpu_s": round(kids, 1),
                "starts": proc.starts,
            }
        return out


def read_status(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


async def wait_until(predicate, timeout_s: float, step_s: float = 0.2) -> float | None:
    """Real seconds until predicate() holds (polling a file another process writes), None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        await asyncio.sleep(step_s)
    return None
