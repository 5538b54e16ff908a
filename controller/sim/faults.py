"""A TCP proxy that injects faults between the slave and the master: the link's virtual bad cable.

The real link code runs unchanged on both sides; the proxy cuts connections (now, or after N more bytes in a
direction), flips bytes at chosen offsets, stalls all traffic, or refuses new connections. "up" is the direction
client -> server (slave -> master), "down" the other. Every fault is recorded in `history` so tests can assert
what happened instead of guessing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal

from controller.logging import get_logger

Direction = Literal["up", "down", "any"]
CHUNK_BYTES = 64 * 1024


@dataclass
class _Plan:
    kind: Literal["cut", "corrupt"]
    direction: Direction
    remaining: int  # bytes to let through in that direction before acting


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task] = field(default_factory=list)

    def abort(self) -> None:
        self.client.transport.abort()
        self.server.transport.abort()


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.history: list[tuple[float, str, dict]] = []
        self.bytes = {"up": 0, "down": 0}
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._plans: list[_Plan] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._diverted: tuple[str, int] | None = None
        self._log = get_logger("faulty_proxy")

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._on_client, *self.listen, reuse_address=True)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    # -------------------------------------------------------------------------------------------- faults

    def cut(self) -> None:
        """Drop every connection now (both ends see a reset)."""
        self._record("cut", connections=len(self._pairs))
        for pair in list(self._pairs):
            pair.abort()

    def cut_after(self, nbytes: int, direction: Direction = "any") -> None:
        self._plans.append(_Plan("cut", direction, nbytes))

    def corrupt_after(self, nbytes: int, direction: Direction = "up") -> None:
        """Flip the bits of the byte that comes after `nbytes` more bytes in `direction`."""
        self._plans.append(_Plan("corrupt", direction, nbytes))

    def stall(self) -> None:
        """Stop forwarding in both directions (connections stay open) until resume()."""
        self._record("stall")
        self._flowing.clear()

    def resume(self) -> None:
        self._record("resume")
        self._flowing.set()

    def refuse(self, refusing: bool = True) -> None:
        """Close new connections at once (the peer looks down) while True."""
        self._record("refuse", on=refusing)
        self._refusing = refusing

    def divert(self, target: tuple[str, int] | None) -> None:
        """Send new connections to `target` (an impostor, e.g. a fake master) instead; None: back to normal."""
        self._record("divert", to=list(target) if target else None)
        self._diverted = target

    @property
    def connections(self) -> int:
        return len(self._pairs)

    def count(self, event: str) -> int:
        return sum(1 for _, e, _ in self.history if e == event)

    # --------------------------------------------------------------------------------------------- pump

    def _record(self, event: str, **details) -> None:
        self.history.append((time.monotonic(), event, details))
        self._log.debug("proxy_fault", fault=event, **details)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*(self._diverted or self.target))
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, "up", pair)),
            asyncio.create_task(self._pump(up_reader, writer, "down", pair)),
        ]
        await asyncio.gather(*pair.tasks, return_exceptions=True)
        self._pairs.discard(pair)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str, pair: _Pair) -> None:
        try:
            while True:
                chunk = await src.read(CHUNK_BYTES)
                if not chunk:
                    break
                await self._flowing.wait()
                chunk, cut = self._apply(bytearray(chunk), direction)
                if chunk:
                    dst.write(chunk)
                    await dst.drain()
                if cut:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            pair.abort()
            for task in pair.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    def _apply(self, chunk: bytearray, direction: str) -> tuple[bytes, bool]:
        """Apply due plans to a chunk; (bytes to forward, cut after them)."""
        cut_at: int | None = None
        for plan in list(self._plans):
            if plan.direction not in (direction, "any"):
                continue
            if plan.remaining >= len(chunk):
                plan.remaining -= len(chunk)
                continue
            self._plans.remove(plan)
            if plan.kind == "corrupt":
                chunk[plan.remaining] ^= 0xFF
                self._record("corrupt", direction=direction, offset=self.bytes[direction] + plan.remaining)
            elif cut_at is None or plan.remaining < cut_at:
                cut_at = plan.remaining
        if cut_at is not None:
            self._record("cut_at", direction=direction, offset=self.bytes[direction] + cut_at)
            chunk = chunk[:cut_at]
        self.bytes[direction] += len(chunk)
        return bytes(chunk), cut_at is not None


@contextlib.asynccontextmanager
async def faulty_proxy(target_host: str, target_port: int, **kwargs):
    proxy = FaultyProxy(target_host, target_port, **kwargs)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
