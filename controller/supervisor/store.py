"""The master's data store as a sink: camera A's captures and the link's received files are written through it,
and each stored name goes on to its consumers (the processing worker) without passing through the supervisor.

Writes from the link are refused while a suspender holds (disk full): the link nacks them ("storage") and the slave
keeps the files in its spool until the space is back. A capture whose name is already taken with other content is
kept aside (never replaced) and goes to no consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from controller.errors import StorageError
from controller.storage.atomic import NameTaken
from controller.storage.datastore import DataStore
from controller.storage.index import FileName, StoreIndex  # a name parsed once where it came in, passed on

Consumer = Callable[[str], None]


class StationStore:
    """capture -> store, link -> store, store -> worker (see the module doc)."""

    def __init__(self, store: DataStore, paused: Callable[[], bool]):
        self._store = store
        self._paused = paused
        self.consumers: list[Consumer] = []
        self.saved = 0

    def _refuse_when_paused(self, name: str | FileName) -> None:
        if self._paused():
            raise StorageError(f"{name}: the master's disk is full (acquisition paused); keep it and resend later")

    def _stored(self, name: str | FileName) -> None:
        """Consumers must be thread-safe (called from executor threads; the worker's command queue is)."""
        self.saved += 1
        for consumer in self.consumers:
            consumer(str(name))

    # -- the link's writes (blocking, in an executor thread): refused while paused
    def save_bytes(self, name: str | FileName, data: bytes) -> Path:
        self._refuse_when_paused(name)
        path = self._store.save_bytes(name, data)
        self._stored(name)
        return path

    def temp_for(self, name: str | FileName) -> Path:
        self._refuse_when_paused(name)
        return self._store.temp_for(name)

    def save_file(self, name: str | FileName, tmp: str | Path) -> Path:
        self._refuse_when_paused(name)
        path = self._store.save_file(name, tmp)
        self._stored(name)
        return path

    @property
    def index(self) -> StoreIndex:
        """What the store holds, as records (the disk policy and the status page ask here)."""
        return self._store.index

    def exists(self, name: str) -> bool:
        return self._store.exists(name)

    def path_for(self, name: str | FileName) -> Path:
        return self._store.path_for(name)

    # -- the capture sink of the master's devices (a capture in flight when the pause came still lands)
    async def sink(self, name: str | FileName, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._capture, name, data)

    def _capture(self, name: str | FileName, data: bytes) -> None:
        try:
            self._store.save_bytes(name, data)
        except NameTaken:
            # Another capture already holds this name: never replaced; this one is kept aside (logged there).
            self._store.keep_aside(name, data)
            return
        self._stored(name)
