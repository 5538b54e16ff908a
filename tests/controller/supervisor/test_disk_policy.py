"""Disk policy: deletes only old, processed data; pauses with hysteresis when that is not enough."""

from __future__ import annotations

from pathlib import Path

from controller.config import StorageConfig
from controller.disk_policy import MB, DiskPolicy
from controller.storage.index import StoreIndex


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
    index = StoreIndex(root)
    return DiskPolicy(
        cfg, root, today=lambda: "2024-01-03", is_processed=lambda name: str(name) in processed,
        free_bytes=disk.free_bytes, delete=lambda name: disk.delete(index.path(name)), index=index,
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


# ---------------------------------------------------------------------------------- durable day completion


def _spectrum(root: Path, day: str, hhmmss: str) -> Path:
    folder = root / day
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{day}T{hhmmss}_100ss_1coadd_Plume.npy"
    p.write_bytes(b"s")
    return p


def _day(root: Path, day: str, slots: int = 3) -> list[str]:
    """A day of paired A/B plume images and spectra; returns the A keys (the worker's pair keys)."""
    keys = []
    for i in range(slots):
        hhmmss = f"12{i:02d}00"
        a = _make(root, day, hhmmss, "A")
        _make(root, day, hhmmss, "B")
        _spectrum(root, day, hhmmss)
        keys.append(a.name[:17])
    return keys


def test_day_complete_only_when_every_pair_and_spectrum_is_processed(tmp_path):
    from controller.disk_policy import day_completion

    keys = _day(tmp_path, "2024-01-01")
    _make(tmp_path, "2024-01-01", "130000", "A")  # A without its B: can never be processed, does not hold the day
    dark = tmp_path / "2024-01-01" / "2024-01-01T050000_fltrA_1ag_10000ss_Dark.png"
    dark.write_bytes(b"d")
    done = {("pairs", k) for k in keys[:-1]} | {("spectra", k) for k in keys}
    complete, info = day_completion(StoreIndex(tmp_path), "2024-01-01", lambda kind, key: (kind, key) in done)
    assert not complete and info == {"pairs": 3, "spectra": 3, "unprocessed": 1}
    done.add(("pairs", keys[-1]))
    assert day_completion(StoreIndex(tmp_path), "2024-01-01", lambda kind, key: (kind, key) in done)[0]


def test_record_completed_days_never_today_nor_days_still_in_the_slave_spool(tmp_path):
    from controller.disk_policy import DayLedger, record_completed_days

    root = tmp_path / "data"
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        _day(root, day)
    everything = lambda kind, key: True  # noqa: E731 - the worker processed everything
    ledger, root = DayLedger(tmp_path / "days.json"), StoreIndex(root)
    assert record_completed_days(root, ledger, "2024-01-03", everything, None) == []  # link down: unknown
    assert record_completed_days(root, ledger, "2024-01-03", everything, {"2024-01-02"}) == ["2024-01-01"]
    assert record_completed_days(root, ledger, "2024-01-03", everything, set()) == ["2024-01-02"]
    assert "2024-01-03" not in ledger
    again = DayLedger(tmp_path / "days.json")  # durable: a restarted master knows
    assert "2024-01-01" in again and "2024-01-02" in again and again.days["2024-01-01"]["pairs"] == 3


def test_recorded_old_days_are_deleted_oldest_first_even_beyond_the_worker_journal(tmp_path):
    """Data far older than the worker's two-day journal still goes once its day was recorded complete; an
    unrecorded day and today's never go; if that is not enough the station pauses, and resumes above the mark."""
    from controller.disk_policy import DayLedger, record_completed_days

    root = tmp_path / "data"
    for day in ("2023-11-01", "2023-11-02", "2023-12-24", "2024-01-03"):
        _day(root, day, slots=2)
    ledger = DayLedger(tmp_path / "days.json")
    journal_days = {"2023-11-01", "2023-11-02"}  # processed back then (the journal has long forgotten them)
    index = StoreIndex(root)
    record_completed_days(index, ledger, "2023-11-03", lambda kind, key: key[:10] in journal_days, set())
    assert set(ledger.days) == journal_days
    disk = FakeDisk(40)
    cfg = StorageConfig(data_root=root, min_free_mb=100, resume_free_mb=150)
    pol = DiskPolicy(
        cfg, root, today=lambda: "2024-01-03", is_processed=lambda name: False, free_bytes=disk.free_bytes,
        delete=lambda name: disk.delete(index.path(name)), day_complete=lambda day: day in DayLedger(tmp_path / "days.json"),
        index=index,
    )  # fmt: skip
    res = pol.check()
    # 6 files on 2023-11-01, then 6 on 2023-11-02 are deletable, 10 MB each: the resume mark (150 MB from 40)
    # is passed after 11 files, the oldest first.
    assert len(res.deleted) == 11 and res.deleted == sorted(res.deleted) and not res.paused
    assert all(n.startswith("2023-11-01") for n in res.deleted[:6])
    assert not (root / "2023-11-01").exists()  # emptied folder removed
    assert len(list((root / "2023-12-24").iterdir())) == 6 and len(list((root / "2024-01-03").iterdir())) == 6
    # Short again with nothing more to delete: pause; back above min but under resume: still paused; then resume.
    disk.free = 50 * MB
    for p in list((root / "2023-11-02").iterdir()):
        p.unlink()
    assert pol.check().paused
    disk.free = 120 * MB
    assert pol.check().paused
    disk.free = 151 * MB
    res = pol.check()
    assert not res.paused and res.changed
