"""The link state machine as data: legal paths for both ends, illegal triggers refused, closed is terminal."""

from __future__ import annotations

import pytest
from transitions.core import MachineError

from states.link import TABLE
from states.machine import build_machine


def machine():
    m = build_machine(None, TABLE, "link", asynchronous=False)
    return m.models[0]


def walk(model, triggers):
    seen = [model.state]
    for t in triggers:
        model.trigger(t)
        seen.append(model.state)
    return seen


def test_master_path():
    assert walk(machine(), ["listen", "accepted", "hello_ok", "replace", "lost", "accepted", "lost", "close"]) == [
        "disconnected", "listening", "handshake", "connected", "connected", "listening", "handshake",
        "listening", "closed",
    ]  # fmt: skip


def test_slave_path():
    assert walk(machine(), ["dial", "fail", "dial", "tcp_up", "hello_ok", "fail", "dial", "close"]) == [
        "disconnected", "connecting", "backoff", "connecting", "handshake", "connected", "backoff",
        "connecting", "closed",
    ]  # fmt: skip


@pytest.mark.parametrize("path", [["tcp_up"], ["listen", "dial"], ["dial", "hello_ok"], ["listen", "fail"]])
def test_illegal_triggers_raise(path):
    model = machine()
    with pytest.raises(MachineError):
        walk(model, path)


def test_closed_is_terminal():
    model = machine()
    model.trigger("close")
    for trigger in TABLE.triggers:
        with pytest.raises(MachineError):
            model.trigger(trigger)
    assert model.state == "closed"
