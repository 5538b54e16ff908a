"""The slave's spool: every capture is written here first and deleted only after the master acknowledged it.

On disk each file is `<seq>.<name>`: the sequence number keeps "oldest first" exact across restarts (mtimes
can tie), and the name part is the station file name, validated with parse_name before anything is written.
Writes are atomic, so a crash leaves at most a temp file, which the next start removes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from controller.errors import StorageError
from controller.logging import get_logger
from controller.storage.atomic import TEMP_PREFIX, atomic_write_bytes
from controller.storage.names import parse_name

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
                # Two copies of one name (a crash between writing the new and removing the old): keep the newest.
                os.unlink(self._path(name, min(old, seq)))
                seq = max(old, seq)
            found[name] = seq
        self._index = dict(sorted(found.items(), key=lambda item: item[1]))
        self._next_seq = max(found.values(), default=0) + 1

    def _path(self, name: str, seq: int) -> Path:
        return self.dir / f"{seq:0{_SEQ_DIGITS}d}.{name}"

    def add(self, name: str, data: bytes) -> Path:
        """Store a capture under its station file name (replacing a pending file of the same name)."""
        parse_name(name)
        with self._write_lock:
            seq = self._next_seq
            self._next_seq += 1
            path = atomic_write_bytes(self._path(name, seq), data)
            with self._lock:
                old = self._index.pop(name, None)
                self._index[name] = seq
            if old is not None:
                self._unlink(self._path(name, old))
        return path

    def pending(self) -> list[str]:
        """Names waiting for an ack, oldest first."""
        with self._lock:
            return list(self._index)

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
        target = self.dir / REJECTED_DIR
        target.mkdir(exist_ok=True)
        os.replace(self._path(name, seq), target / name)
        self._log.error("spool_file_rejected", file=name, reason=reason)

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
