"""The master's end of file transfer: verify, store atomically (fsynced), and say whether it was new.

A file arrives in chunks (`begin` -> `Incoming.write` ... -> `finish`): it is streamed into a temp file beside its
final name and hashed on the way, so no file is ever held whole in memory. `finish` gives it its name without
replacing anything: a taken name with the same content is a duplicate, with other content a NameConflict. The
calls block (writing, fsync): the link makes them in executor threads. Two copies of the same name may arrive at
once (a resend racing a replaced session), so each name is finished under its own lock.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Literal, Protocol

from controller.errors import ProtocolError, StorageError
from controller.logging import get_logger
from controller.storage.atomic import NameTaken, same_content
from controller.storage.names import ImageName, SpectrumName, parse_name


class ChecksumMismatch(ProtocolError):
    """The received bytes do not match the sender's sha256: the transfer was corrupted; ask for it again."""


class NameConflict(ProtocolError):
    """A different file under a name the master already stored: neither copy may be lost or overwritten."""


Name = str | ImageName | SpectrumName  # a record where the name was parsed already


class ByteStore(Protocol):
    def save_bytes(self, name: Name, data: bytes) -> Path: ...

    def temp_for(self, name: Name) -> Path: ...

    def save_file(self, name: Name, tmp: str | Path) -> Path: ...

    def exists(self, name: Name) -> bool: ...

    def path_for(self, name: Name) -> Path: ...


class Incoming:
    """One file being received: its temp file, its running sha256 and size. Not thread-safe: one writer."""

    def __init__(self, record: ImageName | SpectrumName, tmp: Path):
        self.record = record  # the name parsed once (FileReceiver.begin)
        self.name = str(record)
        self.tmp = tmp
        self.size = 0
        self._digest = hashlib.sha256()
        try:
            self._fh = open(tmp, "wb")  # noqa: SIM115 (closed in finish or discard)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StorageError(e.errno, f"cannot write {tmp}: {e.strerror or e}") from e

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)
        try:
            self._fh.write(chunk)
        except OSError as e:
            raise StorageError(e.errno, f"cannot write {self.tmp}: {e.strerror or e}") from e

    def complete(self) -> str:
        """fsync and close; the sha256 of what was written."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:
            raise StorageError(e.errno, f"cannot write {self.tmp}: {e.strerror or e}") from e
        finally:
            self._fh.close()
        return self._digest.hexdigest()

    def discard(self) -> None:
        self._fh.close()
        self.tmp.unlink(missing_ok=True)


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

    def begin(self, name: str) -> Incoming:
        """Start receiving `name`. FileNameError for a name that is not a canonical station file name (never a
        path from the network), StorageError when no temp file can be made."""
        record = parse_name(name)  # once: the store gets the record, not the string again
        return Incoming(record, self.store.temp_for(record))

    def finish(self, incoming: Incoming, sha256_hex: str) -> Literal["stored", "duplicate"]:
        """Verify and store a received file; its temp file is gone afterwards whatever happens. Raises
        ChecksumMismatch, NameConflict, StorageError."""
        try:
            digest = incoming.complete()
            if digest != sha256_hex:
                raise ChecksumMismatch(f"{incoming.name}: sha256 {digest} != sender's {sha256_hex}")
            lock = self._acquire(incoming.name)
            try:
                return self._commit(incoming, digest)
            finally:
                self._release(incoming.name, lock)
        finally:
            incoming.discard()

    def _commit(self, incoming: Incoming, digest: str) -> Literal["stored", "duplicate"]:
        name = incoming.name
        try:
            self.store.save_file(incoming.record, incoming.tmp)
            return "stored"
        except NameTaken:
            pass
        if same_content(self.store.path_for(incoming.record), digest):
            return "duplicate"
        # The stored file is complete (atomic writes) and was acked once: never overwrite it. The sender keeps
        # its copy aside for a person instead of deleting it.
        self._log.error("file_conflict", file=name, received_sha256=digest)
        raise NameConflict(f"{name}: a different file of this name is already stored")

    def accept(self, name: str, sha256_hex: str, data: bytes) -> Literal["stored", "duplicate"]:
        """`begin` + one write + `finish`, for a file already in memory."""
        incoming = self.begin(name)
        try:
            incoming.write(data)
        except BaseException:
            incoming.discard()
            raise
        return self.finish(incoming, sha256_hex)

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
