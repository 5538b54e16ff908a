"""The station table: every transition, illegal triggers, the terminal state, and whole days as state sequences."""

from __future__ import annotations

import pytest
import structlog

from states import power, station
from tests.states.table_checks import (
    Driver,
    changes,
    check_every_transition_is_taken,
    check_illegal_triggers_raise,
    check_terminal_states_cannot_be_left,
)

TABLE = station.TABLE


def test_every_allowed_transition_is_taken():
    check_every_transition_is_taken(TABLE)


def test_every_other_trigger_raises():
    check_illegal_triggers_raise(TABLE)


def test_off_cannot_be_left():
    assert TABLE.terminal == ("off",)
    check_terminal_states_cannot_be_left(TABLE)


def _day(**flags) -> Driver:
    return Driver(TABLE, asynchronous=True, **flags)


def test_a_station_day():
    with structlog.testing.capture_logs() as logs:
        day = _day(in_window=True, slave_ready=True, shutdown_after_process=True)
        day.run("booted", "synced", "window_end", "processed", "halted")
    assert changes(logs, "station") == [
        ("boot", "sync", "booted"),
        ("sync", "acquire", "synced"),
        ("acquire", "process", "window_end"),
        ("process", "shutdown", "processed"),
        ("shutdown", "off", "halted"),
    ]


def test_a_day_with_two_windows_sleeps_between_them():
    with structlog.testing.capture_logs() as logs:
        day = _day(in_window=True, slave_ready=True, shutdown_after_process=False)
        day.run("booted", "synced", "window_end", "processed", "window_start", "synced", "window_end")
        day.run({"shutdown_after_process": True}, "processed", "halted")
    assert [new for _, new, _ in changes(logs)] == [
        "sync", "acquire", "process", "sleep", "sync", "acquire", "process", "shutdown", "off",
    ]  # fmt: skip


def test_booting_outside_the_window_sleeps_until_it_starts():
    day = _day(in_window=False, slave_ready=True)
    assert day.run("booted", "synced", {"in_window": True}, "window_start", "synced") == [
        "sync", "sleep", "sync", "acquire",
    ]  # fmt: skip


def test_the_slave_never_wakes_master_acquires_camera_a_alone():
    with structlog.testing.capture_logs() as logs:
        day = _day(in_window=True, slave_ready=False, shutdown_after_process=True)
        handoff = Driver(power.TABLE, asynchronous=True, wake_retries_exhausted=False)
        # boot: the master pulses the wake line and waits for a hello that never comes.
        handoff.run("wake", "hello_timeout", "hello_timeout")
        assert handoff.state == "waking"
        handoff.run({"wake_retries_exhausted": True}, "hello_timeout")
        day.run("booted", "synced")
        day.run("window_end", "processed")
        handoff.run("halt", "halted")  # no link: the halt line, just in case it came up late
        day.run("halted")
    assert changes(logs, "power") == [
        ("slave_off", "waking", "wake"),
        ("waking", "failed", "hello_timeout"),
        ("failed", "halting", "halt"),
        ("halting", "slave_off", "halted"),
    ]
    assert changes(logs, "station") == [
        ("boot", "sync", "booted"),
        ("sync", "degraded", "synced"),
        ("degraded", "process", "window_end"),
        ("process", "shutdown", "processed"),
        ("shutdown", "off", "halted"),
    ]


def test_the_slave_comes_up_late_and_the_station_recovers():
    day = _day(in_window=True, slave_ready=False)
    assert day.run("booted", "synced", {"slave_ready": True}, "recover") == ["sync", "degraded", "acquire"]


def test_link_lost_during_acquire_degrades_then_recovers():
    with structlog.testing.capture_logs() as logs:
        day = _day(in_window=True, slave_ready=True)
        day.run("booted", "synced")
        day.fire("degrade", reason="link lost")
        day.fire("recover", reason="link back")
        day.run("stop", "halted")
    assert [(old, new) for old, new, _ in changes(logs)] == [
        ("boot", "sync"),
        ("sync", "acquire"),
        ("acquire", "degraded"),
        ("degraded", "acquire"),
        ("acquire", "shutdown"),
        ("shutdown", "off"),
    ]
    reasons = [e.get("reason") for e in logs if e["event"] == "state_change"]
    assert reasons[2:4] == ["link lost", "link back"]


@pytest.mark.parametrize("retries", [1, 3])
def test_clock_offset_too_large_stays_in_sync_then_faults(retries):
    with structlog.testing.capture_logs() as logs:
        day = _day(in_window=True, slave_ready=True, sync_retries_exhausted=False)
        day.run("booted")
        for _ in range(retries):
            assert day.run("offset_bad") == ["sync"]
        day.run({"sync_retries_exhausted": True}, "offset_bad", "retry")
    assert changes(logs) == [
        ("boot", "sync", "booted"),
        ("sync", "fault", "offset_bad"),
        ("fault", "boot", "retry"),
    ]


def test_storage_full_pauses_acquisition_then_resumes():
    with structlog.testing.capture_logs() as logs:
        day = _day(in_window=True, slave_ready=True)
        day.run("booted", "synced", "disk_full", "disk_ok")
        # Full again while the slave is away: it resumes degraded, not acquiring B images it cannot get.
        day.run("disk_full", {"slave_ready": False}, "disk_ok", {"slave_ready": True}, "recover")
    assert changes(logs) == [
        ("boot", "sync", "booted"),
        ("sync", "acquire", "synced"),
        ("acquire", "paused", "disk_full"),
        ("paused", "acquire", "disk_ok"),
        ("acquire", "paused", "disk_full"),
        ("paused", "degraded", "disk_ok"),
        ("degraded", "acquire", "recover"),
    ]


def test_boot_loop_goes_to_diagnose_and_needs_a_reset():
    day = _day()
    assert day.run("boot_loop") == ["diagnose"]
    assert "retry" not in TABLE.allowed("diagnose")
    assert day.run("reset") == ["boot"]
