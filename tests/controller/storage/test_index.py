"""The data store's index: one scan at start-up, kept current by the store's writes and deletions, foreign entries
reported once and never indexed (so never deleted by the disk policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from controller.config import StorageConfig
from controller.disk_policy import MB, DiskPolicy
from controller.storage.datastore import DataStore
from controller.storage.index import StoreIndex
from controller.storage.names import ImageName, SpectrumName

T = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


def _img(seconds: int, band: str = "A", kind: str = "Plume", day: int = 0) -> ImageName:
    return ImageName(T + timedelta(days=day, seconds=seconds), band, 1, 10_000, kind)


def _on_disk(root, *records) -> None:
    for r in records:
        (root / r.date_folder).mkdir(parents=True, exist_ok=True)
        (root / r.date_folder / str(r)).write_bytes(b"x")


def test_start_up_scan_holds_each_station_file_as_its_record_in_time_order(tmp_path):
    spectrum = SpectrumName(T, 100, 1, "Plume")
    records = [_img(4, "B"), _img(0, "A"), _img(0, "B"), spectrum, _img(0, "A", day=1)]
    _on_disk(tmp_path, *records)
    index = StoreIndex(tmp_path)
    assert index.days() == ["2024-01-01", "2024-01-02"]
    assert index.day("2024-01-01") == [spectrum, _img(0, "A"), _img(0, "B"), _img(4, "B")]  # as their names sort
    assert [str(r) for r in index.day("2024-01-01")] == sorted(str(r) for r in records[:4])
    assert len(index) == 5 and _img(4, "B") in index and _img(8) not in index
    assert index.path(spectrum) == tmp_path / "2024-01-01" / str(spectrum)


def test_scanned_once_a_file_put_there_by_hand_afterwards_is_not_seen(tmp_path):
    _on_disk(tmp_path, _img(0))
    index = StoreIndex(tmp_path)
    figures = index.scan()
    assert (figures["files"], figures["days"], figures["foreign"]) == (1, 1, 0)
    _on_disk(tmp_path, _img(4))  # not through the store: the index is the store's, not a listing
    assert list(index.records()) == [_img(0)]


def test_the_stores_writes_and_deletions_keep_it_current(tmp_path):
    store = DataStore(tmp_path)
    early = store.save_bytes(_img(0), b"a")  # before the first scan: the scan finds it (once)
    assert store.index.scan()["files"] == 1
    store.save_bytes(_img(4, "B"), b"b")
    store.save_bytes(str(_img(8)), b"c")  # a bare name from outside, validated by the store
    store.save_file(_img(12), _temp(store, _img(12)))
    assert list(store.index.records()) == [_img(0), _img(4, "B"), _img(8), _img(12)]
    store.remove(_img(4, "B"))
    assert _img(4, "B") not in store.index and not (tmp_path / "2024-01-01" / str(_img(4, "B"))).exists()
    early.unlink()  # gone by hand: removing it only forgets it
    store.remove(_img(0))
    assert list(store.index.records()) == [_img(8), _img(12)]
    store.remove(_img(8))
    store.remove(_img(12))
    assert store.index.days() == [] and len(store.index) == 0


def _temp(store: DataStore, record: ImageName):
    tmp = store.temp_for(record)
    tmp.write_bytes(b"d")
    return tmp


def test_foreign_entries_are_reported_once_and_never_indexed(tmp_path):
    _on_disk(tmp_path, _img(0))
    day = tmp_path / "2024-01-01"
    (day / "notes.txt").write_text("the operator's")
    misplaced = _img(0, day=1)
    (day / str(misplaced)).write_bytes(b"in the wrong day's folder")
    (day / (str(_img(4)) + ".lock")).touch()  # the original's lock sidecar: not foreign
    (day / ".tmp-half-written").write_bytes(b"")  # a write in progress: not foreign
    (tmp_path / "backup").mkdir()
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / ".conflicts").mkdir()  # the store's kept-aside copies: hidden, not data
    index = StoreIndex(tmp_path)
    with capture_logs() as logs:
        first = index.scan()
        index.scan()
        list(index.records())
    reports = [e for e in logs if e["event"] == "foreign_files_in_data_root"]
    assert len(reports) == 1 and reports[0]["count"] == 4 and first["foreign"] == 4
    assert sorted(reports[0]["examples"]) == sorted(
        ["2024-01-01/notes.txt", f"2024-01-01/{misplaced}", "backup/", "readme.md"]
    )
    assert list(index.records()) == [_img(0)]


def test_the_disk_policy_never_deletes_a_foreign_file_even_one_with_a_station_name(tmp_path):
    _on_disk(tmp_path, _img(0))
    misplaced = _img(0, day=1)
    stray = tmp_path / "2024-01-01" / str(misplaced)
    stray.write_bytes(b"x")
    store = DataStore(tmp_path)
    cfg = StorageConfig(data_root=tmp_path, min_free_mb=100, resume_free_mb=150)
    policy = DiskPolicy(
        cfg, tmp_path, today=lambda: "2024-01-05", is_processed=lambda name: True, free_bytes=lambda: 10 * MB,
        delete=store.remove, index=store.index,
    )  # fmt: skip
    res = policy.check()
    assert misplaced not in store.index and len(store.index) == 0
    assert res.deleted == [str(_img(0))] and res.paused
    assert stray.exists() and not (tmp_path / "2024-01-01" / str(_img(0))).exists()


def test_latest_plume_is_the_newest_of_each_band_and_the_newest_pair(tmp_path):
    store = DataStore(tmp_path)
    for r in (_img(0, "A"), _img(0, "B"), _img(4, "B"), _img(8, "A"), _img(12, "A", "Dark")):
        store.save_bytes(r, b"x")
    store.save_bytes(_img(0, "A", day=-1), b"x")  # an older day: not looked at
    assert store.index.latest_plume() == {"A": _img(8), "B": _img(4, "B"), "pair_A": _img(0), "pair_B": _img(0, "B")}
    assert StoreIndex(tmp_path / "empty").latest_plume() == {}
