"""The key table, the decoder, value parsing, encoding and ordering of spec/ext-protocol.md."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import Config
from controller.extport import protocol
from controller.extport.protocol import FrameError, Message, MessageDecoder, parse_message


def _spec_keys(path) -> dict[str, str]:
    keys = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*([A-Z]{3}(?:\s*/\s*[A-Z]{3})*)\s*\|\s*(\w+)\s*\|", line)
        if m:
            for key in m.group(1).split("/"):
                keys[key.strip()] = m.group(2)
    return keys


def test_key_table_matches_the_spec(shared_data):
    spec = _spec_keys(shared_data.parent / "spec" / "ext-protocol.md")
    assert len(spec) > 30
    assert set(spec) == set(protocol.KEYS) - protocol.EXTENSION_KEYS
    assert all(protocol.KEYS[k].kind == "reply" for k in protocol.EXTENSION_KEYS)
    for key, tp in spec.items():
        assert protocol.KEYS[key].type == tp, key


def test_every_setting_key_maps_to_an_existing_config_field():
    cfg = Config()
    for key in protocol.SETTING_KEYS:
        spec = protocol.KEYS[key]
        assert spec.targets, key
        for target in spec.targets:
            assert hasattr(getattr(cfg, target.section), target.field), key
        protocol.read_setting(key, cfg)
        assert spec.devices and set(spec.devices) <= set(protocol.DEVICES)


def test_decoder_splits_a_stream_fed_byte_by_byte():
    data = b"IDN EXN END\r\nSSA 5000 ATA 0 END\r\nLOG 0 END\r\n"
    dec = MessageDecoder(100)
    out = [m for b in data for m in dec.feed(bytes([b]))]
    assert out == [
        Message((("IDN", "EXN"),)),
        Message((("SSA", "5000"), ("ATA", "0"))),
        Message((("LOG", "0"),)),
    ]


def test_over_long_message_is_refused_once_and_the_next_one_decoded():
    dec = MessageDecoder(64)
    out = dec.feed(b"SSA " + b"9" * 200)
    out += dec.feed(b"9" * 200 + b" END\r\nLOG 0 END\r\n")
    assert isinstance(out[0], FrameError) and "longer" in out[0].reason
    assert out[1:] == [Message((("LOG", "0"),))]
    assert dec.pending_bytes == 0


def test_garbage_and_non_utf8_become_frame_errors():
    dec = MessageDecoder()
    out = dec.feed(b"\xff\xfe\x00 END\r\nhello world\r\n\r\nLOG 0 END\r\n")
    assert [type(x) for x in out] == [FrameError, FrameError, Message]


@pytest.mark.parametrize(
    "key,raw,why",
    [
        ("SSA", "12x4", "not an integer"),
        ("SSA", "1_000", "not an integer"),
        ("SSA", "0", "out of range"),
        ("SSA", "6000002", "out of range"),
        ("FRC", "0", "out of range"),
        ("FRC", "0.001", "out of range"),  # rounds to 0.00: a rate of 0
        ("FRS", "-1", "out of range"),
        ("FRC", "nan", "not a number"),
        ("FRC", "inf", "not a number"),
        ("FRC", "1e-1", "not a number"),
        ("RWC", "0", "not allowed"),
        ("ATA", "2", "out of range"),
        ("DKC", "0", "out of range"),
        ("TPA", "Sunset", "capture type"),
        ("TPA", "../../etc", "capture type"),
        ("IDN", "XYZ", "not one of"),
        ("SSA", "", "missing value"),
    ],
)
def test_bad_values_are_refused_with_a_reason(key, raw, why):
    commands, refusals = parse_message(Message(((key, raw),)))
    assert commands == []
    assert refusals[0].key == key and why in refusals[0].reason


def test_unknown_and_reply_only_keys_are_refused():
    _, refusals = parse_message(Message((("XYZ", "1"), ("DFC", "1"), ("\x00\x01", "1"))))
    assert [r.key for r in refusals] == ["XYZ", "DFC", protocol.ERR_UNKNOWN]


def test_values_parse_to_their_types():
    msg = Message((("SSA", "5000"), ("ATA", "0"), ("FRC", "0.25"), ("SMN", ".5"), ("TPB", "250ppmm"), ("RWC", "-3")))
    commands, refusals = parse_message(msg)
    assert refusals == []
    assert [c.value for c in commands] == [5000, False, 0.25, 0.5, "250ppmm", -3]
    assert isinstance(commands[1].value, bool)


def test_encoding_writes_ints_bools_and_two_decimal_floats():
    data = protocol.encode_reply({"IDN": "CM1", "SSA": 5000, "ATA": True, "FRC": 0.25, "reason": "x y"})
    assert data == b"SSA 5000 ATA 1 FRC 0.25 IDN CM1 END\r\n"
    assert protocol.encode_reply({"ERR": "SSA", "IDN": "CM1", "reason": "why"}) == b"ERR SSA IDN CM1 END\r\n"


def _order(text: str) -> list[list[str]]:
    commands, _ = parse_message(protocol.decode_line(text.encode()))
    return [u.keys for u in protocol.order_units(commands)]


def test_auto_exposure_off_before_shutter_and_on_after_it():
    assert _order("SSA 5000 ATA 0 END") == [["ATA"], ["SSA"]]
    assert _order("ATA 1 SSA 5000 END") == [["SSA"], ["ATA"]]


def test_min_max_pairs_are_one_unit_and_log_and_exit_come_last():
    assert _order("EXT 1 LOG 1 SMX 0.5 CAD 3 SMN 0.3 END") == [["CAD"], ["SMX", "SMN"], ["LOG"], ["EXT"]]


def test_frc_sets_the_camera_rate_and_a_whole_number_of_slots_per_minute():
    commands, _ = parse_message(Message((("FRC", "0.33"),)))
    changes = protocol.changes_for(commands, Config())
    assert changes == {"camera": {"frame_rate_hz": 0.33}, "schedule": {"period_s": 3.0}}
    assert protocol.slot_period_s(0.01) == 60.0 and protocol.slot_period_s(1.0) == 1.0


def test_window_keys_change_one_end_of_the_window():
    commands, _ = parse_message(Message((("WMX", "360"),)))
    assert protocol.changes_for(commands, Config()) == {"spectrometer": {"saturation_window_nm": (300, 360)}}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=50))
def test_fuzz_decoder_never_raises_and_chunking_does_not_matter(data, chunk):
    whole = MessageDecoder(128).feed(data)
    dec = MessageDecoder(128)
    pieces = [m for i in range(0, len(data), chunk) for m in dec.feed(data[i : i + chunk])]
    assert pieces == whole
    for item in whole:
        if isinstance(item, Message):
            commands, refusals = parse_message(item)
            assert len(commands) + len(refusals) == len(item.pairs)
            for r in refusals:
                protocol.encode_reply(r.reply())


_token = st.sampled_from(sorted(protocol.KEYS) + ["END", "XYZ", "", "0", "1", "-1", "0.00", "5000", "nan", "ÿ"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_token, max_size=30))
def test_fuzz_token_soup_parses_without_exceptions(tokens):
    line = " ".join(tokens + ["END"]).encode("utf-8") + b"\r\n"
    for item in MessageDecoder(4096).feed(line):
        if isinstance(item, Message):
            commands, _ = parse_message(item)
            protocol.order_units(commands)
            protocol.changes_for([c for c in commands if c.spec.kind == "setting"], Config())
