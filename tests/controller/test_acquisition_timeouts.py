"""Time limits on device calls: a vendor call that hangs (rather than raising) is a DeviceTimeout, its thread is
never reused, and the device goes through its normal error -> recovering path."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from controller.acquisition import BACKOFF_START_S, MAX_HUNG_CALLS, OPEN_FACTOR, DeviceCaller, DeviceRunner
from controller.config import config_from_dict
from controller.errors import DeviceTimeout
from controller.hardware import factory
from controller.timekeeping.clock import ManualClock

LIMIT_S = 0.1
CFG = config_from_dict(
    {
        "camera": {
            "backend": "sim", "width": 48, "height": 36, "saturation_rows": 6, "auto_exposure": False,
            "shutter_us": 1000, "call_timeout_s": LIMIT_S,
        },
        "spectrometer": {"backend": "sim", "call_timeout_s": LIMIT_S, "integration_ms": 10, "auto_integration": False},
        "logging": {"format": "console", "level": "info"},
    }
)  # fmt: skip


class Stored:
    def __init__(self):
        self.names: list[str] = []

    async def __call__(self, record, data: bytes) -> None:
        name = str(record)  # the runner hands the parsed name on as a record
        self.names.append(name)


def _states(r: DeviceRunner) -> list[str]:
    return [new for _, _, new, _ in r.machine.history]


def test_a_hung_call_times_out_and_its_thread_is_never_reused():
    release = threading.Event()
    late: list[str] = []
    late_done = threading.Event()

    def on_late(result: str) -> None:
        late.append(result)
        late_done.set()

    def hang() -> str:
        release.wait(30)
        return threading.current_thread().name + "@" + str(threading.get_ident())

    def ident() -> int:
        return threading.get_ident()

    async def scenario():
        caller = DeviceCaller("camera A")
        first = await caller.call(30.0, ident)  # healthy calls: the limit is a safety net
        assert await caller.call(30.0, ident) == first  # a healthy thread serves the device's calls in turn
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no answer within"):
            await caller.call(LIMIT_S, hang, late=on_late)
        waited = time.monotonic() - t0
        # It gave up at its limit while the device still hung (not when the device answered).
        assert not release.is_set() and not late_done.is_set()
        assert caller.hung == 1 and caller.timeouts == 1
        second = await caller.call(30.0, ident)  # a fresh thread: the stuck one gets nothing more
        assert second != first
        for _ in range(MAX_HUNG_CALLS - 1):
            with pytest.raises(DeviceTimeout):
                await caller.call(LIMIT_S, hang)
        # Too many calls stuck in the library: the next one waits (within its limit) for one of them to return
        # instead of tying up another thread, and fails when none does.
        with pytest.raises(DeviceTimeout, match="still hung"):
            await caller.call(LIMIT_S, ident)
        assert caller.hung == MAX_HUNG_CALLS
        loop = asyncio.get_running_loop()
        loop.call_later(LIMIT_S, release.set)  # the device answers again while the next call waits
        assert await caller.call(30.0, ident)  # served once a hung call returned (30 s: a safety net only)
        assert release.is_set()
        # Both hung threads were released; each is forgotten once it has returned (the second may still be returning).
        await loop.run_in_executor(None, _wait_until, lambda: caller.hung == 0)
        caller.shutdown()
        return waited

    waited = asyncio.run(scenario())
    assert waited >= LIMIT_S  # no upper bound in wall time: on a busy machine it only measures the load
    assert late_done.wait(10)
    assert len(late) == 1  # the timed-out call's late result went to its `late` hook, not to the caller


def _wait_until(predicate, timeout_s: float = 10.0) -> None:
    done = threading.Event()
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        done.wait(0.01)
    assert predicate()


@pytest.mark.parametrize("key", ["A", "S"])
def test_a_stalled_device_is_in_error_within_its_limit_and_back_after_replug(key):
    async def scenario():
        clock = ManualClock()
        scene = factory.make_scene(CFG)  # one sim world: the stall in the device's plug survives its reopen
        if key == "S":
            opener = lambda: factory.open_spectrometer(CFG, clock, scene=scene)  # noqa: E731
        else:
            opener = lambda: factory.open_camera(CFG, key, clock, scene=scene)  # noqa: E731
        sink = Stored()
        r = DeviceRunner(key, opener, lambda: CFG, clock, sink)
        assert await r.open()
        r.set_scheduled(True)
        assert await r.capture(clock.time())
        r.device.stall_timeout_s = 30.0  # the device itself would wait far longer than our limit
        plug = r.device.plug
        plug.inject("stall")
        assert await r.capture(clock.time()) is None
        # It gave up at its limit while the device still stalled (30 s), not when the device returned.
        assert r._caller.hung >= 1
        assert r.state == "error" and "no answer within" in r.last_error
        clock.advance(BACKOFF_START_S)
        assert await r.capture(clock.time()) is None  # the probe: still stalled
        plug.inject("replug")
        clock.advance(BACKOFF_START_S * 2)
        assert await r.capture(clock.time())
        info = r.info()
        await r.close()
        return r, sink, info

    r, sink, info = asyncio.run(scenario())
    assert _states(r) == ["idle", "continuous", "error", "recovering", "error", "recovering", "continuous", "closed"]
    assert len(sink.names) == 2 and info["timeouts"] == 2


def test_an_open_that_hangs_is_an_error_and_the_late_device_is_released():
    release = threading.Event()
    answered = threading.Event()
    opened: list = []

    async def scenario():
        clock = ManualClock()

        def opener():
            dev = factory.open_camera(CFG, "A", clock)
            opened.append(dev)
            if len(opened) == 1:
                release.wait(30)  # the vendor library never answers this first open
                answered.set()
            return dev

        r = DeviceRunner("A", opener, lambda: CFG, clock, Stored())
        t0 = time.monotonic()
        assert not await r.open()
        took = time.monotonic() - t0
        assert not answered.is_set()  # given up at the limit, while the library still hung
        assert r.state == "error" and r.device is None
        release.set()
        await asyncio.get_running_loop().run_in_executor(None, _wait_until, lambda: opened[0]._closed)
        r.set_scheduled(True)
        clock.advance(BACKOFF_START_S)
        assert await r.capture(clock.time())
        return r, took

    r, took = asyncio.run(scenario())
    assert took >= OPEN_FACTOR * LIMIT_S  # no upper bound in wall time (a busy machine): `answered` says it
    assert _states(r) == ["error", "recovering", "continuous"]
    assert r.device is opened[1] and not opened[1]._closed


def test_capture_limit_follows_the_exposure_in_force():
    cfg = config_from_dict({"camera": {"backend": "sim", "shutter_us": 2_000_000, "call_timeout_s": 5.0}})
    r = DeviceRunner("A", lambda: None, lambda: cfg, ManualClock(), Stored())
    assert r.capture_limit_s() == pytest.approx(3 * 2.0 + 5.0)
    assert r.capture_limit_s(exposure=6_000_000) == pytest.approx(3 * 6.0 + 5.0)  # a long dark
    s = DeviceRunner("S", lambda: None, lambda: cfg, ManualClock(), Stored())
    spec = cfg.spectrometer
    assert s.capture_limit_s() == pytest.approx(3 * spec.integration_ms * spec.coadd / 1000 + 10.0)
