"""Impostors on the link, for tests and the soak: a forged slave and a fake master, neither holding the key.

`forged_slave` dials the master as a slave would, says a hello, answers the master's challenge with a guess and
then sends a file anyway; `FakeMaster` listens where the slave dials (through the fault proxy's `divert`), answers
the slave's hello with a made-up proof, then welcomes it and acknowledges every file it hears of, and a list of
names it was told, without storing anything. Against a link that checks the key, the forged slave stores nothing
and never becomes the session, and the fake master's acks delete nothing from the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from typing import Any

from controller.errors import LinkError, ProtocolError
from controller.link.auth import new_nonce
from controller.link.endpoint import PROTOCOL_VERSION
from controller.link.framing import FrameLimits, encode_frame, read_message
from controller.logging import get_logger

_READ_LIMITS = FrameLimits(max_header_bytes=64 * 1024, max_payload_bytes=64 * 1024 * 1024)
log = get_logger("sim.forged")


def _hello(role: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "hello", "role": role, "version": PROTOCOL_VERSION, "boot_id": uuid.uuid4().hex,
        "station": "impostor", **extra,
    }  # fmt: skip


async def forged_slave(host: str, port: int, file_name: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """One forged-slave attempt. What came back: the message types received and whether the master closed."""
    received: list[str] = []
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(encode_frame(_hello("slave", nonce=new_nonce())))
        payload = b"forged image"
        writer.write(encode_frame({"type": "auth", "proof": secrets.token_hex(32)}))
        header = {"type": "file", "name": file_name, "sha256": hashlib.sha256(payload).hexdigest()}
        writer.write(encode_frame({**header, "size": len(payload)}, payload))
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    msg = await read_message(reader, _READ_LIMITS)
                except (LinkError, ProtocolError, ConnectionError, OSError):
                    break
                if msg is None:
                    break
                received.append(msg.type)
    finally:
        writer.transport.abort()
    result = {"received": received, "closed": True, "acked": "ack" in received}
    log.info("forged_slave_attempt", **result)
    return result


class FakeMaster:
    """A server posing as the master without the key. `acks_sent` counts the acks it managed to send."""

    def __init__(self, names_to_ack: list[str] | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.names_to_ack = list(names_to_ack or [])
        self.connections = 0
        self.files_received = 0
        self.acks_sent = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._on_client, self.host, 0)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            msg = await asyncio.wait_for(read_message(reader, _READ_LIMITS), 5.0)
            if msg is None or msg.type != "hello":
                return
            # A made-up proof, then everything a real master would say next, without waiting to be trusted.
            writer.write(encode_frame(_hello("master", nonce=new_nonce(), proof=secrets.token_hex(32))))
            writer.write(encode_frame({"type": "welcome"}))
            for name in self.names_to_ack:
                writer.write(encode_frame({"type": "ack", "name": name, "status": "stored"}))
                self.acks_sent += 1
            await writer.drain()
            while (msg := await asyncio.wait_for(read_message(reader, _READ_LIMITS), 5.0)) is not None:
                if msg.type == "file":
                    self.files_received += 1
                    writer.write(encode_frame({"type": "ack", "name": msg.header.get("name"), "status": "stored"}))
                    self.acks_sent += 1
                    await writer.drain()
        except (LinkError, ProtocolError, ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
