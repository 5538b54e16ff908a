"""When the station captures: slots, daily windows (UTC), solar elevation, the dark series, the WittyPi schedule.

All times are epoch seconds UTC on the master's clock. One config is the single source of truth: the supervisor
and `pycam schedule wittypi` read the same `[schedule]` section, so the power schedule and the acquisition window
cannot drift apart (and nothing depends on a local time zone or daylight saving).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from controller.errors import ConfigError

DAY_S = 86_400.0
_EPS = 1e-6


# --------------------------------------------------------------------------------------------------------- slots


class SlotSchedule:
    """Capture slots: slot k starts at k * period_s (epoch UTC). Periods divide 60 s, so every minute starts a slot
    and the master and slave agree on k and its time string."""

    def __init__(self, period_s: float):
        if period_s <= 0 or abs(60.0 / period_s - round(60.0 / period_s)) > 1e-9:
            raise ConfigError("schedule.period_s", f"{period_s} does not divide 60 s")
        self.period_s = float(period_s)

    def slot_time(self, k: int) -> float:
        return k * self.period_s

    def slot_index(self, t: float) -> int:
        """The slot whose period contains `t`."""
        return math.floor(t / self.period_s + _EPS)

    def next_slot(self, t: float, after: int | None = None) -> tuple[int, float]:
        """(k, slot_time) of the first slot starting at or after `t`, and after slot `after` when given (so a
        timer that wakes a few ms early never yields the same slot twice)."""
        k = math.ceil(t / self.period_s - _EPS)
        if after is not None:
            k = max(k, after + 1)
        return k, self.slot_time(k)

    def slots_per_minute(self) -> int:
        return round(60.0 / self.period_s)


# ------------------------------------------------------------------------------------------------- solar position


def solar_position(t: float, lat_deg: float, lon_deg: float) -> dict:
    """Solar declination, equation of time and elevation (NOAA's algorithm, as in its solar calculator).

    Returns degrees for angles, minutes for the equation of time. `elevation_deg` is geometric;
    `apparent_elevation_deg` adds NOAA's atmospheric refraction.
    """
    jd = t / DAY_S + 2440587.5
    jc = (jd - 2451545.0) / 36525.0
    mean_long = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    mean_anom = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    ecc = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    m = math.radians(mean_anom)
    centre = (
        math.sin(m) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + math.sin(2 * m) * (0.019993 - 0.000101 * jc)
        + math.sin(3 * m) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * jc)
    app_long = mean_long + centre - 0.00569 - 0.00478 * math.sin(omega)
    mean_obliq = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    obliq = mean_obliq + 0.00256 * math.cos(omega)
    decl = math.degrees(math.asin(math.sin(math.radians(obliq)) * math.sin(math.radians(app_long))))
    y = math.tan(math.radians(obliq / 2.0)) ** 2
    l0 = math.radians(mean_long)
    eot_min = 4.0 * math.degrees(
        y * math.sin(2 * l0)
        - 2 * ecc * math.sin(m)
        + 4 * ecc * y * math.sin(m) * math.cos(2 * l0)
        - 0.5 * y * y * math.sin(4 * l0)
        - 1.25 * ecc * ecc * math.sin(2 * m)
    )
    minutes = (t % DAY_S) / 60.0
    true_solar_min = (minutes + eot_min + 4.0 * lon_deg) % 1440.0
    hour_angle = true_solar_min / 4.0 - 180.0
    lat, dec, ha = math.radians(lat_deg), math.radians(decl), math.radians(hour_angle)
    cos_zen = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
    elevation = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    return {
        "declination_deg": decl,
        "equation_of_time_min": eot_min,
        "hour_angle_deg": hour_angle,
        "elevation_deg": elevation,
        "apparent_elevation_deg": elevation + _refraction_deg(elevation),
    }


def _refraction_deg(elevation: float) -> float:
    """NOAA's approximate atmospheric refraction (degrees) for a geometric elevation."""
    if elevation > 85.0:
        return 0.0
    te = math.tan(math.radians(elevation))
    if elevation > 5.0:
        arcsec = 58.1 / te - 0.07 / te**3 + 0.000086 / te**5
    elif elevation > -0.575:
        arcsec = 1735.0 + elevation * (-518.2 + elevation * (103.4 + elevation * (-12.79 + elevation * 0.711)))
    else:
        arcsec = -20.772 / te
    return arcsec / 3600.0


def solar_elevation(t: float, lat_deg: float, lon_deg: float) -> float:
    """Apparent solar elevation (degrees, refraction included) at epoch time `t`."""
    return solar_position(t, lat_deg, lon_deg)["apparent_elevation_deg"]


# ------------------------------------------------------------------------------------------------------- windows


def _minutes(text: str) -> int:
    hh, mm = text.split(":")
    return int(hh) * 60 + int(mm)


def _schedule_cfg(cfg: Any) -> Any:
    return cfg.schedule if hasattr(cfg, "schedule") else cfg


def _day_start(t: float) -> float:
    return math.floor(t / DAY_S) * DAY_S


def window_intervals(t_day: float, cfg: Any) -> list[tuple[float, float]]:
    """The configured windows as (start, end) epoch intervals for the UTC day containing `t_day` and the day
    before (a window may cross midnight), ignoring solar elevation."""
    sched = _schedule_cfg(cfg)
    out = []
    for offset in (-DAY_S, 0.0):
        base = _day_start(t_day) + offset
        for start, end in sched.windows_utc:
            s, e = _minutes(start), _minutes(end)
            if e <= s:
                e += 1440  # crosses midnight
            out.append((base + s * 60.0, base + e * 60.0))
    return sorted(out)


def in_window(t: float, cfg: Any) -> bool:
    """True when `t` lies in a configured UTC window and, if `schedule.min_solar_elevation_deg` is set, the sun is
    at least that high at the station (needs the full Config for the coordinates)."""
    if not any(s <= t < e for s, e in window_intervals(t, cfg)):
        return False
    minimum = _schedule_cfg(cfg).min_solar_elevation_deg
    if minimum is None:
        return True
    station = cfg.station
    return solar_elevation(t, station.latitude_deg, station.longitude_deg) >= minimum


def next_window_change(t: float, cfg: Any, horizon_s: float = 2 * DAY_S) -> float | None:
    """The next time after `t` when `in_window` flips (to arm one timer instead of polling); None if it does not
    flip within `horizon_s`. Solar-elevation crossings are found by a coarse scan and bisection to 1 s."""
    state = in_window(t, cfg)
    candidates = sorted({x for s, e in window_intervals(t, cfg) + window_intervals(t + DAY_S, cfg) for x in (s, e)})
    if _schedule_cfg(cfg).min_solar_elevation_deg is None:
        for x in candidates:
            if x > t + _EPS and x <= t + horizon_s and in_window(x, cfg) != state:
                return x
        return None
    step = 300.0
    a = t
    while a < t + horizon_s:
        b = min(a + step, t + horizon_s)
        # A window edge inside (a, b] is an exact change point; check it before the coarse sample.
        edges = [x for x in candidates if a < x <= b]
        probe = edges[0] if edges else b
        if in_window(probe, cfg) != state:
            lo, hi = a, probe
            while hi - lo > 1.0:
                mid = (lo + hi) / 2.0
                if in_window(mid, cfg) == state:
                    lo = mid
                else:
                    hi = mid
            return hi
        a = probe
    return None


def next_dark_time(t: float, cfg: Any) -> float:
    """The next daily dark-series time (schedule.dark_time_utc) strictly after `t`."""
    minute = _minutes(_schedule_cfg(cfg).dark_time_utc) % 1440
    candidate = _day_start(t) + minute * 60.0
    return candidate if candidate > t + _EPS else candidate + DAY_S


def _last_change_before(t: float, cfg: Any) -> float:
    """The start of the in-window stretch containing `t` (which must be in the window): the configured window's
    start, or the solar crossing after it (bisection to 1 s)."""
    start = max(s for s, e in window_intervals(t, cfg) if s <= t < e)
    if in_window(start, cfg):
        return start
    lo, hi = start, t  # out at lo, in at hi: the sun rose above the minimum in between
    while hi - lo > 1.0:
        mid = (lo + hi) / 2.0
        if in_window(mid, cfg):
            hi = mid
        else:
            lo = mid
    return hi


def window_bounds(t: float, cfg: Any) -> tuple[float, float] | None:
    """The acquisition window (start, end epoch s) containing `t`, solar elevation included; None outside."""
    if not in_window(t, cfg):
        return None
    end = next_window_change(t, cfg)
    if end is None:  # in for the whole horizon: the configured window's end
        end = max(e for s, e in window_intervals(t, cfg) if s <= t < e)
    return _last_change_before(t, cfg), end


def next_window_start(t: float, cfg: Any) -> float:
    """When the next acquisition window starts after `t` (inf when none starts within two days)."""
    x = t if not in_window(t, cfg) else next_window_change(t, cfg)
    if x is None:
        return math.inf
    start = next_window_change(x, cfg)
    return math.inf if start is None else start


def dark_time_of_day(t: float, cfg: Any) -> float:
    """The dark-series time (schedule.dark_time_utc) of the UTC day containing `t` (may be before `t`)."""
    return next_dark_time(_day_start(t) - 1.0, cfg)


@dataclass(frozen=True)
class StationSchedule:
    """The schedule bound to one config: what the supervisor asks to arm its timers."""

    cfg: Any

    @property
    def slots(self) -> SlotSchedule:
        return SlotSchedule(_schedule_cfg(self.cfg).period_s)

    def in_window(self, t: float) -> bool:
        return in_window(t, self.cfg)

    def next_window_change(self, t: float) -> float | None:
        return next_window_change(t, self.cfg)

    def next_dark_time(self, t: float) -> float:
        return next_dark_time(t, self.cfg)

    def window_bounds(self, t: float) -> tuple[float, float] | None:
        return window_bounds(t, self.cfg)

    def next_window_start(self, t: float) -> float:
        return next_window_start(t, self.cfg)

    def dark_time_of_day(self, t: float) -> float:
        return dark_time_of_day(t, self.cfg)


# ------------------------------------------------------------------------------------------------------ WittyPi


def _on_intervals_min(cfg: Any) -> list[tuple[int, int]]:
    """Minutes of the UTC day (start, end; end may exceed 1440) the master must be powered, merged."""
    sched = _schedule_cfg(cfg)
    margin, process = sched.wittypi_margin_min, sched.process_min
    spans = []
    for start, end in sched.windows_utc:
        s, e = _minutes(start), _minutes(end)
        if e <= s:
            e += 1440
        spans.append((s - margin, e + process))
    dark = _minutes(sched.dark_time_utc)
    spans.append((dark - margin, dark + process))
    spans = sorted(((s % 1440), (s % 1440) + (e - s)) for s, e in spans)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    # The last span may wrap past midnight into the first one.
    if len(merged) > 1 and merged[-1][1] - 1440 >= merged[0][0]:
        last = merged.pop()
        merged[0] = [last[0], max(last[1], merged[0][1] + 1440)]
    if sum(e - s for s, e in merged) >= 1440:
        raise ConfigError("schedule.windows_utc", "windows, margins and process phase cover the whole day")
    return [(s, e) for s, e in sorted(merged)]


def _duration(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    parts = ([f"H{h}"] if h else []) + ([f"M{m}"] if m else [])
    return " ".join(parts) or "M0"


def wittypi_schedule(cfg: Any, begin: date | None = None, end: str = "2037-12-31 23:59:59") -> str:
    """The WittyPi `schedule.wpi` text for this config: ON/OFF durations summing to one day, in UTC.

    The master wakes `wittypi_margin_min` before each window and is switched off `process_min` after the window
    (or the dark series) ends. The master's system time zone must be UTC (the WittyPi software reads BEGIN in it).
    """
    sched = _schedule_cfg(cfg)
    spans = _on_intervals_min(cfg)
    begin = begin or datetime.now(tz=UTC).date()
    first = datetime(begin.year, begin.month, begin.day, tzinfo=UTC) + timedelta(minutes=spans[0][0])
    lines = [
        "# WittyPi schedule generated by `pycam schedule wittypi` - do not edit, edit the station config.",
        "# All times UTC (set the master's time zone to UTC).",
        f"# windows_utc={[list(w) for w in sched.windows_utc]} dark_time_utc={sched.dark_time_utc}"
        f" margin={sched.wittypi_margin_min} min process={sched.process_min} min",
        f"BEGIN {first:%Y-%m-%d %H:%M:%S}",
        f"END   {end}",
    ]
    for i, (s, e) in enumerate(spans):
        next_start = spans[i + 1][0] if i + 1 < len(spans) else spans[0][0] + 1440
        lines.append(f"ON    {_duration(e - s)}")
        lines.append(f"OFF   {_duration(next_start - e)}")
    return "\n".join(lines) + "\n"


def parse_wittypi_schedule(text: str) -> tuple[datetime, list[tuple[str, int]]]:
    """(BEGIN, [(ON|OFF, minutes)...]) of a schedule.wpi; for tests and `pycam status`."""
    begin = None
    steps: list[tuple[str, int]] = []
    units = {"D": 1440, "H": 60, "M": 1}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "BEGIN":
            begin = datetime.strptime(" ".join(words[1:3]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        elif words[0] in ("ON", "OFF"):
            total = 0
            for w in words[1:]:
                if w[0] == "S":
                    total += int(w[1:]) // 60
                elif w[0] in units:
                    total += int(w[1:]) * units[w[0]]
            steps.append((words[0], total))
    if begin is None:
        raise ValueError("schedule.wpi has no BEGIN line")
    return begin, steps
