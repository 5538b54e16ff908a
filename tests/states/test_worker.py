"""The processing-worker table."""

from __future__ import annotations

from states import worker
from tests.states.table_checks import Driver, check_all

TABLE = worker.TABLE


def test_table_checks():
    check_all(TABLE)


def test_crash_restart_backlog_cycle():
    w = Driver(TABLE)
    assert w.run("start", "started", "behind", "crash", "restart", "started", "behind", "caught_up") == [
        "starting", "running", "backlog", "crashed", "restarting", "running", "backlog", "running",
    ]  # fmt: skip


def test_too_many_crashes_disable_the_worker_until_started_again():
    w = Driver(TABLE)
    assert w.run("start", "crash", "give_up") == ["starting", "crashed", "disabled"]
    assert "restart" not in TABLE.allowed("disabled")
    assert w.run("start", "started", "stop", "exited") == ["starting", "running", "stopping", "stopped"]
