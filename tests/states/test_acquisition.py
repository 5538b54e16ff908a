"""The per-device acquisition table."""

from __future__ import annotations

from states import acquisition
from tests.states.table_checks import Driver, check_all

TABLE = acquisition.TABLE


def test_table_checks():
    check_all(TABLE)


def test_unplug_during_continuous_then_back_to_continuous_after_a_failed_probe():
    device = Driver(TABLE, continuous_wanted=True)
    steps = ("opened", "start_continuous", "unplug", "recover", "unplug", "recover", "reopened")
    assert device.run(*steps) == [
        "idle", "continuous", "unplugged", "recovering", "unplugged", "recovering", "continuous",
    ]  # fmt: skip


def test_recovery_lands_in_idle_when_the_slot_loop_stopped_meanwhile():
    device = Driver(TABLE, continuous_wanted=True)
    assert device.run("opened", "start_continuous", "capture_failed", {"continuous_wanted": False}, "recover") == [
        "idle", "continuous", "error", "recovering",
    ]  # fmt: skip
    assert device.run("reopened") == ["idle"]


def test_failed_reopen_escalates_back_to_error():
    device = Driver(TABLE)
    assert device.run("opened", "capture_single", "capture_failed", "recover", "reopen_failed", "close") == [
        "idle", "single", "error", "recovering", "error", "closed",
    ]  # fmt: skip


def test_failed_open_at_boot_is_retried_like_a_failed_capture():
    device = Driver(TABLE)
    assert device.run("open_failed", "recover", "reopened") == ["error", "recovering", "idle"]
    device = Driver(TABLE)
    assert device.run("unplug", "recover", "reopen_failed") == ["unplugged", "recovering", "error"]


def test_single_and_darks_return_to_continuous_when_still_wanted():
    device = Driver(TABLE, continuous_wanted=True)
    assert device.run("opened", "start_continuous", "capture_single", "single_done") == [
        "idle", "continuous", "single", "continuous",
    ]  # fmt: skip
    assert device.run("start_darks", "darks_done", "start_darks", "abort_darks") == [
        "dark_series", "continuous", "dark_series", "continuous",
    ]  # fmt: skip
    assert device.run({"continuous_wanted": False}, "capture_single", "single_done") == ["single", "idle"]


def test_no_device_is_absent_for_good():
    device = Driver(TABLE)
    assert device.run("no_device") == ["absent"]
    assert TABLE.allowed("absent") == ()


def test_no_single_capture_during_a_dark_series_nor_a_restart_mid_capture():
    assert "capture_single" not in TABLE.allowed("dark_series")
    assert "recover" not in TABLE.allowed("single")
    assert "recover" not in TABLE.allowed("dark_series")
