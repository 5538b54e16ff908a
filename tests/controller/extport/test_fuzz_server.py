"""Random and malformed bytes against a live server: nothing escapes, the connection and the port stay usable."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.extport import protocol
from controller.extport.client import ExtClient

from .harness import build_station

_words = st.sampled_from([*protocol.KEYS, "END", "END\r\n", "XYZ", "0", "1", "-7", "0.00", "1e9", "nan", "\r\n", " "])
_soup = st.lists(st.one_of(_words, st.text(max_size=8)), max_size=40).map(lambda ws: " ".join(ws).encode("utf-8"))
_long = st.tuples(st.binary(max_size=64), st.integers(4000, 20_000)).map(lambda t: t[0] + b"9" * t[1] + b" END\r\n")
_payload = st.one_of(st.binary(max_size=3000), _soup, st.lists(st.one_of(_soup, _long), max_size=5).map(b"\r\n".join))


def test_fuzz_live_server_keeps_serving(tmp_path):
    loop = asyncio.new_event_loop()
    station = build_station(tmp_path, cfg=None)
    port = loop.run_until_complete(station.server.start())
    observer = ExtClient("127.0.0.1", port, timeout_s=5.0)
    loop.run_until_complete(observer.connect())

    async def one(data: bytes, chunk: int) -> None:
        async with ExtClient("127.0.0.1", port, timeout_s=5.0) as fuzzer:
            for i in range(0, len(data), chunk):
                await fuzzer.send_raw(data[i : i + chunk])
            # end whatever half message is pending; the same connection must still answer
            await fuzzer.send_raw(b"\r\n")
            await fuzzer.ping()
        await observer.ping()
        assert await station.server.wait_for_clients(1, 2.0)

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_payload, st.integers(min_value=1, max_value=4096))
    def check(data: bytes, chunk: int) -> None:
        examples.append(len(data))
        loop.run_until_complete(asyncio.wait_for(one(data, chunk), 10.0))

    examples: list[int] = []

    try:
        check()
        assert len(examples) >= 50 and max(examples) > 4096  # the fuzzing really happened
        # a fuzzer may have sent valid EXT/RST/TP* commands: the recording hooks took them, nothing else happened
        assert station.server.client_count == 1
    finally:
        loop.run_until_complete(observer.close())
        loop.run_until_complete(station.server.stop())
        loop.close()
