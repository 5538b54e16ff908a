"""Issue 11 finding 4, the pre-hello side: connections before a proven hello were unlimited and each could buffer a
64 MiB frame. Now at most MAX_HANDSHAKES at once (MAX_HANDSHAKES_PER_ADDRESS from one address, the oldest closed
for a newcomer), each with link_timeout_s for its whole handshake, and no payload before the key is proven."""

from __future__ import annotations

import asyncio

from controller.link.framing import HANDSHAKE_LIMITS, encode_prefix_and_header
from controller.link.master import MAX_HANDSHAKES_PER_ADDRESS

from .conftest import LinkPair, link_config, run


async def _closed_by_peer(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout_s) == b""
    except ConnectionError:
        return True


def test_a_frame_announcing_64_mib_before_hello_is_refused_unread(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        master = await pair.start_master()
        prefix = bytearray(encode_prefix_and_header({"type": "hello"}, 0, HANDSHAKE_LIMITS))
        prefix[10:14] = (64 << 20).to_bytes(4, "big")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes(prefix) + b"\0" * 65536)
        assert await _closed_by_peer(reader)
        assert master.refused["handshake"] == 1 and not master.connected
        writer.transport.abort()
        await master.stop()

    run(scenario())


def test_idle_connections_before_hello_are_bounded_and_the_slave_still_gets_in(tmp_path, port):
    async def scenario():
        cfg = link_config(port, link_timeout_s=30.0, heartbeat_s=0.05)  # idle ones would linger 30 s each
        pair = LinkPair(tmp_path, cfg)
        master = await pair.start_master()
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(12)]
        # Every newcomer beyond the per-address cap closed the oldest: only the newest few are left open.
        closed = await asyncio.gather(*(_closed_by_peer(r) for r, _ in idle[: 12 - MAX_HANDSHAKES_PER_ADDRESS]))
        assert all(closed) and master.refused["busy"] >= 12 - MAX_HANDSHAKES_PER_ADDRESS
        slave = await pair.start_slave()  # from the same address: it closes an idle one and gets in
        assert await slave.wait_connected(10) and master.connected
        for _, writer in idle:
            writer.transport.abort()
        await pair.stop()

    run(scenario())


def test_a_silent_connection_is_closed_after_link_timeout(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))  # link_timeout_s 0.4 s
        master = await pair.start_master()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_peer(reader)
        assert master.refused["handshake"] == 1
        writer.transport.abort()
        await master.stop()

    run(scenario())
