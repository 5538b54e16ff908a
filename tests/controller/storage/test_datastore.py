"""DataStore: date folders, atomic writes in the original formats, .lock sidecars, flat copies, names only."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import numpy as np
import pytest

from controller.errors import FileNameError
from controller.storage.atomic import NameTaken
from controller.storage.datastore import DataStore
from controller.storage.names import ImageName, SpectrumName
from controller.storage.png import decode_png16

T = datetime(2019, 9, 18, 7, 43, 35, tzinfo=UTC)


def test_save_image_and_spectrum_in_date_folders(tmp_path):
    store = DataStore(tmp_path / "data")
    img_name = ImageName(T, "A", 1, 999904, "Plume")
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 80
    path = store.save_image(img_name, pixels)
    assert path == tmp_path / "data" / "2019-09-18" / "2019-09-18T074335_fltrA_1ag_999904ss_Plume.png"
    np.testing.assert_array_equal(decode_png16(path.read_bytes()), pixels)
    spec_name = SpectrumName(T, 1000, 1, "Plume")
    arr = np.vstack([np.linspace(242, 404, 5), np.arange(5.0)])
    spath = store.save_spectrum(spec_name, arr)
    loaded = np.load(spath)
    assert loaded.dtype == np.float64 and loaded.shape == (2, 5)
    np.testing.assert_array_equal(loaded, arr)
    assert store.exists(str(img_name)) and store.exists(str(spec_name))
    assert [p.name for p in store.iter_files("image")] == [path.name]
    assert [p.name for p in store.iter_files("spectrum")] == [spath.name]
    assert [p.name for p in store.iter_files("Plume")] == sorted([path.name, spath.name])
    assert list(store.iter_files("Dark")) == []


def test_readers_skip_temp_locked_and_foreign_files(tmp_path):
    store = DataStore(tmp_path)
    done = store.save_bytes("2019-09-18T074335_fltrB_1ag_199994ss_Plume.png", b"x")
    locked = store.save_bytes("2019-09-18T074340_fltrB_1ag_199971ss_Plume.png", b"y")
    (locked.parent / (locked.name + ".lock")).touch()
    (done.parent / ".tmp-2019-09-18T074345_fltrB_1ag_1ss_Plume.png.abc").write_bytes(b"partial")
    (done.parent / "notes.txt").write_text("hello")
    assert [p.name for p in store.iter_files()] == [done.name]
    (locked.parent / (locked.name + ".lock")).unlink()
    assert len(list(store.iter_files())) == 2


@pytest.mark.parametrize(
    "name",
    ["../2019-09-18T074335_fltrA_1ag_1ss_Plume.png", "/etc/passwd", "a/b.png", ".hidden.png", "x.npy", "", "a\x00.png"],
)
def test_names_from_outside_never_become_paths(tmp_path, name):
    with pytest.raises(FileNameError):
        DataStore(tmp_path).save_bytes(name, b"data")
    assert list(tmp_path.rglob("*")) == []


def test_flat_copy_is_a_hard_link(tmp_path):
    store = DataStore(tmp_path / "data", flat_copy_dir=tmp_path / "flat")
    path = store.save_bytes("2019-09-18T074335_1000ss_1coadd_Plume.npy", b"1")
    flat = tmp_path / "flat" / path.name
    assert flat.exists() and os.path.samefile(flat, path)
    with pytest.raises(NameTaken):  # issue 11: a stored file is never replaced (it was relinked before)
        store.save_bytes(path.name, b"2")
    assert flat.read_bytes() == b"1" and os.path.samefile(flat, path)


def test_flat_copy_failure_never_fails_the_stored_file(tmp_path):
    blocker = tmp_path / "flat"
    blocker.write_text("a file where the flat folder should be")
    store = DataStore(tmp_path / "data", flat_copy_dir=blocker)
    path = store.save_bytes("2019-09-18T074335_1000ss_1coadd_Plume.npy", b"1")
    assert path.read_bytes() == b"1" and store.exists(path.name)


def test_removing_a_file_frees_its_flat_copy_too(tmp_path):
    # Disk policy deletions must free space: a hard link left in the flat folder would keep every block in use.
    store = DataStore(tmp_path / "data", flat_copy_dir=tmp_path / "flat")
    kept = store.save_bytes("2019-09-18T074335_1000ss_1coadd_Plume.npy", b"1")
    gone = store.save_bytes("2019-09-18T074339_1000ss_1coadd_Plume.npy", b"2")
    replaced = store.save_bytes("2019-09-18T074343_1000ss_1coadd_Plume.npy", b"3")
    (tmp_path / "flat" / replaced.name).unlink()
    (tmp_path / "flat" / replaced.name).write_bytes(b"someone else's")
    store.remove(SpectrumName.parse(gone.name))
    store.remove(SpectrumName.parse(replaced.name))
    assert not gone.exists() and not (tmp_path / "flat" / gone.name).exists()
    assert (tmp_path / "flat" / replaced.name).read_bytes() == b"someone else's"
    assert os.path.samefile(tmp_path / "flat" / kept.name, kept)
    store.remove(SpectrumName.parse(kept.name))  # the FTP client may already have taken the flat copy: still fine
    assert not (tmp_path / "flat" / kept.name).exists()


def test_free_bytes_of_missing_root_uses_parent(tmp_path):
    store = DataStore(tmp_path / "not" / "yet")
    st = os.statvfs(tmp_path)
    assert abs(store.free_bytes() - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024


def test_spectrum_must_be_2xN(tmp_path):
    with pytest.raises(ValueError, match=r"\(2, N\)"):
        DataStore(tmp_path).save_spectrum(SpectrumName(T, 1, 1, "Dark"), np.zeros(5))


def test_saved_spectrum_is_plain_numpy_save(tmp_path):
    arr = np.ones((2, 3))
    path = DataStore(tmp_path).save_spectrum(SpectrumName(T, 5, 2, "Dark"), arr)
    buf = io.BytesIO()
    np.save(buf, arr)
    assert path.read_bytes() == buf.getvalue()


# Issue 11 finding 1: a single taken in the same second as another capture replaced it (os.replace).


def test_single_in_the_same_second_never_overwrites_a_stored_image(tmp_path):
    store = DataStore(tmp_path)
    name = "2019-09-18T074335_fltrA_1ag_199994ss_Plume.png"
    path = store.save_bytes(name, b"slot image")
    with pytest.raises(NameTaken):
        store.save_bytes(name, b"single taken in the same second")
    assert path.read_bytes() == b"slot image"
    aside = store.keep_aside(name, b"single taken in the same second")
    again = store.keep_aside(name, b"a third one")
    assert aside != again and aside.read_bytes() == b"single taken in the same second"
    assert again.read_bytes() == b"a third one" and path.read_bytes() == b"slot image"
    assert list(store.iter_files()) == [path]  # the kept-aside copies are not data the station processes


def test_same_name_same_content_is_already_stored(tmp_path):
    store = DataStore(tmp_path)
    name = "2019-09-18T074335_1000ss_1coadd_Plume.npy"
    first = store.save_bytes(name, b"same")
    inode = first.stat().st_ino
    assert store.save_bytes(name, b"same") == first and first.stat().st_ino == inode


def test_committing_a_temp_file_never_replaces_a_stored_file(tmp_path):
    store = DataStore(tmp_path)
    name = "2019-09-18T074335_1000ss_1coadd_Plume.npy"
    path = store.save_bytes(name, b"first")
    tmp = store.temp_for(name)
    tmp.write_bytes(b"second")
    with pytest.raises(NameTaken):
        store.save_file(name, tmp)
    assert path.read_bytes() == b"first" and not tmp.exists()
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temp file left behind


def test_temp_files_of_a_writer_that_died_are_cleaned_fresh_ones_kept(tmp_path):
    name = "2019-09-18T074335_1000ss_1coadd_Plume.npy"
    store = DataStore(tmp_path)
    stale, fresh = store.temp_for(name), store.temp_for(name)  # as a receiver killed mid-transfer leaves them
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    fresh.write_bytes(b"x")
    path = DataStore(tmp_path).save_file(name, fresh)  # the next run's first file into that folder
    assert path.read_bytes() == b"x" and [p.name for p in path.parent.iterdir()] == [name]


def test_master_restarted_with_its_clock_behind_never_overwrites_camera_a_images(tmp_path):
    """Issue 11 finding 2 (the storage side): restarted 60 s behind, the master replaced 19 stored A images."""
    from datetime import timedelta

    t0 = datetime(2024, 6, 1, 11, 0, 0, tzinfo=UTC)
    names = [ImageName(t0 + timedelta(seconds=4 * i), "A", 1, 6000, "Plume") for i in range(19)]
    before = DataStore(tmp_path)
    paths = [before.save_bytes(str(n), f"first {i}".encode()) for i, n in enumerate(names)]
    after_restart = DataStore(tmp_path)  # a new process, its clock a minute behind: the same slot names again
    for i, n in enumerate(names):
        with pytest.raises(NameTaken):
            after_restart.save_bytes(str(n), f"second {i}".encode())
        after_restart.keep_aside(str(n), f"second {i}".encode())
    assert [p.read_bytes() for p in paths] == [f"first {i}".encode() for i in range(19)]
    assert len(list((tmp_path / ".conflicts").iterdir())) == 19
