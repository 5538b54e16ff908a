"""GPIO lines that are busy at start or cannot load: classified, retried with backoff, never a crash or a silent day."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import lgpio
import pytest
import structlog
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from controller.config import Config
from controller.errors import DeviceUnavailable
from controller.hardware.gpio import GpioBusy, GpioPowerLines, gpio_error
from controller.hardware.gpio_service import PowerLinesService

CFG = Config().gpio


class LgpioBusyFactory(MockFactory):
    """A pin factory whose lines raise the real `lgpio.error('GPIO busy')` while `busy` (another process holds them),
    as gpiozero's LGPIOPin does when lgpio.gpio_claim_output fails."""

    def __init__(self):
        super().__init__()
        self.busy = True
        self.slave_pin = MockFactory.pin(self, CFG.slave_wake_pin)

    def pin(self, spec, pin_class=None, **kwargs):
        if self.busy:
            raise lgpio.error("GPIO busy")
        if spec in (CFG.wake_pin, str(CFG.wake_pin)) and pin_class is None:
            return super().pin(spec, pin_class=MockConnectedPin, input_pin=self.slave_pin)
        return super().pin(spec, pin_class=pin_class, **kwargs)


def test_line_held_by_another_device_is_gpio_busy():
    factory = MockFactory()
    holder = DigitalOutputDevice(CFG.halt_pin, pin_factory=factory)  # e.g. the hook still pulsing it
    with pytest.raises(GpioBusy, match="gpio: line busy"):
        GpioPowerLines(CFG, factory=factory)
    holder.close()
    lines = GpioPowerLines(CFG, factory=factory)  # the wake line was released when the halt line failed
    lines.close()


def test_lgpio_busy_and_other_lgpio_errors_are_classified():
    assert isinstance(gpio_error(lgpio.error("GPIO busy")), GpioBusy)
    other = gpio_error(lgpio.error("can not open gpiochip"))
    assert type(other) is DeviceUnavailable and "can not open gpiochip" in str(other)
    assert gpio_error(ValueError("x")) is None
    with pytest.raises(GpioBusy):
        GpioPowerLines(CFG, factory=LgpioBusyFactory())


def test_lgpio_that_cannot_create_its_notification_pipe_names_lg_wd(tmp_path):
    """The real lgpio, imported with LG_WD pointing nowhere (the unit's runtime directory missing)."""
    script = textwrap.dedent("""\
        import json
        from controller.hardware.gpio import make_pin_factory
        from controller.errors import DeviceUnavailable
        try:
            make_pin_factory("lgpio")
            print(json.dumps({"error": None}))
        except DeviceUnavailable as e:
            print(json.dumps({"error": str(e)}))
        """)
    env = {**os.environ, "LG_WD": str(tmp_path / "missing")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    error = json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert error is not None and ".lgd-nfy" in error and "set LG_WD to a writable directory" in error


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_busy_line_at_start_is_retried_until_free_and_then_pulses():
    factory = LgpioBusyFactory()
    faults = []
    log = structlog.get_logger("test")

    async def main():
        svc = PowerLinesService(lambda: GpioPowerLines(CFG, factory=factory), log,
                                lambda kind, info: faults.append((kind, info)), backoff_s=(0.01,))  # fmt: skip
        with structlog.testing.capture_logs() as logs:
            await svc.start()
            assert svc.state == "busy" and svc.lines is None
            svc.pulse_wake(0.01)  # skipped with an error event, no exception
            while svc.attempts < 3:
                await asyncio.sleep(0.01)  # let a few retries fail while the hook holds the line
            factory.busy = False
            await svc.opened.wait()
            await asyncio.get_running_loop().run_in_executor(None, svc.pulse_wake, 0.01)
            status = svc.status()
            await svc.stop()
        return status, logs

    status, logs = _run(main())
    events = [e["event"] for e in logs]
    assert events.count("power_lines_unavailable") == 1 and events.count("power_lines_retry_failed") >= 2
    first = next(e for e in logs if e["event"] == "power_lines_unavailable")
    assert first["log_level"] == "error" and first["state"] == "busy" and "GPIO busy" in first["error"]
    assert "gpio_pulse_skipped" in events and "power_lines_open" in events
    assert faults == [("power_lines_unavailable", {"state": "busy", "error": "gpio: line busy: GPIO busy"})]
    assert status["state"] == "open" and status["attempts"] >= 4
    assert [s.state for s in factory.slave_pin.states] == [True, False, True]  # the wake pulse reached the slave


def test_lgpio_that_cannot_load_is_a_fault_retried_not_a_crash():
    attempts = []

    def opener():
        attempts.append(1)
        raise DeviceUnavailable("gpio", "pin factory 'lgpio' unavailable: [Errno 2] '.lgd-nfy-3'")

    slept = []

    async def sleep(s):
        slept.append(s)
        if len(slept) >= 4:
            await asyncio.Event().wait()  # park: the test stops the service
        await asyncio.sleep(0)

    async def main():
        svc = PowerLinesService(opener, structlog.get_logger("test"), None, backoff_s=(1, 2, 5), sleep=sleep)
        with structlog.testing.capture_logs() as logs:
            await svc.start()
            while len(slept) < 4:
                await asyncio.sleep(0.01)
            status = svc.status()
            await svc.stop()
        return status, logs

    status, logs = _run(main())
    assert slept == [1, 2, 5, 5]  # backoff, capped at its last step
    assert status["state"] == "unavailable" and status["attempts"] == 4 and ".lgd-nfy" in status["last_error"]
    assert [e["event"] for e in logs].count("power_lines_unavailable") == 1


def test_mock_backend_opens_at_once():
    from controller.hardware.factory import open_power_lines

    async def main():
        svc = PowerLinesService(lambda: open_power_lines(Config()), structlog.get_logger("test"))
        await svc.start()
        state = svc.state
        await svc.stop()
        return state, svc.state

    assert _run(main()) == ("open", "closed")


def test_failed_open_leaves_no_pin_reservation_behind():
    """gpiozero reserves a pin before claiming it: a half-built device kept alive by the traceback would make every
    retry fail with GPIOPinInUse until the garbage collector ran."""
    import gc

    factory = LgpioBusyFactory()
    gc.disable()
    try:
        for _ in range(2):
            with pytest.raises(GpioBusy):
                GpioPowerLines(CFG, factory=factory)
        factory.busy = False
        GpioPowerLines(CFG, factory=factory).close()
    finally:
        gc.enable()
