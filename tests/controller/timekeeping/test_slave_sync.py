"""The slave's clock decision against the simulated chrony: no project code steps a clock, chrony does; the link's
offset is the cross-check."""

from __future__ import annotations

import asyncio

import pytest

from controller.sim.chrony import FIRST_SYNC_S, SimChrony
from controller.supervisor.slave import SYNC_RETRY_S
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
    reachable = {"yes": False}
    chrony = SimChrony(clock, lambda: reachable["yes"])
    assert chrony.status()["synchronised"] is False
    clock.advance(30)
    assert chrony.status()["selected"] is None  # master unreachable: nothing changes
    reachable["yes"] = True
    assert chrony.status()["synchronised"] is False  # iburst: a few polls before the first update
    clock.advance(6)
    state = chrony.status()
    assert state["synchronised"] and state["selected"] and clock.offset_s == 0.0  # stepped
    clock.offset_s = 0.5  # below the step threshold: slewed at 83 ms/s, one update per poll
    clock.advance(16)
    chrony.status()
    assert clock.offset_s == pytest.approx(0.0)
    clock.offset_s = 0.5
    clock.advance(2)
    chrony.status()
    assert clock.offset_s == pytest.approx(0.5)  # no update between polls


@run_async
async def test_slave_hours_off_acquires_within_60s_of_the_link_coming_up(station):
    pair = station(factor=20.0)
    master = pair.master()
    slave = pair.slave(offset_s=-HOURS_OFF)  # no RTC: booted five hours behind
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: slave.station.state == "acquire", 60, "slave acquire")
    # Counted in sync attempts, not measured against a wall clock: each failed attempt waits SYNC_RETRY_S clock
    # seconds, the simulated chrony's first update comes FIRST_SYNC_S after the master is reachable.
    assert 1 <= slave.sync_failures and slave.sync_failures * SYNC_RETRY_S <= 60.0 - FIRST_SYNC_S
    assert abs(slave.clock.offset_s) < 0.05  # the simulated chrony stepped the simulated clock
    assert slave.clock_source["synchronised"] and slave.clock_source["selected"]
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)


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
    await slave.inject_fault({"kind": "clock_step", "seconds": 5.0})
    slave.last_sync = -1e18  # resync now rather than after clock.resync_s
    slave.kick.set()
    await wait_for(lambda: slave.fault_counts["clock_offset"] > before, 30, "clock fault noted")
    # chrony (simulated) takes the step back at its next poll, not the supervisor; the slave acquires again
    await wait_for(lambda: abs(slave.clock.offset_s) < 0.05, 30, "clock corrected")
    await wait_for(lambda: slave.station.state == "acquire" and slave.offset_ok, 30, "slave acquire again")
    master.request_stop("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
