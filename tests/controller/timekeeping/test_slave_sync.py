"""The slave's clock decision against the simulated chrony: no project code steps a clock, chrony does; the link's
offset is the cross-check."""

from __future__ import annotations

import asyncio

import pytest

from controller.sim import faulthook
from controller.sim.chrony import FIRST_SYNC_S, SimChrony
from controller.timekeeping import time_agreement
from controller.timekeeping.clock import ManualClock
from tests.controller.supervisor.conftest import run_async, wait_for

HOURS_OFF = 5 * 3600.0


def test_time_agreement_needs_chrony_synchronised_and_the_link_offset_to_agree():
    synced = {"synchronised": True, "offset_s": 0.001}
    assert time_agreement(synced, 0.002, 0.05)[0]
    assert not time_agreement({"synchronised": False, "error": "no chronyd"}, 0.0, 0.05)[0]
    assert "no chronyd" in time_agreement({"synchronised": False, "error": "no chronyd"}, 0.0, 0.05)[1]
    assert not time_agreement(synced, 0.2, 0.05)[0]  # chrony happy, the link sees 200 ms: not good enough
    # chrony synchronised to some other source than the master: its offset disagrees with the link's
    assert not time_agreement({"synchronised": True, "offset_s": 0.09}, 0.02, 0.05)[0]


def test_sim_chrony_steps_on_first_update_then_slews():
    clock = ManualClock(1_700_000_000.0)
    clock.offset_s = -HOURS_OFF  # ManualClock has no offset: give it the simulated error by hand
    link = {"sample": None}  # what the link measured: (master - this clock, when)
    chrony = SimChrony(clock, lambda: link["sample"])

    def measured():
        link["sample"] = (-clock.offset_s, clock.monotonic())

    assert chrony.status()["synchronised"] is False  # no sample of the master yet
    measured()
    assert chrony.status()["synchronised"] is False  # iburst: a few polls before the first update
    clock.advance(6)
    state = chrony.status()
    assert state["synchronised"] and state["selected"] and clock.offset_s == 0.0  # stepped
    assert state["last_offset_s"] == HOURS_OFF and state["offset_s"] == 0.0
    clock.advance(10)
    chrony.status()
    assert clock.offset_s == 0.0  # the same sample is never applied twice
    clock.offset_s = 0.5  # below the step threshold: slewed at 83 ms/s
    measured()
    clock.advance(2)
    state = chrony.status()
    assert clock.offset_s == pytest.approx(0.0) and state["offset_s"] == pytest.approx(0.0)  # 12 s: all slewed
    clock.offset_s = 0.5
    measured()
    clock.advance(2)
    state = chrony.status()
    assert clock.offset_s == pytest.approx(0.5 - 0.083333 * 2)  # at most 2 s x 83 ms/s since the last update
    assert state["offset_s"] == pytest.approx(-0.5 + 0.083333 * 2)  # still to slew


def test_sim_chrony_follows_the_master_even_when_the_master_is_wrong():
    clock = ManualClock(1_700_000_000.0)
    clock.offset_s = 0.0
    chrony = SimChrony(clock, lambda: (-30.0, 1.0), first_sync_s=0.0)  # the master restarted 30 s behind
    clock.advance(2)
    assert chrony.status()["synchronised"] and clock.offset_s == -30.0  # as a real slave's chrony would


def test_sim_chrony_follows_a_master_restarted_behind_its_data_as_chronyd_follows_its_server():
    # issue 11: the master restarted with its clock 300 s behind; the slave's chronyd steps onto the master's
    # time (what NTP measures over the cable), not onto the simulator's true time.
    clock = ManualClock(1_700_000_000.0)
    clock.offset_s = 0.0
    sample: dict = {}
    chrony = SimChrony(clock, lambda: sample.get("offset"))
    assert chrony.status()["synchronised"] is False  # no measurement yet: no update
    sample["offset"] = (-300.0, clock.monotonic())  # master - this clock, measured over the link
    chrony.status()
    clock.advance(FIRST_SYNC_S + 1)
    state = chrony.status()
    assert state["synchronised"] and clock.offset_s == -300.0  # stepped onto the master
    clock.advance(16)
    chrony.status()
    assert clock.offset_s == -300.0  # the same (stale) measurement is never applied twice


def test_a_real_clock_is_never_given_to_the_simulated_chrony():
    class NoOffset:
        def monotonic(self) -> float:
            return 0.0

    with pytest.raises(TypeError):
        SimChrony(NoOffset(), lambda: True)


@run_async
async def test_a_clock_step_corrected_by_chrony_is_still_reported_as_a_clock_fault(station):
    pair = station(factor=20.0)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: slave.station.state == "acquire", 60, "slave acquire")
    before = slave.fault_counts["clock_offset"]
    await faulthook.inject(slave, {"kind": "clock_step", "seconds": 5.0})
    slave.last_sync = -1e18  # resync now rather than after clock.resync_s
    slave.kick.set()
    await wait_for(lambda: slave.fault_counts["clock_offset"] > before, 30, "clock fault noted")
    # chrony (simulated) takes the step back at its next poll, not the supervisor; the slave acquires again
    await wait_for(lambda: abs(slave.clock.offset_s) < 0.05, 30, "clock corrected")
    await wait_for(lambda: slave.station.state == "acquire" and slave.offset_ok, 30, "slave acquire again")
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
