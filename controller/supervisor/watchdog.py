"""systemd's watchdog as a service of the supervisor: pinged (WATCHDOG=1) from READY on (systemd arms it when the
start-up is complete), only while the event loop is responsive and the supervisor's main coroutine alive, so a hung
loop or a dead main task gets the unit restarted."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from controller.supervisor.services import cancel


def sd_notify(message: str) -> None:
    from controller import bootguard

    bootguard.sd_notify(message)


class Watchdog:
    name = "watchdog"

    def __init__(self, main_task: asyncio.Task | None, log: Any):
        self._main = main_task
        self._log = log
        self._task: asyncio.Task | None = None
        self.pings = 0
        self.withheld = 0

    async def start(self) -> None:
        self.begin()

    def begin(self) -> None:
        """Start pinging (at READY), when systemd asked for a watchdog (WATCHDOG_USEC); once."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(usec / 2e6), name="watchdog")

    async def _run(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = loop.time() - before - interval
            if lag < interval and (self._main is None or not self._main.done()):
                sd_notify("WATCHDOG=1")
                self.pings += 1
            else:
                self.withheld += 1
                self._log.warning("watchdog_withheld", loop_lag_s=round(lag, 3))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    def status(self) -> dict[str, Any]:
        return {"active": self._task is not None, "pings": self.pings, "withheld": self.withheld}
