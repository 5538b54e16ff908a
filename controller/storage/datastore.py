"""The station's data store: date folders under the data root, atomic writes, original file names and formats.

Every file goes to root/YYYY-MM-DD/<name> with <name> validated by parse_name (names from the network are never
used as paths). A stored file is never replaced: saving under a taken name is a no-op when the content is the same
and NameTaken otherwise (the caller keeps the other content aside, `keep_aside`, under a new name). Readers skip temp files and files with a `<name>.lock` sidecar. When `flat_copy_dir` is set, each
new file is also hard-linked there (the original kept a flat folder for its FTP client).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from controller.errors import FileNameError
from controller.logging import get_logger
from controller.storage.atomic import (
    TEMP_PREFIX,
    NameTaken,
    atomic_create_bytes,
    commit_new,
    is_temp_or_locked,
    link_unique,
    same_content,
    temp_path_for,
)
from controller.storage.index import StoreIndex
from controller.storage.names import ImageName, SpectrumName, parse_name

KINDS = ("image", "spectrum")
ASIDE_DIR = ".conflicts"  # under the data root; hidden, so readers and the disk policy never take it for data
STALE_TEMP_S = 600.0  # a temp file not written to for this long belongs to a writer that died


def spectrum_bytes(array: np.ndarray) -> bytes:
    """The `numpy.save` bytes of a (2, N) float64 spectrum."""
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise ValueError(f"a spectrum is a (2, N) array, got {arr.shape}")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class DataStore:
    """Date-folder storage rooted at `root`."""

    def __init__(self, root: str | Path, flat_copy_dir: str | Path | None = None):
        self.root = Path(root)
        self.flat_copy_dir = Path(flat_copy_dir) if flat_copy_dir else None
        self.index = StoreIndex(self.root, skip=self.flat_copy_dir)  # what is stored, as records
        self._log = get_logger("storage", root=str(self.root))
        self._tidied: set[Path] = set()  # folders already freed of stale temp files by this process

    def _validated(self, name: str | ImageName | SpectrumName) -> ImageName | SpectrumName:
        if isinstance(name, ImageName | SpectrumName):
            return name  # parsed once where it came in (capture, link), passed on as a record
        if not isinstance(name, str) or name != Path(name).name or "\x00" in name or name.startswith("."):
            raise FileNameError(str(name), "must be a bare file name")
        return parse_name(name)

    def path_for(self, name: str | ImageName | SpectrumName) -> Path:
        """root/YYYY-MM-DD/name for a valid station file name."""
        parsed = self._validated(name)
        return self.root / parsed.date_folder / str(parsed)

    def save_image(self, name: ImageName, pixels: np.ndarray) -> Path:
        from controller.storage.png import encode_png16  # OpenCV only where an image is encoded

        return self.save_bytes(name, encode_png16(np.asarray(pixels, dtype=np.uint16)))

    def save_spectrum(self, name: SpectrumName, array: np.ndarray) -> Path:
        return self.save_bytes(name, spectrum_bytes(array))

    def save_bytes(self, name: str | ImageName | SpectrumName, data: bytes) -> Path:
        """Store `data` under a validated station file name, atomically; returns the final path. The same
        content already stored under that name is a no-op; other content raises NameTaken (nothing changed)."""
        record = self._validated(name)
        path = self.path_for(record)
        try:
            atomic_create_bytes(path, data)
        except NameTaken:
            if same_content(path, hashlib.sha256(data).hexdigest()):
                return path
            raise
        self._saved(record, path, len(data))
        return path

    def temp_for(self, name: str | ImageName | SpectrumName) -> Path:
        """A new temp file in `name`'s date folder, to be filled, fsynced and passed to save_file."""
        return temp_path_for(self.path_for(name))

    def save_file(self, name: str | ImageName | SpectrumName, tmp: str | Path) -> Path:
        """Give a complete, fsynced temp file (from temp_for) its station name; the temp file is gone afterwards.
        NameTaken when the name is taken (whatever the content: the caller compares)."""
        record = self._validated(name)
        path = self.path_for(record)
        size = os.stat(tmp).st_size
        commit_new(tmp, path)
        self._saved(record, path, size)
        return path

    def keep_aside(self, name: str | ImageName | SpectrumName, data: bytes) -> Path:
        """Keep content that lost its name to another file under a new, unique name in root/.conflicts/."""
        tmp = temp_path_for(self.root / ASIDE_DIR / "new")
        try:
            tmp.write_bytes(data)
            path = link_unique(tmp, self.root / ASIDE_DIR, str(self._validated(name)))
        finally:
            tmp.unlink(missing_ok=True)
        self._log.error("file_kept_aside", name=str(name), path=str(path), why="a different file already has this name")
        return path

    def _clean_stale_temps(self, folder: Path) -> None:
        """Once per folder and process: remove temp files a writer that died left there (not written to for
        STALE_TEMP_S; a live writer's are fresh). A crash leaves them where files were arriving, and those files
        arrive again after the restart, so the folders that need it are the ones visited."""
        if folder in self._tidied:
            return
        self._tidied.add(folder)
        removed = 0
        now = time.time()
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > STALE_TEMP_S:
                            os.unlink(entry.path)
                            removed += 1
        if removed:
            self._log.warning("stale_temp_files_removed", folder=str(folder), files=removed)

    def _saved(self, record: ImageName | SpectrumName, path: Path, size: int) -> None:
        self.index.add(record)
        self._clean_stale_temps(path.parent)
        if self.flat_copy_dir is not None:
            self._link_flat(path)
        self._log.debug("file_saved", name=path.name, bytes=size)

    def _link_flat(self, path: Path) -> None:
        # The file is already safe under its final name: a flat-copy failure (another filesystem, permissions) is
        # logged, not raised, so it never fails a capture or makes the link refuse (and resend) a stored file.
        target = self.flat_copy_dir / path.name
        try:
            self.flat_copy_dir.mkdir(parents=True, exist_ok=True)
            if target.exists() and os.path.samefile(target, path):
                return
            os.link(path, target)  # never replaces a file someone else put there
        except OSError as e:
            self._log.warning("flat_copy_failed", name=path.name, flat_copy_dir=str(self.flat_copy_dir), error=str(e))

    def remove(self, record: ImageName | SpectrumName) -> None:
        """Delete a stored file and its flat copy (the hard link would otherwise keep the space in use); the index
        forgets it. A file already gone (removed by hand) is only forgotten. A flat file that is not the same inode
        (replaced by someone else) is left alone."""
        path = self.path_for(record)
        if self.flat_copy_dir is not None:
            flat = self.flat_copy_dir / path.name
            try:
                if os.path.samefile(flat, path):
                    flat.unlink()
            except FileNotFoundError:
                pass  # no flat copy (or the FTP client already took it)
        try:
            path.unlink()
        except FileNotFoundError:
            self._log.warning("stored_file_already_gone", name=path.name)
        self.index.discard(record)

    def exists(self, name: str) -> bool:
        return self.path_for(name).is_file()

    def free_bytes(self) -> int:
        """Free bytes for unprivileged writes on the data root's filesystem (or its nearest existing parent)."""
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize

    def iter_files(self, kind: str | None = None) -> Iterator[Path]:
        """Complete station files, oldest date folder first (from the index). `kind`: "image", "spectrum", a
        capture type ("Plume", "Dark", "1257ppmm" ...) or None for all. Files with a `.lock` sidecar are skipped."""
        for record in self.index.records():
            if kind is None:
                wanted = True
            elif kind in KINDS:
                wanted = (kind == "image") == isinstance(record, ImageName)
            else:
                wanted = record.kind == kind
            if wanted and not is_temp_or_locked(path := self.index.path(record)):
                yield path
