"""Unplug and replug of a sim camera in a running station (in-process master + slave, fast ScaledClock): the
device machine's recorded states, the station's degraded/acquire, and what `pycam status` shows."""

from __future__ import annotations

import asyncio
import time

from controller.sim import faulthook
from tests.controller.supervisor.conftest import START_EPOCH, Pair, free_port, run_async, station_config, wait_for


def _pair(tmp_path) -> Pair:
    lp, ep = free_port(), free_port()
    return Pair(
        station_config(tmp_path, "master", lp, ep),
        station_config(tmp_path, "slave", lp, ep),
        (START_EPOCH, 20.0, time.time()),
    )


def _states(runner) -> list[tuple[str, str]]:
    return [(new, trigger) for _, _, new, trigger in runner.machine.history]


@run_async
async def test_camera_unplug_replug_in_a_running_station(tmp_path):
    pair = _pair(tmp_path)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    camera = master.devices
    await wait_for(lambda: master.station.state == "acquire" and camera["A"].state == "continuous", 20, "acquire")
    await faulthook.inject(master, {"kind": "unplug", "device": "A"})
    await wait_for(lambda: camera["A"].state == "unplugged" and master.station.state == "degraded", 10, "unplugged")
    status = master.collect_status()
    assert status["machines"]["acquisition.A"] == "unplugged" and not status["devices"]["A"]["usable"]
    await faulthook.inject(master, {"kind": "replug", "device": "A"})
    await wait_for(lambda: camera["A"].state == "continuous" and master.station.state == "acquire", 20, "back")
    n = camera["A"].captures
    await wait_for(lambda: camera["A"].captures > n, 10, "captures again")
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    seen = _states(camera["A"])
    assert seen[:2] == [("idle", "opened"), ("continuous", "start_continuous")]
    lost = seen.index(("unplugged", "unplug"))
    back = seen.index(("continuous", "reopened"), lost)
    assert seen[lost - 1][0] == "continuous" and seen[back - 1] == ("recovering", "recover")
    # Between: only failed probes (recovering -> unplugged) while the camera was still out.
    assert {s for s, _ in seen[lost:back]} <= {"unplugged", "recovering"}
    assert seen[-1] == ("closed", "close")
    assert master.fault_counts["device_unplugged"] == 1  # failed probes are the same fault, not new ones
    # The slave's devices were not touched.
    assert [s for s, _ in _states(slave.devices["B"])][:2] == ["idle", "continuous"]
    assert all(s != "unplugged" for s, _ in _states(slave.devices["B"]))
