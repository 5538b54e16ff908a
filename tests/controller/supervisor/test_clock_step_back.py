"""A live step back of the master clock (issue 11, finding 2) through the real supervisors: acquisition goes on
(no pause for the length of the step), no name is captured twice on either Pi, and A and B stay paired."""

from __future__ import annotations

from controller.acquisition import CaptureJournal
from controller.storage.names import parse_name
from tests.controller.supervisor.conftest import run_async, wait_for
from tests.controller.supervisor.test_ext_actions import _caps, _started, _stop

STEP_S = 120.0  # sim seconds: 30 slots of 4 s


@run_async
async def test_live_step_back_of_the_master_clock_neither_overwrites_nor_stops_acquisition(station):
    pair = station(factor=20.0)
    master, slave, tasks = await _started(pair)
    try:
        a_before, b_before = _caps(master, "A"), _caps(slave, "B")
        mono = master.clock.monotonic()
        master.clock.offset_s -= STEP_S  # NTP steps the master clock back two minutes
        await wait_for(lambda: _caps(master, "A") >= a_before + 6 and _caps(slave, "B") >= b_before + 6, 30, "more")
        elapsed = master.clock.monotonic() - mono
    finally:
        await _stop(master, tasks)
    assert elapsed < STEP_S  # captures went on long before the stepped clock was back where it was

    def plume(sup, device):
        recs = CaptureJournal.read(sup.journal.path)
        return [r["name"] for r in recs if r["device"] == device and "Plume" in r["name"]]

    a_names, b_names = plume(master, "A"), plume(slave, "B")
    for names in (a_names, b_names):
        assert len(names) == len(set(names))  # no name captured twice
        times = [parse_name(n).time for n in names]
        assert times == sorted(times)  # slot names only increase
    a_times = {parse_name(n).time for n in a_names[-4:]}
    b_times = {parse_name(n).time for n in b_names}
    assert a_times & b_times  # after the step A and B still share slot times: still paired
