"""The master's file receiver: checksum verified, stored once, never a path from the network."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from controller.errors import FileNameError
from controller.link.receiver import ChecksumMismatch, FileReceiver, NameConflict

from .conftest import station_names


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_stored_in_date_folder_then_duplicate(tmp_path):
    rx = FileReceiver(tmp_path)
    name = station_names(1)[0]
    assert rx.accept(name, sha(b"abc"), b"abc") == "stored"
    path = tmp_path / "2024-03-26" / name
    assert path.read_bytes() == b"abc"
    assert rx.accept(name, sha(b"abc"), b"abc") == "duplicate"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [name]


def test_received_files_get_the_flat_copy_for_the_original_ftp_client(tmp_path):
    from controller.link.receiver import open_store

    rx = FileReceiver(open_store(tmp_path / "data", flat_copy_dir=tmp_path / "flat"))
    name = station_names(1)[0]
    assert rx.accept(name, sha(b"abc"), b"abc") == "stored"
    assert (tmp_path / "flat" / name).read_bytes() == b"abc"
    assert (tmp_path / "data" / "2024-03-26" / name).read_bytes() == b"abc"


def test_checksum_mismatch_stores_nothing(tmp_path):
    rx = FileReceiver(tmp_path)
    name = station_names(1)[0]
    with pytest.raises(ChecksumMismatch):
        rx.accept(name, sha(b"abc"), b"abd")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_conflicting_content_never_overwrites_what_was_acked(tmp_path):
    rx = FileReceiver(tmp_path)
    name = station_names(1)[0]
    rx.accept(name, sha(b"first"), b"first")
    with pytest.raises(NameConflict):
        rx.accept(name, sha(b"second"), b"second")
    assert (tmp_path / "2024-03-26" / name).read_bytes() == b"first"


@pytest.mark.parametrize("bad", ["../evil.png", "/etc/passwd", "2024-03-26T140000_fltrB_1ag_1ss_Plume.png\x00"])
def test_names_from_the_network_are_never_paths(tmp_path, bad):
    with pytest.raises(FileNameError):
        FileReceiver(tmp_path / "data").accept(bad, sha(b"x"), b"x")
    assert not (tmp_path / "evil.png").exists()


def test_concurrent_copies_of_one_name_store_once(tmp_path):
    rx = FileReceiver(tmp_path)
    name = station_names(1)[0]
    data = b"z" * 100_000
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: rx.accept(name, sha(data), data), range(16)))
    assert results.count("stored") == 1 and results.count("duplicate") == 15
