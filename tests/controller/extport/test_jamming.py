"""A control port nobody can jam (issue 11, finding 5): idle connections, a slow AUTH handshake, one message of
500 keys, 1000 unknown keys, AUTH guessing - each with another client that must keep being served."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from controller.extport import protocol
from controller.extport.server import AUTH_BURST, AuthLimiter

from .harness import make_config, run
from .test_server import _client, _started


async def _raw(station) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", station.port)


def test_idle_connections_holding_every_slot_do_not_lock_out_a_new_client(tmp_path):
    async def body():
        st = await _started(tmp_path, cfg=make_config(max_clients=4))
        idle = [await _raw(st) for _ in range(4)]  # connect and say nothing
        assert await st.server.wait_for_clients(4, 5.0)
        async with _client(st) as c:  # served at once: the longest-waiting silent connection made room
            assert await c.command([("PXC", 9)]) == [{"PXC": "9", "IDN": "CM1"}, {"PXC": "9", "IDN": "CM2"}]
        assert st.server.client_count <= 4
        for _, w in idle:
            w.close()
        await st.server.stop()

    run(body())


def test_auth_handshake_has_one_deadline_that_bytes_do_not_restart(tmp_path):
    async def body():
        # 0.5 s for the whole handshake; the client sends a byte every 0.05 s and never completes AUTH.
        st = await _started(tmp_path, cfg=make_config(auth_token="tok", handshake_timeout_s=0.5))
        reader, writer = await _raw(st)
        sent = 0
        closed = asyncio.ensure_future(reader.read())  # the server's ERR AUTH, then the end
        while not closed.done() and sent < 400:  # 20 s of dribbling: forty times the deadline
            writer.write(b"A")
            await writer.drain()
            sent += 1
            await asyncio.wait({closed}, timeout=0.05)
        assert closed.done(), "bytes kept the unauthenticated client alive"
        assert protocol.ERR_AUTH.encode() in closed.result() + await reader.read()
        writer.close()
        await st.server.stop()

    run(body(), timeout_s=60)


def test_a_500_key_message_disconnects_no_other_client_and_writes_settings_once(tmp_path):
    async def body():
        st = await _started(tmp_path, queue_limit=32)
        bystander_r, bystander_w = await _raw(st)  # connected, reads nothing while the flood is handled
        bystander_w.write(b"IDN EXN END\r\n")
        async with _client(st) as sender:
            assert await st.server.wait_for_clients(2, 5.0)
            pairs = [("PXC", 1 + i % 9) for i in range(500)]
            assert len(protocol.encode_command(pairs)) <= st.cfg.network.max_message_bytes
            with capture_logs() as logs:
                replies = await sender.command(pairs)
            assert {"PXC": "5", "IDN": "CM1"} in replies  # the last value is the one in force
            assert st.master_store.config.camera.saturation_pixels == 5
            assert st.server.client_count == 2  # the bystander is still there
            writes = [e for e in logs if e.get("event") == "settings_updated"]
            assert len(writes) == 2  # one settings.json write per Pi, not 500
        echoes = await asyncio.wait_for(bystander_r.readuntil(b"IDN CM2 END\r\n"), 30.0)
        assert echoes.count(b"\r\n") == 2  # one echo line per device for the whole message
        bystander_w.close()
        await st.server.stop()

    run(body())


def test_a_message_of_1000_unknown_keys_gets_errs_and_the_connection_stays(tmp_path):
    async def body():
        st = await _started(tmp_path, queue_limit=32)
        async with _client(st) as c:
            pairs = [(chr(65 + i % 26), 1) for i in range(1000)]  # 1000 unknown keys in 4000 bytes
            assert len(protocol.encode_command(pairs)) <= st.cfg.network.max_message_bytes
            replies = await c.command(pairs)
            assert replies and all("ERR" in r for r in replies)
            assert {r["ERR"] for r in replies} == {chr(65 + i) for i in range(26)}
            assert await c.command([("CAD", 4)]) == [{"CAD": "4", "IDN": "SPC"}]  # still usable
            await c.send_raw(protocol.encode_command([("Q", 1)] * 1000)[:4000] + b"\r\n")
            assert "ERR" in await c.receive(5.0)
            await c.ping()
        await st.server.stop()

    run(body())


def test_auth_guessing_is_rate_limited_per_address(tmp_path):
    async def body():
        st = await _started(tmp_path, cfg=make_config(auth_token="s3cret"))
        with capture_logs() as logs:
            for _ in range(AUTH_BURST):
                assert await _client(st, token="guess").command([("CAD", 3)]) == [{"ERR": "AUTH", "IDN": "CM1"}]
            # Out of attempts: even the right token is not compared now, the address is refused at once.
            assert await _client(st, token="s3cret").command([("CAD", 3)]) == [{"ERR": "AUTH", "IDN": "CM1"}]
        refused = [e for e in logs if e.get("why") == "too many AUTH attempts"]
        assert refused and st.slave_store.config.spectrometer.coadd != 3
        await st.server.stop()

    run(body())


def test_auth_limiter_refills_and_stays_bounded():
    limiter = AuthLimiter(burst=2, refill_s=1000.0)
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")  # per address
    for i in range(10_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 4096


def test_a_full_address_table_is_swept_once_per_quarter_not_on_every_new_address(monkeypatch):
    """Regression: a full table was scanned on every new address (10 000 addresses: 25 million bucket reads)."""
    limiter = AuthLimiter(burst=2, refill_s=1000.0)
    reads = 0
    left = limiter._left

    def counted(host, now):
        nonlocal reads
        reads += 1
        return left(host, now)

    monkeypatch.setattr(limiter, "_left", counted)
    for i in range(10_000):
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 4096
    assert reads < 5 * 10_000, reads


def test_single_capture_echo_names_the_file_written(tmp_path):
    async def body():
        st = await _started(tmp_path)
        st.master_actions.files["CM1"] = "2026-12-01T170501_fltrA_1ag_5000ss_Plume.png"
        async with _client(st) as c:
            replies = await c.command([("TPA", "Plume")])
        assert replies == [{"TPA": "Plume", "FIL": st.master_actions.files["CM1"], "IDN": "CM1"}]
        await st.server.stop()

    run(body())


def test_an_action_key_repeated_in_one_message_acts_once(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            replies = await c.command([("TPA", "Test")] * 200 + [("DKS", 1)] * 200)
        assert st.master_actions.calls == [("capture_single", "CM1", "Test")]
        assert st.slave_actions.calls == [("dark_series", "spectrometer")]
        assert replies == [{"TPA": "Test", "IDN": "CM1"}, {"DKS": "1", "IDN": "SPC"}]
        await st.server.stop()

    run(body())
