"""Disk policy of the master: keep room for new data without ever losing what is not safe elsewhere.

Below `storage.min_free_mb` the oldest files that are already processed (and, on the master, transferred: every
file in the data store has arrived there) are deleted, oldest first, never today's and never unprocessed ones,
until `resume_free_mb` is free again. If that is not enough, acquisition is paused (a suspender, as in bluesky)
until free space is back above `resume_free_mb`: the hysteresis keeps it from flapping at the threshold.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller.config import StorageConfig
from controller.logging import get_logger
from controller.storage.atomic import is_temp_or_locked
from controller.storage.names import parse_name

MB = 1024 * 1024


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

    `is_processed(path)` answers from the processing worker's journal; `is_transferred(path)` defaults to True
    on the master (a file is in the data store only once it has been received). `today()` gives the date folder
    (YYYY-MM-DD) of the current station day, on the station clock.
    """

    def __init__(
        self,
        cfg: StorageConfig,
        data_root: Path,
        today: Callable[[], str],
        is_processed: Callable[[Path], bool],
        is_transferred: Callable[[Path], bool] | None = None,
        free_bytes: Callable[[], int] | None = None,
        delete: Callable[[Path], None] | None = None,
    ):
        self.cfg = cfg
        self.data_root = Path(data_root)
        self._today = today
        self._is_processed = is_processed
        self._is_transferred = is_transferred or (lambda p: True)
        self._free_bytes = free_bytes or (lambda: disk_free_bytes(self.data_root))
        self._delete = delete or (lambda p: p.unlink())
        self.paused = False
        self.deleted_total = 0
        self._log = get_logger("disk_policy")

    def free_mb(self) -> float:
        return self._free_bytes() / MB

    def candidates(self) -> list[Path]:
        """Deletable files, oldest first: date folders before today, files processed and transferred."""
        today = self._today()
        out: list[tuple[str, str, Path]] = []
        if not self.data_root.is_dir():
            return []
        for folder in sorted(p for p in self.data_root.iterdir() if p.is_dir()):
            if folder.name >= today:
                continue  # today's (and anything dated after it) is never deleted
            for path in folder.iterdir():
                if not path.is_file() or is_temp_or_locked(path):
                    continue
                try:
                    key = parse_name(path.name).time_key
                except ValueError:
                    continue  # not station data: not ours to delete
                if self._is_processed(path) and self._is_transferred(path):
                    out.append((key, path.name, path))
        out.sort()
        return [p for _, _, p in out]

    def check(self) -> DiskCheck:
        """One pass: delete if below the low mark, then update the suspender. Cheap when there is room."""
        free = self.free_mb()
        deleted: list[str] = []
        if free < self.cfg.min_free_mb:
            for path in self.candidates():
                if free >= self.cfg.resume_free_mb:
                    break
                try:
                    self._delete(path)
                except OSError as e:
                    self._log.warning("disk_delete_failed", file=str(path), error=str(e))
                    continue
                deleted.append(path.name)
                free = self.free_mb()
            if deleted:
                self.deleted_total += len(deleted)
                self._log.info("disk_deleted_old_data", files=len(deleted), oldest=deleted[0], free_mb=round(free))
                self._remove_empty_folders()
        was = self.paused
        if not self.paused and free < self.cfg.min_free_mb:
            self.paused = True
            self._log.warning("acquisition_paused_disk_full", free_mb=round(free), min_free_mb=self.cfg.min_free_mb)
        elif self.paused and free >= self.cfg.resume_free_mb:
            self.paused = False
            self._log.info("acquisition_resumed_disk_free", free_mb=round(free), resume_free_mb=self.cfg.resume_free_mb)
        return DiskCheck(free_mb=free, paused=self.paused, deleted=deleted, changed=was != self.paused)

    def _remove_empty_folders(self) -> None:
        today = self._today()
        for folder in self.data_root.iterdir():
            if folder.is_dir() and folder.name < today:
                try:
                    folder.rmdir()
                except OSError:
                    pass  # not empty
