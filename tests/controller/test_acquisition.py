"""DeviceRunner drives the per-device machine (states/acquisition.py) through build_machine: the recorded
sequence of states is what really happened to a sim device (unplug, replug, darks, singles, restarts)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import structlog

from controller.acquisition import BACKOFF_START_S, DeviceRunner
from controller.config import config_from_dict
from controller.errors import HardwareError
from controller.hardware import factory
from controller.timekeeping.clock import ManualClock
from states.machine import MachineError
from tests.states.table_checks import changes

CFG = config_from_dict(
    {
        "camera": {"backend": "sim", "width": 48, "height": 36, "saturation_rows": 6, "auto_exposure": False},
        "spectrometer": {"backend": "none"},
        "logging": {"format": "console", "level": "info"},
    }
)


class Stored:
    def __init__(self):
        self.names: list[str] = []

    async def __call__(self, record, data: bytes) -> None:
        name = str(record)  # the runner hands the parsed name on as a record
        self.names.append(name)


def runner(clock, opener=None, key="A") -> tuple[DeviceRunner, Stored]:
    sink = Stored()
    scene = factory.make_scene(CFG)  # one sim world: a fault in the device's plug survives its reopen
    open_ = opener or (lambda: factory.open_camera(CFG, key, clock, scene=scene))
    return DeviceRunner(key, open_, lambda: CFG, clock, sink), sink


def states(r: DeviceRunner) -> list[str]:
    return [new for _, _, new, _ in r.machine.history]


def test_unplug_and_replug_of_a_sim_camera_while_continuous():
    async def scenario():
        clock = ManualClock()
        r, sink = runner(clock)
        assert await r.open() and r.state == "idle"
        r.set_scheduled(True)
        assert r.state == "continuous"
        assert await r.capture(clock.time())
        plug = r.device.plug  # the camera's port: it stays unplugged across the runner's reopen attempts
        plug.inject("unplug")
        assert await r.capture(clock.time()) is None
        assert r.state == "unplugged"
        assert await r.capture(clock.time()) is None  # inside the backoff: not even tried
        clock.advance(BACKOFF_START_S)
        assert await r.capture(clock.time()) is None  # the probe finds it still gone
        plug.inject("replug")
        clock.advance(BACKOFF_START_S * 2)
        assert await r.capture(clock.time())  # the probe works: back to continuous
        r.set_scheduled(False)
        await r.close()
        return r, sink

    with structlog.testing.capture_logs() as logs:
        r, sink = asyncio.run(scenario())
    expected = ["idle", "continuous", "unplugged", "recovering", "unplugged", "recovering", "continuous", "idle"]
    assert states(r) == [*expected, "closed"]
    logged = changes(logs, "acquisition.A")
    assert [new for _, new, _ in logged] == [*expected, "closed"]
    assert logged[2] == ("continuous", "unplugged", "unplug") and logged[6] == ("recovering", "continuous", "reopened")
    assert len(sink.names) == 2 and r.failures == 2


def test_single_and_dark_series_come_back_to_continuous():
    async def scenario():
        clock = ManualClock()
        r, sink = runner(clock)
        await r.open()
        r.set_scheduled(True)
        assert await r.capture(None, "Plume")
        darks = await r.dark_series()
        r.continuous = False  # the operator stops continuous captures
        assert await r.capture(None, "Test")
        return r, sink, darks

    r, sink, darks = asyncio.run(scenario())
    assert states(r) == [
        "idle",
        "continuous",
        "single",
        "continuous",
        "dark_series",
        "continuous",
        "idle",
        "single",
        "idle",
    ]
    assert darks and all("Dark" in n for n in darks)


def test_failed_open_is_retried_after_the_backoff_and_the_device_reopened():
    calls = {"n": 0}

    async def scenario():
        clock = ManualClock()

        def opener():
            calls["n"] += 1
            if calls["n"] == 1:
                raise HardwareError("camera A", "no answer")
            return factory.open_camera(CFG, "A", clock)

        r, _ = runner(clock, opener)
        assert not await r.open()
        r.set_scheduled(True)
        assert r.state == "error"
        clock.advance(BACKOFF_START_S)
        assert await r.capture(clock.time())
        return r

    r = asyncio.run(scenario())
    assert states(r) == ["error", "recovering", "continuous"]
    assert calls["n"] == 2


def test_backend_restart_goes_through_recovering():
    async def scenario():
        clock = ManualClock()
        r, _ = runner(clock)
        await r.open()
        r.set_scheduled(True)
        first = r.device
        assert await r.restart()
        return r, first

    r, first = asyncio.run(scenario())
    assert states(r) == ["idle", "continuous", "recovering", "continuous"]
    assert r.device is not first


def test_no_device_is_absent_and_closing_it_changes_nothing():
    async def scenario():
        r, _ = runner(ManualClock(), lambda: None, key="S")
        assert not await r.open()
        r.set_scheduled(True)
        await r.close()
        return r

    r = asyncio.run(scenario())
    assert states(r) == ["absent"] and not r.usable


def test_only_the_event_loop_may_fire():
    async def scenario():
        r, _ = runner(ManualClock())
        await r.open()
        errors = []

        def from_thread():
            try:
                r.machine.fire("start_continuous")
            except RuntimeError as e:
                errors.append(e)

        t = threading.Thread(target=from_thread)
        t.start()
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        return r, errors

    r, errors = asyncio.run(scenario())
    assert len(errors) == 1 and r.state == "idle"


def test_a_trigger_the_state_refuses_is_not_fired():
    async def scenario():
        r, _ = runner(ManualClock())
        await r.open()
        fired = r.machine.fire_if("reopened")
        with pytest.raises(MachineError):  # fire: an illegal trigger raises, on every machine alike
            r.machine.fire("reopened")
        return fired, r.state

    assert asyncio.run(scenario()) == (False, "idle")


@pytest.mark.parametrize("kind", ["Plume", "Test"])
def test_a_failed_single_capture_leaves_the_device_in_error(kind):
    async def scenario():
        clock = ManualClock()
        r, _ = runner(clock)
        await r.open()
        r.device.inject_fault("unplug")
        assert await r.capture(None, kind) is None
        return r

    r = asyncio.run(scenario())
    assert states(r) == ["idle", "single", "unplugged"]


def test_darks_use_the_device_protocol_cover_where_the_device_has_one():
    """Darks are a capability of the device protocol (set_dark), not attributes probed by name: the sim camera's
    frames are covered during the series only; a device without a cover still takes its series (at night)."""
    from controller.hardware.interfaces import Camera

    class NoCover:
        """A camera with no way to take darks but the time of day (like the Pi camera)."""

        band = "A"

        def __init__(self, inner):
            self.inner = inner
            self.asked: list[bool] = []

        def set_exposure(self, exposure_us: int) -> int:
            return self.inner.set_exposure(exposure_us)

        def set_gain(self, gain: float) -> float:
            return self.inner.set_gain(gain)

        def capture(self):
            return self.inner.capture()

        def set_dark(self, dark: bool) -> bool:
            self.asked.append(dark)
            return False

        def close(self) -> None:
            self.inner.close()

    async def scenario(opener=None):
        clock = ManualClock()
        r, sink = runner(clock, opener=opener and (lambda: opener(clock)))
        await r.open()
        assert await r.capture(None, "Plume")
        darks = await r.dark_series()
        assert await r.capture(None, "Plume")
        return r, darks

    r, darks = asyncio.run(scenario())
    covered = [d["dark"] for _, event, d in r.device.history if event == "capture"]
    assert darks and covered == [False] + [True] * len(darks) + [False]
    plain, darks = asyncio.run(scenario(lambda clock: NoCover(factory.open_camera(CFG, "A", clock))))
    assert isinstance(plain.device, Camera) and darks and plain.device.asked == [True]
