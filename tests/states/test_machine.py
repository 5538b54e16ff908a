"""build_machine / MachineTable: validation, logging of state changes, errors, mermaid."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from transitions.core import MachineError

from states.machine import MachineTable, build_machine, table_rows, to_mermaid
from tests.states.table_checks import changes

TINY = dict(
    name="tiny",
    states=("a", "b", "end"),
    initial="a",
    terminal=("end",),
    transitions=(
        {"trigger": "go", "source": "a", "dest": "b", "conditions": "ready"},
        {"trigger": "go", "source": "a", "dest": None, "unless": "ready"},
        {"trigger": "back", "source": "b", "dest": "a"},
        {"trigger": "finish", "source": ["a", "b"], "dest": "end"},
    ),
)


def test_table_refuses_unknown_states_and_leaving_terminals():
    with pytest.raises(ValueError, match="dest 'nowhere'"):
        MachineTable(**{**TINY, "transitions": ({"trigger": "go", "source": "a", "dest": "nowhere"},)})
    with pytest.raises(ValueError, match="cannot be left"):
        MachineTable(**{**TINY, "transitions": (*TINY["transitions"], {"trigger": "x", "source": "end", "dest": "a"})})
    with pytest.raises(ValueError, match="no way out"):
        MachineTable(**{**TINY, "transitions": ({"trigger": "go", "source": "a", "dest": "b"},)})
    with pytest.raises(ValueError, match="unknown keys"):
        MachineTable(**{**TINY, "transitions": ({"trigger": "go", "source": "a", "dest": "b", "when": "x"},)})


def test_missing_predicate_is_refused_at_build_time():
    with pytest.raises(ValueError, match="lacks ready"):
        build_machine(None, MachineTable(**TINY), asynchronous=False)


def test_one_state_change_event_per_change_with_reason():
    flag = {"ready": False}
    with structlog.testing.capture_logs() as logs:
        machine = build_machine(
            None, MachineTable(**TINY), asynchronous=False, conditions={"ready": lambda: flag["ready"]}
        )
        model = machine.models[0]
        assert model.trigger("go") is True  # internal: stays, not a change
        flag["ready"] = True
        model.trigger("go", reason="ready now")
        model.trigger("finish")
    assert model.state == "end"
    assert changes(logs) == [("a", "b", "go"), ("b", "end", "finish")]
    first = next(e for e in logs if e["event"] == "state_change")
    assert first["machine"] == "tiny" and first["reason"] == "ready now"


def test_illegal_trigger_raises_and_is_logged():
    with structlog.testing.capture_logs() as logs:
        machine = build_machine(
            None, MachineTable(**TINY), "renamed", asynchronous=False, conditions={"ready": lambda: True}
        )
        with pytest.raises(MachineError):
            machine.models[0].trigger("back")
    assert machine.models[0].state == "a"
    assert [e["event"] for e in logs] == ["illegal_trigger"]
    assert logs[0]["machine"] == "renamed" and logs[0]["trigger"] == "back"


def test_callback_failure_propagates_and_is_logged():
    class Model:
        def ready(self):
            return True

        def on_enter_b(self, event):
            raise RuntimeError("camera gone")

    with structlog.testing.capture_logs() as logs:
        machine = build_machine(Model(), MachineTable(**TINY), asynchronous=False)
        with pytest.raises(RuntimeError, match="camera gone"):
            machine.models[0].trigger("go")
    assert any(e["event"] == "transition_failed" for e in logs)


def test_async_machine_queues_triggers_fired_from_callbacks():
    order = []

    class Model:
        def ready(self):
            return True

        async def on_enter_b(self, event):
            order.append("enter b")
            # Queued: this runs after the current transition has finished, not nested inside it.
            await self.trigger("finish")
            order.append("after queueing finish")

    async def main():
        with structlog.testing.capture_logs() as logs:
            model = Model()
            build_machine(model, MachineTable(**TINY))
            await model.trigger("go")
        return model, logs

    model, logs = asyncio.run(main())
    assert model.state == "end"
    assert order == ["enter b", "after queueing finish"]
    assert changes(logs) == [("a", "b", "go"), ("b", "end", "finish")]


def test_async_illegal_trigger_raises():
    async def main():
        machine = build_machine(None, MachineTable(**TINY), conditions={"ready": lambda: True})
        await machine.models[0].trigger("finish")
        await machine.models[0].trigger("go")

    with pytest.raises(MachineError):
        asyncio.run(main())


def test_mermaid_and_rows_show_every_transition():
    table = MachineTable(**TINY)
    text = to_mermaid(table)
    assert text.startswith("stateDiagram-v2\n    [*] --> a\n")
    assert "a --> b: go [ready]" in text
    assert "a --> a: go [not ready]" in text
    assert "end --> [*]" in text
    assert len(table_rows(table)) == 5
