"""No capture is ever named like another (issue 11, finding 1 and 2): singles in a slot's second, singles and darks
in one second, a master restarted with its clock behind its data, a live step back of the master clock."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from controller.acquisition import DeviceRunner, SlotLoop, SlotPlan, TimelineClock
from controller.acquisition.naming import MARK_NAME, CaptureSeconds, NoFreeSecond, capture_seconds
from controller.hardware import factory
from controller.storage.names import ImageName
from controller.timekeeping.clock import ManualClock
from tests.controller.test_acquisition import CFG

START = 1_700_000_000.0  # a whole minute
PERIOD = 4.0


class Store:
    """A sink that refuses a name it already holds (the master store's rule) and wakes waiters on every file."""

    def __init__(self):
        self.names: list[str] = []
        self.changed = asyncio.Event()

    async def __call__(self, record, data: bytes) -> None:
        name = str(record)  # the runner hands the parsed name on as a record
        assert name not in self.names, f"{name} would be overwritten"
        self.names.append(name)
        self.changed.set()


def _runner(clock, names: CaptureSeconds | None = None, key: str = "A") -> tuple[DeviceRunner, Store]:
    sink = Store()
    r = DeviceRunner(key, lambda: factory.open_camera(CFG, key, clock), lambda: CFG, clock, sink, names=names)
    return r, sink


def _seconds(names: list[str]) -> list[float]:
    return [ImageName.parse(n).time.timestamp() for n in names]


async def _pump(clock: ManualClock, until, loop: SlotLoop, step: float = 0.25, limit_s: float = 3600.0) -> None:
    """Advance the manual clock in steps until `until()` holds; after each step the slot loop's captures (executor
    threads) land before the clock moves on, however busy the machine is."""
    moved = 0.0
    while not until():
        assert moved < limit_s, "condition never reached"
        clock.advance(step)
        moved += step
        for _ in range(3):
            await asyncio.sleep(0)  # the slot loop wakes and starts the slot's captures
        deadline = time.monotonic() + 60.0  # a safety net: a capture of the sim devices takes milliseconds
        while loop.busy():
            assert time.monotonic() < deadline, "a capture never landed"
            await asyncio.sleep(0.001)


def test_single_in_the_same_second_as_a_slot_capture_does_not_overwrite_it():
    async def scenario():
        clock = ManualClock(START + 0.3)
        r, sink = _runner(clock)
        assert await r.open()
        slot = await r.capture(START)
        single = await r.capture(None, "Plume")  # same second, same type, same shutter: the old name
        other = await r.capture(None, "Plume")
        await r.close()
        return slot, single, other, sink

    slot, single, other, sink = asyncio.run(scenario())
    assert len({slot, single, other}) == 3 and sink.names == [slot, single, other]
    assert _seconds(sink.names) == [START, START + 1, START + 2]


def test_dark_series_in_one_second_names_every_dark_once():
    async def scenario():
        clock = ManualClock(START)
        r, sink = _runner(clock)
        assert await r.open()
        names = await r.dark_series()
        await r.close()
        return names, sink

    names, sink = asyncio.run(scenario())
    assert len(names) > 1 and len(set(names)) == len(names) == len(sink.names)
    assert len(set(_seconds(names))) == len(names)


def test_master_restarted_with_clock_behind_its_data_does_not_reuse_a_second(tmp_path):
    first = capture_seconds(tmp_path)
    assert first.claim_slot("A", START + 60)
    first.persist()
    assert json.loads((tmp_path / MARK_NAME).read_text())["newest"] == {"A": int(START + 60)}
    again = capture_seconds(tmp_path)  # the restart: only the file remembers
    assert again.floor("A") == int(START + 60)
    assert not again.claim_slot("A", START)  # the clock is 60 s behind: that slot is held
    assert not again.claim_slot("A", START + 60)
    assert again.claim_single("A", START) == int(START + 61)
    assert again.claim_slot("A", START + 64) and again.floor("B") is None


def test_singles_named_ahead_stay_taken_after_a_restart_without_holding_acquisition(tmp_path):
    first = capture_seconds(tmp_path)
    assert first.claim_slot("A", START)
    ahead = [first.claim_single("A", START) for _ in range(5)]  # a burst: named ahead of the clock
    assert ahead == [int(START) + i for i in range(1, 6)]
    first.persist()
    again = capture_seconds(tmp_path)
    assert again.floor("A") == int(START)  # the slot loop holds only up to the newest slot
    assert not any(again.claim_slot("A", t) for t in ahead)  # but the singles' seconds stay taken
    assert again.claim_single("A", START) == int(START) + 6
    assert again.claim_slot("A", START + 8)


def test_without_its_mark_a_restart_takes_the_newest_seconds_from_the_capture_journal(tmp_path):
    from controller.acquisition import CaptureJournal, CaptureRecord

    journal = CaptureJournal(tmp_path / "captures.jsonl")
    journal.append(CaptureRecord("a.png", "A", START + 60, START + 60.1, "0" * 64, 1))
    single = str(ImageName(datetime.fromtimestamp(START + 65, tz=UTC), "A", 1, 5000, "Test"))
    journal.append(CaptureRecord(single, "A", None, START + 63.2, "0" * 64, 1))  # named two seconds later
    names = capture_seconds(tmp_path)  # no capture-mark.json (deleted, or from an older version)
    assert names.floor("A") == int(START + 65)  # the second in its name, not its capture time
    assert not names.claim_slot("A", START + 64) and names.claim_slot("A", START + 68)


def test_single_with_every_second_a_slot_is_refused_with_a_reason():
    names = CaptureSeconds()
    names.reserved = lambda device, second: True
    with pytest.raises(NoFreeSecond, match="no free second"):
        names.claim_single("A", START)


def test_unreadable_capture_mark_is_reported_not_a_crash(tmp_path):
    (tmp_path / MARK_NAME).write_text("[" * 100_000)
    names = capture_seconds(tmp_path)
    assert names.problem and MARK_NAME in names.problem and names.floor("A") is None


async def _loop_scenario(clock, names, body):
    r, sink = _runner(clock, names)
    assert await r.open()
    plan = SlotPlan(PERIOD, START)
    loop = SlotLoop(clock, {"A": r}, plan=lambda: plan)
    task = asyncio.ensure_future(loop.run())
    try:
        await body(loop, r, sink)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.close()
    return sink


def test_singles_during_continuous_capture_do_not_replace_the_slot_image():
    clock = ManualClock(START + 0.5)
    singles: list[str] = []

    async def body(loop, r, sink):
        await _pump(clock, lambda: len(sink.names) >= 2, loop)
        for _ in range(3):  # right after a slot's capture, in its second, as the original did
            singles.append(await loop.request_single("A", "Plume"))
        await _pump(clock, lambda: len(sink.names) >= 8, loop)

    sink = asyncio.run(_loop_scenario(clock, CaptureSeconds(), body))
    assert len(set(sink.names)) == len(sink.names)
    slot_names = [n for n in sink.names if n not in singles]
    assert all((t - START) % PERIOD == 0 for t in _seconds(slot_names))
    assert all((t - START) % PERIOD != 0 for t in _seconds(singles))  # a single never takes a slot's second


def test_master_restarted_with_clock_behind_holds_then_acquires_past_its_data(tmp_path):
    earlier = capture_seconds(tmp_path)
    assert earlier.claim_slot("A", START + 40)
    earlier.persist()
    clock = ManualClock(START)  # restarted 40 s behind its newest slot
    seen: dict = {}

    async def body(loop, r, sink):
        await _pump(clock, lambda: loop.held is not None, loop)
        seen["held"] = dict(loop.held)
        await _pump(clock, lambda: clock.time() >= START + 30, loop)
        seen["during"] = len(sink.names)
        await _pump(clock, lambda: len(sink.names) >= 3, loop)
        seen["after"] = loop.held

    sink = asyncio.run(_loop_scenario(clock, capture_seconds(tmp_path), body))
    assert seen["held"]["detail"] == "clock_behind_data" and seen["held"]["newest_data"] == int(START + 40)
    assert seen["during"] == 0 and seen["after"] is None
    assert min(_seconds(sink.names)) > START + 40


def test_live_clock_step_back_neither_overwrites_nor_stops_acquisition():
    clock = ManualClock(START + 0.5)
    marks: dict = {}

    async def body(loop, r, sink):
        await _pump(clock, lambda: len(sink.names) >= 3, loop)
        clock.step(-60.0)  # NTP steps the master clock back a minute
        marks["mono"] = clock.monotonic()
        n = len(sink.names)
        await _pump(clock, lambda: len(sink.names) >= n + 5, loop)
        marks["elapsed"] = clock.monotonic() - marks["mono"]
        marks["lead"] = loop.timeline_lead_s()

    sink = asyncio.run(_loop_scenario(clock, CaptureSeconds(), body))
    times = _seconds(sink.names)
    assert times == sorted(times) and len(set(times)) == len(times)  # names only increase
    assert all(b - a == PERIOD for a, b in zip(times, times[1:], strict=False))  # no slot skipped or repeated
    assert marks["elapsed"] < 60.0  # five slots long before the stepped clock is back where it was
    assert 0 < marks["lead"] < 60.0  # the timeline rejoins the clock


def test_master_time_served_to_the_slave_does_not_step_back_with_the_clock():
    clock = ManualClock(START + 0.5)
    seen: dict = {}

    async def body(loop, r, sink):
        served = TimelineClock(clock, lambda: loop)  # what the master's link answers time requests with
        await _pump(clock, lambda: len(sink.names) >= 2, loop)
        seen["before"] = served.time()
        clock.step(-60.0)
        seen["after"] = served.time()
        seen["wall"] = clock.time()

    asyncio.run(_loop_scenario(clock, CaptureSeconds(), body))
    assert seen["after"] >= seen["before"] > seen["wall"] + 59  # the slave sees no step: its names stay paired
