"""Disk policy of the master: keep room for new data without ever losing what is not safe elsewhere.

Below `storage.min_free_mb` the oldest files that are already processed (and, on the master, transferred: every
file in the data store has arrived there) are deleted, oldest first, never today's and never unprocessed ones,
until `resume_free_mb` is free again. If that is not enough, acquisition is paused (its `Suspender`, as in bluesky)
until free space is back above `resume_free_mb`: the hysteresis keeps it from flapping at the threshold.

"Processed" has two sources. The worker's journal knows single pairs and spectra, but only for its last two days.
So the master also keeps a durable per-day record (`DayLedger`, state_dir/days_complete.json): a day is recorded
complete when every A/B pair and every plume spectrum of it is in the worker's journal and the slave's spool holds
no file of that day (nothing of it can still arrive). A recorded day stays deletable however old it gets; a day
that was never recorded complete is never deleted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from controller.config import StorageConfig
from controller.logging import get_logger
from controller.storage.atomic import atomic_write_text, is_temp_or_locked
from controller.storage.index import FileName, StoreIndex
from controller.storage.names import SpectrumName
from controller.supervisor.suspender import Suspender

MB = 1024 * 1024
LEDGER_NAME = "days_complete.json"


class DayLedger:
    """The days whose data is processed and all on the master, persisted atomically (survives restarts)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.days: dict[str, dict] = {}
        self._log = get_logger("disk_policy")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.days = {str(k): dict(v) for k, v in data.get("days", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError, TypeError) as e:
            # An unreadable ledger only means fewer deletable days: safe. Kept aside for a person.
            self._log.warning("day_ledger_unreadable", path=str(self.path), error=str(e))
            with contextlib.suppress(OSError):
                self.path.rename(self.path.with_suffix(".corrupt"))

    def __contains__(self, day: str) -> bool:
        return day in self.days

    def record(self, day: str, info: dict) -> None:
        self.days[day] = dict(info)
        atomic_write_text(self.path, json.dumps({"days": self.days}, indent=1, sort_keys=True))
        self._log.info("day_complete", day=day, **{k: v for k, v in info.items() if isinstance(v, int | float | str)})


def day_completion(
    index: StoreIndex, day: str, processed: Callable[[str, str], bool], pair_tolerance_s: float = 1.0
) -> tuple[bool, dict]:
    """Is every A/B plume pair and every plume spectrum of this date folder processed? (complete, counts)

    `processed(kind, key)` answers from the worker's journal (kind "pairs" keyed by the A image's time key, or
    "spectra"). The pairs are the worker's own (processing/pairing.py, one pairing for the station): an A image with
    no B can never be processed (its B was never taken) and does not hold the day back; darks, clears and cell
    images are not processed by themselves. The day's files are the store's records (`StoreIndex`), not a listing.
    """
    from processing.images import ImageFile
    from processing.pairing import pair_images

    plume: list[ImageFile] = []
    spectra: list[str] = []
    for name in index.day(day):
        if name.kind != "Plume":
            continue
        if isinstance(name, SpectrumName):
            spectra.append(name.time_key)
        elif not name.darkcorr:
            plume.append(ImageFile(index.path(name), name))
    pairs = [p.key for p in pair_images(plume, pair_tolerance_s)[0]]
    missing = [k for k in pairs if not processed("pairs", k)] + [k for k in spectra if not processed("spectra", k)]
    info = {"pairs": len(pairs), "spectra": len(spectra), "unprocessed": len(missing)}
    return not missing, info


def record_completed_days(
    index: StoreIndex,
    ledger: DayLedger,
    today: str,
    processed: Callable[[str, str], bool],
    pending_days: set[str] | None,
    pair_tolerance_s: float = 1.0,
) -> list[str]:
    """Record each day before `today` that is complete. `pending_days`: the date folders of the files still in
    the slave's spool; None when unknown (link down), and then no day is recorded. Blocking (the index's first
    scan, the pairing)."""
    if pending_days is None or "*" in pending_days:
        return []  # what the slave still holds is unknown: no day can be called complete
    recorded = []
    for day in index.days():
        if day >= today or day in ledger or day in pending_days:
            continue
        complete, info = day_completion(index, day, processed, pair_tolerance_s)
        if complete:
            ledger.record(day, info)
            recorded.append(day)
    return recorded


@dataclass
class DiskCheck:
    """The outcome of one check."""

    free_mb: float
    paused: bool
    deleted: list[str] = field(default_factory=list)
    changed: bool = False  # the suspender switched (paused <-> running) in this check


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class DiskPolicy:
    """Checks free space, deletes old processed data, and pauses/resumes acquisition with hysteresis.

    What may be deleted comes from `index` (the data store's records; None: nothing here is ever deleted, as on the
    slave, whose spool holds only unsent files). `is_processed(name)` answers from the processing worker's journal;
    `is_transferred(name)` defaults to True on the master (a file is in the data store only once it has been
    received); `day_complete(day)` from the `DayLedger` (every file of a recorded day may go, however old);
    `delete(name)` removes a stored file (`DataStore.remove`). `today()` gives the date folder (YYYY-MM-DD) of the
    current station day, on the station clock.
    """

    def __init__(
        self,
        cfg: StorageConfig,
        data_root: Path,
        today: Callable[[], str],
        is_processed: Callable[[FileName], bool],
        is_transferred: Callable[[FileName], bool] | None = None,
        free_bytes: Callable[[], int] | None = None,
        delete: Callable[[FileName], None] | None = None,
        day_complete: Callable[[str], bool] | None = None,
        index: StoreIndex | None = None,
    ):
        self.cfg = cfg
        self.data_root = Path(data_root)
        self.index = index
        self._today = today
        self._is_processed = is_processed
        self._is_transferred = is_transferred or (lambda name: True)
        self._free_bytes = free_bytes or (lambda: disk_free_bytes(self.data_root))
        self._delete = delete or self._unlink
        self._day_complete = day_complete or (lambda day: False)
        # The one record of "paused for disk space" (the station's paused state follows it).
        self.suspender = Suspender(
            "disk", self.free_mb, low=lambda: self.cfg.min_free_mb, high=lambda: self.cfg.resume_free_mb,
            pause="disk_full", resume="disk_ok", unit="MB free",
        )  # fmt: skip
        self.deleted_total = 0
        self._log = get_logger("disk_policy")

    @property
    def paused(self) -> bool:
        return self.suspender.active

    def free_mb(self) -> float:
        return self._free_bytes() / MB

    def _unlink(self, name: FileName) -> None:
        if self.index is not None:  # always: candidates come from the index
            self.index.path(name).unlink()

    def candidates(self) -> Iterator[FileName]:
        """Deletable files, oldest first: date folders before today, files processed and transferred."""
        if self.index is None:
            return
        today = self._today()
        for day in self.index.days():
            if day >= today:
                break  # today's (and anything dated after it) is never deleted
            whole_day = self._day_complete(day)
            for name in self.index.day(day):
                if whole_day or (self._is_processed(name) and self._is_transferred(name)):
                    yield name

    def check(self) -> DiskCheck:
        """One pass: delete if below the low mark, then update the suspender. Cheap when there is room."""
        free = self.free_mb()
        deleted: list[str] = []
        if free < self.cfg.min_free_mb and self.index is not None:
            days: set[str] = set()
            for name in self.candidates():
                if free >= self.cfg.resume_free_mb:
                    break
                path = self.index.path(name)
                if is_temp_or_locked(path):
                    continue  # the original's `.lock`: someone is still reading or writing it
                try:
                    self._delete(name)
                except FileNotFoundError:
                    self.index.discard(name)  # removed by hand meanwhile: nothing freed, nothing to keep
                    continue
                except OSError as e:
                    self._log.warning("disk_delete_failed", file=str(path), error=str(e))
                    continue
                self.index.discard(name)
                deleted.append(path.name)
                days.add(name.date_folder)
                free = self.free_mb()
            if deleted:
                self.deleted_total += len(deleted)
                self._log.info("disk_deleted_old_data", files=len(deleted), oldest=deleted[0], free_mb=round(free))
                self._remove_empty_folders(days)
        changed = self.suspender.update(free)
        return DiskCheck(free_mb=free, paused=self.paused, deleted=deleted, changed=changed)

    def _remove_empty_folders(self, days: set[str]) -> None:
        for day in days:
            with contextlib.suppress(OSError):  # not empty (a foreign file, a kept lock), or gone already
                (self.data_root / day).rmdir()
