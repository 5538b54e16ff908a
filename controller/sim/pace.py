"""The sim station's pace: the compressed clock slows down when the processing worker falls behind.

At a fixed compression a busy machine (another CPU-bound process, a slow CI runner) lets the worker fall behind
the captures: spectra and pairs are then processed minutes of sim time late, the process phase's drain runs out
of time, and the day's figures suffer. A real station never has that problem (its clock does not run faster than
its worker). So the driver watches the worker's backlog (pairs stored on the master but not yet in the worker's
journal) and sets the shared clock rate (controller.clock.ScaledClock's rate file, read by master and slave):
slower by SLOW_BY while the backlog exceeds MAX_BACKLOG pairs, back towards the nominal rate while it is small.
It also slows while captures start late (the capture journals: a few real seconds of lateness on a busy machine
are minutes of compressed sim time, so camera A, camera B and the spectrometer of one slot would see different
scenes, which no real station does).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from controller.logging import get_logger
from controller.timekeeping.clock import write_rate_file

log = get_logger("sim.pace")

MAX_BACKLOG = 3  # pairs stored but not processed before the clock slows
SLOW_BY = 0.7
FAST_BY = 1.15
MIN_FRACTION = 0.2  # of the nominal rate: at most 5x slower
MAX_LATE_S = 3.0  # sim seconds: median start of a device's recent captures after their slot
RECENT = 6  # captures per device looked at


class Pace:
    def __init__(self, rate_file: Path, nominal: float, sim_start: float, real_start: float, data_root: Path,
                 processed: Path) -> None:  # fmt: skip
        self.rate_file = rate_file
        self.nominal = nominal
        self.factor = nominal
        self.anchor = (real_start, sim_start)
        self.data_root = data_root
        self.processed = processed
        self.changes = 0
        self.min_factor = nominal
        self.max_backlog = 0
        self.slow_real_s = 0.0  # real seconds spent below the nominal rate
        self.max_late_s = 0.0
        out = processed.parent.parent
        self.journals = [out / role / "state" / "captures.jsonl" for role in ("master", "slave")]
        write_rate_file(str(rate_file), sim_start, nominal)
        # the file's own "real" is now; keep the epoch the processes were given
        rate_file.write_text(json.dumps({"real": real_start, "sim": sim_start, "factor": nominal}))

    def sim_now(self) -> float:
        real, sim = self.anchor
        return sim + (time.time() - real) * self.factor

    def backlog(self) -> int:
        stored = {p.name[:17] for p in self.data_root.rglob("*_fltrA_*_Plume.png")}
        stored &= {p.name[:17] for p in self.data_root.rglob("*_fltrB_*_Plume.png")}
        try:
            from processing.worker import JOURNAL_NAME

            journal = json.loads((self.processed / JOURNAL_NAME).read_text())
            # held pairs wait for their calibration (FOV search, the slot's spectrum), not for the worker
            done = set(journal.get("pairs", [])) | set(journal.get("held", []))
        except (OSError, ValueError):
            done = set()
        return len(stored - done)

    def lateness(self) -> float:
        """The worst device's median lateness (sim seconds) over its RECENT captures, from both capture journals."""
        late: dict[str, list[float]] = {}
        for journal in self.journals:
            try:
                with open(journal, "rb") as fh:
                    fh.seek(0, 2)
                    fh.seek(max(0, fh.tell() - 8192))
                    lines = fh.read().decode("utf-8", "replace").splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("slot_time") is not None:
                    late.setdefault(rec["device"], []).append(rec["capture_time"] - rec["slot_time"])
        return max((float(np.median(v[-RECENT:])) for v in late.values() if v), default=0.0)

    def set_factor(self, factor: float) -> None:
        factor = min(self.nominal, max(self.nominal * MIN_FRACTION, factor))
        if abs(factor - self.factor) < 1e-9:
            return
        now = self.sim_now()
        write_rate_file(str(self.rate_file), now, factor)
        self.anchor = (time.time(), now)
        log.info("sim_pace", old=round(self.factor, 2), new=round(factor, 2))
        self.factor = factor
        self.changes += 1
        self.min_factor = min(self.min_factor, factor)

    async def run(self, every_s: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_s)
            n = await loop.run_in_executor(None, self.backlog)
            late = await loop.run_in_executor(None, self.lateness)
            self.max_backlog = max(self.max_backlog, n)
            self.max_late_s = max(self.max_late_s, late)
            if self.factor < self.nominal:
                self.slow_real_s += every_s
            if n > MAX_BACKLOG or late > MAX_LATE_S:
                self.set_factor(self.factor * SLOW_BY)
            elif n <= 1 and late < MAX_LATE_S / 3:
                self.set_factor(self.factor * FAST_BY)

    def figures(self) -> dict:
        return {"nominal_time_scale": round(self.nominal, 2), "min_time_scale": round(self.min_factor, 2),
                "rate_changes": self.changes, "max_worker_backlog_pairs": self.max_backlog,
                "max_capture_lateness_s": round(self.max_late_s, 2),
                "real_s_slowed": round(self.slow_real_s, 1)}  # fmt: skip


def start_pace(
    processing: bool, out: Path, scale: float, sim_start: float, real_start: float, data_root: Path,
    clock_args: list[str],
) -> Pace | None:  # fmt: skip
    """The run's Pace (None without processing); adds the rate file to the supervisors' clock arguments."""
    if not processing:
        return None
    rate_file = out / "sim-clock-rate.json"
    clock_args += ["--sim-rate-file", str(rate_file)]
    return Pace(rate_file, scale, sim_start, real_start, data_root, out / "master" / "processed")
