"""A synchronous driver for a declared machine, fired only on the owner's loop (history, wait_for)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from controller.logging import get_logger
from controller.timekeeping.clock import Clock
from states.machine import MachineTable, StateModel, build_machine


class MachineDriver:
    """A declared table (states/) run as a `build_machine` machine that only the event loop changes.

    `fire` is the only way its state changes: it fires `trigger` when the current state accepts it (False
    otherwise), so callers act on facts ("the capture failed") without re-checking the state. It refuses to run
    outside the event loop's thread: executor threads hop to the loop with `call_soon_threadsafe` first.
    Every change is one `state_change` event (build_machine) and is passed to `on_change(old, new, trigger)`.
    """

    def __init__(
        self,
        table: MachineTable,
        name: str,
        clock: Clock,
        conditions: dict[str, Callable[[], bool]] | None = None,
        on_change: Callable[[str, str, str], None] | None = None,
        logger: Any = None,
    ):
        self.table = table
        self.name = name
        self._clock = clock
        self._on_change = on_change or (lambda old, new, trigger: None)
        self.model = StateModel()
        self.machine = build_machine(
            self.model, table, name=name, logger=logger or get_logger("machine"), asynchronous=False,
            conditions=conditions,
        )  # fmt: skip
        self.since = clock.time()
        self.history: deque[tuple[float, str, str, str]] = deque(maxlen=200)
        self._waiters: list[asyncio.Future] = []

    @property
    def state(self) -> str:
        return self.model.state

    async def wait_for(self, state: str, timeout_s: float) -> bool:
        """Wait (real seconds) until the machine is in `state`; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.state != state:
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError:
                return self.state == state
        return True

    def recent(self, n: int = 20) -> list[dict]:
        """The last `n` changes (for the status file)."""
        return [{"time": t, "old": o, "new": new, "trigger": tr} for t, o, new, tr in list(self.history)[-n:]]

    def can(self, trigger: str) -> bool:
        return trigger in self.table.allowed(self.state)

    def fire(self, trigger: str, reason: str | None = None) -> bool:
        """Fire `trigger` if the current state accepts it; True when the state changed."""
        asyncio.get_running_loop()  # RuntimeError in an executor thread: only the loop changes state
        old = self.state
        if not self.can(trigger):
            return False
        self.model.trigger(trigger, **({"reason": reason} if reason else {}))
        new = self.state
        if new != old:
            self.since = self._clock.time()
            self.history.append((self.since, old, new, trigger))
            self._on_change(old, new, trigger)
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(new)
        return new != old


# A device in these states has an open, working device: it captures.
