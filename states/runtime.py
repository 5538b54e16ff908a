"""The one runtime every declared machine runs in (station, link, power, each device's acquisition, the worker).

A `MachineRuntime` holds a table's machine (`build_machine`, synchronous: no table has callbacks that await) and
the facts about it: `state`, `since`, `history`, `can`, `fire`, `fire_if`, `wait_for` and change listeners.

- `fire(trigger)` is for a trigger the caller knows is legal: an illegal one raises `MachineError`, logged once as
  `illegal_trigger` (by build_machine), whichever machine it is.
- `fire_if(trigger)` is for a fact that applies only in some states ("the capture failed", "the worker crashed"):
  it fires when the current state accepts the trigger and otherwise does nothing (no log, no error).
Both return True when the state changed. Only one thread changes a machine: the thread that fired it first (the
event loop's); a call from another thread raises RuntimeError (executor threads hop to the loop first).
Every change is one `state_change` event (build_machine), one history entry, and one call of each listener.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from states.machine import MachineError, MachineTable, StateModel, build_machine

__all__ = ["Change", "Listener", "MachineError", "MachineRuntime"]

HISTORY_LEN = 200


class TimeSource(Protocol):
    def time(self) -> float: ...


class Change(tuple):
    """(time, old, new, trigger): one entry of a machine's history."""

    __slots__ = ()

    def __new__(cls, time: float, old: str, new: str, trigger: str) -> Change:
        return super().__new__(cls, (time, old, new, trigger))

    def as_dict(self) -> dict[str, Any]:
        return {"time": self[0], "old": self[1], "new": self[2], "trigger": self[3]}


# listener(old, new, trigger, reason)
Listener = Callable[[str, str, str, "str | None"], None]


class MachineRuntime:
    """A declared table run as a machine that one thread (the event loop's) changes; see the module doc."""

    def __init__(
        self,
        table: MachineTable,
        name: str | None = None,
        clock: TimeSource | None = None,
        conditions: dict[str, Callable[[], bool]] | None = None,
        logger: Any = None,
        history_len: int = HISTORY_LEN,
    ):
        if clock is None:
            import time as _time

            clock = _time
        self.table = table
        self.name = name or table.name
        self._clock = clock
        self.model = StateModel()
        self.machine = build_machine(
            self.model, table, name=self.name, logger=logger, asynchronous=False, conditions=conditions
        )
        self.since = clock.time()
        self.history: deque[Change] = deque(maxlen=history_len)
        self._listeners: list[Listener] = []
        self._waiters: list[asyncio.Future] = []
        self._owner: int | None = None

    def __repr__(self) -> str:
        return f"<MachineRuntime {self.name} state={self.state!r}>"

    @property
    def state(self) -> str:
        return self.model.state

    def add_listener(self, callback: Listener) -> None:
        """callback(old, new, trigger, reason) after each change of state."""
        self._listeners.append(callback)

    def can(self, trigger: str) -> bool:
        """The current state accepts `trigger` (whatever its conditions)."""
        return trigger in self.table.allowed(self.state)

    def fire(self, trigger: str, reason: str | None = None) -> bool:
        """Fire a trigger the current state must accept (MachineError otherwise); True when the state changed."""
        self._check_thread()
        old = self.state
        self.model.trigger(trigger, **({"reason": reason} if reason else {}))
        new = self.state
        if new != old:
            self._changed(old, new, trigger, reason)
        return new != old

    def fire_if(self, trigger: str, reason: str | None = None) -> bool:
        """Fire `trigger` when the current state accepts it, else nothing; True when the state changed."""
        self._check_thread()
        if not self.can(trigger):
            return False
        return self.fire(trigger, reason)

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

    def recent(self, n: int = 20) -> list[dict[str, Any]]:
        """The last `n` changes as dicts (for the status file)."""
        return [c.as_dict() for c in list(self.history)[-n:]]

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError(f"machine {self.name!r}: fired from another thread than its owner's (the loop's)")

    def _changed(self, old: str, new: str, trigger: str, reason: str | None) -> None:
        self.since = self._clock.time()
        self.history.append(Change(self.since, old, new, trigger))
        for callback in list(self._listeners):
            callback(old, new, trigger, reason)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(new)
