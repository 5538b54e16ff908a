"""A device that is missing or hangs in its vendor library never blocks the station ("start-up blocked forever if
one device was missing"): real master + slave supervisors in process, sim devices, a fast ScaledClock."""

from __future__ import annotations

import asyncio
import threading

import pytest

from controller.acquisition import CaptureJournal
from controller.errors import DeviceUnavailable
from controller.hardware import factory
from tests.controller.supervisor.conftest import run_async, wait_for

LIMIT_S = 0.3  # real seconds per device call; opening gets OPEN_FACTOR times this


def _states(runner) -> list[str]:
    return [new for _, _, new, _ in runner.machine.history]


async def _stop(master, tasks) -> None:
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 30)


@pytest.mark.parametrize("fault", ["hangs", "unplugged"])
@run_async
async def test_boot_with_camera_a_missing_reaches_degraded_and_a_joins_later(station, monkeypatch, fault):
    present = threading.Event()  # camera A plugged in / answering
    real_open = factory.open_camera
    hung_opens: list[int] = []

    def open_camera(cfg, band, clock, scene=None):
        if band == "A" and not present.is_set():
            if fault == "unplugged":
                raise DeviceUnavailable("camera A", "no camera on the CSI port")
            hung_opens.append(1)
            present.wait(60)  # the vendor library never answers while the camera is missing
        return real_open(cfg, band, clock, scene=scene)

    monkeypatch.setattr(factory, "open_camera", open_camera)
    pair = station(factor=10.0, camera={"call_timeout_s": LIMIT_S})
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    try:
        # Boot went on without camera A; the others capture on the plan.
        await wait_for(lambda: master.station.state == "degraded" and slave.station.state == "acquire", 30, "up")
        await wait_for(lambda: slave.devices["B"].captures >= 3 and slave.devices["S"].captures >= 3, 20, "B, S")
        a = master.devices["A"]
        assert a.state in ("error", "unplugged", "recovering") and a.captures == 0
        assert "camera A" in master.degraded_reason()
        assert master.fault_counts["device_" + ("unplugged" if fault == "unplugged" else "error")] >= 1
        if fault == "hangs":
            assert hung_opens and "no answer within" in a.last_error
        # The camera comes back: its next retry opens it and the station is whole again.
        present.set()
        await wait_for(lambda: a.state == "continuous" and master.station.state == "acquire", 30, "A back")
        await wait_for(lambda: a.captures >= 2, 20, "A captures")
    finally:
        present.set()
        await _stop(master, tasks)
    seen = _states(a)
    assert seen[0] == ("unplugged" if fault == "unplugged" else "error")
    assert "continuous" in seen and seen[-1] == "closed"


@run_async
async def test_a_camera_stalled_mid_acquisition_holds_no_other_device_and_recovers(station):
    # The capture limit (about LIMIT_S real) is longer than a slot period (0.4 s real at factor 10): with the slot
    # loop waiting for every device, the spectrometer would miss slots while camera B hangs.
    pair = station(factor=10.0, camera={"call_timeout_s": 0.6})
    period = pair.master_cfg.schedule.period_s
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    b, s = slave.devices, None
    try:
        await wait_for(lambda: master.station.state == "acquire" and slave.station.state == "acquire", 30, "acquire")
        b, s = slave.devices["B"], slave.devices["S"]
        await wait_for(lambda: b.captures >= 2 and s.captures >= 2, 20, "captures")
        b.device.stall_timeout_s = 60.0  # the device would hang far longer than the limit
        b_plug = b.device.plug
        b_plug.inject("stall")
        stalled_at = slave.master_time()
        await wait_for(lambda: b.state in ("error", "recovering"), 10, "B in error")
        await wait_for(lambda: b.failures >= 3, 30, "failed probes")  # several slots while B hangs
        s_during, a_during = s.captures, master.devices["A"].captures
        await wait_for(lambda: s.captures >= s_during + 3, 10, "S goes on")
        assert master.devices["A"].captures > a_during
        assert slave.station.state == "degraded"
        b_plug.inject("replug")  # the camera's port (b.device may be between reopen attempts)
        replugged_at = slave.master_time()
        await wait_for(lambda: b.state == "continuous" and slave.station.state == "acquire", 30, "B back")
        n = b.captures
        await wait_for(lambda: b.captures >= n + 2, 20, "B captures again")
    finally:
        await _stop(master, tasks)
    records = CaptureJournal.read(slave.journal.path)
    s_slots = sorted(r["slot_time"] for r in records if r["device"] == "S" and r["slot_time"] is not None)
    during = [t for t in s_slots if stalled_at - period <= t <= replugged_at]
    assert len(during) >= 4
    # The spectrometer captured on every slot while camera B hung.
    assert all(round(y - x, 6) == period for x, y in zip(during, during[1:], strict=False)), during
    assert "error" in _states(b) and slave.journal.count > 0
    assert slave.slot_loop is None or slave.slot_loop.skipped.get("S", 0) == 0
