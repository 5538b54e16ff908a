"""The status page benchmark: does serving the page slow acquisition?

A sim master and slave (`pycam run` processes, real time scale, processing off, as the supervisor benchmark) with
the page on. The master's capture timing (capture time minus slot time of camera A, and the A/B spread per slot,
from the capture journals) is measured for `seconds` without page load, then for `seconds` while clients load the
page, the status JSON, the three thumbnails, the day's emissions and the metrics as fast as they are answered.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

from controller.acquisition import CaptureJournal
from controller.bench.supervisor import SupervisorPair, _configs
from controller.sim.station import write_toml

PATHS = ("", "api/status", "api/emissions", "img/A.png", "img/B.png", "img/AA.png", "metrics")


def _timing(work: Path, t0: float, t1: float) -> dict:
    """Camera A's lateness and the A/B spread (ms) of the slots between real times t0 and t1."""
    a = {r["slot_time"]: r["capture_time"] for r in CaptureJournal.read(work / "master/state/captures.jsonl")
         if r["device"] == "A" and r["slot_time"] is not None and t0 <= r["slot_time"] < t1}  # fmt: skip
    b = {r["slot_time"]: r["capture_time"] for r in CaptureJournal.read(work / "slave/state/captures.jsonl")
         if r["device"] == "B" and r["slot_time"] is not None and t0 <= r["slot_time"] < t1}  # fmt: skip
    late = sorted((a[k] - k) * 1000.0 for k in a)
    spread = sorted(abs(a[k] - b[k]) * 1000.0 for k in a.keys() & b.keys())
    if not late:
        return {"slots": 0}

    def stats(v: list[float]) -> dict:
        return {"median": round(statistics.median(v), 2), "p95": round(v[int(0.95 * (len(v) - 1))], 2),
                "max": round(v[-1], 2)} if v else {}  # fmt: skip

    return {"slots": len(late), "a_lateness_ms": stats(late), "ab_spread_ms": stats(spread)}


class _Load:
    """`clients` threads fetching PATHS round-robin until stopped; counts answers and errors."""

    def __init__(self, base: str, clients: int):
        self.base = base
        self.stop = threading.Event()
        self.ok = 0
        self.errors = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        n = i
        while not self.stop.is_set():
            path = PATHS[n % len(PATHS)]
            n += 1
            try:
                with urllib.request.urlopen(self.base + path, timeout=30) as r:
                    size = len(r.read())
                with self._lock:
                    self.ok += 1
                    self.bytes += size
            except OSError:
                with self._lock:
                    self.errors += 1

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def run_web_bench(seconds: float = 40.0, period_s: float = 2.0, clients: int = 4) -> dict:
    work = Path(tempfile.mkdtemp(prefix="pycam-bench-web-"))
    mpath, spath = _configs(work, period_s)
    mcfg = tomllib.loads(mpath.read_text())
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mcfg["web"] = {"enabled": True, "bind": "127.0.0.1", "port": port}
    write_toml(mpath, mcfg)
    base = f"http://127.0.0.1:{port}/"
    try:
        with SupervisorPair(work, (mpath, spath)) as pair:
            if not pair.acquiring(90):
                return {"error": "the supervisors did not reach acquire"}
            time.sleep(2 * period_s)  # warm-up, as the supervisor benchmark
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
            with _Load(base, clients) as load:
                time.sleep(seconds)
            t2 = time.time()
            pair.stop()
        return {
            "seconds_per_phase": seconds, "period_s": period_s, "clients": clients,
            "without_page_load": _timing(work, t0, t1),
            "with_page_load": {**_timing(work, t1, t2), "requests": load.ok, "errors": load.errors,
                               "requests_per_s": round(load.ok / (t2 - t1), 1), "mb_served": round(load.bytes / 2**20, 1)},
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
