"""One schedule (controller/schedule.py): the supervisor asks it for windows and solar elevation, so the station
acquires exactly when `pycam schedule show` says it is in its window."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from controller.schedule import StationSchedule
from tests.controller.supervisor.conftest import run_async, wait_for

# Villarrica, 06:00 UTC on 2024-06-01: night (about 02:00 local), the sun far below the horizon.
VILLARRICA = {"latitude_deg": -39.42, "longitude_deg": -71.93}
NIGHT = datetime(2024, 6, 1, 6, 0, tzinfo=UTC).timestamp()
ALL_DAY = {"windows_utc": [["00:00", "24:00"]], "min_solar_elevation_deg": 10.0}


@run_async
async def test_the_station_sleeps_at_night_below_the_minimum_solar_elevation(station, tmp_path):
    """Regression: the supervisor had its own window code that ignored schedule.min_solar_elevation_deg, so at
    Villarrica at 06:00 UTC (night) the station acquired while `pycam schedule` said it was outside its window."""
    pair = station(factor=20.0, start=NIGHT, station=VILLARRICA, schedule=ALL_DAY)
    assert not StationSchedule(pair.master_cfg).in_window(NIGHT)  # what `pycam schedule show` answers
    master = pair.master()
    task = asyncio.create_task(master.run())
    await wait_for(lambda: master.station.state == "sleep", 20, "sleep")
    assert master.plan is None and master.devices["A"].captures == 0
    master.request_stop("test over")
    await asyncio.wait_for(task, 30)
    visited = [new for _, _, new, _ in master.station.history]
    assert "acquire" not in visited and "degraded" not in visited and visited[-1] == "off"


def test_the_window_the_supervisor_plans_is_the_one_the_schedule_command_shows(tmp_path):
    """By day the plan runs from the solar crossing (not the configured 00:00) to the next one, and the CLI agrees."""
    from tests.controller.supervisor.conftest import station_config

    cfg = station_config(tmp_path, "master", 1, 2, station=VILLARRICA, schedule=ALL_DAY)
    noon = datetime(2024, 6, 1, 16, 30, tzinfo=UTC).timestamp()  # local noon, winter: the sun ~27 deg high
    start, end = StationSchedule(cfg).window_bounds(noon)
    sched = StationSchedule(cfg)
    assert sched.in_window(start) and not sched.in_window(start - 2.0)
    assert sched.in_window(end - 2.0) and not sched.in_window(end)
    assert start > noon - 12 * 3600 and end < noon + 12 * 3600
    assert sched.window_bounds(NIGHT) is None
    assert abs(sched.next_window_start(NIGHT) - start) <= 1.0  # both found by bisection to 1 s
