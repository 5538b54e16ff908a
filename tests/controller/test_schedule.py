"""Slots, windows, solar position, dark series and the WittyPi schedule."""

from __future__ import annotations

import calendar
from datetime import date

import pytest

from controller.config import config_from_dict
from controller.errors import ConfigError
from controller.schedule import (
    SlotSchedule,
    StationSchedule,
    in_window,
    next_dark_time,
    next_window_change,
    parse_wittypi_schedule,
    solar_elevation,
    solar_position,
    wittypi_schedule,
)


def utc(*args) -> float:
    return float(calendar.timegm((*args, *([0] * (6 - len(args))), 0, 0, 0)[:9]))


def cfg(**schedule):
    return config_from_dict({"schedule": schedule, "station": {"latitude_deg": -39.42, "longitude_deg": -71.93}})


# ---------------------------------------------------------------------------------------------------------- slots


@pytest.mark.parametrize("period", [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60])
def test_every_minute_starts_a_slot(period):
    slots = SlotSchedule(period)
    t_minute = utc(2024, 11, 14, 12, 34)
    k, t = slots.next_slot(t_minute - 0.3)
    assert t == t_minute and slots.slot_index(t_minute) == k
    assert slots.slots_per_minute() * period == 60


@pytest.mark.parametrize("period", [7, 0.7, 45, 0])
def test_periods_that_do_not_divide_a_minute_are_refused(period):
    with pytest.raises(ConfigError, match="period_s"):
        SlotSchedule(period)


def test_next_slot_never_repeats_a_slot_when_woken_early():
    slots = SlotSchedule(4)
    k, t = slots.next_slot(utc(2024, 1, 1, 0, 0, 1))
    assert t == utc(2024, 1, 1, 0, 0, 4)
    early = t - 0.002  # a timer that fired 2 ms early, after capturing slot k
    assert slots.next_slot(early) == (k, t)
    assert slots.next_slot(early, after=k) == (k + 1, t + 4)


# ------------------------------------------------------------------------------------------------------------ sun


def test_declination_and_equation_of_time_at_known_dates():
    june = solar_position(utc(2024, 6, 20, 20, 51), 0, 0)  # June solstice 2024
    december = solar_position(utc(2024, 12, 21, 9, 20), 0, 0)
    assert june["declination_deg"] == pytest.approx(23.44, abs=0.02)
    assert december["declination_deg"] == pytest.approx(-23.44, abs=0.02)
    # The equation of time peaks near -14.2 min (11-12 Feb) and +16.4 min (3 Nov).
    assert solar_position(utc(2024, 2, 11, 12), 0, 0)["equation_of_time_min"] == pytest.approx(-14.2, abs=0.2)
    assert solar_position(utc(2024, 11, 3, 12), 0, 0)["equation_of_time_min"] == pytest.approx(16.4, abs=0.2)


def test_sun_overhead_at_the_equator_at_equinox_noon():
    # 2024-03-20, equation of time about -7.5 min: solar noon at lon 0 near 12:07:30 UTC.
    pos = solar_position(utc(2024, 3, 20, 12, 7, 30), 0.0, 0.0)
    assert pos["elevation_deg"] == pytest.approx(90 - abs(pos["declination_deg"]), abs=0.1)
    assert pos["elevation_deg"] > 89.5


def test_sunrise_and_sunset_in_london_at_midsummer():
    # Almanac: London 2024-06-21 sunrise 04:43 BST (03:43 UTC), sunset 21:21 BST (20:21 UTC); sunrise/sunset are
    # defined at a geometric elevation of -0.833 deg (refraction + the sun's radius).
    lat, lon = 51.5074, -0.1278
    for t in (utc(2024, 6, 21, 3, 43, 30), utc(2024, 6, 21, 20, 21, 30)):
        assert solar_position(t, lat, lon)["elevation_deg"] == pytest.approx(-0.833, abs=0.25)
    assert solar_elevation(utc(2024, 6, 21, 12, 2), lat, lon) == pytest.approx(90 - 51.5074 + 23.44, abs=0.1)


# -------------------------------------------------------------------------------------------------------- windows


def test_in_window_with_one_and_two_windows_and_across_midnight():
    one = cfg(windows_utc=[["11:00", "23:00"]])
    assert in_window(utc(2024, 5, 1, 11, 0), one) and not in_window(utc(2024, 5, 1, 23, 0), one)
    two = cfg(windows_utc=[["06:00", "09:00"], ["14:00", "18:00"]])
    assert [in_window(utc(2024, 5, 1, h), two) for h in (5, 7, 10, 15, 19)] == [False, True, False, True, False]
    wrap = cfg(windows_utc=[["22:00", "02:00"]])
    assert in_window(utc(2024, 5, 1, 23), wrap) and in_window(utc(2024, 5, 2, 1), wrap)
    assert not in_window(utc(2024, 5, 2, 3), wrap)


def test_minimum_solar_elevation_narrows_the_window():
    # Villarrica in late May (austral winter): sun low; the whole-day window is cut to the hours of daylight.
    c = cfg(windows_utc=[["00:00", "24:00"]], min_solar_elevation_deg=10.0)
    noon = utc(2024, 5, 29, 16, 45)  # local solar noon near 16:45 UTC at lon -72
    assert in_window(noon, c)
    assert not in_window(utc(2024, 5, 29, 4), c)
    start = next_window_change(utc(2024, 5, 29, 4), c)
    assert start is not None and start < noon
    assert solar_elevation(start, -39.42, -71.93) == pytest.approx(10.0, abs=0.05)
    end = next_window_change(noon, c)
    assert end > noon and solar_elevation(end, -39.42, -71.93) == pytest.approx(10.0, abs=0.05)


def test_next_window_change_and_dark_time_plain():
    c = cfg(windows_utc=[["06:00", "09:00"], ["14:00", "18:00"]], dark_time_utc="18:10")
    assert next_window_change(utc(2024, 5, 1, 7), c) == utc(2024, 5, 1, 9)
    assert next_window_change(utc(2024, 5, 1, 9), c) == utc(2024, 5, 1, 14)
    assert next_window_change(utc(2024, 5, 1, 19), c) == utc(2024, 5, 2, 6)
    assert next_dark_time(utc(2024, 5, 1, 7), c) == utc(2024, 5, 1, 18, 10)
    assert next_dark_time(utc(2024, 5, 1, 18, 10), c) == utc(2024, 5, 2, 18, 10)
    assert StationSchedule(c).slots.period_s == 4.0


# -------------------------------------------------------------------------------------------------------- WittyPi


def _on_minutes(text):
    begin, steps = parse_wittypi_schedule(text)
    assert sum(m for _, m in steps) == 1440, "one day per cycle"
    spans, t = [], begin.hour * 60 + begin.minute
    for kind, minutes in steps:
        if kind == "ON":
            spans.append((t % 1440, (t + minutes)))
        t += minutes
    return begin, steps, spans


def test_wittypi_schedule_one_window():
    c = cfg(windows_utc=[["11:00", "23:00"]], dark_time_utc="23:10", wittypi_margin_min=10, process_min=30)
    text = wittypi_schedule(c, begin=date(2025, 1, 1))
    begin, steps, spans = _on_minutes(text)
    assert f"{begin:%Y-%m-%d %H:%M}" == "2025-01-01 10:50"
    assert [k for k, _ in steps] == ["ON", "OFF"]
    assert spans == [(10 * 60 + 50, 23 * 60 + 40)]  # wake 10 min early, off after darks + process
    assert "ON    H12 M50" in text and "OFF   H11 M10" in text and "END" in text


def test_wittypi_schedule_two_windows_and_a_window_across_midnight():
    c = cfg(windows_utc=[["06:00", "09:00"], ["14:00", "18:00"]], dark_time_utc="18:10", process_min=20)
    _, steps, spans = _on_minutes(wittypi_schedule(c, begin=date(2025, 1, 1)))
    assert spans == [(5 * 60 + 50, 9 * 60 + 20), (13 * 60 + 50, 18 * 60 + 30)]
    assert [k for k, _ in steps] == ["ON", "OFF", "ON", "OFF"]
    wrap = cfg(windows_utc=[["22:00", "02:00"]], dark_time_utc="02:05", process_min=15)
    begin, _, spans = _on_minutes(wittypi_schedule(wrap, begin=date(2025, 1, 1)))
    assert (begin.hour, begin.minute) == (21, 50) and spans == [(21 * 60 + 50, 24 * 60 + 2 * 60 + 20)]


def test_wittypi_schedule_refuses_a_day_without_off_time():
    with pytest.raises(ConfigError, match="whole day"):
        wittypi_schedule(cfg(windows_utc=[["00:00", "24:00"]]))


def test_schedule_cli_writes_the_wpi_file(tmp_path):
    from click.testing import CliRunner

    from controller.cli import main

    conf = tmp_path / "master.toml"
    conf.write_text('[schedule]\nwindows_utc = [["11:00", "23:00"]]\ndark_time_utc = "23:10"\n')
    out = tmp_path / "schedule.wpi"
    result = CliRunner().invoke(main, ["schedule", "wittypi", "--config", str(conf), "--out", str(out)])
    assert result.exit_code == 0, result.output
    _, steps, spans = _on_minutes(out.read_text())
    assert spans == [(10 * 60 + 50, 23 * 60 + 40)]
    shown = CliRunner().invoke(main, ["schedule", "show", "--config", str(conf), "--at", "2024-05-01T12:00:00"])
    assert shown.exit_code == 0 and "in window:         True" in shown.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[schedule]\nperiod_s = 7\n")
    result = CliRunner().invoke(main, ["schedule", "wittypi", "--config", str(bad)])
    assert result.exit_code != 0 and "schedule.period_s" in result.output
