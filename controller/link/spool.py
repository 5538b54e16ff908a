"""The slave's spool: every capture is written here first and deleted only after the master acknowledged it.

On disk each file is `<seq>.<name>`: the sequence number keeps "oldest first" exact across restarts (mtimes
can tie), and the name part is the station file name, validated with parse_name before anything is written.
Writes are atomic, so a crash leaves at most a temp file, which the next start removes. Nothing here is ever
replaced: a second capture under a pending name with other content goes to rejected/ (under a unique name there),
as does a file the master refuses for good.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from controller.errors import StorageError
from controller.logging import get_logger
from controller.storage.atomic import TEMP_PREFIX, atomic_create_bytes, link_unique, same_content, temp_path_for
from controller.storage.names import ImageName, SpectrumName, parse_name

_SEQ_DIGITS = 12
REJECTED_DIR = "rejected"


class Spool:
    """Thread-safe: acquisition adds from executor threads while the link reads and removes."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._log = get_logger("spool", dir=str(self.dir))
        self._lock = threading.Lock()  # guards the index; held only for dict operations
        self._write_lock = threading.Lock()  # serialises adds so the index stays in seq order
        self._index: dict[str, int] = {}  # name -> seq, in seq order (oldest first)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._scan()
        except OSError as e:
            raise StorageError(e.errno, f"cannot open spool {self.dir}: {e.strerror or e}") from e

    def _scan(self) -> None:
        found: dict[str, int] = {}
        for entry in os.scandir(self.dir):
            if not entry.is_file():
                continue
            if entry.name.startswith(TEMP_PREFIX):
                # An add interrupted by a crash: the capture never made it into the spool.
                os.unlink(entry.path)
                self._log.warning("spool_temp_removed", file=entry.name)
                continue
            seq_text, _, name = entry.name.partition(".")
            if not seq_text.isdigit() or not name:
                self._log.warning("spool_foreign_file", file=entry.name)
                continue
            seq = int(seq_text)
            old = found.get(name)
            if old is not None:
                # Two copies of one name (left by an older version): the newest stays queued, the other goes aside.
                self._aside(self._path(name, min(old, seq)), name, "two spool copies of one name")
                seq = max(old, seq)
            found[name] = seq
        self._index = dict(sorted(found.items(), key=lambda item: item[1]))
        self._next_seq = max(found.values(), default=0) + 1

    def _path(self, name: str, seq: int) -> Path:
        return self.dir / f"{seq:0{_SEQ_DIGITS}d}.{name}"

    def add(self, name: str | ImageName | SpectrumName, data: bytes) -> Path:
        """Queue a capture under its station file name. A pending file of that name is never replaced: the same
        content again is a no-op (its path), other content is kept in rejected/ under a unique name (that path)."""
        name = str(parse_name(name))  # a capture's record is not parsed again; a string from elsewhere is
        with self._write_lock:
            with self._lock:
                old = self._index.get(name)
            if old is not None:
                pending = self._path(name, old)
                try:
                    if same_content(pending, hashlib.sha256(data).hexdigest()):
                        return pending
                except FileNotFoundError:
                    pass  # acked and removed meanwhile: queue the new content under a new seq
                else:
                    return self._aside_bytes(name, data, "a different capture of this name is already queued")
            seq = self._next_seq
            self._next_seq += 1
            path = atomic_create_bytes(self._path(name, seq), data)
            with self._lock:
                self._index[name] = seq
        return path

    def _aside_bytes(self, name: str, data: bytes, reason: str) -> Path:
        tmp = temp_path_for(self.dir / name)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return self._aside(tmp, name, reason)
        finally:
            tmp.unlink(missing_ok=True)

    def pending(self) -> list[str]:
        """Names waiting for an ack, oldest first."""
        with self._lock:
            return list(self._index)

    def days(self) -> list[str]:
        """The date folders (YYYY-MM-DD) of the files waiting here; ["*"] when a pending name is of no known day
        (hold back every day rather than guess). The slave's store: its names are parsed here, nowhere else."""
        found: set[str] = set()
        for name in self.pending():
            try:
                found.add(parse_name(name).date_folder)
            except ValueError:
                return ["*"]
        return sorted(found)

    def head(self, count: int, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Up to `count` oldest pending names not in `skip`; cheap even with a long backlog."""
        out: list[str] = []
        if count <= 0:
            return out
        with self._lock:
            for name in self._index:
                if name not in skip:
                    out.append(name)
                    if len(out) >= count:
                        break
        return out

    def path(self, name: str) -> Path:
        with self._lock:
            seq = self._index.get(name)
        if seq is None:
            raise KeyError(name)
        return self._path(name, seq)

    def read(self, name: str) -> bytes:
        return self.read_entry(name)[1]

    def read_entry(self, name: str) -> tuple[int, bytes]:
        """(seq, data) of a pending file. KeyError if it is not pending (any more)."""
        with self._lock:
            seq = self._index[name]
        path = self._path(name, seq)
        try:
            return seq, path.read_bytes()
        except FileNotFoundError as e:
            raise KeyError(name) from e  # replaced or removed while we looked
        except OSError as e:
            raise StorageError(e.errno, f"cannot read spool file {path}: {e.strerror or e}") from e

    def entry(self, name: str) -> tuple[int, Path]:
        """(seq, path) of a pending file. KeyError if it is not pending."""
        with self._lock:
            seq = self._index[name]
        return seq, self._path(name, seq)

    def seq(self, name: str) -> int:
        """The entry's sequence number: lets the sender tell a re-added file from the one it sent."""
        with self._lock:
            return self._index[name]

    def remove(self, name: str, seq: int | None = None) -> None:
        """Forget a file once the master has it. With `seq`, only if the entry was not replaced meanwhile.
        Removing a name that is not pending does nothing."""
        with self._lock:
            if seq is not None and self._index.get(name) != seq:
                return
            seq = self._index.pop(name, None)
        if seq is not None:
            self._unlink(self._path(name, seq))

    def reject(self, name: str, reason: str) -> None:
        """Move a file the master refuses for good out of the queue, keeping it for a person to look at."""
        with self._lock:
            seq = self._index.pop(name, None)
        if seq is None:
            return
        self._aside(self._path(name, seq), name, reason)

    def _aside(self, src: Path, name: str, reason: str) -> Path:
        """Hard-link `src` into rejected/ as `name` (or `name.N` when taken: never replaced); the new path."""
        path = link_unique(src, self.dir / REJECTED_DIR, name)
        if src.parent == self.dir and not src.name.startswith(TEMP_PREFIX):
            self._unlink(src)
        self._log.error("spool_file_rejected", file=name, kept_as=str(path), reason=reason)
        return path

    def _unlink(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(e.errno, f"cannot remove spool file {path}: {e.strerror or e}") from e

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._index
