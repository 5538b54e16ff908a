"""Framing: round trips, incremental decoding, limits, and fuzzing (only ProtocolError, never a hang)."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.errors import LinkError, ProtocolError
from controller.link.framing import (
    PREFIX_SIZE,
    FrameDecoder,
    FrameLimits,
    encode_frame,
    read_message,
)

from .conftest import run

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
headers = st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(lambda d: {**d, "type": "x"})


def test_round_trip_single_and_concatenated():
    frames = [({"type": "hb"}, b""), ({"type": "file", "name": "ä.png", "n": [1, 2]}, bytes(range(256)) * 10)]
    data = b"".join(encode_frame(h, p) for h, p in frames)
    msgs = FrameDecoder().feed(data)
    assert [(m.header, m.payload) for m in msgs] == frames


def test_decoder_accepts_any_split():
    data = encode_frame({"type": "a", "k": 1}, b"payload") + encode_frame({"type": "b"}, b"")
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        msgs = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert [m.type for m in msgs] == ["a", "b"]
        assert dec.buffered == 0


def test_byte_at_a_time():
    data = encode_frame({"type": "a"}, b"xyz")
    dec = FrameDecoder()
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert len(out) == 1 and out[0].payload == b"xyz"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: d[:4] + bytes([9]) + d[5:], "version"),
        (lambda d: d[:5] + bytes([1]) + d[6:], "flags"),
        (lambda d: d[:PREFIX_SIZE] + d[PREFIX_SIZE:].replace(b"hb", b"hc"), "checksum"),
        (lambda d: d[:10] + struct.pack("!I", 12345) + d[14:], "checksum"),  # payload length changed
    ],
)
def test_malformed_prefix_or_header_is_a_protocol_error(mutate, match):
    data = mutate(encode_frame({"type": "hb"}, b"abc"))
    with pytest.raises(ProtocolError, match=match):
        FrameDecoder().feed(data)


def test_decoder_stays_failed_after_an_error():
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(b"garbage-garbage-garbage")
    with pytest.raises(ProtocolError):
        dec.feed(encode_frame({"type": "hb"}))


def test_limits_are_enforced_on_both_sides():
    small = FrameLimits(max_header_bytes=64, max_payload_bytes=10)
    with pytest.raises(ProtocolError, match="payload"):
        encode_frame({"type": "x"}, b"x" * 11, small)
    with pytest.raises(ProtocolError, match="header"):
        encode_frame({"type": "x", "pad": "y" * 100}, b"", small)
    big = encode_frame({"type": "x"}, b"x" * 11)
    with pytest.raises(ProtocolError, match="payload length"):
        # refused from the prefix alone, before the payload is there
        FrameDecoder(small).feed(big[:PREFIX_SIZE])


@pytest.mark.parametrize("header", [{"no": "type"}, {"type": 5}, [1, 2]])
def test_encoder_and_decoder_need_an_object_with_a_type(header):
    import json
    import zlib

    with pytest.raises(ProtocolError):
        encode_frame(header)  # type: ignore[arg-type]
    # Hand-made frame with a well-formed prefix and CRC around a header that is not acceptable.
    hbytes = json.dumps(header).encode()
    covered = struct.pack("!4sBBII", b"PCLK", 1, 0, len(hbytes), 0)
    frame = struct.pack("!4sBBIII", b"PCLK", 1, 0, len(hbytes), 0, zlib.crc32(hbytes, zlib.crc32(covered))) + hbytes
    with pytest.raises(ProtocolError, match="object"):
        FrameDecoder().feed(frame)


def test_no_pickle_or_non_json_values():
    with pytest.raises((TypeError, ValueError)):
        encode_frame({"type": "x", "obj": object()})
    with pytest.raises(ValueError):
        encode_frame({"type": "x", "nan": float("nan")})


async def _read_all(data: bytes, limits: FrameLimits = FrameLimits()):
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while True:
        msg = await read_message(reader, limits)
        if msg is None:
            return out
        out.append(msg)


def test_read_message_stream_round_trip_and_eof():
    data = encode_frame({"type": "a"}, b"1") + encode_frame({"type": "b"}, b"22")
    msgs = run(_read_all(data))
    assert [(m.type, m.payload) for m in msgs] == [("a", b"1"), ("b", b"22")]
    with pytest.raises(LinkError, match="inside a frame"):
        run(_read_all(data[:-1]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=10))
def test_fuzz_random_bytes_only_protocol_error(data, splits):
    dec = FrameDecoder(FrameLimits(max_header_bytes=1024, max_payload_bytes=4096))
    pos = 0
    try:
        for n in [*splits, len(data)]:
            dec.feed(data[pos : pos + n])
            pos += n
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(headers, st.binary(max_size=200), st.data())
def test_fuzz_mutated_valid_frames(header, payload, data):
    frame = bytearray(encode_frame(header, payload))
    # Round trip first: every valid header survives unchanged.
    assert [(m.header, m.payload) for m in FrameDecoder().feed(bytes(frame))] == [(header, payload)]
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(frame) - 1), st.integers(0, 255)), max_size=4))
    for pos, value in edits:
        frame[pos] = value
    cut = data.draw(st.integers(0, len(frame)))
    try:
        msgs = FrameDecoder().feed(bytes(frame[:cut]))
    except ProtocolError:
        return
    for m in msgs:
        assert isinstance(m.header, dict) and isinstance(m.header["type"], str)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_stream_reader_never_hangs(data):
    """With EOF after the bytes, read_message ends (message, None, ProtocolError or LinkError) without waiting."""
    try:
        run(_read_all(data, FrameLimits(max_header_bytes=1024, max_payload_bytes=4096)), timeout_s=10.0)
    except (ProtocolError, LinkError):
        pass
