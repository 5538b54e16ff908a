"""A client of the external control port: `ExtClient` (asyncio; tests, bench, scripts) (used by `pycam ctl`, controller/cli/ctl.py).

The protocol has no request ids, so `ExtClient.command()` sends the message followed by `LOG 0` and collects
every reply up to the pong: the server handles one client's messages in order, so the pong marks the end of the
replies to the command (echoes of other clients' commands may be among them, as in the original).
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.extport import protocol

DEFAULT_TIMEOUT_S = 10.0


class ExtClient:
    """`await connect()`, `await command([(key, value), ...])` -> replies (dicts of raw tokens), `await close()`.

    With `reconnect=True`, a command that finds the connection broken (server restarted, pipe broken) connects
    again and sends it once more, as long as no reply to it had arrived.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 12347,
        *,
        token: str = "",
        identity: str = protocol.EXTERNAL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        reconnect: bool = False,
        reconnect_attempts: int = 10,
        max_bytes: int = 1 << 20,
    ):
        self.host, self.port, self.token, self.identity = host, port, token, identity
        self.timeout_s = timeout_s
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self._max_bytes = max_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = protocol.MessageDecoder(max_bytes)
        self._pending: list[dict[str, str]] = []
        self.connections = 0

    async def __aenter__(self) -> ExtClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reconnects(self) -> int:
        """How often this client connected again after its first connection."""
        return max(0, self.connections - 1)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        await self.close()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s
        )
        self.connections += 1
        self._decoder = protocol.MessageDecoder(self._max_bytes)
        self._pending = []
        if self.token:
            self._writer.write(protocol.encode_command([("AUTH", self.token)]))
        self._writer.write(protocol.encode_command([("IDN", self.identity)]))
        await self._writer.drain()

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (ConnectionError, OSError, TimeoutError):
                pass

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (tests send malformed input with this)."""
        if self._writer is None:
            raise ConnectionError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self, timeout_s: float | None = None) -> dict[str, str]:
        """The next message from the server as a dict of raw tokens; ConnectionError when the server closed."""
        deadline = asyncio.get_running_loop().time() + (timeout_s or self.timeout_s)
        while not self._pending:
            if self._reader is None:
                raise ConnectionError("not connected")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no reply from the external port")
            data = await asyncio.wait_for(self._reader.read(65536), left)
            if not data:
                raise ConnectionError("the server closed the connection")
            for item in self._decoder.feed(data):
                if isinstance(item, protocol.Message):
                    self._pending.append(protocol.reply_from_pairs(item.pairs))
        return self._pending.pop(0)

    async def command(self, pairs: list[tuple[str, Any]], timeout_s: float | None = None) -> list[dict[str, str]]:
        """Send one message and return every reply up to the end marker (see the module doc), one dict per key
        (`protocol.expand_reply`: the server sends one line per device for a message of many keys)."""
        attempts = self.reconnect_attempts if self.reconnect else 0
        for attempt in range(attempts + 1):
            got_reply = False
            replies: list[dict[str, str]] = []
            try:
                if not self.connected:
                    await self.connect()
                await self.send_raw(protocol.encode_command(pairs) + protocol.encode_command([("LOG", 0)]))
                while True:
                    reply = await self.receive(timeout_s)
                    got_reply = True
                    if reply == {"LOG": "0"}:
                        return replies
                    replies.extend(protocol.expand_reply(reply))
            except (ConnectionError, OSError) as e:
                await self.close()
                if any("ERR" in r for r in replies):
                    return replies  # refused (AUTH, NET, MAX) and closed by the server: the ERR says why
                if got_reply or attempt >= attempts:
                    raise ConnectionError(f"connection to {self.host}:{self.port} lost: {e}") from e
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))  # the server may be restarting
        raise ConnectionError("unreachable")  # the loop always returns or raises

    async def ping(self, timeout_s: float | None = None) -> None:
        await self.command([], timeout_s)

    async def settings(self, timeout_s: float | None = None) -> list[dict[str, str]]:
        """LOG 1: one reply per device with its settings in force (ERR replies for devices that cannot answer)."""
        return await self.command([("LOG", 1)], timeout_s)


# ---------------------------------------------------------------------------------------------------------- CLI

# Why a device may refuse a key that passed the local checks (the reason itself is in the master's log).
