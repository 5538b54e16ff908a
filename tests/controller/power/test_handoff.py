"""Power handoff with gpiozero's MockFactory: master GPIO 23 wired to the slave's GPIO 3 (MockConnectedPin).

Assertions are on the pins' recorded state history (levels and pulse lengths), not on sleeps.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog
from gpiozero import Button
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from controller.config import GpioConfig, config_from_dict
from controller.errors import LinkError
from controller.hardware.gpio import GpioPowerLines
from controller.power import PowerHandoff, slave_stop_handler
from controller.timekeeping.clock import ManualClock
from tests.states.table_checks import changes

PULSE_S = 0.05


class FakeLink:
    """Link-like: `connected`, `wait_connected`, `request`; the test decides what the slave does."""

    def __init__(self):
        self.connected = False
        self._up = asyncio.Event()
        self.requests: list[tuple[str, dict, float]] = []
        self.reply: dict | Exception = {"flushed": True, "stopping": True}

    def set_connected(self, up: bool) -> None:
        self.connected = up
        if up:
            self._up.set()
        else:
            self._up.clear()

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._up.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def request(self, kind: str, body: dict, timeout_s: float) -> dict:
        self.requests.append((kind, body, timeout_s))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


class Rig:
    """Master lines + a slave whose GPIO 3 'boots' the slave (brings the link up) after `boots_after` pulses."""

    def __init__(self, boots_after: int | None = 1, wake_retries: int = 2):
        self.factory = MockFactory()
        self.slave_pin = self.factory.pin(3)
        self.master_pin = self.factory.pin(23, pin_class=MockConnectedPin, input_pin=self.slave_pin)
        self.cfg = config_from_dict(
            {"gpio": {"pulse_s": PULSE_S}, "power": {"hello_timeout_s": 0.1, "wake_retries": wake_retries}}
        )
        self.lines = GpioPowerLines(GpioConfig(wake_pin=23, halt_pin=16), factory=self.factory)
        self.link = FakeLink()
        self.falling_edges = 0
        self.boots_after = boots_after
        self.wake_button = Button(3, pin_factory=self.factory)  # the slave's view of its GPIO 3 (pulled up)
        self.wake_button.when_pressed = self._on_wake_edge

    def start(self) -> PowerHandoff:
        self.loop = asyncio.get_running_loop()
        return PowerHandoff(self.lines, self.cfg, ManualClock(), self.link, halt_grace_s=0.0)

    def _on_wake_edge(self) -> None:
        # Runs in the thread that pulled the line (the executor): hand over to the loop.
        self.falling_edges += 1
        if self.boots_after is not None and self.falling_edges >= self.boots_after:
            self.loop.call_soon_threadsafe(self.link.set_connected, True)

    def low_pulses(self, pin) -> list[float]:
        """Lengths (s) of the low periods in a pin's history (MockPin timestamps are deltas)."""
        states = pin.states
        # A master output pin starts as an unconfigured MockPin (low) until the device drives it idle-high.
        while states and not states[0].state:
            states = states[1:]
        return [b.timestamp for a, b in zip(states, states[1:], strict=False) if not a.state and b.state]

    def close(self) -> None:
        self.wake_button.close()
        self.lines.close()


@pytest.fixture
def rig_factory():
    rigs = []

    def make(**kw) -> Rig:
        rigs.append(Rig(**kw))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_wake_pulse_reaches_the_slave_pin_and_the_slave_says_hello(rig_factory):
    rig = rig_factory(boots_after=1)

    async def main():
        handoff = rig.start()
        return handoff, await handoff.wake_slave()

    with structlog.testing.capture_logs() as logs:
        handoff, ok = asyncio.run(main())
    assert ok and handoff.state == "up"
    assert [s.state for s in rig.slave_pin.states] == [True, False, True]
    (low,) = rig.low_pulses(rig.slave_pin)
    assert PULSE_S <= low < PULSE_S + 0.05
    assert changes(logs, "power") == [("slave_off", "waking", "wake"), ("waking", "up", "hello")]


def test_second_pulse_wakes_a_slave_that_missed_the_first(rig_factory):
    rig = rig_factory(boots_after=2)

    async def main():
        handoff = rig.start()
        return handoff, await handoff.wake_slave()

    handoff, ok = asyncio.run(main())
    assert ok and handoff.pulses == 2
    assert len(rig.low_pulses(rig.slave_pin)) == 2


def test_slave_never_wakes_bounded_retries_then_failed(rig_factory):
    rig = rig_factory(boots_after=None, wake_retries=2)

    async def main():
        handoff = rig.start()
        # Start-up never blocks forever: the whole attempt is bounded by (1 + retries) x (pulse + timeout).
        ok = await asyncio.wait_for(handoff.wake_slave(), 60.0)  # returns: forever would hit this net
        return handoff, ok

    with structlog.testing.capture_logs() as logs:
        handoff, ok = asyncio.run(main())
    assert ok is False and handoff.state == "failed"
    # The pin's recorded history: three separate low pulses, each asked for PULSE_S and at least that long (an
    # upper bound in wall time would only measure how busy the machine is).
    pulses = rig.low_pulses(rig.slave_pin)
    assert len(pulses) == 3 and all(p >= PULSE_S * 0.95 for p in pulses)  # 5 %: the timer's granularity
    assert [e["seconds"] for e in logs if e["event"] == "wake_pulse"] == [PULSE_S] * 3
    assert changes(logs, "power") == [("slave_off", "waking", "wake"), ("waking", "failed", "hello_timeout")]
    assert any(e["event"] == "slave_never_woke" for e in logs)


def test_already_connected_slave_gets_no_pulse(rig_factory):
    rig = rig_factory()

    async def main():
        handoff = rig.start()
        rig.link.set_connected(True)
        return handoff, await handoff.wake_slave()

    handoff, ok = asyncio.run(main())
    assert ok and handoff.state == "up"
    assert rig.low_pulses(rig.slave_pin) == []


def test_stop_over_the_link_waits_for_flushed_and_leaves_the_halt_line_alone(rig_factory):
    rig = rig_factory()

    async def main():
        handoff = rig.start()
        await handoff.wake_slave()
        return handoff, await handoff.stop_slave()

    handoff, ok = asyncio.run(main())
    assert ok and handoff.state == "slave_off"
    assert [r[0] for r in rig.link.requests] == ["stop"]
    assert rig.low_pulses(rig.factory.pin(16)) == []


def test_stop_reply_not_flushed_is_reported(rig_factory):
    rig = rig_factory()
    rig.link.reply = {"flushed": False, "pending": 3}

    async def main():
        handoff = rig.start()
        await handoff.wake_slave()
        return handoff, await handoff.stop_slave()

    handoff, ok = asyncio.run(main())
    assert ok is False and handoff.state == "slave_off"


@pytest.mark.parametrize("how", ["link_down", "request_fails", "never_woke"])
def test_stop_without_a_working_link_pulses_the_halt_line(rig_factory, how):
    rig = rig_factory(boots_after=None if how == "never_woke" else 1, wake_retries=0)

    async def main():
        handoff = rig.start()
        await handoff.wake_slave()
        if how == "link_down":
            rig.link.set_connected(False)
        elif how == "request_fails":
            rig.link.reply = LinkError("timed out waiting for the reply")
        return handoff, await handoff.stop_slave()

    with structlog.testing.capture_logs() as logs:
        handoff, ok = asyncio.run(main())
    assert ok is False and handoff.state == "slave_off"
    (halt,) = rig.low_pulses(rig.factory.pin(16))
    assert PULSE_S <= halt < PULSE_S + 0.05
    power = [new for _, new, _ in changes(logs, "power")]
    assert power[-2:] == ["halting", "slave_off"]


def test_slave_stop_handler_flushes_before_replying_then_stops():
    events = []

    async def flush(timeout_s):
        events.append(("flush", timeout_s))
        return True

    async def on_stopped():
        events.append(("stopped",))

    async def main():
        handler = slave_stop_handler(flush, on_stopped)
        reply = await handler({"timeout_s": 10.0})
        events.append(("replied", reply))
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert events[0] == ("flush", 8.0)
    assert events[1] == ("replied", {"flushed": True, "stopping": True})
    assert events[2] == ("stopped",)


def test_lines_close_is_idempotent():
    factory = MockFactory()
    lines = GpioPowerLines(GpioConfig(wake_pin=23, halt_pin=16), factory=factory)
    lines.close()
    lines.close()
