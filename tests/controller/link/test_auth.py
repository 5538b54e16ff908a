"""Issue 11 finding 3: the link had no authentication. A forged hello took the slave's session and stored a fake
B image; a fake master that acknowledged everything emptied the spool; two slaves made the link flap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat

import pytest

from controller.errors import ConfigError
from controller.link.auth import KEY_BYTES, create_key, load_key, proof, verify
from controller.link.master import MasterLink
from controller.link.receiver import FileReceiver
from controller.link.slave import SlaveLink
from controller.link.spool import Spool
from controller.sim.faults import faulty_proxy
from controller.sim.forged import FakeMaster, forged_slave
from controller.timekeeping.clock import SystemClock

from .conftest import STEADY, EventCounter, LinkPair, link_config, run, station_names


def test_key_is_32_random_bytes_mode_600_and_never_replaced(tmp_path):
    path = create_key(tmp_path / "state" / "link.key")
    key = load_key(path)
    assert len(key) == KEY_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert create_key(path) == path and load_key(path) == key  # the other Pi holds a copy: never replaced
    assert load_key(create_key(tmp_path / "other.key")) != key


def test_missing_key_file_is_one_line_naming_the_file(tmp_path, port):
    missing = tmp_path / "nowhere" / "link.key"
    with pytest.raises(ConfigError) as info:
        MasterLink(link_config(port, link_key_file=str(missing)), SystemClock(), FileReceiver(tmp_path / "d"))
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_key_file_readable_by_others_or_of_wrong_size_is_refused(tmp_path):
    loose = create_key(tmp_path / "loose.key")
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match="must be 600"):
        load_key(loose)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 8)
    os.chmod(short, 0o600)
    with pytest.raises(ConfigError, match="8 bytes"):
        load_key(short)
    longer = tmp_path / "longer.key"  # what `install.sh --link-key FILE` may bring
    longer.write_bytes(os.urandom(64))
    os.chmod(longer, 0o600)
    assert len(load_key(longer)) == 64


def test_one_ends_proof_is_never_valid_as_the_others():
    key = os.urandom(32)
    ns, nm = "a" * 32, "b" * 32
    assert verify(key, "master", ns, nm, proof(key, "master", ns, nm))
    assert not verify(key, "slave", ns, nm, proof(key, "master", ns, nm))
    assert not verify(key, "master", nm, ns, proof(key, "master", ns, nm))
    assert not verify(os.urandom(32), "master", ns, nm, proof(key, "master", ns, nm))


def test_forged_hello_neither_takes_the_session_nor_stores_a_file(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port, **STEADY))
        master = await pair.start_master()
        slave = await pair.start_slave()
        assert await master.wait_connected(30)
        real_boot = master.peer["boot_id"]
        down = EventCounter(master, "disconnected")
        fake_b = station_names(1)[0]
        for _ in range(5):
            result = await forged_slave("127.0.0.1", port, fake_b)
            assert result["closed"] and not result["acked"] and "welcome" not in result["received"]
        assert master.refused["auth"] == 5
        assert master.connected and master.peer["boot_id"] == real_boot and down.infos == []
        assert slave.stats["connects"] == 1
        assert not (tmp_path / "data").exists() or not any(p.is_file() for p in (tmp_path / "data").rglob("*"))
        await pair.stop()

    run(scenario())


def test_slave_with_another_key_is_refused_and_stores_nothing(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        master = await pair.start_master()
        other_key = load_key(create_key(tmp_path / "other.key"))
        spool = Spool(tmp_path / "impostor-spool")
        spool.add(station_names(1)[0], b"fake B image")
        impostor = SlaveLink(link_config(port), SystemClock(), spool, key=other_key)
        await impostor.start()
        # It cannot tell our proof from a fake master's: it never trusts us, we never trust it.
        while impostor.stats["unproven_master"] < 3:
            await asyncio.sleep(0.02)
        assert not master.connected and master.stats["stored"] == 0 and len(spool) == 1
        await impostor.stop()
        await master.stop()

    run(scenario())


def test_fake_master_acking_everything_deletes_nothing_from_the_spool(tmp_path, port):
    async def scenario():
        names = station_names(30)
        spool = Spool(tmp_path / "spool")
        for n in names:
            spool.add(n, os.urandom(500))
        before = sorted(p.name for p in (tmp_path / "spool").iterdir())
        fake = FakeMaster(names_to_ack=names)
        fake_port = await fake.start()
        slave = SlaveLink(link_config(fake_port), SystemClock(), spool)
        await slave.start()
        while fake.connections < 3:
            await asyncio.sleep(0.02)
        await slave.stop()
        await fake.stop()
        assert fake.acks_sent >= 30 and fake.files_received == 0  # it said everything; nothing was believed
        assert slave.stats["unproven_master"] >= 3 and slave.stats["connects"] == 0 and slave.stats["sent"] == 0
        assert len(spool) == 30 and sorted(p.name for p in (tmp_path / "spool").iterdir()) == before

    run(scenario())


def test_fake_master_behind_the_slaves_cable_deletes_nothing_and_the_real_one_gets_everything(tmp_path, port):
    async def scenario():
        cfg = link_config(port)
        pair = LinkPair(tmp_path, cfg)
        master = await pair.start_master()
        names = station_names(20)
        content = {n: os.urandom(700) for n in names}
        for n, d in content.items():
            pair.spool.add(n, d)
        fake = FakeMaster(names_to_ack=names)
        await fake.start()
        async with faulty_proxy("127.0.0.1", port) as proxy:
            proxy.divert(("127.0.0.1", fake.port))
            slave = SlaveLink(link_config(proxy.port), SystemClock(), pair.spool)
            await slave.start()
            while fake.connections < 2:
                await asyncio.sleep(0.02)
            assert len(pair.spool) == 20 and slave.stats["sent"] == 0
            proxy.divert(None)
            assert await slave.flush(60)
            await slave.stop()
        await fake.stop()
        assert {p.name: p.read_bytes() for p in (tmp_path / "data").rglob("*.*")} == content
        assert master.stats["stored"] == 20
        await master.stop()

    run(scenario())


def test_second_slave_is_refused_without_disturbing_the_first(tmp_path, port):
    async def scenario():
        cfg = link_config(port, **STEADY)
        pair = LinkPair(tmp_path, cfg)
        master = await pair.start_master()
        first = await pair.start_slave()
        assert await master.wait_connected(30)
        down_master, down_first = EventCounter(master, "disconnected"), EventCounter(first, "disconnected")
        second = SlaveLink(cfg, SystemClock(), Spool(tmp_path / "second"))  # even with the key
        await second.start()
        while second.stats["refused"] < 5:
            await asyncio.sleep(0.02)
        assert master.refused["second_slave"] >= 5
        assert master.peer["boot_id"] == first.boot_id and first.stats["connects"] == 1
        assert down_master.infos == [] and down_first.infos == [] and not second.connected
        # A file from the first still goes through while the second keeps knocking.
        pair.spool.add(station_names(1)[0], b"after the knocking")
        first.spool_notify()
        assert await first.flush(60)
        await second.stop()
        await pair.stop()

    run(scenario())


def test_man_in_the_middle_cannot_inject_an_ack_after_a_relayed_handshake(tmp_path, port):
    """A relay on the cable passes the real handshake, then swallows a file and injects an ack for it: without
    per-frame macs the slave would delete a file the master never got."""
    from controller.link.framing import FrameLimits, encode_frame, read_message

    limits = FrameLimits()

    async def scenario():
        cfg = link_config(port)
        pair = LinkPair(tmp_path, cfg)
        master = await pair.start_master()
        injected = asyncio.Event()

        async def relay(s_reader, s_writer):
            m_reader, m_writer = await asyncio.open_connection("127.0.0.1", port)

            async def up():
                while (msg := await read_message(s_reader, limits)) is not None:
                    if msg.type == "file":  # swallowed, and "acked" in the master's name
                        s_writer.write(encode_frame({"type": "ack", "name": msg.header["name"], "status": "stored"}))
                        injected.set()
                        continue
                    m_writer.write(encode_frame(msg.header, msg.payload))

            async def down():
                while (msg := await read_message(m_reader, limits)) is not None:
                    s_writer.write(encode_frame(msg.header, msg.payload))

            with contextlib.suppress(Exception):
                await asyncio.gather(up(), down())
            s_writer.transport.abort()
            m_writer.transport.abort()

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        relay_port = server.sockets[0].getsockname()[1]
        name = station_names(1)[0]
        pair.spool.add(name, b"must not be lost")
        slave = SlaveLink(link_config(relay_port), SystemClock(), pair.spool)
        down = EventCounter(slave, "disconnected")
        await slave.start()
        await injected.wait()
        await down.wait()
        assert "mac" in down.infos[0]["reason"]
        assert name in pair.spool and slave.stats["stored"] == 0 and master.stats["stored"] == 0
        await slave.stop()
        server.close()
        await master.stop()

    run(scenario())
