"""What the data store holds, as parsed records: the one place in the supervisor that knows which station files are
on disk.

The data root is scanned once (at the master's start-up, in an executor); from then on the store's writes add to the
index and its deletions (the disk policy's, through `DataStore.remove`) take out, so nobody lists the date folders and
parses their names again (the disk policy, the status page ask here). Foreign entries (a name that is not a station
file name, a station name in another day's folder, a folder that is not a date) are reported once, at the scan, and
are never in the index: nothing the station did not write is judged or deleted. Temp files of writers in progress,
hidden entries (`.conflicts/`) and the original's `.lock` sidecars are not foreign.

Thread-safe: the store writes from executor threads, the web page reads from its own.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from controller.errors import FileNameError
from controller.logging import get_logger
from controller.storage.atomic import TEMP_PREFIX
from controller.storage.names import ImageName, SpectrumName, parse_name

FileName = ImageName | SpectrumName
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # a date folder
FOREIGN_EXAMPLES = 20  # foreign entries named in the one report (the count says how many there are)


def is_day(text: str) -> bool:
    """Whether `text` names a date folder (YYYY-MM-DD, a real date)."""
    if DAY_RE.fullmatch(text) is None:
        return False
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


class StoreIndex:
    """The station files under `root`, by date folder. Scanned on first use (or by `scan()`), then kept current."""

    def __init__(self, root: str | Path, skip: str | Path | None = None):
        self.root = Path(root)
        self._skip = Path(skip).resolve() if skip else None  # the flat copy folder, when it lies under the root
        self._days: dict[str, set[FileName]] = {}
        self._lock = threading.RLock()
        self._scanned = False
        self.foreign: list[str] = []  # root-relative, as reported (at most FOREIGN_EXAMPLES kept)
        self.foreign_count = 0
        self._log = get_logger("storage", root=str(self.root))

    # ------------------------------------------------------------------------------------------- scanning

    def scan(self) -> dict:
        """Read the data root once (a no-op when done already); one `store_index_scanned` event, and one
        `foreign_files_in_data_root` event when there is anything foreign. Returns the figures."""
        with self._lock:
            if not self._scanned:
                t0 = time.perf_counter()
                self._days = {}
                foreign: list[str] = []
                try:
                    entries = list(os.scandir(self.root)) if self.root.is_dir() else []
                except OSError as e:
                    entries = []
                    self._log.error("data_root_unreadable", error=str(e))  # nothing known: nothing deleted
                for entry in entries:
                    try:
                        self._scan_entry(entry, foreign)
                    except OSError as e:  # that folder's files stay unknown: never processed or deleted from here
                        self._log.error("date_folder_unreadable", folder=entry.name, error=str(e))
                self._scanned = True
                self.foreign, self.foreign_count = foreign[:FOREIGN_EXAMPLES], len(foreign)
                figures = {**self.counts(), "seconds": round(time.perf_counter() - t0, 3)}
                self._log.info("store_index_scanned", **figures)
                if foreign:
                    self._log.warning(
                        "foreign_files_in_data_root", count=len(foreign), examples=self.foreign,
                        why="not station data: never indexed, processed or deleted by the station",
                    )  # fmt: skip
                return figures
            return self.counts()

    def _scan_entry(self, entry: os.DirEntry, foreign: list[str]) -> None:
        if entry.name.startswith("."):
            return  # hidden: the kept-aside copies (.conflicts/) and the like
        if not entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith(TEMP_PREFIX):
                foreign.append(entry.name)  # the store writes only into date folders
            return
        if self._skip is not None and Path(entry.path).resolve() == self._skip:
            return
        if not is_day(entry.name):
            foreign.append(entry.name + "/")
            return
        records: set[FileName] = set()
        for item in os.scandir(entry.path):
            name = item.name
            if name.startswith((TEMP_PREFIX, ".")) or name.endswith(".lock"):
                continue  # a write in progress, hidden, or the original's lock sidecar
            try:
                record = parse_name(name)
            except FileNameError:
                foreign.append(f"{entry.name}/{name}")
                continue
            if name[:10] != entry.name or not item.is_file(follow_symlinks=False):  # (a canonical name's date)
                foreign.append(f"{entry.name}/{name}")  # misplaced, or a folder with a file's name
                continue
            records.add(record)
        if records:
            self._days[entry.name] = records

    # ---------------------------------------------------------------------------------- kept current

    def add(self, record: FileName) -> None:
        """The store wrote `record` (before the first scan, the scan will find it)."""
        with self._lock:
            if self._scanned:
                self._days.setdefault(record.date_folder, set()).add(record)

    def discard(self, record: FileName) -> None:
        """`record`'s file is gone (deleted by the store, or found gone)."""
        with self._lock:
            records = self._days.get(record.date_folder)
            if records is not None:
                records.discard(record)
                if not records:
                    del self._days[record.date_folder]

    # ----------------------------------------------------------------------------------------- queries

    def path(self, record: FileName) -> Path:
        return self.root / record.date_folder / str(record)

    def days(self) -> list[str]:
        """The date folders holding station files, oldest first."""
        self.scan()
        with self._lock:
            return sorted(self._days)

    def day(self, day: str) -> list[FileName]:
        """The records of one date folder, in time order (`_order`)."""
        self.scan()
        with self._lock:
            records = list(self._days.get(day, ()))
        return sorted(records, key=_order)

    def records(self) -> Iterator[FileName]:
        """Every record, oldest date folder first, in time order within each."""
        for day in self.days():
            yield from self.day(day)

    def __contains__(self, record: object) -> bool:
        if not isinstance(record, ImageName | SpectrumName):
            return False
        self.scan()
        with self._lock:
            return record in self._days.get(record.date_folder, ())

    def __len__(self) -> int:
        self.scan()
        with self._lock:
            return sum(len(v) for v in self._days.values())

    def counts(self) -> dict:
        with self._lock:
            return {
                "files": sum(len(v) for v in self._days.values()),
                "days": len(self._days),
                "foreign": self.foreign_count,
            }

    def latest_plume(self) -> dict[str, ImageName]:
        """The newest raw Plume image of each band, and of the newest slot with both (keys A, B, pair_A, pair_B),
        from the newest date folder that has any."""
        for day in reversed(self.days()):
            with self._lock:
                images = [
                    r for r in self._days.get(day, ())
                    if isinstance(r, ImageName) and r.kind == "Plume" and not r.darkcorr
                ]  # fmt: skip
            if images:
                return _latest(images)
        return {}


def _order(record: FileName) -> tuple:
    """Time order; within a second the spectrum, then A, then B (as their names sort), then by type."""
    if isinstance(record, ImageName):
        return (record.time, record.band, record.kind, record.darkcorr, record.gain, record.shutter_us)
    return (record.time, "", record.kind, False, record.integration_ms, record.coadd)


def _latest(images: list[ImageName]) -> dict[str, ImageName]:
    out: dict[str, ImageName] = {}
    by_slot: dict[object, dict[str, ImageName]] = {}
    for r in images:
        by_slot.setdefault(r.time, {})[r.band] = r
    for t in sorted(by_slot, reverse=True):
        slot = by_slot[t]
        for band in ("A", "B"):
            if band in slot:
                out.setdefault(band, slot[band])
        if "A" in slot and "B" in slot and "pair_A" not in out:
            out["pair_A"], out["pair_B"] = slot["A"], slot["B"]
        if len(out) == 4:
            break
    return out
