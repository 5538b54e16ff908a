"""The master's daily dark series as a service: once a day, at schedule.dark_time_utc (controller/schedule.py),
when the station is not acquiring; the day of the last series is remembered across restarts."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.schedule import dark_time_of_day
from controller.storage.atomic import atomic_write_text

DARKS_FILE = "last_darks.txt"  # the date (YYYY-MM-DD) of the last daily dark series
DAY_S = 86_400.0


def day_of(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d")


class DarkSchedule:
    name = "darks"

    def __init__(
        self,
        state_dir: Path,
        cfg: Callable[[], Config],
        now: Callable[[], float],
        run: Callable[[], Awaitable[None]],
        log: Any,
    ):
        self.path = Path(state_dir) / DARKS_FILE
        self._cfg = cfg
        self._now = now
        self._run = run
        self._log = log
        self.last_day: str | None = None
        with contextlib.suppress(OSError):
            self.last_day = self.path.read_text().strip() or None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"last_day": self.last_day, "next_at": self.next_time()}

    def next_time(self) -> float:
        """Master time of the next daily dark series not yet taken (today's, or tomorrow's once done)."""
        now = self._now()
        dark_at = dark_time_of_day(now, self._cfg())
        if day_of(now) == self.last_day:
            dark_at += DAY_S
        return dark_at

    def taken_today(self) -> bool:
        return self.last_day == day_of(self._now())

    async def run_if_due(self) -> None:
        """The daily dark series, once a day, when its time has come and the station is not acquiring."""
        if self._now() < self.next_time():
            return
        self.last_day = day_of(self._now())
        # Remembered across restarts: a restarted master does not take the day's darks twice.
        with contextlib.suppress(OSError):
            atomic_write_text(self.path, self.last_day)
        await self._run()
