"""Services with one owner: started in order and stopped in reverse, a failing stop does not keep the others open;
suspenders of one generic shape with hysteresis; the master's store as the sink from capture and link to the worker."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from controller.errors import StorageError
from controller.logging import get_logger
from controller.supervisor.services import Service, ServiceGroup
from controller.supervisor.store import StationStore
from controller.supervisor.suspender import Suspender, station_trigger


class Part:
    def __init__(self, name: str, order: list[str], fail_stop: bool = False):
        self.name = name
        self.order = order
        self.fail_stop = fail_stop

    async def start(self) -> None:
        self.order.append("start " + self.name)

    async def stop(self) -> None:
        self.order.append("stop " + self.name)
        if self.fail_stop:
            raise RuntimeError("stuck")

    def status(self) -> dict:
        return {"name": self.name}


def test_services_stop_in_reverse_order_and_a_failing_stop_does_not_keep_the_others_open():
    order: list[str] = []
    group = ServiceGroup(get_logger("test"))

    async def scenario():
        for name in ("link", "disk", "worker", "power"):
            await group.start(Part(name, order, fail_stop=name == "worker"))
        status = group.status()
        with capture_logs() as logs:
            await group.stop_all()
        return status, logs

    status, logs = asyncio.run(scenario())
    assert order == [
        "start link", "start disk", "start worker", "start power", "stop power", "stop worker", "stop disk",
        "stop link",
    ]  # fmt: skip
    assert list(status) == ["link", "disk", "worker", "power"] and not group.started
    assert [e["step"] for e in logs if e["event"] == "shutdown_step_failed"] == ["worker"]
    assert isinstance(Part("x", []), Service)


def battery(volts: dict) -> Suspender:
    """A low-battery suspender: the same shape as the disk's, another measurement."""
    return Suspender("battery", lambda: volts["v"], low=11.5, high=12.2, pause="battery_low", resume="battery_ok")


def test_a_suspender_switches_with_hysteresis():
    volts = {"v": 12.6}
    s = battery(volts)
    assert not s.update() and not s.active
    volts["v"] = 11.4
    assert s.update() and s.active
    volts["v"] = 12.0  # above low, below high: still suspended
    assert not s.update() and s.active
    volts["v"] = 12.2
    assert s.update() and not s.active
    assert s.status() == {"active": False, "level": 12.2, "low": 11.5, "high": 12.2}


def test_the_station_pauses_for_an_active_suspender_and_resumes_by_the_one_that_paused_it():
    free = {"mb": 50.0}
    volts = {"v": 12.6}
    disk = Suspender("disk", lambda: free["mb"], low=lambda: 100, high=lambda: 200, pause="disk_full", resume="disk_ok")
    both = [battery(volts), disk]
    for s in both:
        s.update()
    assert station_trigger(both, "acquire", None)[0] == "disk_full"
    assert station_trigger(both, "sleep", None) is None  # not acquiring: nothing to pause
    assert station_trigger(both, "paused", "disk_full") is None  # still active
    free["mb"] = 300.0
    disk.update()
    assert station_trigger(both, "paused", "disk_full")[0] == "disk_ok"
    assert station_trigger(both, "acquire", "disk_ok") is None
    assert station_trigger([], "paused", "disk_full") is None


class Bytes:
    def __init__(self):
        self.files: dict[str, bytes] = {}

    def save_bytes(self, name: str, data: bytes):
        self.files[name] = data
        return name

    def exists(self, name: str) -> bool:
        return name in self.files


def test_the_store_passes_each_stored_name_to_the_worker_and_refuses_the_link_while_paused():
    paused = {"on": False}
    store = StationStore(Bytes(), lambda: paused["on"])
    seen: list[str] = []
    store.consumers.append(seen.append)
    store.save_bytes("from-the-link.png", b"x")
    asyncio.run(store.sink("from-camera-a.png", b"y"))
    paused["on"] = True
    with pytest.raises(StorageError):
        store.save_bytes("refused.png", b"z")
    asyncio.run(store.sink("in-flight-capture.png", b"w"))  # a capture in flight when the pause came still lands
    assert seen == ["from-the-link.png", "from-camera-a.png", "in-flight-capture.png"]
    assert store.exists("in-flight-capture.png") and not store.exists("refused.png")
