"""The external control port: an asyncio TCP server speaking spec/ext-protocol.md.

One task reads each client and one task writes to it, through a bounded queue: a slow or stuck client is dropped
when its queue overflows instead of stalling anyone else. Any client may vanish at any moment; its bookkeeping is
removed once, by its own task (bug 1). The listening socket uses SO_REUSEADDR so a restarted supervisor binds the
same port at once (bug 3); when another program holds the port, the configured fallbacks are tried in order.

Access control, in the order applied: the client's address must lie in `network.allowed_networks` (else
`ERR NET` and close); with `network.auth_token` set, an address that used up its AUTH attempts is refused
(`ERR AUTH`, a token bucket per address: AUTH_BURST attempts, then one per AUTH_REFILL_S); at most
`network.max_clients` at once - when the slots are full, the longest-waiting client that has not proven itself yet
(no first message; no AUTH with a token) makes room, else a client idle for IDLE_EVICT_WHEN_FULL_S, else
`ERR MAX` and close. With a token the first message must be `AUTH <token> END` (else `ERR AUTH` and close): every
key, LOG 0 and LOG 1 included, needs AUTH then - `pycam status` on the Pi shows the state without it.

Nobody can hold a slot for free: a new client has ONE deadline for its first complete message
(`network.handshake_timeout_s`, counted from the connection; bytes without a complete message do not extend it),
and a client with no complete message for `network.idle_timeout_s` is dropped.

Messages longer than `network.max_message_bytes` are answered `ERR MSG` and skipped; the connection stays usable.
The replies to one message are coalesced (`protocol.coalesce`): one line per answering device and kind (echo,
private answer, ERR with every refused key), so a message of many keys cannot flood any client's reply queue.
Accepted settings and actions are echoed to every connected client (as the original did); ERR replies and
replies marked `"private"` (the answers to LOG 0 / LOG 1) go to the client that asked only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.config import Config
from controller.errors import PycamError
from controller.extport import protocol
from controller.extport.control import ExtController, Reply
from controller.logging import get_logger
from controller.netaccess import AddressFilter

READ_CHUNK = 65536
QUEUE_LIMIT = 256  # replies waiting for one client before it counts as stuck and is dropped
LINGER_S = 1.0  # how long a refused client may take to read its ERR
AUTH_BURST = 5  # AUTH attempts an address may make at once ...
AUTH_REFILL_S = 5.0  # ... then one more per this many seconds
IDLE_EVICT_WHEN_FULL_S = 60.0  # when the slots are full, a client idle this long makes room for a new one
MAX_TRACKED_ADDRESSES = 4096


class AuthLimiter:
    """A token bucket per address: `allow(host)` takes one AUTH attempt, False when the address has none left."""

    def __init__(self, burst: int = AUTH_BURST, refill_s: float = AUTH_REFILL_S):
        self.burst, self.refill_s = burst, refill_s
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (attempts left, at monotonic time)

    def _left(self, host: str, now: float) -> float:
        left, at = self._buckets.get(host, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) / self.refill_s)

    def available(self, host: str) -> bool:
        return self._left(host, time.monotonic()) >= 1.0

    def refund(self, host: str) -> None:
        """A successful AUTH does not count against its address."""
        if host in self._buckets:
            left, at = self._buckets[host]
            self._buckets[host] = (min(float(self.burst), left + 1.0), at)

    def allow(self, host: str) -> bool:
        now = time.monotonic()
        left = self._left(host, now)
        if left < 1.0:
            return False
        if len(self._buckets) >= MAX_TRACKED_ADDRESSES:  # forget full buckets first: they are the default
            for h in [h for h in self._buckets if self._left(h, now) >= self.burst]:
                del self._buckets[h]
            # then the oldest, down to 3/4: the sweep runs once per quarter of the table, not on every new address
            while len(self._buckets) > MAX_TRACKED_ADDRESSES * 3 // 4:
                self._buckets.pop(next(iter(self._buckets)))
        self._buckets[host] = (left - 1.0, now)
        return True


class PortUnavailable(PycamError, OSError):
    """None of the external port and its fallbacks could be bound."""


@dataclass(eq=False)
class _Client:
    number: int
    peer: str
    writer: asyncio.StreamWriter
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    identity: str = protocol.EXTERNAL
    authenticated: bool = False
    host: str = ""
    proven: bool = False  # sent a complete first message (and AUTH, with a token)
    closed: bool = False
    writer_task: asyncio.Task | None = None
    connected_at: float = field(default_factory=time.monotonic)
    last_message_at: float = field(default_factory=time.monotonic)


class ExtServer:
    """`await start()` -> bound port; `broadcast(reply)`; `await stop()`. Owns its listening socket and clients."""

    def __init__(
        self,
        cfg: Config,
        controller: ExtController,
        *,
        ports: Sequence[int] | None = None,
        bind: str | None = None,
        queue_limit: int = QUEUE_LIMIT,
        auth_timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
        on_bad_input: Callable[[str, dict], None] | None = None,
    ):
        net = cfg.network
        self.controller = controller
        # Told about refused clients, malformed messages and refused keys (the supervisor counts them as faults).
        self.on_bad_input = on_bad_input
        self.ports = tuple(ports) if ports is not None else (net.ext_port, *net.ext_port_fallbacks)
        self.bind = bind if bind is not None else net.ext_bind
        self.max_clients = net.max_clients
        self.max_message_bytes = net.max_message_bytes
        self.allowed = AddressFilter(net.allowed_networks)
        self._token = net.auth_token.encode("utf-8")
        self._queue_limit = queue_limit
        self._auth_timeout_s = net.handshake_timeout_s if auth_timeout_s is None else auth_timeout_s
        self._idle_timeout_s = net.idle_timeout_s if idle_timeout_s is None else idle_timeout_s
        self.auth_limiter = AuthLimiter()
        self._server: asyncio.base_events.Server | None = None
        self._clients: dict[int, _Client] = {}
        self._clients_changed = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._numbers = itertools.count(1)
        self.bound_port: int | None = None
        self._log = get_logger("extport.server")

    # ------------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        last_error: OSError | None = None
        for port in self.ports:
            try:
                self._server = await asyncio.start_server(
                    self._serve, host=self.bind, port=port, reuse_address=True, limit=READ_CHUNK
                )
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise PortUnavailable(e.errno, f"cannot bind {self.bind}:{port}: {e.strerror or e}") from e
                self._log.warning("ext_port_taken", port=port, bind=self.bind)
                last_error = e
                continue
            self.bound_port = self._server.sockets[0].getsockname()[1]
            self._log.info("ext_port_listening", port=self.bound_port, bind=self.bind)
            return self.bound_port
        ports = ", ".join(str(p) for p in self.ports)
        raise PortUnavailable(errno.EADDRINUSE, f"ports {ports} on {self.bind} are all in use") from last_error

    async def stop(self) -> None:
        """Close the listening socket and every client; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients.values()):
            self._drop(client, "server stopping")
        for writer in list(self._writers):  # refused connections still lingering over their ERR
            writer.transport.abort()
        tasks = list(self._tasks)
        if tasks:
            # Aborted transports end the read loops; cancel only those stuck in a command (e.g. a slow slave).
            _, stuck = await asyncio.wait(tasks, timeout=2.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self.bound_port is not None:
            self._log.info("ext_port_closed", port=self.bound_port)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def wait_for_clients(self, count: int, timeout_s: float) -> bool:
        """Wait until exactly `count` clients are connected (tests, status); False on timeout."""
        async with self._clients_changed:
            try:
                await asyncio.wait_for(self._clients_changed.wait_for(lambda: len(self._clients) == count), timeout_s)
            except TimeoutError:
                return False
        return True

    async def _notify_clients_changed(self) -> None:
        async with self._clients_changed:
            self._clients_changed.notify_all()

    # ------------------------------------------------------------------------------------------------ sending

    def broadcast(self, reply: Reply) -> None:
        """Send one reply to every authenticated client (e.g. DFC when a dark series finished)."""
        data = protocol.encode_reply(reply)
        for client in list(self._clients.values()):
            if client.authenticated:
                self._send(client, data)

    def _send(self, client: _Client, data: bytes) -> None:
        if client.closed:
            return
        try:
            client.queue.put_nowait(data)
        except asyncio.QueueFull:
            self._drop(client, f"more than {self._queue_limit} replies waiting (client not reading)")

    def _drop(self, client: _Client, why: str) -> None:
        if client.closed:
            return
        client.closed = True
        self._log.info("ext_client_dropped", client=client.number, peer=client.peer, why=why)
        # abort(): its reader task sees the end at once and cleans up; nothing waits on a peer that stopped reading.
        client.writer.transport.abort()

    async def _write_loop(self, client: _Client) -> None:
        try:
            while True:
                data = await client.queue.get()
                if data is None:  # close requested once everything before it is sent
                    return
                client.writer.write(data)
                await client.writer.drain()
        except (ConnectionError, OSError) as e:
            self._drop(client, f"write failed: {e}")

    async def _reply_and_close(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply | None
    ) -> None:
        """Send `reply`, then close politely: FIN first, and discard what the client still sends for a moment.

        Closing a socket with unread input makes the kernel send RST, and a RST can destroy the ERR on its way
        to the client before it is read — the client would see "connection reset" instead of why.
        """
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            if reply is not None:
                writer.write(protocol.encode_reply(reply))
            await asyncio.wait_for(writer.drain(), LINGER_S)
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(self._discard_until_eof(reader), LINGER_S)
        writer.transport.abort()

    @staticmethod
    async def _discard_until_eof(reader: asyncio.StreamReader) -> None:
        while await reader.read(READ_CHUNK):
            pass

    # ------------------------------------------------------------------------------------------------ serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        peername = writer.get_extra_info("peername")
        host = str(peername[0]) if peername else "?"
        peer = f"{host}:{peername[1]}" if peername else "?"
        try:
            if not self.allowed.allows(host):
                self._report_bad_input(
                    "ext_client_refused", warn=True, peer=peer, why="address not in network.allowed_networks"
                )
                await self._reply_and_close(reader, writer, self._err(protocol.ERR_NETWORK))
                return
            if self._token and not self.auth_limiter.available(host):
                self._report_bad_input("ext_client_refused", warn=True, peer=peer, why="too many AUTH attempts")
                await self._reply_and_close(reader, writer, self._err(protocol.ERR_AUTH))
                return
            if len(self._clients) >= self.max_clients:
                self._make_room()
            if len(self._clients) >= self.max_clients:
                self._report_bad_input(
                    "ext_client_refused", warn=True, peer=peer, why=f"max_clients {self.max_clients} reached"
                )
                await self._reply_and_close(reader, writer, self._err(protocol.ERR_MAX_CLIENTS))
                return
            client = _Client(next(self._numbers), peer, writer, asyncio.Queue(self._queue_limit))
            client.authenticated = not self._token
            client.host = host
            self._clients[client.number] = client
            client.writer_task = asyncio.create_task(self._write_loop(client), name=f"ext-writer-{client.number}")
            self._log.info("ext_client_connected", client=client.number, peer=peer, clients=len(self._clients))
            await self._notify_clients_changed()
            try:
                await self._read_loop(client, reader)
            finally:
                self._clients.pop(client.number, None)
                client.closed = True
                client.writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client.writer_task
                writer.transport.abort()
                self._log.info("ext_client_disconnected", client=client.number, peer=peer, clients=len(self._clients))
                await self._notify_clients_changed()
        except asyncio.CancelledError:
            # Only stop() cancels a connection task. It is the outermost frame of that task: end it quietly
            # (asyncio's stream callback would otherwise report the cancellation as an error).
            self._log.info("ext_client_cancelled", peer=peer)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)

    def _make_room(self) -> None:
        """Slots full: drop the longest-waiting unproven client, else one idle for IDLE_EVICT_WHEN_FULL_S."""
        clients = [c for c in self._clients.values() if not c.closed]
        unproven = [c for c in clients if not c.proven]
        if unproven:
            victim = min(unproven, key=lambda c: c.connected_at)
            why = "made room for a new client (no first message / AUTH yet)"
        else:
            idle = [c for c in clients if time.monotonic() - c.last_message_at >= IDLE_EVICT_WHEN_FULL_S]
            if not idle:
                return
            victim = min(idle, key=lambda c: c.last_message_at)
            why = f"made room for a new client (idle for over {IDLE_EVICT_WHEN_FULL_S:.0f} s)"
        self._report_bad_input("ext_client_evicted", warn=True, client=victim.number, peer=victim.peer, why=why)
        # Its connection task removes it; count it gone now so the new client gets the slot.
        self._clients.pop(victim.number, None)
        self._drop(victim, why)

    def _deadline(self, client: _Client) -> tuple[float, str]:
        """When this client must have sent its next complete message (monotonic), and what it failed then."""
        if not client.proven:
            return (
                client.connected_at + self._auth_timeout_s,
                "no AUTH in time" if self._token else "no message in time",
            )
        return client.last_message_at + self._idle_timeout_s, f"idle for {self._idle_timeout_s:g} s"

    async def _read_loop(self, client: _Client, reader: asyncio.StreamReader) -> None:
        decoder = protocol.MessageDecoder(self.max_message_bytes)
        while not client.closed:
            deadline, why = self._deadline(client)
            try:
                # One deadline per state: bytes that complete no message do not move it.
                data = await asyncio.wait_for(reader.read(READ_CHUNK), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                err = protocol.ERR_AUTH if not client.authenticated else protocol.ERR_MESSAGE
                self._send(client, protocol.encode_reply(self._err(err)))
                await self._close_after_flush(client, reader, why)
                return
            except (ConnectionError, OSError):
                return
            if not data:
                return
            for item in decoder.feed(data):
                if client.closed:
                    return
                if isinstance(item, protocol.FrameError):
                    self._report_bad_input("ext_bad_message", client=client.number, reason=item.reason)
                    self._send(client, protocol.encode_reply(self._err(protocol.ERR_MESSAGE)))
                    continue
                client.last_message_at = time.monotonic()
                if not client.authenticated:
                    if not self._check_auth(item, client):
                        self._send(client, protocol.encode_reply(self._err(protocol.ERR_AUTH)))
                        await self._close_after_flush(client, reader, "wrong or missing AUTH token")
                        return
                    client.authenticated = client.proven = True
                else:
                    client.proven = True
                    await self._handle(client, item)

    def _check_auth(self, message: protocol.Message, client: _Client) -> bool:
        if not self.auth_limiter.allow(client.host):
            return False  # out of attempts: not even compared
        if len(message.pairs) != 1 or message.pairs[0][0] != "AUTH":
            return False
        ok = hmac.compare_digest(message.pairs[0][1].encode("utf-8"), self._token)
        if ok:
            self.auth_limiter.refund(client.host)
        return ok

    def _report_bad_input(self, event: str, warn: bool = False, **info: Any) -> None:
        if warn:
            self._log.warning(event, **info)
        else:
            self._log.info(event, **info)
        if self.on_bad_input is not None:
            self.on_bad_input(event, info)

    async def _close_after_flush(self, client: _Client, reader: asyncio.StreamReader, why: str) -> None:
        """Let the writer send what is queued (the ERR), then close politely."""
        self._report_bad_input("ext_client_refused", warn=True, client=client.number, peer=client.peer, why=why)
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)
            if client.writer_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(client.writer_task), LINGER_S)
        client.closed = True  # nothing more is queued for it
        await self._reply_and_close(reader, client.writer, None)

    @staticmethod
    def _err(key: str) -> Reply:
        return protocol.err_reply(key, protocol.MASTER_IDENTITY, "")

    async def _handle(self, client: _Client, message: protocol.Message) -> None:
        commands, refusals = protocol.parse_message(message)
        for cmd in commands:
            if cmd.key == "IDN":
                client.identity = cmd.value
        for refusal in refusals:
            self._report_bad_input("ext_refused", client=client.number, key=refusal.key, reason=refusal.reason)
        replies = [r.reply() for r in refusals]
        try:
            replies += await self.controller.handle_message(commands, client.identity)
        except Exception:  # the controller's bug must not end this connection or the port
            self._log.exception("ext_controller_failed", client=client.number, keys=[c.key for c in commands])
            replies += [self._err(c.key) for c in commands if c.key != "IDN"]
        for reply in protocol.coalesce(replies):
            data = protocol.encode_reply(reply)
            if "ERR" in reply or reply.get("private"):
                self._send(client, data)
            else:
                for other in list(self._clients.values()):
                    if other.authenticated:
                        self._send(other, data)
