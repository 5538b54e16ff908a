"""The master's power lines as a supervisor service: opened at start, and re-opened with backoff when they cannot be.

A line held at start-up (the WittyPi hook still pulsing it, another process) raises gpiozero's GPIOPinInUse or
lgpio's 'GPIO busy'; an lgpio that cannot load (no notification pipe in LG_WD) or no gpiochip is a DeviceUnavailable.
Either is an error event and a fault, the status says so, and opening is retried (1, 2, 5, 10, 30, 60, 60 ... s)
until it works: never a crash of the supervisor, never a silent day without GPIO lines. A pulse asked for while
the lines are not open is skipped with an error event (the power handoff retries its wake pulses by itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from controller.errors import HardwareError
from controller.hardware.gpio import GpioBusy
from controller.hardware.interfaces import PowerLines

BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class PowerLinesService:
    """PowerLines (pulse_wake, pulse_halt, close) plus `async start()`, `async stop()`, `status()`."""

    def __init__(self, opener: Callable[[], PowerLines], logger: Any,
                 on_fault: Callable[[str, dict], None] | None = None, backoff_s: tuple[float, ...] = BACKOFF_S,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):  # fmt: skip
        self._opener = opener
        self._log = logger
        self._on_fault = on_fault
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.lines: PowerLines | None = None
        self.state = "closed"  # closed, open, busy, unavailable
        self.attempts = 0
        self.last_error: str | None = None
        self.opened = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if not await self._try_open():
            self._task = asyncio.get_running_loop().create_task(self._retry(), name="power-lines-retry")

    async def _try_open(self) -> bool:
        self.attempts += 1
        try:
            lines = await asyncio.get_running_loop().run_in_executor(None, self._opener)
        except (HardwareError, OSError) as e:  # GpioPowerLines turns gpiozero/lgpio errors into DeviceUnavailable
            state = "busy" if isinstance(e, GpioBusy) else "unavailable"
            retry_in = self.backoff_s[min(self.attempts - 1, len(self.backoff_s) - 1)]
            if state != self.state:  # one error event and one fault per change, not per attempt
                self._log.error("power_lines_unavailable", state=state, error=str(e), attempt=self.attempts,
                                retry_in_s=retry_in)  # fmt: skip
                if self._on_fault is not None:
                    self._on_fault("power_lines_unavailable", {"state": state, "error": str(e)})
            else:
                self._log.warning("power_lines_retry_failed", state=state, error=str(e), attempt=self.attempts,
                                  retry_in_s=retry_in)  # fmt: skip
            self.state, self.last_error = state, str(e)
            return False
        self.lines, self.state = lines, "open"
        self._log.info("power_lines_open", attempts=self.attempts)
        self.opened.set()
        return True

    async def _retry(self) -> None:
        while self.lines is None:
            await self._sleep(self.backoff_s[min(self.attempts - 1, len(self.backoff_s) - 1)])
            await self._try_open()

    def _pulse(self, line: str, seconds: float) -> None:
        lines = self.lines
        if lines is None:
            self._log.error("gpio_pulse_skipped", line=line, state=self.state, error=self.last_error)
            return
        getattr(lines, f"pulse_{line}")(seconds)

    def pulse_wake(self, seconds: float) -> None:
        self._pulse("wake", seconds)

    def pulse_halt(self, seconds: float) -> None:
        self._pulse("halt", seconds)

    def close(self) -> None:
        lines, self.lines = self.lines, None
        if lines is not None:
            lines.close()
            self.state = "closed"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # the retry loop's CancelledError
            self._task = None
        self.close()

    def status(self) -> dict:
        return {"state": self.state, "attempts": self.attempts, "last_error": self.last_error}
