"""The simulated chronyd of a simulated Pi: the same `TimeSource` answer as controller.timekeeping.chrony, and the
clock discipline chrony would apply to the simulated clock (never to the system clock).

In the simulator the master's clock is the station's true time, and a simulated Pi's clock error is its clock's
`offset_s` (ScaledClock/SystemClock). This chronyd "reaches" its server when `reachable()` says the cable to the
master is up (the link uses the same cable). Like the slave's chrony.conf (systemd/chrony-slave.conf.in: `server
<master> iburst`, `makestep 1 -1`): the first update comes a few polls after the server is reachable; an error over
the step threshold is stepped (on the first updates, or always with a limit of -1), a smaller one is slewed at
chrony's default maximum rate (83 ms/s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.logging import get_logger

FIRST_SYNC_S = 6.0  # iburst: 4 polls 2 s apart before the first update
POLL_S = 16.0  # maxpoll 4 in the slave's chrony.conf: one update every 16 s once synchronised
MAX_SLEW = 0.083333  # chrony's default maxslewrate, 83333 ppm
UNREACHABLE_POLLS = 8  # reach register empty: the source is no longer selected


class SimChrony:
    name = "chrony"

    def __init__(self, clock: Any, reachable: Callable[[], bool], server: str = "master",
                 step_threshold_s: float = 1.0, step_limit: int = -1, first_sync_s: float = FIRST_SYNC_S):  # fmt: skip
        if not hasattr(clock, "offset_s"):
            raise TypeError("the simulated chrony needs a simulated clock (with offset_s)")
        self.clock = clock
        self.reachable = reachable
        self.server = server
        self.step_threshold_s = step_threshold_s
        self.step_limit = step_limit
        self.first_sync_s = first_sync_s
        self.updates = 0
        self.last_offset_s: float | None = None
        self.ref_time_s = 0.0
        self.synchronised = False
        self._reach_since: float | None = None
        self._last_seen: float | None = None
        self._last_update: float | None = None
        self.log = get_logger("sim_chrony")

    def _discipline(self, now: float) -> None:
        """One clock update: step over the threshold (while allowed), else slew for the time since the last."""
        error = -self.clock.offset_s  # server time - this clock
        self.last_offset_s = error
        may_step = self.step_limit < 0 or self.updates < self.step_limit
        if abs(error) > self.step_threshold_s and may_step:
            self.clock.offset_s += error
            self.log.warning("sim_chrony_step", step_s=round(error, 6), server=self.server)
        else:
            elapsed = now - (self._last_update if self._last_update is not None else now)
            limit = MAX_SLEW * elapsed
            self.clock.offset_s += max(-limit, min(limit, error))
        self.updates += 1
        self._last_update = now
        self.ref_time_s = self.clock.time()
        if not self.synchronised:
            self.synchronised = True
            self.log.info("sim_chrony_synchronised", server=self.server, offset_s=round(self.clock.offset_s, 6))

    def _advance(self) -> bool:
        """Bring the simulated daemon up to now; True while the server is selected."""
        now = self.clock.monotonic()
        if self.reachable():
            self._last_seen = now
            if self._reach_since is None:
                self._reach_since = now
            last = self._last_update
            if (last is None and now - self._reach_since >= self.first_sync_s) or (
                last is not None and now - last >= POLL_S
            ):
                self._discipline(now)
            return self.synchronised
        self._reach_since = None
        return self._last_seen is not None and now - self._last_seen < UNREACHABLE_POLLS * POLL_S and self.synchronised

    def status(self) -> dict:
        selected = self._advance()
        sources = [{
            "mode": "server", "state": "selected" if selected else "unusable", "name": self.server,
            "stratum": 10, "poll": 1, "reach": 0o377 if selected else 0, "last_rx_s": 0.0,
            "adjusted_offset_s": self.clock.offset_s, "measured_offset_s": self.clock.offset_s, "error_s": 0.001,
        }]  # fmt: skip
        return {
            "source": "chrony",
            "available": True,
            "synchronised": self.synchronised,
            "offset_s": -self.clock.offset_s,
            "last_offset_s": self.last_offset_s,
            "ref_time_s": self.ref_time_s,
            "stratum": 11 if self.synchronised else 0,
            "leap_status": "Normal" if self.synchronised else "Not synchronised",
            "reference_id": "SIM" if self.synchronised else "00000000",
            "reference": self.server if self.synchronised else "",
            "selected": self.server if selected else None,
            "sources": sources,
            "simulated": True,
        }
