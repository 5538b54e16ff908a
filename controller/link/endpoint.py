"""What both link ends share: a session per connection, heartbeats and dead-peer detection, requests and
replies, the time exchange, listeners and the link state machine (states/link.py).

Messages (JSON headers; only `file` carries a payload):

    hello     {role, version, boot_id, station, nonce[, proof]}   first message each way (the master's has a proof)
    auth      {proof}                                    slave -> master, after checking the master's proof
    welcome   {} | refused {reason}                      master -> slave: the session is up, or not (auth.py)
    hb        {}                                         every heartbeat_s; silence for link_timeout_s = dead peer
    req       {id, kind, body}  -> rep {id, ok, body | error}
    time_req  {id}              -> time_rep {id, t1, t2}  (receive and send times on the answering clock)
    file      {name, sha256, size} + payload  -> ack {name, status} | nack {name, reason}

Link timers (heartbeat, timeouts, backoff) run on the event loop's real time: they are properties of the
network, and under a compressed sim clock they would fire absurdly fast. The injected clock gives time stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar

from controller.config import Config
from controller.errors import LinkError, ProtocolError
from controller.link.auth import FrameMac, key_path, load_key
from controller.link.framing import (
    HANDSHAKE_LIMITS,
    FrameLimits,
    Message,
    encode_prefix_and_header,
    read_head,
    read_message,
)
from controller.logging import get_logger
from controller.timekeeping.clock import Clock
from states.link import TABLE
from states.machine import StateModel, build_machine

PROTOCOL_VERSION = 1
FILE_CHUNK_BYTES = 1 << 20

RequestHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Listener = Callable[[str, dict[str, Any]], None]


class RequestFailed(LinkError):
    """The peer received the request but its handler refused or failed; the message says why."""


def header_field(header: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """A typed field of a received header; ProtocolError names the field when it is missing or mistyped."""
    value = header.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{header.get('type')!r} message: field {key!r} missing or of the wrong type")
    return value


class Session:
    """One TCP connection to the peer. Owns its stream and its tasks; `close` is idempotent."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: FrameLimits,
        timeout_s: float,
        log: Any,
    ):
        self.log = log
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.timeout_s = timeout_s
        self.peer: dict[str, Any] = {}
        self.pending: dict[int, asyncio.Future] = {}
        self.in_flight: dict[str, int] = {}  # slave: file name -> spool seq, sent and not yet answered
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self.mac: FrameMac | None = None  # set once both ends proved the key: every frame signed from then on
        self._send_lock = asyncio.Lock()
        peername = writer.get_extra_info("peername")
        self.address = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        async with self._send_lock:  # one frame at a time: a file streamed in chunks is never interleaved
            self._check_open()
            self._write_head(header, len(payload))
            if payload:
                self.writer.write(payload)
            await self._drain()

    async def send_file(self, header: dict[str, Any], path: Path, size: int) -> None:
        """A frame whose payload is the file at `path` (`size` bytes), read and sent in chunks, never whole."""
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            self._check_open()
            self._write_head(header, size)
            try:
                with open(path, "rb") as fh:
                    left = size
                    while left:
                        chunk = await loop.run_in_executor(None, fh.read, min(FILE_CHUNK_BYTES, left))
                        if not chunk:
                            raise LinkError(f"{path} shrank while it was being sent")
                        left -= len(chunk)
                        self.writer.write(chunk)
                        await self._drain()
            except LinkError:
                raise  # the peer went away (LinkError is an OSError too: not a read failure)
            except OSError as e:
                # The frame is cut: the stream cannot go on. The file stays in the spool for the next session.
                raise LinkError(f"cannot read {path} while sending it: {e.strerror or e}") from e

    def _check_open(self) -> None:
        if self.closed or self.writer.is_closing():
            raise LinkError("session closed")

    def _write_head(self, header: dict[str, Any], payload_len: int) -> None:
        if self.mac is not None:
            header = self.mac.sign(header)  # under the send lock: sequence order is wire order
        self.writer.write(encode_prefix_and_header(header, payload_len, self.limits))

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), self.timeout_s)
        except TimeoutError as e:
            raise LinkError(f"peer stopped reading for {self.timeout_s} s") from e
        except (ConnectionError, OSError) as e:
            raise LinkError(f"send failed: {e}") from e

    async def recv_head(self) -> tuple[dict[str, Any], int]:
        """The next frame's header and payload length; the payload is still to be read (read_chunk)."""
        try:
            head = await asyncio.wait_for(read_head(self.reader, self.limits), self.timeout_s)
        except TimeoutError as e:
            raise LinkError(f"peer silent for {self.timeout_s} s") from e
        except (ConnectionError, OSError) as e:
            raise LinkError(f"receive failed: {e}") from e
        if head is None:
            raise LinkError("connection closed by the peer")
        if self.mac is not None:
            self.mac.check(head[0])
        return head

    async def read_chunk(self, size: int) -> bytes:
        """Exactly `size` bytes of the current frame's payload."""
        try:
            return await asyncio.wait_for(self.reader.readexactly(size), self.timeout_s)
        except TimeoutError as e:
            raise LinkError(f"peer silent for {self.timeout_s} s inside a payload") from e
        except asyncio.IncompleteReadError as e:
            raise LinkError("connection closed inside a payload") from e
        except (ConnectionError, OSError) as e:
            raise LinkError(f"receive failed: {e}") from e

    async def recv(self) -> Message:
        try:
            msg = await asyncio.wait_for(read_message(self.reader, self.limits), self.timeout_s)
        except TimeoutError as e:
            raise LinkError(f"peer silent for {self.timeout_s} s") from e
        except (ConnectionError, OSError) as e:
            raise LinkError(f"receive failed: {e}") from e
        if msg is None:
            raise LinkError("connection closed by the peer")
        if self.mac is not None:
            self.mac.check(msg.header)
        return msg

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task) -> None:
        # Every task's outcome is collected here: link failures are expected (the session reports them);
        # anything else is a bug and is logged rather than lost in "exception never retrieved".
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, LinkError | ProtocolError):
            self.log.error("session_task_failed", address=self.address, error=repr(error), exc_info=error)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        # abort, not close: a stalled peer must not keep buffered data (and us) waiting.
        self.writer.transport.abort()
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(LinkError(f"link went down before the reply ({reason})"))
        self.pending.clear()


class LinkEndpoint:
    """Base of MasterLink and SlaveLink."""

    role: ClassVar[str]
    peer_role: ClassVar[str]

    def __init__(self, cfg: Config, clock: Clock, *, limits: FrameLimits | None = None, key: bytes | None = None):
        self.cfg = cfg
        self.net = cfg.network
        self.clock = clock
        # After the handshake: no frame larger than the largest legitimate file (refused before it is read).
        self.limits = limits or FrameLimits(max_payload_bytes=cfg.network.link_max_file_mb << 20)
        self.key = key if key is not None else load_key(key_path(cfg))
        self.boot_id = uuid.uuid4().hex
        self._log = get_logger("link", role=self.role)
        self._model = StateModel()
        self._machine = build_machine(self._model, TABLE, "link", self._log, asynchronous=False)
        self._listeners: list[Listener] = []
        self._handlers: dict[str, RequestHandler] = {}
        self._session: Session | None = None
        self._connected = asyncio.Event()
        self._ids = itertools.count(1)
        self._closing = False

    # ------------------------------------------------------------------------------------------- public API

    @property
    def state(self) -> str:
        return self._model.state

    @property
    def connected(self) -> bool:
        return self._session is not None and self.state == "connected"

    @property
    def peer(self) -> dict[str, Any]:
        return dict(self._session.peer) if self._session is not None else {}

    def add_listener(self, callback: Listener) -> None:
        """callback(event, info) for "connected", "disconnected", "file_stored" (master), "file_acked" (slave)."""
        self._listeners.append(callback)

    def on_request(self, kind: str, handler: RequestHandler) -> None:
        """Register `async handler(body) -> dict` for requests of `kind` from the peer."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("request kind must be a non-empty string")
        self._handlers[kind] = handler

    async def request(self, kind: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Ask the peer; its handler's reply. LinkError at once when the link is down, or on timeout."""
        session = self._session
        if session is None or not self.connected:
            raise LinkError(f"link down: cannot send the {kind!r} request")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        session.pending[rid] = fut
        try:
            await session.send({"type": "req", "id": rid, "kind": kind, "body": body})
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError as e:
            raise LinkError(f"{kind!r} request: no reply within {timeout_s} s") from e
        finally:
            session.pending.pop(rid, None)

    async def wait_connected(self, timeout_s: float) -> bool:
        if self.connected:
            return True
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return self.connected

    # ----------------------------------------------------------------------------------------- internals

    def _fire(self, trigger: str, **kwargs: Any) -> None:
        self._model.trigger(trigger, **kwargs)

    def _emit(self, event: str, **info: Any) -> None:
        for callback in list(self._listeners):
            try:
                callback(event, info)
            except Exception:  # a listener's bug must not take the link down
                self._log.exception("listener_failed", event_name=event)

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "role": self.role,
            "version": PROTOCOL_VERSION,
            "boot_id": self.boot_id,
            "station": self.cfg.station.name,
        }

    def _check_hello(self, msg: Message) -> dict[str, Any]:
        h = msg.header
        if msg.type != "hello":
            raise ProtocolError(f"expected hello, got {msg.type!r}")
        role = header_field(h, "role", str)
        if role != self.peer_role:
            raise ProtocolError(f"peer says it is {role!r}; a {self.role} only talks to a {self.peer_role}")
        version = header_field(h, "version", int)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"peer speaks link protocol {version}, this end {PROTOCOL_VERSION}")
        peer = {"role": role, "version": version, "boot_id": header_field(h, "boot_id", str)}
        if isinstance(h.get("station"), str):
            peer["station"] = h["station"]
        return peer

    def _new_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Session:
        """A session in handshake: small frames, no payload, until both ends proved the key."""
        return Session(reader, writer, HANDSHAKE_LIMITS, self.net.link_timeout_s, self._log)

    def _session_up(self, session: Session) -> None:
        session.limits = self.limits
        self._session = session
        self._connected.set()
        self._log.info("link_up", peer=session.peer, address=session.address)
        self._emit("connected", peer=dict(session.peer), address=session.address)

    def _session_down(self, session: Session, reason: str) -> bool:
        """Close `session`; True if it was the current one (so the caller moves the state machine)."""
        session.close(reason)
        if self._session is not session:
            return False
        self._session = None
        self._connected.clear()
        self._log.warning("link_down", reason=reason, address=session.address)
        self._emit("disconnected", reason=reason, peer=dict(session.peer))
        return True

    def _session_tasks(self, session: Session) -> list[Coroutine[Any, Any, Any]]:
        """Extra loops a subclass runs while a session is up (the slave's file sender)."""
        return []

    async def _serve(self, session: Session) -> str:
        """Run a connected session until something fails; the reason."""
        tasks = [
            session.spawn(self._reader_loop(session)),
            session.spawn(self._heartbeat_loop(session)),
            *(session.spawn(c) for c in self._session_tasks(session)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        reasons = [
            f"{type(error).__name__}: {error}"
            for task in done
            if not task.cancelled() and (error := task.exception()) is not None
        ]
        return reasons[0] if reasons else "session ended"

    async def _reader_loop(self, session: Session) -> None:
        while True:
            header, plen = await session.recv_head()
            if plen:
                await self._on_payload(session, header, plen)
            else:
                await self._dispatch(session, Message(header))

    async def _on_payload(self, session: Session, header: dict[str, Any], size: int) -> None:
        """A frame with a payload, still in the stream (the master's files); nothing else carries one."""
        raise ProtocolError(f"unexpected payload of {size} bytes on a {header.get('type')!r} message")

    async def _heartbeat_loop(self, session: Session) -> None:
        while True:
            await asyncio.sleep(self.net.heartbeat_s)
            await session.send({"type": "hb"})

    async def _dispatch(self, session: Session, msg: Message) -> None:
        kind = msg.type
        h = msg.header
        if kind == "hb":
            return
        if kind == "time_req":
            t1 = self.clock.time()
            rid = header_field(h, "id", int)
            await session.send({"type": "time_rep", "id": rid, "t1": t1, "t2": self.clock.time()})
        elif kind == "req":
            session.spawn(self._answer(session, h))
        elif kind in ("rep", "time_rep"):
            fut = session.pending.get(header_field(h, "id", int))
            if fut is None or fut.done():
                return  # the asker gave up already
            if kind == "time_rep":
                fut.set_result(h)
            elif h.get("ok") is True and isinstance(h.get("body"), dict):
                fut.set_result(h["body"])
            elif h.get("ok") is True:
                fut.set_exception(RequestFailed("malformed reply: body is not an object"))
            else:
                fut.set_exception(RequestFailed(str(h.get("error", "request failed on the peer"))))
        else:
            await self._on_message(session, msg)

    async def _on_message(self, session: Session, msg: Message) -> None:
        raise ProtocolError(f"unexpected message type {msg.type!r}")

    async def _answer(self, session: Session, h: dict[str, Any]) -> None:
        rid = h.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            self._log.warning("request_without_id")
            return
        kind, body = h.get("kind"), h.get("body")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None or not isinstance(body, dict):
            error = f"no handler for request kind {kind!r}" if handler is None else "request body must be an object"
            with contextlib.suppress(LinkError):
                await session.send({"type": "rep", "id": rid, "ok": False, "error": error})
            return
        try:
            result = await handler(body)
            if not isinstance(result, dict):
                raise TypeError(f"handler for {kind!r} returned {type(result).__name__}, not a dict")
            await session.send({"type": "rep", "id": rid, "ok": True, "body": result})
        except LinkError:
            return  # the session is gone; the asker gets LinkError on its side
        except Exception as e:  # a handler failure is the peer's answer, not a link failure
            self._log.warning("request_handler_failed", kind=kind, error=repr(e))
            with contextlib.suppress(LinkError):
                await session.send({"type": "rep", "id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"})
