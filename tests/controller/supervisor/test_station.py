"""In-process master + slave supervisors on loopback (fast ScaledClock): the station day and its faults."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from controller.sim.chrony import SimChrony
from controller.storage.names import ImageName, parse_name
from tests.controller.supervisor.conftest import run_async, wait_for


def _caps(sup, key: str) -> int:
    runner = sup.devices.get(key)
    return runner.captures if runner is not None else 0


def _images(root) -> list[ImageName]:
    return [parse_name(p.name) for p in root.rglob("*.png")]


def _paired_slots(root) -> list[str]:
    """Slot times with both an A and a B Plume image on the master."""
    bands = {(i.time_key, i.band) for i in _images(root) if i.kind == "Plume"}
    return sorted({t for t, _ in bands if (t, "A") in bands and (t, "B") in bands})


async def _stop(master, slave, tasks, timeout_s: float = 30.0) -> None:
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), timeout_s)


@run_async
async def test_station_day_reaches_acquire_with_paired_files(station):
    pair = station(factor=20.0)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: master.station.state == "acquire" and slave.station.state == "acquire", 20, "acquire")
    # Four slots paired on the master (on a busy machine a slot may be missed by one side: wait for the fact).
    root = pair.master_cfg.storage.data_root
    await wait_for(lambda: len(_paired_slots(root)) >= 4, 60, "four pairs on the master")
    await _stop(master, slave, tasks)
    assert master.station.state == "off" and slave.station.state == "off"
    visited = [new for _, _, new, _ in master.station.history]
    assert visited[:3] == ["sync", "sleep", "sync"] or visited[:2] == ["sync", "acquire"]
    assert "acquire" in visited and visited[-2:] == ["shutdown", "off"]
    images = _images(pair.master_cfg.storage.data_root)
    by_time = Counter(i.time_key for i in images if i.kind == "Plume")
    bands = {(i.time_key, i.band) for i in images}
    paired = [t for t, n in by_time.items() if (t, "A") in bands and (t, "B") in bands]
    assert len(paired) >= 4, by_time
    # The slave flushed everything before it stopped: its spool is empty and every B image is on the master.
    assert len(slave.spool) == 0
    assert _caps(slave, "B") == sum(1 for i in images if i.band == "B")
    # The store's index, kept current by camera A's and the link's writes, is what is on disk; the disk policy asks it.
    on_disk = {p.name for p in root.glob("????-??-??/*") if not p.name.startswith(".")}
    assert {str(r) for r in master.store.index.records()} == on_disk and master.disk.policy.index is master.store.index


@run_async
async def test_slave_never_wakes_master_acquires_degraded_with_camera_a(station):
    pair = station(factor=20.0, power={"hello_timeout_s": 1.0, "wake_retries": 1})  # no slave: every wait times out
    master = pair.master()
    task = asyncio.create_task(master.run())
    await wait_for(lambda: master.station.state == "degraded", 20, "degraded")
    await wait_for(lambda: _caps(master, "A") >= 3, 20, "A captures")
    await wait_for(lambda: master.handoff.state == "failed", 20, "power failed")
    assert any(f["kind"] == "slave_never_woke" for f in master.faults)
    master.request_stop("test over")
    await asyncio.wait_for(task, 60)
    assert all(i.band == "A" for i in _images(pair.master_cfg.storage.data_root))


@run_async
async def test_clock_offset_too_large_blocks_acquisition_until_fixed(station):
    pair = station(factor=20.0)
    master = pair.master()
    slave = pair.slave(offset_s=3.0)
    ntp_reachable = {"yes": False}  # the simulated chronyd cannot reach the master's (NTP blocked)
    slave.time_source = SimChrony(slave.clock, lambda: slave.link_sample() if ntp_reachable["yes"] else None)
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: _caps(master, "A") >= 3, 20, "master captures")
    assert slave.station.state == "sync" and _caps(slave, "B") == 0
    assert not slave.offset_ok and abs(slave.offset_s + 3.0) < 0.05
    ntp_reachable["yes"] = True  # chrony reaches the master and steps the clock on its first update
    await wait_for(lambda: slave.station.state == "acquire", 20, "slave acquire after the fix")
    await wait_for(lambda: _caps(slave, "B") >= 2, 20, "B captures")
    await _stop(master, slave, tasks)


@run_async
async def test_link_lost_during_acquire_degraded_and_back_nothing_lost(station):
    from controller.sim.faults import FaultyProxy

    pair = station(factor=20.0)
    proxy = FaultyProxy("127.0.0.1", pair.master_cfg.network.link_port)
    port = await proxy.start()
    net = dataclasses.replace(pair.slave_cfg.network, link_port=port)
    pair.slave_cfg = dataclasses.replace(pair.slave_cfg, network=net)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: master.station.state == "acquire" and _caps(slave, "B") >= 2, 20, "acquire")
    proxy.refuse(True)  # the cable is pulled: the session drops and no new one can start
    proxy.cut()
    await wait_for(lambda: master.station.state == "degraded" and slave.station.state == "degraded", 10, "degraded")
    before = _caps(slave, "B")
    await wait_for(lambda: _caps(slave, "B") >= before + 3, 20, "spooling while the link is down")
    assert len(slave.spool) >= 3
    proxy.refuse(False)
    await wait_for(lambda: master.station.state == "acquire" and slave.station.state == "acquire", 20, "recovered")
    await _stop(master, slave, tasks)
    await proxy.stop()
    on_master = {p.name for p in pair.master_cfg.storage.data_root.rglob("*.*")}
    captured = {r["name"] for r in slave.journal.read(slave.journal.path)}
    assert captured and captured <= on_master


@run_async
async def test_storage_full_pauses_then_resumes(station):
    pair = station(factor=20.0)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: master.station.state == "acquire", 20, "acquire")
    free = {"mb": 10.0}
    policy = master.disk.policy
    policy._free_bytes = lambda: int(free["mb"] * 1024 * 1024)
    policy.cfg = type(policy.cfg)(min_free_mb=100, resume_free_mb=200)
    master.check_disk()
    await wait_for(lambda: master.station.state == "paused", 10, "paused")
    # A capture already in flight when the pause came may still land: wait for it (the fact, not a time).
    await wait_for(lambda: not master.slot_loop.busy(), 30, "in-flight capture landed")
    n = _caps(master, "A")
    await asyncio.sleep(0.6)  # > 2 slots at this time scale
    assert _caps(master, "A") == n
    free["mb"] = 150.0  # above min, below resume: still paused (hysteresis)
    master.check_disk()
    await asyncio.sleep(0.05)
    assert master.station.state == "paused"
    free["mb"] = 500.0
    master.check_disk()
    await wait_for(lambda: master.station.state == "acquire", 10, "resumed")
    await wait_for(lambda: _caps(master, "A") > n, 10, "captures again")
    await _stop(master, slave, tasks)


@run_async
async def test_disk_full_pauses_by_itself_slave_files_wait_in_its_spool_and_everything_arrives(station):
    """No manual checks: the master's own disk checks pause it, refuse the slave's files (nack: they stay in the
    slave's spool), notice the space coming back while paused, and resume; status.json shows the fault."""
    import json

    pair = station(factor=20.0)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: master.station.state == "acquire" and _caps(slave, "B") >= 2, 20, "acquire")
    free = {"mb": 10.0}
    master.disk.policy._free_bytes = lambda: int(free["mb"] * 1024 * 1024)
    master.disk.policy.cfg = type(master.disk.policy.cfg)(min_free_mb=100, resume_free_mb=200)
    await wait_for(lambda: master.station.state == "paused", 10, "paused")
    before = _caps(slave, "B")
    await wait_for(lambda: _caps(slave, "B") >= before + 2 and len(slave.spool) >= 2, 20, "slave spooling")
    status = json.loads((pair.master_cfg.storage.state_dir / "status.json").read_text())
    assert status["state"] == "paused" and status["storage"]["paused"]
    assert status["fault_counts"].get("disk_full") == 1 and any(f["kind"] == "disk_full" for f in status["faults"])
    free["mb"] = 500.0
    await wait_for(lambda: master.station.state == "acquire", 10, "resumed by itself")
    await wait_for(lambda: len(slave.spool) == 0, 20, "spool drained")
    await _stop(master, slave, tasks)
    on_master = {p.name for p in pair.master_cfg.storage.data_root.rglob("*.*")}
    captured = {r["name"] for r in slave.journal.read(slave.journal.path)}
    assert captured and captured <= on_master


@run_async
async def test_restart_after_a_crash_is_a_fault_and_earlier_faults_are_kept(station):
    import json

    pair = station()
    state_dir = pair.master_cfg.storage.state_dir
    state_dir.mkdir(parents=True)
    earlier = {"kind": "link_lost", "time": 1.0, "real_time": 1.0}
    dead = {"pid": 2**22 + 7, "state": "acquire", "faults": [earlier], "fault_counts": {"link_lost": 3}}
    (state_dir / "status.json").write_text(json.dumps(dead))
    master = pair.master()
    master._carry_faults()
    status = master.collect_status()
    assert status["faults"][0] == earlier
    assert (
        status["last_fault"]["kind"] == "restarted_after_crash" and status["last_fault"]["previous_state"] == "acquire"
    )
    assert status["fault_counts"] == {"link_lost": 3, "restarted_after_crash": 1}


@run_async
async def test_slave_spool_disk_full_pauses_the_slave_keeps_its_files_and_resumes(station):
    """The slave never deletes unsent files: a full spool disk pauses its captures, and it resumes by itself."""
    pair = station(factor=20.0)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: slave.station.state == "acquire" and _caps(slave, "B") >= 2, 20, "acquire")
    free = {"mb": 10.0}
    slave.disk.policy._free_bytes = lambda: int(free["mb"] * 1024 * 1024)
    slave.disk.policy.cfg = type(slave.disk.policy.cfg)(min_free_mb=100, resume_free_mb=200)
    await wait_for(lambda: slave.station.state == "paused", 10, "slave paused by its own disk check")
    # A capture already in flight when the pause came may still land: wait for it (the fact, not a time).
    await wait_for(lambda: not slave.slot_loop.busy(), 30, "in-flight capture landed")
    n = _caps(slave, "B")
    await asyncio.sleep(0.6)  # > 2 slots at this time scale
    assert _caps(slave, "B") == n
    assert master.station.state == "acquire"  # the master goes on with camera A
    free["mb"] = 500.0
    await wait_for(lambda: slave.station.state == "acquire", 10, "slave resumed by itself")
    await wait_for(lambda: _caps(slave, "B") > n, 10, "captures again")
    await _stop(master, slave, tasks)


@run_async
async def test_flat_copy_for_the_original_ftp_client_holds_every_stored_file(station, tmp_path):
    """spec/file-formats.md: the original's FTP client reads a flat folder; A (local) and B (from the slave) both."""
    flat = tmp_path / "flat"
    pair = station(factor=20.0, storage={"flat_copy_dir": str(flat)})
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: _caps(master, "A") >= 2 and _caps(slave, "B") >= 2, 20, "captures on both Pis")
    await _stop(master, slave, tasks)
    stored = {p.name: p for p in pair.master_cfg.storage.data_root.rglob("*.*")}
    assert {parse_name(n).band for n in stored if n.endswith(".png")} == {"A", "B"}
    assert {p.name for p in flat.iterdir()} == set(stored)
    assert all((flat / n).samefile(p) for n, p in stored.items())  # hard links: no second copy on the disk


@run_async
async def test_a_persistent_boot_failure_retries_once_per_fault_retry_not_in_a_tight_loop(station):
    """A failed boot notes a fault, which kicks the main loop: the retry wait returned at once and a storage check
    that keeps failing was retried back-to-back, hundreds of times a second."""
    pair = station(factor=20.0, storage={"allow_fallback": False, "mount_point": "/nonexistent-ssd"})
    master = pair.master(fault_retry_s=10.0)
    task = asyncio.create_task(master.run())
    try:
        await wait_for(lambda: len(_boot_failures(master)) >= 3, 120, "three failed boots")
        times = _boot_failures(master)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(g >= 10.0 for g in gaps), gaps  # clock seconds between attempts: the whole retry delay each
    finally:
        master.request_stop("test over")
        await asyncio.wait_for(task, 120)


def _boot_failures(master) -> list[float]:
    """Clock times the station entered fault from a failed boot (one per attempt)."""
    faults = master.collect_status()["faults"]
    return [f["time"] for f in faults if f["kind"] == "boot_failed" and f.get("new") == "fault"]
