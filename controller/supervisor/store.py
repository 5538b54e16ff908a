"""The master's data store as a sink: camera A's captures and the link's received files are written through it,
and each stored name goes on to its consumers (the processing worker) without passing through the supervisor.

Writes are refused while a suspender holds (disk full): the link nacks them ("storage") and the slave keeps the
files in its spool until the space is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from controller.errors import StorageError
from controller.storage.datastore import DataStore

Consumer = Callable[[str], None]


class StationStore:
    """capture -> store, link -> store, store -> worker (see the module doc)."""

    def __init__(self, store: DataStore, paused: Callable[[], bool]):
        self._store = store
        self._paused = paused
        self.consumers: list[Consumer] = []
        self.saved = 0

    def save_bytes(self, name: str, data: bytes) -> Path:
        """The link's write (blocking, in an executor thread): refused while paused."""
        if self._paused():
            raise StorageError(f"{name}: the master's disk is full (acquisition paused); keep it and resend later")
        return self._save(name, data)

    def _save(self, name: str, data: bytes) -> Path:
        """Blocking (fsync). Consumers must be thread-safe (the worker's command queue is)."""
        path = self._store.save_bytes(name, data)
        self.saved += 1
        for consumer in self.consumers:
            consumer(name)
        return path

    async def sink(self, name: str, data: bytes) -> None:
        """The capture sink of the master's devices (a capture in flight when the pause came still lands)."""
        await asyncio.get_running_loop().run_in_executor(None, self._save, name, data)

    def exists(self, name: str) -> bool:
        return self._store.exists(name)

    def path_for(self, name: str) -> Path:
        return self._store.path_for(name)

    def remove(self, path: Path) -> None:
        self._store.remove(path)
