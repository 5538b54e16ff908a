"""The master's link end: a TCP server holding exactly one slave session at a time.

A connection becomes the slave's session only after the handshake in auth.py: the peer proved the link key, so a
peer without it can neither take the session nor store a file. Until then its frames are small and payload-free,
at most MAX_HANDSHAKES connections are in handshake (MAX_HANDSHAKES_PER_ADDRESS from one address: a newcomer closes
the oldest) and each has network.link_timeout_s for the whole handshake. A proven newcomer replaces the current session only when that one
no longer answers a probe (the slave rebooted; bug 2 of spec/known-failures.md: the original never accepted a
device again after it vanished); a live session is kept and the newcomer refused, so a second slave cannot make
the link flap. The port is bound with SO_REUSEADDR, so a restarted master binds at once (bug 3).
Received files are streamed into a temp file and hashed on the way, then given their name without replacing
anything, in executor threads; the ack goes out only after the fsync. A storage failure is a nack, never a dropped
link.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from controller.config import Config
from controller.errors import FileNameError, LinkError, ProtocolError, StorageError
from controller.link import auth
from controller.link.endpoint import LinkEndpoint, Session, header_field
from controller.link.framing import FrameLimits, Message
from controller.link.receiver import ChecksumMismatch, FileReceiver, Incoming, NameConflict
from controller.netaccess import AddressFilter
from controller.timekeeping.clock import Clock

# Files being stored at once per session; the slave's window keeps it below this, so reading never stalls.
MAX_CONCURRENT_STORES = 32
MAX_HANDSHAKES = 8
MAX_HANDSHAKES_PER_ADDRESS = 2
CHUNK_BYTES = 1 << 20
PROBE_TIMEOUT_S = 1.0  # a live slave on the LAN answers a probe in milliseconds


class _Refused(LinkError):
    """The handshake succeeded but the connection may not become the session (a live slave is connected)."""


class MasterLink(LinkEndpoint):
    role = "master"
    peer_role = "slave"

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        receiver: FileReceiver,
        *,
        limits: FrameLimits | None = None,
        key: bytes | None = None,
    ):
        super().__init__(cfg, clock, limits=limits, key=key)
        self.receiver = receiver
        self._allowed = AddressFilter(cfg.network.link_allowed_networks)
        self._server: asyncio.Server | None = None
        # Each connection's task and session. stop() closes the sessions and lets the tasks end by themselves:
        # cancelling a client_connected_cb task makes Python 3.11's asyncio log a spurious error.
        self._connections: dict[asyncio.Task, Session] = {}
        self._writes: set[asyncio.Future] = set()
        self._store_slots = asyncio.Semaphore(MAX_CONCURRENT_STORES)
        self._handshakes: dict[Session, str] = {}  # connections in handshake (oldest first) -> peer host
        self.stats = {"stored": 0, "duplicate": 0, "checksum": 0, "conflict": 0, "invalid": 0, "storage": 0}
        self.refused = {"busy": 0, "auth": 0, "handshake": 0, "second_slave": 0}

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
        host = str(peername[0]) if isinstance(peername, tuple) else str(peername)
        self._make_room(host)
        session = self._new_session(reader, writer)
        self._connections[task] = session
        reason = "closed"
        try:
            self._handshakes[session] = host
            if not await self._handshake(session):
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

    def _make_room(self, host: str) -> None:
        """Before a new connection's handshake: close the oldest one in handshake from `host` when that address
        has MAX_HANDSHAKES_PER_ADDRESS, or the oldest overall at MAX_HANDSHAKES. A real slave's handshake takes
        milliseconds, so a flood of idle or slow connections can neither pile up nor keep the slave out."""
        same = [s for s, h in self._handshakes.items() if h == host]
        if len(same) >= MAX_HANDSHAKES_PER_ADDRESS:
            victim = same[0]
        elif len(self._handshakes) >= MAX_HANDSHAKES:
            victim = next(iter(self._handshakes))
        else:
            return
        self.refused["busy"] += 1  # not logged one by one: a flood must not flood the log too
        del self._handshakes[victim]
        victim.close("handshake slots full: oldest closed")

    async def _handshake(self, session: Session) -> bool:
        """Hello, proofs both ways, welcome, all within link_timeout_s; True when `session` may become the
        session. Failures are logged and counted, and leave the current session alone."""
        if self.state == "listening":
            self._fire("accepted")
        try:
            async with asyncio.timeout(self.net.link_timeout_s):
                hello = await session.recv()
                session.peer = self._check_hello(hello)
                slave_nonce = auth.check_nonce(hello.header.get("nonce"))
                nonce = auth.new_nonce()
                await session.send(
                    {**self._hello(), "nonce": nonce, "proof": auth.proof(self.key, "master", slave_nonce, nonce)}
                )
                answer = await session.recv()
                if answer.type != "auth" or not auth.verify(
                    self.key, "slave", slave_nonce, nonce, answer.header.get("proof")
                ):
                    self.refused["auth"] += 1
                    raise ProtocolError("the peer did not prove the link key")
                current = self._session
                if current is not None and await self._answers(current):
                    self.refused["second_slave"] += 1
                    with contextlib.suppress(LinkError):
                        await session.send({"type": "refused", "reason": "another slave is connected and alive"})
                    raise _Refused("another slave is connected and alive")
                await session.send({"type": "welcome"})
                session.mac = auth.FrameMac(self.key, "master", "slave", slave_nonce, nonce)
            return True
        except (LinkError, ProtocolError, TimeoutError) as e:
            if not isinstance(e, _Refused):
                self.refused["handshake"] += 1
            error = str(e) or f"no complete handshake within {self.net.link_timeout_s} s"
            self._log.warning("handshake_failed", address=session.address, error=error)
            session.close("handshake failed")
            if self.state == "handshake" and self._session is None and not self._closing:
                self._fire("lost", reason="handshake failed")
            return False
        finally:
            self._handshakes.pop(session, None)

    async def _answers(self, session: Session) -> bool:
        """Whether the current slave still answers (a time request) within PROBE_TIMEOUT_S."""
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        session.pending[rid] = fut
        try:
            await session.send({"type": "time_req", "id": rid})
            await asyncio.wait_for(fut, min(PROBE_TIMEOUT_S, self.net.link_timeout_s / 2))  # inside the deadline
        except (LinkError, TimeoutError):
            return False
        finally:
            session.pending.pop(rid, None)
        return True

    async def _on_message(self, session: Session, msg: Message) -> None:
        if msg.type != "file":
            raise ProtocolError(f"unexpected message type {msg.type!r} from the slave")
        await self._on_payload(session, msg.header, 0)  # an empty file

    async def _on_payload(self, session: Session, header: dict[str, Any], size: int) -> None:
        """Stream a file's payload into a temp file (never whole in memory), then store it in a task."""
        if header.get("type") != "file":
            raise ProtocolError(f"unexpected payload on a {header.get('type')!r} message from the slave")
        name = header_field(header, "name", str)
        sha = header_field(header, "sha256", str)
        announced = header_field(header, "size", int)
        # Backpressure: with too many files in the disk queue, stop reading until one is done.
        await self._store_slots.acquire()
        loop = asyncio.get_running_loop()
        incoming: Incoming | None = None
        refusal: tuple[str, Exception] | None = None
        write: asyncio.Future | None = None
        try:
            try:
                incoming = self.receiver.begin(name)  # a name check and an empty temp file: quick, not in a thread
            except FileNameError as e:
                refusal = ("invalid", e)
            except (StorageError, OSError) as e:
                refusal = ("storage", e)
            left = size
            while left:
                chunk = await session.read_chunk(min(CHUNK_BYTES, left))
                left -= len(chunk)
                if incoming is not None and refusal is None:
                    try:
                        write = loop.run_in_executor(None, incoming.write, chunk)
                        await write
                    except (StorageError, OSError) as e:
                        refusal = ("storage", e)
        except BaseException:
            if incoming is not None:
                if write is not None and not write.done():
                    # Cancelled while a chunk is being written: remove the temp file once the thread is done.
                    write.add_done_callback(lambda _, i=incoming: i.discard())
                else:
                    incoming.discard()
            self._store_slots.release()
            raise
        if refusal is None and announced != size:
            refusal = ("checksum", ChecksumMismatch(f"{name}: {size} bytes received, {announced} announced"))
        if refusal is not None:
            if incoming is not None:
                incoming.discard()
            self._store_slots.release()
            session.spawn(self._answer_file(session, name, *refusal))
            return
        assert incoming is not None
        # Started here, not in the task: it runs (and removes the temp file) even if the session dies at once.
        finish = loop.run_in_executor(None, self.receiver.finish, incoming, sha)
        self._writes.add(finish)
        finish.add_done_callback(self._writes.discard)
        finish.add_done_callback(lambda _: self._store_slots.release())
        finish.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved also if no one awaits
        session.spawn(self._store(session, name, incoming.size, finish))

    async def _store(self, session: Session, name: str, size: int, finish: asyncio.Future) -> None:
        try:
            # shield: a dropped session must not abandon a write half-way in our bookkeeping; it finishes anyway.
            status = await asyncio.shield(finish)
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
        self._emit("file_stored", name=name, status=status, size=size)
        with contextlib.suppress(LinkError):
            await session.send({"type": "ack", "name": name, "status": status})

    async def _answer_file(self, session: Session, name: str, reason: str, error: Exception) -> None:
        self.stats[reason] += 1
        log = self._log.warning if reason == "checksum" else self._log.error
        log("file_refused", file=name[:200], reason=reason, error=str(error)[:500])
        with contextlib.suppress(LinkError):
            await session.send({"type": "nack", "name": name, "reason": reason, "error": str(error)[:500]})

    def describe(self) -> dict[str, Any]:
        """For status output."""
        return {
            "state": self.state, "peer": self.peer, "port": self.port, "stats": dict(self.stats),
            "refused": dict(self.refused),
        }  # fmt: skip
