"""Injectable clocks. Logic never calls time.time() directly: it asks the clock it was given.

`SystemClock` is the real one. `ScaledClock` runs faster than real time from a chosen start (a station day in
minutes, same code paths). `ManualClock` only moves when a test advances it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (UTC) on this clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, in this clock's time scale."""

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time."""

    def scale(self) -> float:
        """How many clock seconds pass per real second."""


def utc_datetime(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.time(), tz=UTC)


class SystemClock:
    def __init__(self, offset_s: float = 0.0):
        # offset_s lets a sim slave run with a deliberately wrong clock (stepped or drifting).
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def scale(self) -> float:
        return 1.0


class ScaledClock:
    """Clock time = start + (real elapsed) * factor. Sleeping N clock seconds takes N / factor real seconds."""

    def __init__(self, start_epoch_s: float, factor: float, real_start: float | None = None):
        if factor <= 0:
            raise ValueError("factor must be > 0")
        self.start_epoch_s = start_epoch_s
        self.factor = factor
        self.offset_s = 0.0
        self._real_start = time.time() if real_start is None else real_start

    def time(self) -> float:
        return self.start_epoch_s + (time.time() - self._real_start) * self.factor + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic() * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    def scale(self) -> float:
        return self.factor


class ManualClock:
    """A clock for tests: time moves only through `advance`; sleepers wake when their deadline is passed."""

    def __init__(self, start_epoch_s: float = 1_700_000_000.0):
        self._now = start_epoch_s
        self._mono = 0.0
        self._waiters: list[tuple[float, asyncio.Future]] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def scale(self) -> float:
        return 1.0

    async def sleep(self, seconds: float) -> None:
        deadline = self._mono + max(0.0, seconds)
        if deadline <= self._mono:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((deadline, fut))
        await fut

    def step(self, seconds: float) -> None:
        """The wall clock jumps (an NTP step, negative: back); monotonic time does not move, nobody wakes."""
        self._now += seconds

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds
        due = [w for w in self._waiters if w[0] <= self._mono]
        self._waiters = [w for w in self._waiters if w[0] > self._mono]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
