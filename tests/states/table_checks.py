"""Checks every table must pass: each allowed transition is taken, illegal triggers raise, terminals hold."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from transitions.core import MachineError

from states.machine import MachineTable, build_machine


class Flags:
    """Predicate values for a table's conditions, settable from tests."""

    def __init__(self, table: MachineTable, **values: bool):
        self.values = dict.fromkeys(table.condition_names, False)
        self.values.update(values)

    def conditions(self) -> dict:
        return {name: (lambda name=name: self.values[name]) for name in self.values}


class Driver:
    """Drives a machine by triggers (sync or async) and records the logged state changes."""

    def __init__(self, table: MachineTable, asynchronous: bool = False, **flags: bool):
        self.table = table
        self.flags = Flags(table, **flags)
        self.asynchronous = asynchronous
        self.logger = structlog.get_logger()
        self.model = None
        self.machine = build_machine(
            None, table, logger=self.logger, asynchronous=asynchronous, conditions=self.flags.conditions()
        )
        self.model = self.machine.models[0]

    @property
    def state(self) -> str:
        return self.model.state

    def set_state(self, state: str) -> None:
        self.machine.set_state(state)

    def fire(self, trigger: str, **kwargs) -> bool:
        result = self.model.trigger(trigger, **kwargs)
        if self.asynchronous:
            return asyncio.run(result)
        return result

    def run(self, *steps, **flags) -> list[str]:
        """Fire triggers (a step is a trigger name or a dict of flag values to set first); return the states."""
        seen = []
        for step in steps:
            if isinstance(step, dict):
                self.flags.values.update(step)
                continue
            self.fire(step)
            seen.append(self.state)
        return seen


def changes(logs: list[dict], machine: str | None = None) -> list[tuple[str, str, str]]:
    return [
        (e["old"], e["new"], e["trigger"])
        for e in logs
        if e["event"] == "state_change" and (machine is None or e["machine"] == machine)
    ]


def check_every_transition_is_taken(table: MachineTable) -> None:
    for row in table.expanded():
        flags = {**dict.fromkeys(row["conditions"], True), **dict.fromkeys(row["unless"], False)}
        driver = Driver(table, **flags)
        driver.set_state(row["source"])
        with structlog.testing.capture_logs() as logs:
            assert driver.fire(row["trigger"]) is True, row
        expected = row["dest"] or row["source"]
        assert driver.state == expected, row
        if row["dest"] is None:
            assert changes(logs) == [], "an internal transition is not a state change"
        else:
            assert changes(logs) == [(row["source"], row["dest"], row["trigger"])], row


def check_illegal_triggers_raise(table: MachineTable) -> None:
    for state in table.states:
        allowed = set(table.allowed(state))
        for trigger in table.triggers:
            if trigger in allowed:
                continue
            driver = Driver(table)
            driver.set_state(state)
            with pytest.raises(MachineError):
                driver.fire(trigger)
            assert driver.state == state


def check_terminal_states_cannot_be_left(table: MachineTable) -> None:
    for state in table.terminal:
        assert table.allowed(state) == ()
        for trigger in table.triggers:
            driver = Driver(table, **dict.fromkeys(table.condition_names, True))
            driver.set_state(state)
            with pytest.raises(MachineError):
                driver.fire(trigger)
            assert driver.state == state


def check_all(table: MachineTable) -> None:
    check_every_transition_is_taken(table)
    check_illegal_triggers_raise(table)
    check_terminal_states_cannot_be_left(table)
