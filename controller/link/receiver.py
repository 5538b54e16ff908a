"""The master's end of file transfer: verify, store atomically (fsynced), and say whether it was new.

`accept` is blocking (hashing, writing, fsync): the link calls it in an executor thread. Two copies of the same
name may arrive at once (a resend racing a replaced session), so each name is handled under its own lock.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Literal, Protocol

from controller.errors import ProtocolError
from controller.logging import get_logger
from controller.storage.names import parse_name


class ChecksumMismatch(ProtocolError):
    """The received bytes do not match the sender's sha256: the transfer was corrupted; ask for it again."""


class NameConflict(ProtocolError):
    """A different file under a name the master already stored: neither copy may be lost or overwritten."""


class ByteStore(Protocol):
    def save_bytes(self, name: str, data: bytes) -> Path: ...

    def exists(self, name: str) -> bool: ...

    def path_for(self, name: str) -> Path: ...


def open_store(root: str | Path, flat_copy_dir: str | Path | None = None) -> ByteStore:
    """The project's DataStore on `root`, hard-linking each new file into `flat_copy_dir` when given (for the
    original's FTP client; storage.flat_copy_dir)."""
    from controller.storage.datastore import DataStore

    return DataStore(root, flat_copy_dir=flat_copy_dir or None)


class FileReceiver:
    def __init__(self, datastore: ByteStore | str | Path):
        self.store: ByteStore = open_store(datastore) if isinstance(datastore, str | Path) else datastore
        self._log = get_logger("receiver")
        self._locks_guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def accept(self, name: str, sha256_hex: str, data: bytes) -> Literal["stored", "duplicate"]:
        """Verify and store one file. Raises ChecksumMismatch, NameConflict, FileNameError (bad name),
        StorageError."""
        parse_name(name)  # never a path from the network: only a valid station file name goes further
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256_hex:
            raise ChecksumMismatch(f"{name}: sha256 {digest} != sender's {sha256_hex}")
        lock = self._acquire(name)
        try:
            if self.store.exists(name):
                existing = hashlib.sha256(self.store.path_for(name).read_bytes()).hexdigest()
                if existing != digest:
                    # The stored file is complete (atomic writes) and was acked once: never overwrite it. The
                    # sender keeps its copy aside for a person instead of deleting it.
                    self._log.error("file_conflict", file=name, stored_sha256=existing, received_sha256=digest)
                    raise NameConflict(f"{name}: a different file of this name is already stored")
                return "duplicate"
            self.store.save_bytes(name, data)
            return "stored"
        finally:
            self._release(name, lock)

    def _acquire(self, name: str) -> threading.Lock:
        with self._locks_guard:
            lock, users = self._locks.get(name, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._locks[name] = (lock, users + 1)
        lock.acquire()
        return lock

    def _release(self, name: str, lock: threading.Lock) -> None:
        lock.release()
        with self._locks_guard:
            _, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)
