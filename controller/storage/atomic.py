"""Atomic file writes: temp file in the same folder + fsync + rename + fsync of the folder.

A file under its final name is always complete; a crash leaves at most a `.tmp-*` file that readers ignore.
`atomic_write_*` replace (settings, plans: state that has one current value); station data goes through
`atomic_create_*` / `commit_new`, which never replace a file: a name that is taken raises NameTaken.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from controller.errors import StorageError

TEMP_PREFIX = ".tmp-"


class NameTaken(StorageError):
    """The final name already exists: station data is never overwritten. `path` is the taken name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(17, f"{path} already exists; station data is never overwritten")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> Path:
    """Write `path` atomically; `write` receives an open binary file. Raises StorageError naming the file."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise StorageError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


def temp_path_for(path: str | Path) -> Path:
    """A new, empty temp file beside `path` (same filesystem, so commit_new can link it). Creates the folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise StorageError(e.errno, f"cannot create a temp file beside {path}: {e.strerror or e}") from e
    return Path(tmp_name)


def commit_new(tmp: str | Path, path: str | Path, mode: int = 0o644) -> Path:
    """Give the complete, fsynced temp file `tmp` the final name `path` unless that name is taken (hard link +
    unlink: unlike rename, link never replaces). The temp file is gone afterwards in every case. NameTaken if
    the name exists."""
    tmp, path = Path(tmp), Path(path)
    try:
        os.chmod(tmp, mode)
        os.link(tmp, path)
        _fsync_dir(path.parent)
    except FileExistsError as e:
        raise NameTaken(path) from e
    except OSError as e:
        raise StorageError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return path


def atomic_create_with(path: str | Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> Path:
    """Like atomic_write_with, but never replaces: NameTaken when `path` exists (nothing is changed then)."""
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    return commit_new(tmp, path, mode)


def atomic_create_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    return atomic_create_with(path, lambda fh: fh.write(data), mode)


def link_unique(src: str | Path, folder: str | Path, name: str, max_tries: int = 10_000) -> Path:
    """Hard-link `src` into `folder` as `name`, or `name.1`, `name.2`... when taken: a new name, never a
    replaced file. The path used. (The caller unlinks `src` when it is done with it.)"""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(max_tries):
            target = folder / (name if n == 0 else f"{name}.{n}")
            try:
                os.link(src, target)
            except FileExistsError:
                continue
            _fsync_dir(folder)
            return target
    except OSError as e:
        raise StorageError(e.errno, f"cannot keep {src} aside in {folder}: {e.strerror or e}") from e
    raise StorageError(17, f"cannot keep {src} aside in {folder}: {max_tries} names of {name!r} taken")


def same_content(path: str | Path, sha256_hex: str) -> bool:
    """Whether the file at `path` has this sha256 (read in chunks, never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == sha256_hex


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    return atomic_write_with(path, lambda fh: fh.write(data), mode)


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def is_temp_or_locked(path: Path) -> bool:
    """Readers skip files being written: our temp files and the original's `<name>.lock` sidecars."""
    if path.name.startswith(TEMP_PREFIX) or path.suffix == ".lock":
        return True
    return path.with_name(path.name + ".lock").exists()
