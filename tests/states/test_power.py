"""The power-handoff table."""

from __future__ import annotations

import structlog

from states import power
from tests.states.table_checks import Driver, changes, check_every_transition_is_taken, check_illegal_triggers_raise

TABLE = power.TABLE


def test_every_allowed_transition_is_taken():
    check_every_transition_is_taken(TABLE)


def test_every_other_trigger_raises():
    check_illegal_triggers_raise(TABLE)


def test_wake_retry_then_hello_then_clean_stop():
    with structlog.testing.capture_logs() as logs:
        handoff = Driver(TABLE, asynchronous=True, wake_retries_exhausted=False)
        handoff.run("wake", "hello_timeout", "hello", "stop", "stopped")
    assert changes(logs) == [
        ("slave_off", "waking", "wake"),
        ("waking", "up", "hello"),
        ("up", "stopping", "stop"),
        ("stopping", "slave_off", "stopped"),
    ]


def test_link_lost_while_stopping_falls_back_to_the_halt_line():
    handoff = Driver(TABLE)
    handoff.run("wake", "hello", "stop")
    assert handoff.run("link_lost", "halted") == ["halting", "slave_off"]


def test_a_slave_already_running_when_the_master_boots_is_up_without_a_pulse():
    handoff = Driver(TABLE)
    assert handoff.run("hello") == ["up"]
