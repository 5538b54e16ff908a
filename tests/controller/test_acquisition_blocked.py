"""The slot loop starts no capture while it is blocked (the station paused by a suspender), also when the block
comes while it is already waiting for the next slot; nor for a device whose continuous capture was stopped then."""

from __future__ import annotations

import asyncio

from controller.acquisition import SlotLoop, SlotPlan
from controller.timekeeping.clock import ManualClock
from tests.controller.test_acquisition_naming import PERIOD, START, _pump, _runner


def _captures_while_held(hold, release, blocked=lambda: None) -> int:
    """Captures during five slots after `hold(loop, runner)` came while the loop waited for its next slot; after
    `release(loop, runner)` capture goes on."""
    clock = ManualClock(START + 0.5)

    async def scenario():
        r, sink = _runner(clock)
        assert await r.open()
        plan = SlotPlan(PERIOD, START)
        loop = SlotLoop(clock, {"A": r}, plan=lambda: plan, blocked=blocked)
        task = asyncio.ensure_future(loop.run())
        try:
            await _pump(clock, lambda: len(sink.names) >= 2, loop)  # returns with no capture in flight
            n = len(sink.names)
            hold(loop, r)  # the loop already chose the next slot's devices and waits for it
            later = clock.monotonic() + 5 * PERIOD
            await _pump(clock, lambda: clock.monotonic() >= later, loop)  # five slots; a capture started would land
            during = len(sink.names) - n
            release(loop, r)
            await _pump(clock, lambda: len(sink.names) > n, loop)
            return during
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await r.close()

    return asyncio.run(scenario())


def test_no_capture_starts_when_blocked_while_waiting_for_the_slot():
    blocked: dict[str, str | None] = {"why": None}

    def pause(loop, _runner) -> None:
        blocked["why"] = "disk full"
        loop.wake()

    def resume(loop, _runner) -> None:
        blocked["why"] = None
        loop.wake()

    assert _captures_while_held(pause, resume, blocked=lambda: blocked["why"]) == 0


def test_no_capture_starts_for_a_device_stopped_while_waiting_for_the_slot():
    """Regression: the devices due were chosen before the wait for the slot, so an SPC (stop continuous) answered
    during that wait was followed by one more capture."""

    def stop(_loop, runner) -> None:
        runner.continuous = False  # as the external port's SPC does: no wake

    def start(loop, runner) -> None:
        runner.continuous = True
        loop.wake()

    assert _captures_while_held(stop, start) == 0
