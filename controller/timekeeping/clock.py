"""Injectable clocks. Logic never calls time.time() directly: it asks the clock it was given.

`SystemClock` is the real one. `ScaledClock` runs faster than real time from a chosen start (a station day in
minutes, same code paths). `ManualClock` only moves when a test advances it.
"""

from __future__ import annotations

import asyncio
import json
import os
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
    """Clock time = start + (real elapsed) * factor. Sleeping N clock seconds takes N / factor real seconds.

    With a `rate_file` (the sim station's, shared by master and slave) the factor can change while running: the
    file holds {"real": wall time, "sim": clock time then, "factor": f} and both processes re-read it when it
    changes (its mtime), so their clocks stay one clock, continuous, only running slower or faster."""

    def __init__(
        self, start_epoch_s: float, factor: float, real_start: float | None = None, rate_file: str | None = None
    ):
        if factor <= 0:
            raise ValueError("factor must be > 0")
        self.start_epoch_s = start_epoch_s
        self.factor = factor
        self.offset_s = 0.0
        self._real_start = time.time() if real_start is None else real_start
        self.rate_file = rate_file
        self._rate_mtime: int | None = None
        self._mono = (time.monotonic(), time.monotonic() * factor)  # (real, clock) at the last factor change

    def _anchor(self) -> tuple[float, float, float]:
        """(real, clock, factor) the clock runs from."""
        if self.rate_file is not None:
            try:
                mtime = os.stat(self.rate_file).st_mtime_ns
                if mtime != self._rate_mtime:
                    with open(self.rate_file, encoding="utf-8") as fh:
                        data = json.load(fh)
                    self._rate_mtime = mtime
                    self._set(float(data["real"]), float(data["sim"]), float(data["factor"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no file yet or being replaced: keep the rate in force
        return self._real_start, self.start_epoch_s, self.factor

    def _set(self, real: float, sim: float, factor: float) -> None:
        if factor <= 0:
            return
        now = time.monotonic()
        self._mono = (now, self._mono[1] + (now - self._mono[0]) * self.factor)
        self._real_start, self.start_epoch_s, self.factor = real, sim, factor

    def time(self) -> float:
        real, start, factor = self._anchor()
        return start + (time.time() - real) * factor + self.offset_s

    def monotonic(self) -> float:
        factor = self._anchor()[2]
        return self._mono[1] + (time.monotonic() - self._mono[0]) * factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._anchor()[2])

    def scale(self) -> float:
        return self._anchor()[2]


def write_rate_file(path: str, clock_now: float, factor: float) -> None:
    """Set a shared ScaledClock's rate from now on (atomically: readers see the old or the new file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"real": time.time(), "sim": clock_now, "factor": factor}, fh)
    os.replace(tmp, path)


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
