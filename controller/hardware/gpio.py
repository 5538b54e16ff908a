"""The master's power-handoff GPIO lines through gpiozero.

Wiring (DESIGN.md): master GPIO 23 -> slave GPIO 3 (pulling GPIO 3 low wakes a halted Pi); master GPIO 16 -> the
slave's gpio-shutdown pin (low asks it to halt). Both lines are active low and idle high.
This module imports only the standard library and gpiozero (lazily), because the WittyPi hooks use it from root's
minimal environment (spec/known-failures.md: the original's hooks failed to import).
In simulation the pin factory is gpiozero's MockFactory; `mock_station_factory` wires master 23 to slave 3 with a
MockConnectedPin so tests read the slave pin's recorded `states`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from controller.config import GpioConfig
from controller.errors import DeviceUnavailable


class GpioBusy(DeviceUnavailable):
    """A line is held by someone else (the WittyPi hook pulsing it at start-up, another process): retry later."""


def gpio_error(e: BaseException) -> DeviceUnavailable | None:
    """The project's error for a gpiozero / lgpio failure, or None when `e` is neither.

    gpiozero raises GPIOPinInUse when a pin is reserved twice; lgpio raises `lgpio.error` ('GPIO busy' when the
    kernel line is claimed by another process, 'can not open gpiochip' ...), a plain Exception subclass.
    """
    lgpio = sys.modules.get("lgpio")
    is_lgpio = lgpio is not None and isinstance(e, getattr(lgpio, "error", ()))
    try:
        from gpiozero.exc import GPIOPinInUse, GPIOZeroError
    except ImportError:
        GPIOPinInUse = GPIOZeroError = ()  # noqa: N806 - gpiozero missing: only lgpio errors to classify
    text = str(e).strip("'\"")
    if isinstance(e, GPIOPinInUse) or (is_lgpio and "busy" in text.lower()):
        return GpioBusy("gpio", f"line busy: {text}")
    if is_lgpio or isinstance(e, GPIOZeroError):
        return DeviceUnavailable("gpio", text or type(e).__name__)
    return None


def make_pin_factory(backend: str):
    """The gpiozero pin factory for `backend` ("mock", "lgpio", "native"), imported lazily."""
    try:
        if backend == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if backend == "lgpio":
            # importing lgpio creates its notification pipe (.lgd-nfy*) in $LG_WD or the working directory
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if backend == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
    except (ImportError, OSError, RuntimeError) as e:
        hint = ""
        if ".lgd-nfy" in str(e):
            where = os.environ.get("LG_WD") or os.getcwd()
            hint = f" (lgpio cannot create its notification pipe in {where}: set LG_WD to a writable directory)"
        raise DeviceUnavailable("gpio", f"pin factory {backend!r} unavailable: {e}{hint}") from e
    except Exception as e:  # lgpio.error (a plain Exception) from opening the gpiochip
        err = gpio_error(e)
        if err is None:
            raise
        raise DeviceUnavailable("gpio", f"pin factory {backend!r} unavailable: {err}") from e
    raise DeviceUnavailable("gpio", f"unknown gpio backend {backend!r}")


def mock_station_factory(cfg: GpioConfig):
    """A MockFactory with master wake_pin connected to the slave's wake pin. Returns (factory, slave_pin)."""
    from gpiozero.pins.mock import MockConnectedPin, MockFactory

    factory = MockFactory()
    slave_pin = factory.pin(cfg.slave_wake_pin)
    factory.pin(cfg.wake_pin, pin_class=MockConnectedPin, input_pin=slave_pin)
    return factory, slave_pin


class _StdlibEvents:
    """structlog-style `info(event, **kw)` on a stdlib logger."""

    def __init__(self, log: logging.Logger):
        self._log = log

    def info(self, event: str, **kw: Any) -> None:
        self._log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in kw.items()))


class GpioPowerLines:
    """PowerLines on two active-low gpiozero outputs."""

    def __init__(self, cfg: GpioConfig, factory=None, logger: Any = None):
        from gpiozero import DigitalOutputDevice

        self.cfg = cfg
        self._lock = threading.Lock()  # one pulse at a time, whichever thread asks
        self.slave_pin = None
        owned = factory is None
        if factory is None:
            if cfg.backend == "mock":
                factory, self.slave_pin = mock_station_factory(cfg)
            else:
                factory = make_pin_factory(cfg.backend)
        self.factory = factory
        # structlog's bound logger in the supervisor; the stdlib logger in the hooks
        self._log = logger if logger is not None else _StdlibEvents(logging.getLogger("pycam.gpio"))
        self._wake = self._halt = None
        try:
            self._wake = DigitalOutputDevice(cfg.wake_pin, active_high=False, initial_value=False,
                                             pin_factory=factory)  # fmt: skip
            self._halt = DigitalOutputDevice(cfg.halt_pin, active_high=False, initial_value=False,
                                             pin_factory=factory)  # fmt: skip
        except Exception as e:  # gpiozero / lgpio errors are classified below; anything else is re-raised
            self.close()
            if owned:
                factory.close()  # release the gpiochip handle: the next attempt opens a fresh factory
            err = gpio_error(e)
            if err is None:
                raise
            # The traceback holds the half-built gpiozero device and with it its pin reservation (gpiozero reserves
            # before it claims the line): drop it, so the next attempt is not refused with GPIOPinInUse.
            e.__traceback__ = None
            raise err from None

    def _pulse(self, device, seconds: float, line: str) -> None:
        self._log.info("gpio_pulse", line=line, pin=device.pin.info.name if device.pin else None, seconds=seconds)
        # gpiozero times the pulse on its own thread; background=False returns when the pulse is over
        with self._lock:
            device.blink(on_time=seconds, off_time=0.0, n=1, background=False)

    def pulse_wake(self, seconds: float) -> None:
        self._pulse(self._wake, seconds, "wake")

    def pulse_halt(self, seconds: float) -> None:
        self._pulse(self._halt, seconds, "halt")

    def close(self) -> None:
        for device in (self._wake, self._halt):
            if device is not None:
                device.close()  # idempotent in gpiozero

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
