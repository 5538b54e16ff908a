"""The master's WorkerService drives the processing worker's machine (states/worker.py): crash -> backoff ->
restart, give up after too many crashes in a row, stop. The worker's crash callback comes from its watcher thread
and hops to the loop; its events are typed (processing/events.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
import structlog

import processing.worker
from controller.config import config_from_dict
from controller.supervisor import master as master_mod
from controller.supervisor import workerservice
from controller.supervisor.base import RunOptions
from controller.supervisor.workerservice import WorkerService
from controller.timekeeping.clock import ManualClock
from processing.events import Backlog, Idle, PairDone
from tests.states.table_checks import changes


def make_master(tmp_path):
    """A master with its worker service (started by the scenario: `await sup.worker_service.start()`)."""
    cfg = config_from_dict(
        {
            "storage": {"data_root": str(tmp_path / "data"), "state_dir": str(tmp_path / "state")},
            "processing": {"enabled": True},
            "logging": {"format": "console", "level": "info"},
        }
    )
    sup = master_mod.MasterSupervisor(cfg, ManualClock(), RunOptions(state_dir=tmp_path / "state"))
    sup.worker_service = WorkerService(sup.ctx, cfg)
    return sup


class FakeWorker:
    """ProcessingWorker's parent-side API; `crash()` calls the crash callback from a thread, as its watcher does."""

    instances: list[FakeWorker] = []

    def __init__(self, cfg, data_root, out_dir, crashed=None):
        self.crashed = crashed
        self.starts = 0
        self.stops = 0
        self.fail_next_start = False
        self.pid = 1234
        FakeWorker.instances.append(self)

    def start(self) -> None:
        self.starts += 1
        if self.fail_next_start:
            self.fail_next_start = False
            raise OSError("cannot spawn")

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stops += 1

    def crash(self, code: int = -9) -> None:
        t = threading.Thread(target=self.crashed, args=(code,))
        t.start()
        t.join()

    def emit(self, *events) -> None:
        """Child events as the pump thread delivers them (from another thread, in order)."""
        t = threading.Thread(target=lambda: [self.on_event(e) for e in events])
        t.start()
        t.join()

    def rescan(self, token=None) -> None:
        self.emit(Backlog(7), *[PairDone(f"p{i}") for i in range(7)], Idle(7, token))


@pytest.fixture
def fake_worker(monkeypatch):
    import processing.worker

    FakeWorker.instances.clear()
    monkeypatch.setattr(processing.worker, "ProcessingWorker", FakeWorker)
    monkeypatch.setattr(workerservice, "WORKER_BACKOFF_S", (0.01,))
    monkeypatch.setattr(workerservice, "WORKER_MAX_CRASHES", 2)


def test_worker_crash_restart_give_up_and_stop(tmp_path, fake_worker):
    async def scenario():
        sup = make_master(tmp_path)
        await sup.worker_service.start()
        machine, worker = sup.worker_service.machine, FakeWorker.instances[0]
        # One restart policy: the supervisor's; the worker only reports crashes.
        assert machine.state == "running" and not hasattr(processing.worker, "RESTART_BACKOFF_S")
        worker.crash()
        assert await machine.wait_for("crashed", 30)
        assert await machine.wait_for("running", 30)
        worker.fail_next_start = True  # the restart after the next crash cannot spawn: one more crash
        worker.crash()
        assert await machine.wait_for("disabled", 30)
        assert sup.machines()["worker"] == "disabled" and sup.extra_status()["worker"] == "disabled"
        await sup.worker_service.stop()
        return sup, worker

    with structlog.testing.capture_logs() as logs:
        sup, worker = asyncio.run(scenario())
    assert [new for _, new, _ in changes(logs, "worker")] == [
        "starting", "running", "crashed", "restarting", "running", "crashed", "restarting", "crashed", "disabled",
        "stopped",
    ]  # fmt: skip
    assert worker.starts == 3
    assert sup.fault_counts["worker_crashed"] == 3 and sup.fault_counts["worker_disabled"] == 1


def test_a_crash_reported_while_stopping_is_not_restarted(tmp_path, fake_worker):
    async def scenario():
        sup = make_master(tmp_path)
        await sup.worker_service.start()
        worker = FakeWorker.instances[0]
        sup.worker_service.machine.fire("stop", reason="test")
        worker.crash()
        await asyncio.sleep(0)  # the thread has joined: its hop (call_soon_threadsafe) runs in this turn
        return sup

    sup = asyncio.run(scenario())
    assert sup.worker_service.machine.state == "stopping" and sup.worker_service.restart_handle is None


@pytest.mark.slow
def test_killing_the_real_worker_child_restarts_it(tmp_path, monkeypatch):
    monkeypatch.setattr(workerservice, "WORKER_BACKOFF_S", (0.2,))

    async def scenario():
        sup = make_master(tmp_path)
        await sup.worker_service.start()
        machine = sup.worker_service.machine
        assert machine.state == "running"
        first = sup.worker_service.worker.pid
        os.kill(first, signal.SIGKILL)
        assert await machine.wait_for("crashed", 30)
        assert await machine.wait_for("running", 30)
        second = sup.worker_service.worker.pid
        await sup.worker_service.stop()
        return sup, first, second

    with structlog.testing.capture_logs() as logs:
        sup, first, second = asyncio.run(scenario())
    ours = [e for e in logs if e["event"] == "state_change" and e.get("machine") == "worker" and "trigger" in e]
    assert [e["new"] for e in ours] == [
        "starting",
        "running",
        "crashed",
        "restarting",
        "running",
        "stopping",
        "stopped",
    ]
    assert second != first and sup.worker_service.machine.state == "stopped"


def test_worker_events_drive_behind_caught_up_and_end_the_drain(tmp_path, fake_worker):
    """The child's backlog/idle events (read continuously, hopped to the loop) fire behind/caught_up; the drain step
    waits for the idle that answers its own rescan."""

    async def scenario():
        sup = make_master(tmp_path)
        await sup.worker_service.start()
        machine, worker = sup.worker_service.machine, FakeWorker.instances[0]
        worker.emit(Backlog(40), *[PairDone(f"k{i}") for i in range(40)])
        assert await machine.wait_for("backlog", 30)
        worker.emit(Idle(40))
        assert await machine.wait_for("running", 30)
        await sup.worker_service.drain()  # FakeWorker.rescan answers with backlog, 7 pairs, then idle with the token
        assert sup.worker_service.drain_waiters == {} and machine.state == "running"
        return sup

    with structlog.testing.capture_logs() as logs:
        sup = asyncio.run(scenario())
    triggers = [(new, trigger) for _, new, trigger in changes(logs, "worker")]
    assert triggers[2:] == [("backlog", "behind"), ("running", "caught_up")] * 2
    assert sup.worker_service.pairs == 47
    assert any(e["event"] == "worker_drained" for e in logs)
