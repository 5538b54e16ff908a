"""The master's link end: a TCP server holding exactly one slave session at a time.

A new connection does not disturb the current session until it has said a valid hello; then the stale session
is dropped (bug 2 of spec/known-failures.md: the original never accepted a device again after it vanished).
The port is bound with SO_REUSEADDR, so a restarted master binds at once (bug 3).
Received files are verified and written atomically in executor threads; the ack goes out only after the fsync.
A storage failure is answered with a nack, never by dropping the link.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from controller.config import Config
from controller.errors import FileNameError, LinkError, ProtocolError, StorageError
from controller.link.endpoint import LinkEndpoint, Session, header_field
from controller.link.framing import DEFAULT_LIMITS, FrameLimits, Message
from controller.link.receiver import ChecksumMismatch, FileReceiver, NameConflict
from controller.netaccess import AddressFilter
from controller.timekeeping.clock import Clock

# Files being stored at once per session; the slave's window keeps it below this, so reading never stalls.
MAX_CONCURRENT_STORES = 32


class MasterLink(LinkEndpoint):
    role = "master"
    peer_role = "slave"

    def __init__(self, cfg: Config, clock: Clock, receiver: FileReceiver, *, limits: FrameLimits = DEFAULT_LIMITS):
        super().__init__(cfg, clock, limits=limits)
        self.receiver = receiver
        self._allowed = AddressFilter(cfg.network.link_allowed_networks)
        self._server: asyncio.Server | None = None
        # Each connection's task and session. stop() closes the sessions and lets the tasks end by themselves:
        # cancelling a client_connected_cb task makes Python 3.11's asyncio log a spurious error.
        self._connections: dict[asyncio.Task, Session] = {}
        self._writes: set[asyncio.Future] = set()
        self._store_slots = asyncio.Semaphore(MAX_CONCURRENT_STORES)
        self.stats = {"stored": 0, "duplicate": 0, "checksum": 0, "conflict": 0, "invalid": 0, "storage": 0}

    @property
    def port(self) -> int | None:
        """The bound port, None when not listening."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        host, port = self.net.link_bind, self.net.link_port
        try:
            self._server = await asyncio.start_server(self._on_connection, host=host, port=port, reuse_address=True)
        except OSError as e:
            raise LinkError(f"cannot bind the link port {host}:{port}: {e.strerror or e}") from e
        self._fire("listen")
        self._log.info("link_listening", bind=host, port=port)

    async def stop(self) -> None:
        """Close the server and the session; wait for files being written so each one is whole and acked once."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for session in list(self._connections.values()):
            session.close("stopped")
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._session is not None:
            self._session_down(self._session, "stopped")
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=max(5.0, self.net.link_timeout_s))
        if self._server is not None:
            await self._server.wait_closed()
        self._fire("close")
        self._log.info("link_stopped")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.transport.abort()
            return
        peername = writer.get_extra_info("peername")
        if not self._allowed.allows_peername(peername):
            self._log.warning("link_peer_refused", peer=str(peername), why="not in network.link_allowed_networks")
            writer.transport.abort()
            return
        session = self._new_session(reader, writer)
        self._connections[task] = session
        reason = "closed"
        try:
            if self.state == "listening":
                self._fire("accepted")
            try:
                session.peer = self._check_hello(await session.recv())
                await session.send(self._hello())
            except (LinkError, ProtocolError) as e:
                self._log.warning("handshake_failed", address=session.address, error=str(e))
                session.close("handshake failed")
                if self.state == "handshake" and self._session is None and not self._closing:
                    self._fire("lost", reason="handshake failed")
                return
            old = self._session
            if old is not None:
                self._session_down(old, "replaced by a new session from the slave")
                self._fire("replace", reason="new hello from the slave")
            else:
                self._fire("hello_ok")
            self._session_up(session)
            reason = await self._serve(session)
        finally:
            self._connections.pop(task, None)
            if self._session_down(session, reason) and not self._closing:
                self._fire("lost", reason=reason)

    async def _on_message(self, session: Session, msg: Message) -> None:
        if msg.type != "file":
            raise ProtocolError(f"unexpected message type {msg.type!r} from the slave")
        h = msg.header
        name = header_field(h, "name", str)
        sha = header_field(h, "sha256", str)
        size = header_field(h, "size", int)
        # Backpressure: with too many files in the disk queue, stop reading until one is done.
        await self._store_slots.acquire()
        task = session.spawn(self._store(session, name, sha, size, msg.payload))
        # Released on the task's end, also when it is cancelled before it ever ran.
        task.add_done_callback(lambda _: self._store_slots.release())

    async def _store(self, session: Session, name: str, sha: str, size: int, data: bytes) -> None:
        try:
            if size != len(data):
                raise ChecksumMismatch(f"{name}: {len(data)} bytes received, {size} announced")
            write = asyncio.get_running_loop().run_in_executor(None, self.receiver.accept, name, sha, data)
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
            # shield: a dropped session must not abandon a write half-way in our bookkeeping; it finishes anyway.
            status = await asyncio.shield(write)
        except ChecksumMismatch as e:
            await self._answer_file(session, name, "checksum", e)
            return
        except NameConflict as e:
            await self._answer_file(session, name, "conflict", e)
            return
        except FileNameError as e:
            await self._answer_file(session, name, "invalid", e)
            return
        except (StorageError, OSError) as e:
            await self._answer_file(session, name, "storage", e)
            return
        self.stats[status] += 1
        self._emit("file_stored", name=name, status=status, size=len(data))
        with contextlib.suppress(LinkError):
            await session.send({"type": "ack", "name": name, "status": status})

    async def _answer_file(self, session: Session, name: str, reason: str, error: Exception) -> None:
        self.stats[reason] += 1
        log = self._log.warning if reason == "checksum" else self._log.error
        log("file_refused", file=name, reason=reason, error=str(error))
        with contextlib.suppress(LinkError):
            await session.send({"type": "nack", "name": name, "reason": reason, "error": str(error)[:500]})

    def describe(self) -> dict[str, Any]:
        """For status output."""
        return {"state": self.state, "peer": self.peer, "port": self.port, "stats": dict(self.stats)}
