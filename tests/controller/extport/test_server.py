"""The external port end to end on loopback: regression tests for spec/known-failures.md and access control."""

from __future__ import annotations

import asyncio
import socket

import pytest
from structlog.testing import capture_logs

from controller.extport import protocol
from controller.extport.client import ExtClient
from controller.extport.server import PortUnavailable

from .harness import build_station, make_config, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _started(tmp_path, **kw):
    station = build_station(tmp_path, **kw)
    station.port = await station.server.start()
    return station


def _client(station, **kw) -> ExtClient:
    return ExtClient("127.0.0.1", station.port, timeout_s=5.0, **kw)


def _by_device(replies) -> dict[str, dict[str, str]]:
    return {r["IDN"]: {k: v for k, v in r.items() if k != "IDN"} for r in replies if "ERR" not in r}


def test_bug1_disconnect_external_client_twice(tmp_path):
    async def body():
        st = await _started(tmp_path)
        other = _client(st)
        await other.connect()
        for _ in range(3):
            c = _client(st)
            await c.connect()
            assert await st.server.wait_for_clients(2, 2.0)
            await c.close()
            await c.close()  # a second disconnect of the same client is harmless on both sides
            assert await st.server.wait_for_clients(1, 2.0)
        # a client vanishing mid-message (half a command, then a reset) affects no one else
        c = _client(st)
        await c.connect()
        await c.send_raw(b"SSA 50")
        c._writer.transport.abort()
        assert await st.server.wait_for_clients(1, 2.0)
        assert await other.command([("PXC", 7)]) == [{"PXC": "7", "IDN": "CM1"}, {"PXC": "7", "IDN": "CM2"}]
        await other.close()
        await st.server.stop()
        await st.server.stop()

    run(body())


def test_bug3_restart_master_rebinds_port_at_once(tmp_path):
    port = _free_port()

    async def body():
        st = await _started(tmp_path, ports=(port,))
        sock = st.server._server.sockets[0]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        c = _client(st, reconnect=True)
        assert await c.command([("PXC", 9)])
        await st.server.stop()
        # the same stores, a new server, the same port, at once
        st2 = build_station(tmp_path, ports=(port,))
        assert await st2.server.start() == port
        assert [r for r in await c.command([("LOG", 1)]) if r["IDN"] == "CM1"][0]["PXC"] == "9"
        assert c.reconnects >= 1
        await c.close()
        await st2.server.stop()

    run(body())


def test_taken_port_falls_back_and_all_taken_is_a_clear_error(tmp_path):
    p1, p2 = _free_port(), _free_port()

    async def body():
        holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", p1)
        st = build_station(tmp_path, ports=(p1, p2))
        assert await st.server.start() == p2
        st3 = build_station(tmp_path / "x", ports=(p1, p2))
        with pytest.raises(PortUnavailable, match=f"{p1}, {p2}"):
            await st3.server.start()
        await st.server.stop()
        holder.close()
        await holder.wait_closed()

    run(body())


def test_bug4_broken_pipe_during_manual_acquisition_reconnects(tmp_path):
    async def body():
        st = await _started(tmp_path)
        c = _client(st, reconnect=True)
        replies = await c.command([("SPC", 1), ("TPA", "Test")])
        assert {"TPA": "Test", "IDN": "CM1"} in replies
        c._writer.transport.abort()  # the pipe breaks under the client
        assert await st.server.wait_for_clients(0, 2.0)
        replies = await c.command([("TPA", "Dark"), ("TPB", "Dark")])
        assert {"TPA": "Dark", "IDN": "CM1"} in replies and {"TPB": "Dark", "IDN": "CM2"} in replies
        # and the server drops the client's side (a supervisor-side failure): the client comes back by itself
        st.server._drop(next(iter(st.server._clients.values())), "test: broken pipe")
        assert await st.server.wait_for_clients(0, 2.0)
        assert {"TPS": "Clear", "IDN": "SPC"} in await c.command([("TPS", "Clear")])
        assert ("capture_single", "CM1", "Test") in st.master_actions.calls
        assert ("capture_single", "CM1", "Dark") in st.master_actions.calls
        assert ("capture_single", "SPC", "Clear") in st.slave_actions.calls
        assert c.reconnects == 2
        await c.close()
        await st.server.stop()

    run(body())


# A value for every setting key, each different from the default and valid together.
EVERY_SETTING = [
    ("ATA", 0), ("ATB", 0), ("ATS", 0), ("SSA", 5000), ("SSB", 7000), ("SSS", 250), ("FRC", 0.5), ("FRS", 0.5),
    ("CAD", 5), ("SMN", 0.4), ("SMX", 0.6), ("PXC", 321), ("RWC", -200), ("PXS", 50), ("WMN", 310), ("WMX", 330),
    ("SNS", 0.3), ("SXS", 0.8),
]  # fmt: skip


def _expected(identity: str) -> dict[str, str]:
    keys = protocol.setting_keys_for(identity)
    return {k: protocol.format_value(v) for k, v in EVERY_SETTING if k in keys}


def test_bug7_settings_read_back_and_survive_restart(tmp_path):
    assert {k for k, _ in EVERY_SETTING} == set(protocol.SETTING_KEYS)

    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            replies = await c.command(EVERY_SETTING)
            assert not [r for r in replies if "ERR" in r], replies
            now = _by_device(await c.settings())
        for identity in protocol.DEVICES:
            assert now[identity] == _expected(identity), identity
        assert st.master_store.config.schedule.period_s == 2.0
        assert st.slave_store.config.spectrometer.saturation_window_nm == (310, 330)
        await st.server.stop()
        # "restart": new stores and a new server on the same state dirs
        st2 = await _started(tmp_path)
        async with _client(st2) as c:
            after = _by_device(await c.settings())
        assert after == now
        await st2.server.stop()

    run(body())


def test_one_malformed_number_does_not_kill_the_client(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            replies = await c.command([("PXC", "12x4"), ("CAD", 4)])
            assert {"ERR": "PXC", "IDN": "CM1"} in replies and {"CAD": "4", "IDN": "SPC"} in replies
            assert await c.command([("IDN", "XYZ"), ("SSB", "nan")]) == [
                {"ERR": "IDN", "IDN": "CM1"},
                {"ERR": "SSB", "IDN": "CM2"},
            ]
            await c.send_raw(b"\x00\xff" * 100 + b"\r\n")
            assert await c.receive() == {"ERR": protocol.ERR_MESSAGE, "IDN": "CM1"}
            await c.ping()
        await st.server.stop()

    run(body())


def test_over_long_message_gets_err_and_the_connection_and_others_stay_usable(tmp_path):
    async def body():
        st = await _started(tmp_path)
        limit = st.server.max_message_bytes
        async with _client(st) as sender, _client(st) as other:
            assert await st.server.wait_for_clients(2, 2.0)
            # one message far beyond the limit, sent in pieces, with a valid setting hidden at its end
            flood = b"PXC " + b"9" * (3 * limit) + b" CAD 5 END\r\n"
            for i in range(0, len(flood), 1000):
                await sender.send_raw(flood[i : i + 1000])
            assert await sender.receive() == {"ERR": protocol.ERR_MESSAGE, "IDN": "CM1"}
            await sender.ping()  # the same connection still answers
            assert st.slave_store.config.spectrometer.coadd == 1  # CAD 5 inside the refused message not applied
            assert await sender.command([("CAD", 3)]) == [{"CAD": "3", "IDN": "SPC"}]
            assert await other.receive(2.0) == {"CAD": "3", "IDN": "SPC"}  # nothing of the flood reached it
        assert st.slave_store.config.spectrometer.coadd == 3
        await st.server.stop()

    run(body())


def test_rate_zero_is_refused_and_nothing_changes(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            replies = await c.command([("FRC", 0), ("FRS", "0.00"), ("FRC", "0.001")])
        # One ERR line per device, naming each refused key once (the replies are coalesced).
        assert replies == [{"ERR": "FRC", "IDN": "CM1"}, {"ERR": "FRS", "IDN": "SPC"}]
        assert st.master_store.config.camera.frame_rate_hz == 0.25
        assert st.slave_store.config.spectrometer.frame_rate_hz == 0.25
        await st.server.stop()

    run(body())


def test_auto_off_and_shutter_in_one_message_are_applied_in_order(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            with capture_logs() as logs:
                refused = await c.command([("SSA", 4000)])
            assert refused == [{"ERR": "SSA", "IDN": "CM1"}]
            assert any(e.get("event") == "ext_refused" and "ATA" in e.get("reason", "") for e in logs)
            replies = await c.command([("SSA", 5000), ("ATA", 0)])
        assert replies == [{"ATA": "0", "IDN": "CM1"}, {"SSA": "5000", "IDN": "CM1"}]
        assert st.master_store.config.camera.shutter_us == 5000
        await st.server.stop()

    run(body())


def test_min_max_pair_is_validated_together(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            # SMX 0.5 alone would be refused (SMN is 0.7); with SMN 0.3 in the same message it is fine
            ok = await c.command([("SMX", 0.5), ("SMN", 0.3)])
            bad = await c.command([("SNS", 0.8), ("SXS", 0.5)])
        assert {"SMX": "0.50", "IDN": "CM2"} in ok and {"SMN": "0.30", "IDN": "CM1"} in ok
        assert bad == [{"ERR": "SNS", "IDN": "SPC"}, {"ERR": "SXS", "IDN": "SPC"}]
        assert (st.master_store.config.camera.min_saturation, st.master_store.config.camera.max_saturation) == (
            0.3,
            0.5,
        )
        await st.server.stop()

    run(body())


def test_unreachable_slave_gets_err_at_once(tmp_path):
    async def body():
        # A long request timeout, so "at once" and "after the timeout" are far apart even on a busy machine.
        down = await _started(tmp_path / "down", remote_timeout_s=60.0)
        down.link.up = False
        async with ExtClient("127.0.0.1", down.port, timeout_s=90.0) as c:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            replies = await c.command([("FRC", 0.5), ("SSB", 100), ("LOG", 1)])
            elapsed = loop.time() - t0
            assert {"FRC": "0.50", "IDN": "CM1"} in replies
            for err in ({"ERR": "FRC", "IDN": "CM2"}, {"ERR": "SSB", "IDN": "CM2"}, {"ERR": "LOG", "IDN": "SPC"}):
                assert err in replies
            assert elapsed < 60.0  # at once: not after the request timeout
        await down.server.stop()
        st = await _started(tmp_path, remote_timeout_s=0.3)
        st.link.hang = True
        async with _client(st) as c:
            replies = await c.command([("CAD", 3)])
            assert replies == [{"ERR": "CAD", "IDN": "SPC"}]
            st.link.hang = False
            assert await c.command([("CAD", 3)]) == [{"CAD": "3", "IDN": "SPC"}]
        await st.server.stop()

    run(body())


def test_actions_reach_the_station_hooks(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            await c.command([("STC", 1), ("STS", 1)])
            await c.command([("TPA", "Test"), ("TPB", "250ppmm")])  # during continuous capture: handed over
            await c.command([("DKC", 1), ("RSS", 1), ("SPS", 1)])
            replies = await c.command([("EXT", 1)])
        assert replies == [{"EXT": "1", "IDN": "CM2"}, {"EXT": "1", "IDN": "CM1"}]
        assert st.master_actions.calls == [
            ("start_continuous", "cameras"), ("capture_single", "CM1", "Test"), ("dark_series", "cameras"), ("exit",),
        ]  # fmt: skip
        assert st.slave_actions.calls == [
            ("start_continuous", "cameras"), ("start_continuous", "spectrometer"), ("capture_single", "CM2", "250ppmm"),
            ("dark_series", "cameras"), ("restart_backend", "spectrometer"), ("stop_continuous", "spectrometer"),
            ("exit",),
        ]  # fmt: skip
        await st.server.stop()

    run(body())


def test_a_refusing_hook_gives_err_and_others_go_on(tmp_path):
    from controller.errors import DeviceUnavailable

    async def body():
        st = await _started(tmp_path)
        st.master_actions.refuse["capture_single"] = DeviceUnavailable("camera A", "unplugged")
        st.master_actions.refuse["dark_series"] = ZeroDivisionError("hook bug")
        async with _client(st) as c:
            replies = await c.command([("TPA", "Test"), ("DKC", 1), ("PXC", 5)])
        assert {"ERR": "TPA", "IDN": "CM1"} in replies and {"ERR": "DKC", "IDN": "CM1"} in replies
        assert {"DKC": "1", "IDN": "CM2"} in replies and {"PXC": "5", "IDN": "CM1"} in replies
        await st.server.stop()

    run(body())


def test_echoes_go_to_every_client_and_errors_to_the_sender_only(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as a, _client(st) as b:
            assert await st.server.wait_for_clients(2, 2.0)
            await a.command([("CAD", 9), ("XYZ", 1)])
            assert await b.receive(2.0) == {"CAD": "9", "IDN": "SPC"}
            st.server.broadcast({"DFC": 1, "IDN": "CM1"})
            assert await b.receive(2.0) == {"DFC": "1", "IDN": "CM1"}
            assert await b.command([]) == []  # nothing else (no ERR XYZ) was waiting for b
        await st.server.stop()

    run(body())


def test_max_clients(tmp_path):
    async def body():
        st = await _started(tmp_path, cfg=make_config(max_clients=2))
        a, b = _client(st), _client(st)
        await a.connect()
        await b.connect()
        assert await st.server.wait_for_clients(2, 2.0)
        extra = _client(st)
        await extra.connect()
        assert await extra.receive(2.0) == {"ERR": protocol.ERR_MAX_CLIENTS, "IDN": "CM1"}
        with pytest.raises(ConnectionError):
            await extra.receive(2.0)
        await a.close()
        assert await st.server.wait_for_clients(1, 2.0)
        async with _client(st) as c:
            await c.ping()
        await b.ping()
        await b.close()
        await st.server.stop()

    run(body())


def test_clients_outside_the_allowed_networks_are_refused(tmp_path):
    async def body():
        st = await _started(tmp_path, cfg=make_config(allowed_networks=("10.0.0.0/8", "::1/128")))
        c = _client(st)
        await c.connect()
        assert await c.receive(2.0) == {"ERR": protocol.ERR_NETWORK, "IDN": "CM1"}
        with pytest.raises(ConnectionError):
            await c.receive(2.0)
        assert st.server.client_count == 0
        await st.server.stop()

    run(body())


def test_auth_token(tmp_path):
    async def body():
        st = await _started(tmp_path, cfg=make_config(auth_token="s3cret"))
        async with _client(st, token="s3cret") as good:
            assert await good.command([("CAD", 2)]) == [{"CAD": "2", "IDN": "SPC"}]
            for token in ("wrong", ""):
                bad = _client(st, token=token)
                replies = await bad.command([("CAD", 3)])
                assert replies == [{"ERR": protocol.ERR_AUTH, "IDN": "CM1"}]
                assert not bad.connected
            await good.ping()  # the refused clients got no echo to anyone and changed nothing
        assert st.slave_store.config.spectrometer.coadd == 2
        await st.server.stop()

    run(body())


def test_a_client_that_does_not_read_is_dropped_without_stalling_others(tmp_path):
    async def body():
        st = await _started(tmp_path, queue_limit=8)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        await asyncio.get_running_loop().sock_connect(slow, ("127.0.0.1", st.port))
        async with _client(st) as fast:
            assert await st.server.wait_for_clients(2, 2.0)
            big = {"TPA": "x" * 2000, "IDN": "CM1"}
            received = 0
            for _ in range(20_000):
                st.server.broadcast(big)
                if await fast.receive(2.0) == {"TPA": big["TPA"], "IDN": "CM1"}:
                    received += 1
                if st.server.client_count == 1:
                    break
            assert st.server.client_count == 1  # the slow one was dropped, the fast one kept up
            await fast.ping()
        slow.close()
        await st.server.stop()

    run(body(), timeout_s=60)


def test_a_client_pipelining_many_messages_is_served_in_order(tmp_path):
    kinds = ["Test", "Dark", "Clear", "Plume"]

    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            messages = [protocol.encode_command([("TPA", kinds[i % 4]), ("LOG", 0)]) for i in range(1000)]
            await c.send_raw(b"".join(messages))
            for i in range(1000):
                assert await c.receive() == {"TPA": kinds[i % 4], "IDN": "CM1"}
                assert await c.receive() == {"LOG": "0"}
        assert len(st.master_actions.calls) == 1000
        await st.server.stop()

    run(body(), timeout_s=60)


def test_bad_input_is_reported_to_the_hook(tmp_path):
    """The supervisor counts garbage and refused clients as faults through `on_bad_input`, not by log scraping."""
    seen: list[tuple[str, dict]] = []

    async def body():
        st = await _started(tmp_path, on_bad_input=lambda event, info: seen.append((event, info)))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", st.port)
            writer.write(b"IDN EXN END\r\nSSA 12x END\r\n" + b"\xff\xfe garbage" * 400 + b" END\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"END\r\n"), 30)
            await asyncio.wait_for(reader.readuntil(b"END\r\n"), 30)
            writer.close()
        finally:
            await st.server.stop()

    run(body())
    events = [e for e, _ in seen]
    assert "ext_bad_message" in events
