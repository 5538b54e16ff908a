"""The faults a supervisor has seen, for `pycam status` (faults, last_fault, fault_counts): the recent ones and a
count per kind since the state folder was new, carried over from the previous run's status file."""

from __future__ import annotations

import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

RECENT = 50


class FaultLog:
    def __init__(self) -> None:
        self.faults: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.counts: Counter[str] = Counter()  # every fault kind since the state folder was new

    def note(self, kind: str, at: float, info: dict | None = None) -> dict[str, Any]:
        """Remember one fault (at clock time `at`); the entry."""
        entry = {"time": at, "real_time": time.time(), "kind": kind, **(info or {})}
        self.faults.append(entry)
        self.counts[kind] += 1
        return entry

    def carry(self, state_dir: Path) -> dict | None:
        """Keep the faults of the previous run (its status.json); that status when it ended without a clean exit
        (kill -9, power cut, crash), else None."""
        from controller.supervisor.statusfile import read_status

        old, _ = read_status(state_dir)
        if not old:
            return None
        for entry in (old.get("faults") or [])[-RECENT:]:
            if isinstance(entry, dict):
                self.faults.append(entry)
        counts = old.get("fault_counts") or {}
        self.counts.update({str(k): int(v) for k, v in counts.items() if isinstance(v, int)})
        return None if old.get("exited") else old

    def status(self) -> dict[str, Any]:
        return {
            "faults": list(self.faults),
            "last_fault": self.faults[-1] if self.faults else None,
            "fault_counts": dict(self.counts),
        }
