"""The capture journal: one JSON line per capture saved on this Pi."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class CaptureRecord:
    """One saved capture, as written to the capture journal (captures.jsonl)."""

    name: str
    device: str
    slot_time: float | None
    capture_time: float  # master time at exposure start
    sha256: str
    size: int


class CaptureJournal:
    """Append-only JSON lines of every capture saved on this Pi (what the sim and the e2e tests count)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def append(self, rec: CaptureRecord) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec)) + "\n")
        self.count += 1

    @staticmethod
    def read(path: Path) -> list[dict]:
        out = []
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill -9: the capture behind it is in the spool/store anyway
        return out
