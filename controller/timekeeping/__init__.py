"""Time on the station: injectable clocks (clock.py), the master's clock sources (clocksource.py) and chrony's
state (chrony.py), which is the station's time system. `make_time_source` picks the time source a supervisor
reads: this Pi's chronyd, or the simulated chrony of a simulated Pi (config `clock.backend`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class TimeSource(Protocol):
    name: str

    def status(self) -> dict:
        """{'source', 'available', 'synchronised', 'offset_s' (source - this clock), 'selected', ...}; blocking."""


def make_time_source(cfg: Any, clock: Any, link_sample: Callable[[], tuple[float, float] | None]) -> TimeSource:
    """The time source of this Pi. `link_sample` is the last offset to the master the link measured and when
    (offset_s, clock monotonic), or None: the simulated chrony's NTP samples (they share the cable)."""
    if cfg.clock.backend == "sim":
        from controller.sim.chrony import SimChrony

        return SimChrony(clock, link_sample, server=cfg.network.master_host)
    from controller.timekeeping.chrony import ChronyReader

    return ChronyReader(host=cfg.clock.chronyc_host)


def time_agreement(chrony: dict, link_offset_s: float, tolerance_s: float) -> tuple[bool, str]:
    """The slave's clock decision: chrony synchronised, the offset measured over the link within tolerance, and
    chrony's own offset agreeing with it (chrony following some other source than the master would not)."""
    if not chrony.get("synchronised"):
        return False, "chrony not synchronised" + (f" ({chrony['error']})" if chrony.get("error") else "")
    if abs(link_offset_s) > tolerance_s:
        return False, f"link offset {link_offset_s * 1000:.1f} ms over {tolerance_s * 1000:.1f} ms"
    chrony_offset = chrony.get("offset_s")
    if chrony_offset is None or abs(chrony_offset - link_offset_s) > tolerance_s:
        return False, f"chrony offset {chrony_offset} s disagrees with the link's {link_offset_s:.6f} s"
    return True, "chrony synchronised, link offset within tolerance"


def describe_source(source: Any) -> str:
    """One line for `pycam status`: the slave's chrony state, or the master's clock sources."""
    if not isinstance(source, dict) or not source:
        return "unknown"
    if source.get("source") == "chrony":
        if not source.get("available"):
            return f"chrony unavailable ({source.get('error', '')})"
        if not source.get("synchronised"):
            return f"chrony not synchronised (selected: {source.get('selected')})"
        known = [
            f"{k} {source[key]}" for k, key in (("stratum", "stratum"), ("leap", "leap_status")) if source.get(key)
        ]
        detail = f" ({', '.join(known)})" if known else ""
        return f"chrony synchronised to {source.get('selected') or source.get('reference')}{detail}"
    if "best" in source:
        return f"best={source.get('best')} synchronised={source.get('synchronised')}"
    return str(source)
