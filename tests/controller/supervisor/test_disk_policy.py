"""Disk policy: deletes only old, processed data; pauses with hysteresis when that is not enough."""

from __future__ import annotations

from pathlib import Path

from controller.config import StorageConfig
from controller.disk_policy import MB, DiskPolicy


class FakeDisk:
    """Free space that grows by each deleted file's size."""

    def __init__(self, free_mb: float):
        self.free = int(free_mb * MB)

    def free_bytes(self) -> int:
        return self.free

    def delete(self, path: Path) -> None:
        self.free += 10 * MB  # each fake file "weighs" 10 MB
        path.unlink()


def _make(root: Path, day: str, hhmmss: str, band: str = "A") -> Path:
    folder = root / day
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{day}T{hhmmss}_fltr{band}_1ag_10000ss_Plume.png"
    p.write_bytes(b"x")
    return p


def _policy(root: Path, disk: FakeDisk, processed: set[str], min_mb=100, resume_mb=150) -> DiskPolicy:
    cfg = StorageConfig(data_root=root, min_free_mb=min_mb, resume_free_mb=resume_mb)
    return DiskPolicy(
        cfg, root, today=lambda: "2024-01-03", is_processed=lambda p: p.name in processed,
        free_bytes=disk.free_bytes, delete=disk.delete,
    )  # fmt: skip


def test_nothing_deleted_when_there_is_room(tmp_path):
    old = _make(tmp_path, "2024-01-01", "120000")
    disk = FakeDisk(500)
    res = _policy(tmp_path, disk, {old.name}).check()
    assert res.deleted == [] and not res.paused and old.exists()


def test_deletes_oldest_processed_first_never_today_or_unprocessed(tmp_path):
    oldest = _make(tmp_path, "2024-01-01", "120000")
    unprocessed = _make(tmp_path, "2024-01-01", "110000")
    newer = _make(tmp_path, "2024-01-02", "120000")
    newest_old = _make(tmp_path, "2024-01-02", "130000")
    today = _make(tmp_path, "2024-01-03", "080000")
    processed = {oldest.name, newer.name, newest_old.name, today.name}
    disk = FakeDisk(90)  # below 100; two deletions (20 MB) reach the 110 MB... resume mark is 150 -> needs 6
    res = _policy(tmp_path, disk, processed).check()
    assert res.deleted[:2] == [oldest.name, newer.name]
    assert unprocessed.exists() and today.exists()
    assert not oldest.exists()


def test_pauses_when_nothing_deletable_and_resumes_with_hysteresis(tmp_path):
    _make(tmp_path, "2024-01-03", "080000")  # only today's data: nothing may go
    disk = FakeDisk(50)
    pol = _policy(tmp_path, disk, set())
    first = pol.check()
    assert first.paused and first.changed
    disk.free = 120 * MB  # above min (100) but below resume (150): still paused
    assert pol.check().paused
    disk.free = 160 * MB
    res = pol.check()
    assert not res.paused and res.changed


def test_deletion_stops_at_resume_mark(tmp_path):
    names = {_make(tmp_path, "2024-01-01", f"1{i}0000").name for i in range(8)}
    disk = FakeDisk(95)  # needs 6 deletions of 10 MB to reach 150
    res = _policy(tmp_path, disk, names).check()
    assert len(res.deleted) == 6 and not res.paused
    assert len(list((tmp_path / "2024-01-01").iterdir())) == 2


def test_foreign_files_are_never_deleted(tmp_path):
    folder = tmp_path / "2024-01-01"
    folder.mkdir()
    notes = folder / "notes.txt"
    notes.write_text("keep me")
    disk = FakeDisk(10)
    res = _policy(tmp_path, disk, {"notes.txt"}).check()
    assert notes.exists() and res.paused
