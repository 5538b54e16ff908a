"""The slot loop starts no capture while it is blocked (the station paused by a suspender), also when the block
comes while it is already waiting for the next slot; nor for a device whose continuous capture was stopped then."""

from __future__ import annotations

import asyncio

from controller.acquisition import SlotLoop, SlotPlan
from controller.timekeeping.clock import ManualClock
from tests.controller.test_acquisition_naming import PERIOD, START, _pump, _runner


def test_no_capture_starts_when_blocked_while_waiting_for_the_slot():
    clock = ManualClock(START + 0.5)
    blocked: dict[str, str | None] = {"why": None}

    async def scenario():
        r, sink = _runner(clock)
        assert await r.open()
        plan = SlotPlan(PERIOD, START)
        loop = SlotLoop(clock, {"A": r}, plan=lambda: plan, blocked=lambda: blocked["why"])
        task = asyncio.ensure_future(loop.run())
        try:
            await _pump(clock, lambda: len(sink.names) >= 2)
            while loop.busy():  # the slot's capture still storing
                await asyncio.sleep(0.001)
            n = len(sink.names)
            # The loop already checked `blocked` for the next slot and waits for it: the pause comes now.
            blocked["why"] = "disk full"
            loop.wake()
            for _ in range(int(5 * PERIOD / 0.25)):  # five slots later
                clock.advance(0.25)
                for _ in range(20):
                    await asyncio.sleep(0.001)
            during = len(sink.names) - n
            blocked["why"] = None
            loop.wake()
            await _pump(clock, lambda: len(sink.names) > n)
            return during
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await r.close()

    assert asyncio.run(scenario()) == 0


def test_no_capture_starts_for_a_device_stopped_while_waiting_for_the_slot():
    """Regression: the devices due were chosen before the wait for the slot, so an SPC (stop continuous) answered
    during that wait was followed by one more capture."""
    clock = ManualClock(START + 0.5)

    async def scenario():
        r, sink = _runner(clock)
        assert await r.open()
        plan = SlotPlan(PERIOD, START)
        loop = SlotLoop(clock, {"A": r}, plan=lambda: plan, blocked=lambda: None)
        task = asyncio.ensure_future(loop.run())
        try:
            await _pump(clock, lambda: len(sink.names) >= 2)
            while loop.busy():  # the slot's capture still storing
                await asyncio.sleep(0.001)
            n = len(sink.names)
            r.continuous = False  # the loop already chose the next slot's devices and waits for it (no wake)
            for _ in range(int(5 * PERIOD / 0.25)):  # five slots later
                clock.advance(0.25)
                for _ in range(20):
                    await asyncio.sleep(0.001)
            during = len(sink.names) - n
            r.continuous = True
            loop.wake()
            await _pump(clock, lambda: len(sink.names) > n)
            return during
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await r.close()

    assert asyncio.run(scenario()) == 0
