"""The stop is always inside the units' TimeoutStopSec (issue 11, finding 6: one shutdown took 125 s): every
closing step has a deadline and the whole stop a budget, so a hung device or a slave that never answers cannot
hold it."""

from __future__ import annotations

import asyncio
import re

from structlog.testing import capture_logs

from controller.supervisor.base import SHUTDOWN_BUDGET_S, STOP_RESERVE_S, STOP_STEP_LIMIT_S
from tests.controller.supervisor.conftest import run_async, wait_for


async def _hang_forever(*args, **kwargs) -> None:
    await asyncio.Event().wait()


async def _acquiring(station):
    pair = station(factor=10.0)
    master, slave = pair.master(), pair.slave()
    tasks = [asyncio.create_task(master.run()), asyncio.create_task(slave.run())]
    await wait_for(lambda: master.station.state == "acquire" and slave.station.state == "acquire", 30, "acquire")
    return master, slave, tasks


def test_shutdown_budget_is_well_inside_the_units_timeout_stop_sec(repo_root):
    for unit in ("pycam-master.service", "pycam-slave.service"):
        text = (repo_root / "systemd" / unit).read_text()
        limit = float(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))
        assert SHUTDOWN_BUDGET_S + 10 <= limit, unit
    assert STOP_STEP_LIMIT_S < STOP_RESERVE_S < SHUTDOWN_BUDGET_S


@run_async
async def test_a_hung_device_cannot_hold_the_shutdown(station):
    master, slave, tasks = await _acquiring(station)
    try:
        master.stop_step_limit_s = 0.5
        master.devices["A"].close = _hang_forever  # the vendor library never returns from close
        with capture_logs() as logs:
            master.request_stop("test over")
            await asyncio.wait_for(asyncio.gather(*tasks), 60)  # a safety net, not the figure under test
    finally:
        for t in tasks:
            t.cancel()
    timeouts = [e for e in logs if e["event"] == "shutdown_step_timeout"]
    assert [e["step"] for e in timeouts] == ["devices"]
    assert master.station.state == "off" and slave.station.state == "off"


@run_async
async def test_a_stop_that_would_run_past_the_budget_is_cut_at_the_budget(station):
    master, slave, tasks = await _acquiring(station)
    try:
        master.shutdown_budget_s = 1.0
        master.handoff.stop_slave = _hang_forever  # the slave never confirms, the halt line never helps
        with capture_logs() as logs:
            master.request_stop("test over")
            await asyncio.wait_for(tasks[0], 60)  # a safety net, not the figure under test
        slave.request_stop("test over")
        await asyncio.wait_for(tasks[1], 60)
    finally:
        for t in tasks:
            t.cancel()
    assert any(e["event"] == "shutdown_over_budget" and e["budget_s"] == 1.0 for e in logs)
