"""The slave's spool: oldest first across restarts, atomic adds, removal only of what was sent."""

from __future__ import annotations

import pytest

from controller.errors import FileNameError
from controller.link.spool import Spool
from controller.storage.atomic import TEMP_PREFIX

from .conftest import station_names


def test_pending_is_oldest_first_and_survives_a_restart(tmp_path):
    names = station_names(6)
    spool = Spool(tmp_path)
    for i, name in enumerate(reversed(names)):  # insertion order, not name order, decides
        spool.add(name, bytes([i]) * 10)
    assert spool.pending() == list(reversed(names))
    again = Spool(tmp_path)
    assert again.pending() == list(reversed(names))
    assert again.read(names[0]) == bytes([5]) * 10
    again.add(station_names(8)[7], b"new")
    assert again.pending()[-1] == station_names(8)[7]


def test_remove_only_after_ack_and_only_the_sent_copy(tmp_path):
    a, b = station_names(2)
    spool = Spool(tmp_path)
    spool.add(a, b"one")
    seq = spool.seq(a)
    spool.remove(a, seq)
    spool.add(a, b"two")  # re-captured under the same name after the first copy was acked
    spool.remove(a, seq)  # a late ack for the first copy must not delete the second
    assert spool.pending() == [a] and spool.read(a) == b"two"
    spool.add(b, b"b")
    spool.remove(a)
    assert spool.pending() == [b] and len(spool) == 1
    spool.remove(a)  # idempotent
    assert len(list(tmp_path.iterdir())) == 1


def test_head_skips_in_flight_names(tmp_path):
    names = station_names(5)
    spool = Spool(tmp_path)
    for n in names:
        spool.add(n, b"x")
    assert spool.head(2) == names[:2]
    assert spool.head(2, skip={names[0], names[2]}) == [names[1], names[3]]
    assert spool.head(0) == []


def test_crash_leftovers_are_cleaned_and_foreign_files_ignored(tmp_path):
    name = station_names(1)[0]
    (tmp_path / f"{TEMP_PREFIX}000000000001.{name}.abc").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    # the same name twice (crash between writing the new copy and removing the old one): newest wins
    (tmp_path / f"000000000003.{name}").write_bytes(b"old")
    (tmp_path / f"000000000007.{name}").write_bytes(b"new")
    spool = Spool(tmp_path)
    assert spool.pending() == [name]
    assert spool.read(name) == b"new"
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir())
    spool.add(station_names(2)[1], b"y")
    assert spool.seq(station_names(2)[1]) == 8


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x.png", "2024-01-01T000000_fltrB_1ag_1ss_Plume.png/.."])
def test_only_station_file_names_are_spooled(tmp_path, bad):
    with pytest.raises(FileNameError):
        Spool(tmp_path).add(bad, b"x")


def test_reject_moves_the_file_aside(tmp_path):
    name = station_names(1)[0]
    spool = Spool(tmp_path)
    spool.add(name, b"x")
    spool.reject(name, "refused")
    assert len(spool) == 0
    assert (tmp_path / "rejected" / name).read_bytes() == b"x"
    assert Spool(tmp_path).pending() == []


# Issue 11 finding 1: a capture under a pending name replaced it in the spool, and rejected/ replaced too.


def test_second_capture_under_a_pending_name_never_overwrites_it(tmp_path):
    (a,) = station_names(1)
    spool = Spool(tmp_path)
    spool.add(a, b"slot image")
    aside = spool.add(a, b"single in the same second")
    assert spool.pending() == [a] and spool.read(a) == b"slot image"
    assert aside.parent == tmp_path / "rejected" and aside.read_bytes() == b"single in the same second"


def test_same_capture_queued_twice_is_one_entry(tmp_path):
    (a,) = station_names(1)
    spool = Spool(tmp_path)
    first = spool.add(a, b"x")
    assert spool.add(a, b"x") == first and len(spool) == 1
    assert not (tmp_path / "rejected").exists()


def test_rejected_folder_never_overwrites_a_kept_file(tmp_path):
    (a,) = station_names(1)
    spool = Spool(tmp_path)
    for content in (b"first refused", b"second refused", b"third refused"):
        spool.add(a, content)
        spool.reject(a, "conflict")
    kept = sorted((tmp_path / "rejected").iterdir())
    assert sorted(p.read_bytes() for p in kept) == [b"first refused", b"second refused", b"third refused"]
    assert len(spool) == 0


def test_two_spool_copies_of_one_name_are_both_kept(tmp_path):
    (a,) = station_names(1)
    (tmp_path / f"{1:012d}.{a}").write_bytes(b"older")
    (tmp_path / f"{2:012d}.{a}").write_bytes(b"newer")
    spool = Spool(tmp_path)
    assert spool.pending() == [a] and spool.read(a) == b"newer"
    assert (tmp_path / "rejected" / a).read_bytes() == b"older"
