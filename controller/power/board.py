"""The master's power-board service: reads the WittyPi at start-up and then once a minute, for the status file.

At start-up it logs which board it found (`power_board_found`) and, when the board cut power for low voltage last
time, the warning event `last_shutdown_low_voltage`. A board that is missing or stops answering is a status entry and
one warning event per change, never a fault of the station: the WittyPi's own software owns the power schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from controller.logging import get_logger
from controller.power.wittypi import BoardReading, NoI2C, read_installed_board

READ_INTERVAL_S = 60.0


class PowerBoardMonitor:
    """`async start()`, `async stop()`, `status() -> dict` (the `power_board` section of the status file)."""

    def __init__(self, reader: Callable[[], BoardReading | None] = read_installed_board,
                 interval_s: float = READ_INTERVAL_S, logger: Any = None):  # fmt: skip
        self._reader = reader
        self.interval_s = interval_s
        self._log = logger or get_logger("power_board")
        self._task: asyncio.Task | None = None
        self.reading: BoardReading | None = None
        self.problem: str | None = None  # why there is no reading
        self.read_at: float | None = None

    async def start(self) -> None:
        await self.refresh()
        if self.reading is not None:
            self._log.info("power_board_found", board=self.reading.board, firmware_id=self.reading.firmware_id,
                           action_reason=self.reading.action_reason)  # fmt: skip
            if self.reading.low_voltage_shutdown:
                r = self.reading
                self._log.warning("last_shutdown_low_voltage", board=r.board, action_reason=r.action_reason,
                                  input_voltage_v=r.input_voltage_v)  # fmt: skip
        self._task = asyncio.get_running_loop().create_task(self._run(), name="power-board")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)  # a periodic reading, not a wait for something
            await self.refresh()

    async def refresh(self) -> None:
        """One reading (I2C blocks: run in an executor thread); logs when the board appears or goes."""
        try:
            reading = await asyncio.get_running_loop().run_in_executor(None, self._reader)
            problem = None if reading is not None else "no WittyPi answers on I2C (0x08 WittyPi 4, 0x68 WittyPi 3)"
        except NoI2C as e:
            reading, problem = None, str(e)
        except OSError as e:
            reading, problem = None, f"WittyPi stopped answering on I2C: {e}"
        if problem != self.problem:
            if problem is not None:
                self._log.warning("power_board_unreadable", problem=problem)
            elif self.problem is not None and self.read_at is not None:
                self._log.info("power_board_readable")
        self.reading, self.problem, self.read_at = reading, problem, time.time()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict:
        if self.reading is None:
            return {"board": None, "problem": self.problem, "read_at": self.read_at}
        return {**self.reading.to_status(), "read_at": self.read_at}
