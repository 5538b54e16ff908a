"""External-port actions end to end through the real master and slave supervisors (in process, loopback)."""

from __future__ import annotations

import asyncio

from controller.acquisition import dark_steps
from controller.storage.names import ImageName, parse_name
from tests.controller.supervisor.conftest import run_async, wait_for


def _files(root, band: str | None = None, kind: str | None = None) -> list[ImageName]:
    names = [parse_name(p.name) for p in root.rglob("*.png")]
    return [n for n in names if (band is None or n.band == band) and (kind is None or n.kind == kind)]


def _caps(sup, key: str) -> int:
    return sup.devices[key].captures


async def _started(pair):
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: master.station.state == "acquire" and slave.station.state == "acquire", 20, "acquire")
    await wait_for(lambda: _caps(master, "A") >= 2 and _caps(slave, "B") >= 2, 20, "captures")
    return master, slave, tasks


async def _stop(master, tasks) -> None:
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 30)


@run_async
async def test_single_captures_land_in_the_next_free_slot_with_their_type(station):
    from controller.extport.client import ExtClient

    pair = station(factor=20.0)
    period = pair.master_cfg.schedule.period_s
    master, slave, tasks = await _started(pair)
    root = pair.master_cfg.storage.data_root
    async with ExtClient(port=master.ext_port, timeout_s=10) as client:
        asked_at = master.master_time()
        replies = await client.command([("TPA", "Test"), ("TPB", "Clear")])
        assert not any("ERR" in r for r in replies), replies
        await wait_for(lambda: _files(root, "A", "Test") and _files(root, "B", "Clear"), 20, "single captures")
    (test_a,) = _files(root, "A", "Test")
    (clear_b,) = _files(root, "B", "Clear")
    plume_a = {n.time for n in _files(root, "A", "Plume")}
    for single in (test_a, clear_b):
        t = single.time.timestamp()
        assert t >= int(asked_at)  # taken after the request (names have whole seconds)
        # Right after the next slot's continuous captures: that slot is at most one period before it, and it is
        # the first slot after the request.
        slot = max(p for p in plume_a if p.timestamp() <= t + 1)
        assert slot.timestamp() >= asked_at - 1 and t - slot.timestamp() < period, (single, slot)
    # The continuous captures went on: no slot was given up for the singles.
    times = sorted(p.timestamp() for p in plume_a)
    assert all(round(b - a) == period for a, b in zip(times, times[1:], strict=False)), times
    await _stop(master, tasks)


@run_async
async def test_dark_series_stop_start_restart_and_log_through_the_port(station):
    from controller.extport.client import ExtClient

    pair = station(factor=20.0)
    period = pair.master_cfg.schedule.period_s
    master, slave, tasks = await _started(pair)
    root = pair.master_cfg.storage.data_root
    async with ExtClient(port=master.ext_port, timeout_s=10) as client:
        # LOG 1 reports the exposure in force on each camera.
        settings = await client.settings()
        by_idn = {r.get("IDN"): r for r in settings}
        assert by_idn["CM1"]["SSA"] == str(pair.master_cfg.camera.shutter_us), settings
        assert by_idn["CM2"]["SSB"] == str(pair.slave_cfg.camera.shutter_us), settings

        # DKC: the cameras' dark series runs on both Pis; each camera's DFC is broadcast when its series is done
        # (camera B's relayed by the master, the slave has no external port).
        replies = await client.command([("DKC", 1)])
        assert not any("ERR" in r for r in replies), replies
        done = [await client.receive(30), await client.receive(30)]
        assert sorted(d["IDN"] for d in done) == ["CM1", "CM2"] and all(d["DFC"] == "1" for d in done), done
        cam = pair.master_cfg.camera
        steps = len(set(dark_steps(tuple(cam.shutter_list_us))) | {cam.shutter_us})
        assert len(_files(root, "A", "Dark")) == steps  # all of A's darks are stored when its DFC comes
        await wait_for(lambda: len(_files(root, "B", "Dark")) == steps, 20, "B darks on the master")

        # SPC stops continuous capture on both cameras, STC starts it again.
        assert not any("ERR" in r for r in await client.command([("SPC", 1)]))
        # a capture already running may finish: wait for it (the fact, not a time)
        await wait_for(lambda: not master.devices["A"].busy and not slave.devices["B"].busy, 20, "captures landed")
        a, b = _caps(master, "A"), _caps(slave, "B")
        await asyncio.sleep(3 * period / 20.0)  # three slots at this time scale
        assert (_caps(master, "A"), _caps(slave, "B")) == (a, b)
        assert not master.devices["A"].continuous and not slave.devices["B"].continuous
        assert not any("ERR" in r for r in await client.command([("STC", 1)]))
        await wait_for(lambda: _caps(master, "A") >= a + 2 and _caps(slave, "B") >= b + 2, 20, "captures again")

        # RSC: the camera backends are closed and opened again; capture goes on.
        before = master.devices["A"].device
        assert not any("ERR" in r for r in await client.command([("RSC", 1)]))
        await wait_for(lambda: master.devices["A"].device is not before, 10, "camera A reopened")
        a = _caps(master, "A")
        await wait_for(lambda: _caps(master, "A") >= a + 2, 20, "captures after the restart")
    assert master.station.state == "acquire"
    await _stop(master, tasks)
