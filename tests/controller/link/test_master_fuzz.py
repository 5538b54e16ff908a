"""A live master fed random and malformed bytes by strangers keeps its slave session and keeps serving."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.link.framing import encode_frame

from .conftest import STEADY, LinkPair, free_port, link_config, run

valid_frames = st.sampled_from(
    [
        encode_frame({"type": "hb"}),
        encode_frame({"type": "file", "name": "x.png", "sha256": "0", "size": 3}, b"abc"),
        encode_frame({"type": "hello", "role": "slave", "version": 99, "boot_id": "b"}),
        encode_frame({"type": "hello", "role": "slave", "version": "1", "boot_id": 5}),
        encode_frame({"type": "req", "id": "x", "kind": 3}),
    ]
)


@st.composite
def garbage(draw) -> bytes:
    base = draw(st.one_of(st.binary(min_size=1, max_size=200), valid_frames))
    frame = bytearray(base)
    for _ in range(draw(st.integers(0, 3))):
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    return bytes(frame)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(garbage(), min_size=1, max_size=6))
def test_garbage_from_strangers_never_hurts_the_slave_session(tmp_path, blobs):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(free_port(), **STEADY))
        master = await pair.start_master()

        async def status(body):
            return {"ok": True}

        master.on_request("status", status)
        slave = await pair.start_slave()
        assert await slave.wait_connected(30)
        port = master.cfg.network.link_port
        for blob in blobs:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(blob)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.05)  # let the master read and refuse the last one
        assert master.connected and master.peer["boot_id"] == slave.boot_id
        assert slave.stats["connects"] == 1
        assert await slave.request("status", {}, 10) == {"ok": True}
        await pair.stop()

    run(scenario())
