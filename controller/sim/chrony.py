"""The simulated chronyd of a simulated Pi: the same `TimeSource` answer as controller.timekeeping.chrony, and the
clock discipline chrony would apply to the simulated clock (never to the system clock).

Like the slave's chrony.conf (systemd/chrony-slave via controller/timekeeping/chronyconf.py: `server <master>
iburst`, `makestep 1 -1`) it follows the master's clock, whatever that clock says (a master restarted behind is
followed, as a real slave would). Its NTP samples of the master travel over the same cable as the link: in the
simulation they are the offsets the link measured (`sample()` -> (offset_s, at_monotonic) or None). Each fresh
sample is one clock update: the first comes a few polls after the first sample (iburst); an error over the step
threshold is stepped (always, with a step limit of -1), a smaller one slewed at chrony's default maximum rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.logging import get_logger

FIRST_SYNC_S = 6.0  # iburst: 4 polls 2 s apart before the first update
MIN_POLL_S = 1.0  # minpoll 0 in the slave's chrony.conf
MAX_SLEW = 0.083333  # chrony's default maxslewrate, 83333 ppm

Sample = Callable[[], "tuple[float, float] | None"]


class SimChrony:
    name = "chrony"

    def __init__(self, clock: Any, sample: Sample, server: str = "master", step_threshold_s: float = 1.0,
                 step_limit: int = -1, first_sync_s: float = FIRST_SYNC_S):  # fmt: skip
        if not hasattr(clock, "offset_s"):
            raise TypeError("the simulated chrony needs a simulated clock (with offset_s)")
        self.clock = clock
        self.sample = sample
        self.server = server
        self.step_threshold_s = step_threshold_s
        self.step_limit = step_limit
        self.first_sync_s = first_sync_s
        self.updates = 0
        self.last_offset_s: float | None = None
        self.remaining_s: float | None = None
        self.ref_time_s = 0.0
        self.synchronised = False
        self._first_sample: float | None = None
        self._used: float | None = None  # when the last sample used was taken
        self._last_update: float | None = None
        self.log = get_logger("sim_chrony")

    def _discipline(self, error: float, now: float) -> None:
        """One clock update with `error` (master - this clock): step over the threshold (while allowed), else slew
        for the time since the last update."""
        self.last_offset_s = error
        may_step = self.step_limit < 0 or self.updates < self.step_limit
        if abs(error) > self.step_threshold_s and may_step:
            applied = error
            self.log.warning("sim_chrony_step", step_s=round(error, 6), server=self.server)
        else:
            elapsed = now - (self._last_update if self._last_update is not None else now)
            applied = max(-MAX_SLEW * elapsed, min(MAX_SLEW * elapsed, error))
        self.clock.offset_s += applied
        self.remaining_s = error - applied
        self.updates += 1
        self._last_update = now
        self.ref_time_s = self.clock.time()
        if not self.synchronised:
            self.synchronised = True
            self.log.info("sim_chrony_synchronised", server=self.server, offset_s=round(error, 6))

    def _advance(self) -> None:
        """Bring the simulated daemon up to now: a fresh sample, when an update is due, is one clock update."""
        now = self.clock.monotonic()
        sample = self.sample()
        if sample is None:
            return
        error, taken = sample
        if self._first_sample is None:
            self._first_sample = taken
        fresh = self._used is None or taken > self._used
        if self._last_update is None:
            due = now - self._first_sample >= self.first_sync_s
        else:
            due = now - self._last_update >= MIN_POLL_S
        if fresh and due:
            self._used = taken
            self._discipline(error, now)

    def status(self) -> dict:
        self._advance()
        synced = self.synchronised
        sources = [{
            "mode": "server", "state": "selected" if synced else "unusable", "name": self.server,
            "stratum": 10, "poll": 0, "reach": 0o377 if synced else 0, "last_rx_s": 0.0,
            "adjusted_offset_s": self.clock.offset_s, "measured_offset_s": self.clock.offset_s, "error_s": 0.001,
        }]  # fmt: skip
        return {
            "source": "chrony",
            "available": True,
            "synchronised": synced,
            "offset_s": self.remaining_s,  # what the last update left to correct (none after a step)
            "last_offset_s": self.last_offset_s,
            "ref_time_s": self.ref_time_s,
            "stratum": 11 if synced else 0,
            "leap_status": "Normal" if synced else "Not synchronised",
            "reference_id": "SIM" if synced else "00000000",
            "reference": self.server if synced else "",
            "selected": self.server if synced else None,
            "sources": sources,
            "simulated": True,
        }
