"""The processing worker child's events, as the parent (and the supervisor's WorkerService) receives them.

Typed records, sent through the child's pipe (pickled); `kind` names each for `ProcessingWorker.wait_event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class PairDone:
    """An A/B pair was processed (`rows` CSV rows written)."""

    kind: ClassVar[str] = "pair"
    key: str
    rows: int = 0


@dataclass(frozen=True)
class SpectrumDone:
    kind: ClassVar[str] = "spectrum"
    key: str


@dataclass(frozen=True)
class Backlog:
    """More than BACKLOG_PAIRS pairs wait: the worker is behind."""

    kind: ClassVar[str] = "backlog"
    pairs: int


@dataclass(frozen=True)
class Idle:
    """Caught up after `pairs` pairs; `token` answers `rescan(token)`."""

    kind: ClassVar[str] = "idle"
    pairs: int
    token: Any = None


@dataclass(frozen=True)
class Stopped:
    kind: ClassVar[str] = "stopped"


WorkerEvent = PairDone | SpectrumDone | Backlog | Idle | Stopped
