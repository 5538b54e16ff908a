"""The one machine runtime: fire/fire_if, an illegal trigger raising (logged once), history, listeners, wait_for,
one owner thread; and every machine of the project running in it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from states.machine import MachineError, MachineTable
from states.runtime import MachineRuntime

TABLE = MachineTable(
    name="door",
    states=("closed", "open", "locked"),
    initial="closed",
    transitions=(
        {"trigger": "open", "source": "closed", "dest": "open"},
        {"trigger": "close", "source": "open", "dest": "closed"},
        {"trigger": "lock", "source": "closed", "dest": "locked", "conditions": ["has_key"]},
        {"trigger": "unlock", "source": "locked", "dest": "closed"},
    ),
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def time(self) -> float:
        return self.t


def make(has_key: bool = True) -> tuple[MachineRuntime, Clock]:
    clock = Clock()
    return MachineRuntime(TABLE, clock=clock, conditions={"has_key": lambda: has_key}), clock


def test_fire_changes_state_records_history_and_tells_listeners():
    m, clock = make()
    seen = []
    m.add_listener(lambda old, new, trigger, reason: seen.append((old, new, trigger, reason)))
    clock.t = 105.0
    assert m.fire("open", reason="someone knocked")
    assert m.state == "open" and m.since == 105.0
    assert list(m.history) == [(105.0, "closed", "open", "open")]
    assert m.recent() == [{"time": 105.0, "old": "closed", "new": "open", "trigger": "open"}]
    assert seen == [("closed", "open", "open", "someone knocked")]


def test_an_illegal_trigger_raises_and_is_logged_once():
    m, _ = make()
    with capture_logs() as logs, pytest.raises(MachineError):
        m.fire("close")
    assert [e["event"] for e in logs] == ["illegal_trigger"] and m.state == "closed" and not m.history


def test_fire_if_does_nothing_where_the_state_refuses_the_trigger():
    m, _ = make()
    with capture_logs() as logs:
        assert not m.fire_if("close")
    assert logs == [] and m.state == "closed"
    assert m.can("open") and not m.can("close")


def test_a_failed_condition_is_no_change_not_an_error():
    m, _ = make(has_key=False)
    assert not m.fire("lock") and m.state == "closed" and not m.history


def test_only_the_owner_thread_may_fire():
    m, _ = make()
    m.fire("open")
    errors = []

    def other():
        try:
            m.fire("close")
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and m.state == "open"


def test_wait_for_returns_when_the_state_is_reached_and_false_on_timeout():
    async def scenario():
        m, _ = make()
        waiter = asyncio.create_task(m.wait_for("open", 30.0))
        await asyncio.sleep(0)
        m.fire("open")
        reached = await waiter
        timed_out = await m.wait_for("locked", 0.01)
        return reached, timed_out

    assert asyncio.run(scenario()) == (True, False)


def test_every_machine_of_the_project_runs_in_the_runtime():
    """No second driver: outside states/runtime.py nothing builds or triggers a machine by itself, and the station,
    each device, the worker, the link and the power handoff each hold a MachineRuntime."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    own = {root / "states" / "machine.py", root / "states" / "runtime.py"}
    holders = {"DeviceRunner", "LinkEndpoint", "Supervisor", "WorkerService", "PowerHandoff"}
    found = set()
    for path in [*(root / "controller").rglob("*.py"), *(root / "states").rglob("*.py")]:
        if path in own:
            continue
        source = path.read_text(encoding="utf-8")
        assert "build_machine(" not in source and ".model.trigger(" not in source, path
        for name in holders:
            if f"class {name}:" in source or f"class {name}(" in source:
                assert "MachineRuntime(" in source, f"{name} ({path}) holds no MachineRuntime"
                found.add(name)
    assert found == holders
