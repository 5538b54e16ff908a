"""The link ends together on loopback: handshake, requests, time exchange, file transfer, reconnection,
and the regression tests for bugs 2, 3 and 4 of spec/known-failures.md (link side)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from controller.errors import LinkError, StorageError
from controller.link.endpoint import RequestFailed
from controller.link.framing import encode_frame
from controller.link.master import MasterLink
from controller.link.receiver import FileReceiver
from controller.link.slave import SlaveLink
from controller.link.spool import Spool
from controller.timekeeping.clock import SystemClock

from .conftest import STEADY, EventCounter, LinkPair, link_config, proxied_pair, run, station_names


def spool_files(spool: Spool, names: list[str], size: int = 2000) -> dict[str, bytes]:
    content = {n: os.urandom(size) for n in names}
    for n, data in content.items():
        spool.add(n, data)
    return content


def assert_all_stored_once(pair: LinkPair, content: dict[str, bytes]) -> None:
    stored = pair.stored()
    assert sorted(stored) == sorted(content)
    for name, data in content.items():
        assert stored[name].read_bytes() == data, name


async def events(link) -> list[tuple[str, dict]]:
    seen: list[tuple[str, dict]] = []
    link.add_listener(lambda e, info: seen.append((e, info)))
    return seen


def test_handshake_requests_both_ways_and_states(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        master = await pair.start_master()
        m_events = await events(master)
        assert master.state == "listening" and not master.connected
        slave = await pair.start_slave()
        assert await slave.wait_connected(30) and await master.wait_connected(30)
        assert master.peer["role"] == "slave" and slave.peer["role"] == "master"
        assert master.peer["boot_id"] == slave.boot_id

        async def status(body):
            return {"echo": body, "who": "master"}

        async def stop(body):
            return {"stopping": True}

        async def broken(body):
            raise ValueError("bad value 7")

        master.on_request("status", status)
        master.on_request("broken", broken)
        slave.on_request("stop", stop)
        assert await slave.request("status", {"x": [1, 2]}, 1) == {"echo": {"x": [1, 2]}, "who": "master"}
        assert await master.request("stop", {}, 1) == {"stopping": True}
        with pytest.raises(RequestFailed, match="bad value 7"):
            await slave.request("broken", {}, 1)
        with pytest.raises(RequestFailed, match="no handler"):
            await master.request("schedule", {}, 1)
        # many requests at once, replies matched by id
        results = await asyncio.gather(*(slave.request("status", {"i": i}, 2) for i in range(50)))
        assert [r["echo"]["i"] for r in results] == list(range(50))
        await pair.stop()
        assert master.state == "closed" and slave.state == "closed"
        assert [e for e, _ in m_events] == ["connected", "disconnected"]

    run(scenario())


def test_request_when_down_fails_at_once_and_timeout_is_a_link_error(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        slave = await pair.start_slave()  # no master yet
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(LinkError, match="link down"):
            await slave.request("status", {}, 60)
        assert loop.time() - t0 < 30  # at once, not after its 60 s timeout (far apart even on a busy machine)
        master = await pair.start_master()
        assert await slave.wait_connected(30)
        never, calls = asyncio.Event(), []
        called = asyncio.Event()

        async def slow(body):
            calls.append(body)
            called.set()
            await never.wait()
            return {}

        master.on_request("slow", slow)
        with pytest.raises(LinkError, match="no reply"):
            await slave.request("slow", {}, 0.2)
        # a request in flight when the link drops fails at once instead of waiting for its timeout
        called.clear()
        pending = asyncio.create_task(slave.request("slow", {}, 60))
        await called.wait()
        t0 = loop.time()
        await master.stop()
        with pytest.raises(LinkError):
            await pending
        assert loop.time() - t0 < 30 and len(calls) == 2  # at once, not after its 60 s timeout
        await slave.stop()

    run(scenario())


def test_measure_offset_ntp_style(tmp_path, port):
    async def scenario():
        cfg = link_config(port)
        master = MasterLink(cfg, SystemClock(), FileReceiver(tmp_path / "d"))
        slave = SlaveLink(cfg, SystemClock(offset_s=-3.25), Spool(tmp_path / "s"))  # slave clock 3.25 s behind
        await master.start()
        await slave.start()
        assert await slave.wait_connected(30)
        offset, rtt = await slave.measure_offset(8)
        assert abs(offset - 3.25) < 0.01
        assert 0 <= rtt < 0.05
        await slave.stop()
        await master.stop()

    run(scenario())


def test_spool_drains_oldest_first_and_new_files_join(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port), window=1)
        names = station_names(30)
        content = spool_files(pair.spool, names[:20])
        master = await pair.start_master()
        order: list[str] = []
        master.add_listener(lambda e, info: order.append(info["name"]) if e == "file_stored" else None)
        slave = await pair.start_slave()
        for n in names[20:]:
            data = os.urandom(500)
            await asyncio.get_running_loop().run_in_executor(None, pair.spool.add, n, data)
            content[n] = data
            slave.spool_notify()
        assert await slave.flush(60)
        assert order == names  # window 1: strictly oldest first, new captures after the backlog
        assert len(pair.spool) == 0
        assert_all_stored_once(pair, content)
        await pair.stop()

    run(scenario())


def test_corrupted_transfer_is_detected_and_resent(tmp_path, port):
    async def scenario():
        async with proxied_pair(tmp_path, port, network=STEADY) as (pair, proxy):
            names = station_names(3)
            content = spool_files(pair.spool, names, size=50_000)
            # the hello is ~150 bytes: flip a byte deep inside the first file's payload
            proxy.corrupt_after(20_000, "up")
            slave = await pair.start_slave()
            assert await slave.flush(60)
            assert proxy.count("corrupt") == 1
            assert slave.stats["resent"] == 1 and pair.master.stats["checksum"] == 1
            assert slave.stats["connects"] == 1  # a payload error is answered by a resend, not a reconnect
            assert_all_stored_once(pair, content)

    run(scenario())


def test_file_sent_twice_is_stored_once(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        name = station_names(1)[0]
        data = os.urandom(1000)
        await pair.start_master()
        pair.spool.add(name, data)
        slave = await pair.start_slave()
        assert await slave.flush(60)
        pair.spool.add(name, data)  # e.g. the slave crashed after the master stored it but before the ack
        slave.spool_notify()
        assert await slave.flush(60)
        assert slave.stats["stored"] == 1 and slave.stats["duplicate"] == 1
        assert_all_stored_once(pair, {name: data})
        await pair.stop()

    run(scenario())


def test_conflicting_file_is_kept_aside_on_the_slave_not_lost(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        name = station_names(1)[0]
        await pair.start_master()
        pair.spool.add(name, b"first capture")
        slave = await pair.start_slave()
        assert await slave.flush(60)
        pair.spool.add(name, b"another capture, same name")
        slave.spool_notify()
        assert await slave.flush(60)
        assert pair.master.stats["conflict"] == 1 and slave.stats["rejected"] == 1
        assert pair.stored()[name].read_bytes() == b"first capture"
        assert (pair.spool_dir / "rejected" / name).read_bytes() == b"another capture, same name"
        await pair.stop()

    run(scenario())


def test_storage_failure_is_a_nack_not_a_dead_link(tmp_path, port):
    class FailingReceiver(FileReceiver):
        failures = 3

        def finish(self, incoming, sha256_hex):
            if FailingReceiver.failures > 0:
                FailingReceiver.failures -= 1
                incoming.discard()
                raise StorageError(28, "No space left on device")
            return super().finish(incoming, sha256_hex)

    async def scenario():
        cfg = link_config(port, backoff_max_s=0.05, **STEADY)
        master = MasterLink(cfg, SystemClock(), FailingReceiver(tmp_path / "data"))
        spool = Spool(tmp_path / "spool")
        content = spool_files(spool, station_names(4))
        slave = SlaveLink(cfg, SystemClock(), spool, window=1)
        await master.start()
        await slave.start()
        assert await slave.flush(60)
        assert master.stats["storage"] == 3 and slave.stats["connects"] == 1
        assert sorted(p.name for p in (tmp_path / "data").rglob("*.*")) == sorted(content)
        await slave.stop()
        await master.stop()

    run(scenario())


def test_stalled_peer_is_detected_and_the_link_recovers(tmp_path, port):
    async def scenario():
        async with proxied_pair(tmp_path, port) as (pair, proxy):
            master = pair.master
            slave = await pair.start_slave()
            assert await slave.wait_connected(30)
            seen = await events(slave)
            slave_down, master_down = EventCounter(slave, "disconnected"), EventCounter(master, "disconnected")
            proxy.stall()  # nothing passes, nobody closes anything: only the heartbeat timeout can tell
            await slave_down.wait()
            await master_down.wait()
            proxy.resume()
            assert await slave.wait_connected(30) and await master.wait_connected(30)
            assert [e for e, _ in seen] == ["disconnected", "connected"]
            assert "silent" in seen[0][1]["reason"] or "stopped reading" in seen[0][1]["reason"]

    run(scenario())


def test_new_hello_replaces_a_stale_session(tmp_path, port):
    """The slave rebooted while the master still holds its old (half-open) session."""

    async def scenario():
        cfg = link_config(port, link_timeout_s=30, heartbeat_s=10)  # the old session would linger for 30 s
        pair = LinkPair(tmp_path, cfg)
        master = await pair.start_master()
        old = await pair.start_slave()
        assert await master.wait_connected(30)
        old_boot = master.peer["boot_id"]
        old._runner.cancel()  # vanish without a goodbye, like a power cut (the socket stays open)
        new = SlaveLink(cfg, SystemClock(), Spool(tmp_path / "spool"))
        await new.start()
        assert await new.wait_connected(30)
        assert master.peer["boot_id"] == new.boot_id != old_boot
        assert master.connected and master.state == "connected"
        await new.stop()
        await master.stop()

    run(scenario())


def test_bug2_slave_link_drops_mid_acquisition_and_comes_back(tmp_path, port):
    """Bug 2: after a device vanished, the original master raised IndexError and never accepted it again."""

    async def scenario():
        async with proxied_pair(tmp_path, port) as (pair, proxy):
            master = pair.master
            slave = await pair.start_slave()
            assert await slave.wait_connected(30)
            content: dict[str, bytes] = {}
            names = iter(station_names(200))
            loop = asyncio.get_running_loop()

            async def acquire(n: int) -> None:
                for _ in range(n):
                    name, data = next(names), os.urandom(20_000)
                    await loop.run_in_executor(None, pair.spool.add, name, data)
                    content[name] = data
                    slave.spool_notify()
                    await asyncio.sleep(0.005)

            await acquire(20)
            proxy.refuse(True)
            proxy.cut()  # the cable is pulled mid-acquisition
            await acquire(30)  # acquisition goes on into the spool
            assert not master.connected
            proxy.refuse(False)
            assert await master.wait_connected(30)  # the master accepts the same slave again
            await acquire(20)
            assert await slave.flush(60)
            assert_all_stored_once(pair, content)
            assert master.peer["boot_id"] == slave.boot_id

    run(scenario())


def test_bug3_master_restart_rebinds_link_port_at_once(tmp_path, port):
    """Bug 3: "socket already in use" on restart. SO_REUSEADDR: a new master binds while old sockets linger."""

    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        await pair.start_master()
        slave = await pair.start_slave()
        for restart in range(3):
            assert await slave.wait_connected(30), restart
            await pair.master.stop()  # master closes first: its side of the connection goes to TIME_WAIT
            await pair.start_master()  # at once, same port: must not raise "address in use"
            assert await pair.master.wait_connected(30)
        await pair.stop()

    run(scenario())


def test_bug4_broken_pipe_reconnects_without_restart(tmp_path, port):
    """Bug 4: a broken pipe during manual acquisition needed a restart of everything. Same objects here."""

    async def scenario():
        async with proxied_pair(tmp_path, port, network=STEADY) as (pair, proxy):
            master = pair.master

            async def status(body):
                return {"ok": True}

            master.on_request("status", status)
            content = spool_files(pair.spool, station_names(40), size=100_000)
            slave = await pair.start_slave()
            # the connection is reset while a file is half-way through: the writer gets a broken pipe/reset
            proxy.cut_after(1_000_000, "up")
            assert await slave.flush(60)
            assert proxy.count("cut_at") == 1
            assert slave.stats["connects"] == 2 and master.state == "connected"
            assert await slave.request("status", {}, 10) == {"ok": True}
            assert_all_stored_once(pair, content)

    run(scenario())


def test_reconnect_after_slave_restart_resumes_the_spool(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port), window=2)
        await pair.start_master()
        content = spool_files(pair.spool, station_names(60), size=30_000)
        slave = await pair.start_slave()
        await EventCounter(slave, "file_acked").wait(10)
        await slave.stop()
        left = len(Spool(pair.spool_dir))
        assert 0 < left < 60
        slave = await pair.start_slave()
        assert await slave.flush(60)
        assert_all_stored_once(pair, content)
        digest = {n: hashlib.sha256(d).hexdigest() for n, d in content.items()}
        assert len(digest) == 60
        await pair.stop()

    run(scenario())


def test_master_refuses_a_second_master_and_garbage(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port, **STEADY))
        master = await pair.start_master()
        slave = await pair.start_slave()
        assert await slave.wait_connected(30)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n" * 10)
        await writer.drain()
        assert await reader.read() == b""  # dropped by the master
        writer.close()
        assert master.connected and master.peer["boot_id"] == slave.boot_id
        # a well-formed hello from something that is not a slave is refused as well
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_frame({"type": "hello", "role": "master", "version": 1, "boot_id": "x"}))
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        assert master.connected and master.peer["boot_id"] == slave.boot_id
        assert slave.stats["connects"] == 1
        await pair.stop()

    run(scenario())


def test_a_spool_file_gone_under_the_index_is_forgotten_and_the_flush_ends(tmp_path, port):
    """Regression (seen on a busy machine): a stopped slave's late thread removed an acked file after a new Spool had
    indexed it; the sender picked the vanished file again and again (a busy loop) and flush never returned."""

    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        await pair.start_master()
        content = spool_files(pair.spool, station_names(4), size=1000)
        spool = Spool(pair.spool_dir)  # a new Spool object indexes the four files
        gone = next(iter(content))
        spool.path(gone).unlink()  # as the old object's thread did, behind the new index's back
        slave = SlaveLink(link_config(port), SystemClock(), spool)
        await slave.start()
        assert await slave.flush(30)
        assert len(spool) == 0 and slave.stats["sent"] == 3
        assert {p.name for p in (tmp_path / "data").rglob("*.*")} == set(content) - {gone}
        await slave.stop()
        await pair.stop()

    run(scenario())
