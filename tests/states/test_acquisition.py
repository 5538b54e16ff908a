"""The per-device acquisition table."""

from __future__ import annotations

from states import acquisition
from tests.states.table_checks import Driver, check_all

TABLE = acquisition.TABLE


def test_table_checks():
    check_all(TABLE)


def test_unplug_during_continuous_then_replug_recovers_to_idle():
    device = Driver(TABLE)
    assert device.run("start_continuous", "unplug", "replug", "reopened", "start_continuous") == [
        "continuous", "unplugged", "recovering", "idle", "continuous",
    ]  # fmt: skip


def test_failed_reopen_escalates_back_to_error():
    device = Driver(TABLE)
    assert device.run("capture_single", "capture_failed", "recover", "reopen_failed", "close") == [
        "single", "error", "recovering", "error", "closed",
    ]  # fmt: skip


def test_no_single_capture_during_a_dark_series():
    assert "capture_single" not in TABLE.allowed("dark_series")
    assert "capture_single" not in TABLE.allowed("continuous")
