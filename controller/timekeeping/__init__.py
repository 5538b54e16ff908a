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


def make_time_source(cfg: Any, clock: Any, reachable: Callable[[], bool]) -> TimeSource:
    """The time source of this Pi. `reachable` says whether the master is reachable (the simulated chrony only)."""
    if cfg.clock.backend == "sim":
        from controller.sim.chrony import SimChrony

        return SimChrony(clock, reachable, server=cfg.network.master_host)
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
