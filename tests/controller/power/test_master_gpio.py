"""A master whose GPIO line is busy at start (the WittyPi hook still holds it) goes on, retries, and reports it."""

from __future__ import annotations

import asyncio
import json

from gpiozero import DigitalOutputDevice

from controller.hardware import factory
from controller.hardware.gpio import GpioPowerLines, mock_station_factory
from tests.controller.supervisor.conftest import run_async, station, wait_for  # noqa: F401 - fixture


@run_async
async def test_busy_gpio_line_at_start_is_no_crash_and_is_retried(station, monkeypatch):  # noqa: F811
    pair = station(factor=10.0)
    pin_factory, _slave_pin = mock_station_factory(pair.master_cfg.gpio)
    holder = DigitalOutputDevice(pair.master_cfg.gpio.halt_pin, pin_factory=pin_factory)  # the hook's pulse
    monkeypatch.setattr(factory, "open_power_lines", lambda cfg, **kw: GpioPowerLines(cfg.gpio, factory=pin_factory))
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    try:
        await wait_for(lambda: master.station.state == "acquire", 60, "acquire with the line busy")
        assert master.power_lines.status()["state"] == "busy"
        assert master.fault_counts["power_lines_unavailable"] == 1
        holder.close()  # the hook let go of the line
        await asyncio.wait_for(master.power_lines.opened.wait(), 30)
        master.status.write_now()
        status = json.loads(master.status.path.read_text())
        assert status["power_lines"]["state"] == "open" and status["power_lines"]["attempts"] >= 2
        assert "power_board" in status and status["power_board"]["board"] is None  # no I2C here: said why
        assert status["power_board"]["problem"]
        assert not any(t.done() for t in tasks)  # neither supervisor crashed
    finally:
        master.request_stop("test over")
        slave.request_stop("test over")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
