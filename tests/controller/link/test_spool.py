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
    spool.add(a, b"two")  # re-captured under the same name while the first copy was in flight
    spool.remove(a, seq)  # the ack for the first copy must not delete the second
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
