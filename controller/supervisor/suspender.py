"""Suspenders (as in bluesky): a measured level below `low` pauses the station's acquisition, back at or above
`high` resumes it. The hysteresis keeps it from flapping at the threshold. Disk space now; low battery next.

A `Suspender` is the one record of whether its condition holds (`active`); the station machine's `paused` state
follows the active suspenders while the station is acquiring (the supervisor fires its pause/resume triggers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.logging import get_logger

Level = float | Callable[[], float]


def _value(level: Level) -> float:
    return float(level() if callable(level) else level)


@dataclass
class Suspender:
    """`check()` measures the level (e.g. free MB); `low`/`high` are numbers or callables read at each update.

    `pause`/`resume` name the station's triggers this suspender stands for (e.g. disk_full/disk_ok).
    """

    name: str
    check: Callable[[], float]
    low: Level
    high: Level
    pause: str
    resume: str
    unit: str = ""
    active: bool = False
    level: float | None = None

    def __post_init__(self) -> None:
        self._log = get_logger("suspender", suspender=self.name)

    def update(self, level: float | None = None) -> bool:
        """Measure (or take `level`) and switch with hysteresis; True when `active` changed."""
        self.level = self.check() if level is None else float(level)
        low, high = _value(self.low), _value(self.high)
        was = self.active
        if not self.active and self.level < low:
            self.active = True
            self._log.warning("suspender_active", level=round(self.level, 1), low=low, unit=self.unit)
        elif self.active and self.level >= high:
            self.active = False
            self._log.info("suspender_clear", level=round(self.level, 1), high=high, unit=self.unit)
        return was != self.active

    def reason(self) -> str:
        level = "?" if self.level is None else f"{self.level:.1f}"
        return f"{self.name}: {level} {self.unit}".rstrip()

    def status(self) -> dict[str, Any]:
        return {"active": self.active, "level": self.level, "low": _value(self.low), "high": _value(self.high)}


def station_trigger(suspenders: list[Suspender], state: str, entered_by: str | None) -> tuple[str, str] | None:
    """The (trigger, reason) the station needs now, or None: pause while acquiring and one is active; resume when
    paused and all are clear (by the trigger of the suspender that paused it)."""
    if not suspenders:
        return None
    active = [s for s in suspenders if s.active]
    if active and state in ("acquire", "degraded"):
        return active[0].pause, active[0].reason()
    if not active and state == "paused":
        for s in suspenders:
            if s.pause == entered_by or entered_by is None:
                return s.resume, s.reason()
        return suspenders[0].resume, suspenders[0].reason()
    return None
