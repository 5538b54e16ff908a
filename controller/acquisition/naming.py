"""Capture names that are never reused: each device names at most one file per whole second of master time.

File names carry the capture time to the second (the original's format), so two captures of one device in one
second would get one name and the second would replace the first. `CaptureSeconds` hands out the seconds:

- a slot capture claims its slot's second (`claim_slot`); a second already named is refused, never reused;
- a single capture (TPA/TPB/TPS, a dark) gets the first free second at or after its capture time
  (`claim_single`): not named by a slot or another single of the same device, not a future slot second of the
  running plan (`reserved`, set by the slot loop), and not at or below what earlier runs named;
- the newest second each device named is durable (`state_dir/capture-mark.json`, written atomically before the
  file is stored): after a restart with the clock behind its own data nothing at or below it is named again (the
  slot loop waits, see `SlotLoop`), whatever the store or spool still holds.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path

from controller.errors import PycamError
from controller.logging import get_logger
from controller.storage.atomic import atomic_write_text

MARK_NAME = "capture-mark.json"
# How far ahead a single capture looks for a free second before it is refused (every second a slot: 1 Hz).
SINGLE_SEARCH_S = 120
# Seconds remembered per device in memory; older ones are dropped (new names are never that far back).
KEEP_SECONDS = 200_000


class NoFreeSecond(PycamError):
    """A single capture found no second its name could use."""


def whole_second(t: float) -> int:
    """The second a time is named with (names are to the second, truncated)."""
    return math.floor(t + 1e-6)


class CaptureSeconds:
    """The seconds each device's names use, and the durable newest one per device. Safe from threads."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._taken: dict[str, set[int]] = {}
        self._written: dict[str, int] = {}  # newest second per device on disk
        self._newest: dict[str, int] = {}
        self.problem: str | None = None
        # (device, second) -> True when a future slot of the running plan will name that second.
        self.reserved: Callable[[str, int], bool] = lambda device, second: False
        self._log = get_logger("capture_names")
        self._floor = self._load()

    # ------------------------------------------------------------------------------------------------ durable

    def _load(self) -> dict[str, int]:
        if self.path is None:
            return {}
        from controller.settings import remove_stale_temps

        remove_stale_temps(self.path)
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            newest = doc["newest"] if isinstance(doc, dict) else None
            if not isinstance(newest, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in newest.items()
            ):
                raise ValueError("'newest' is not a table of whole seconds")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, RecursionError) as e:
            self.problem = f"{self.path}: {type(e).__name__}: {e}; newest names unknown"
            self._log.warning("capture_mark_unreadable", path=str(self.path), error=str(e))
            return {}
        self._written = dict(newest)
        self._newest = dict(newest)
        self._log.info("capture_mark_loaded", path=str(self.path), newest=newest)
        return dict(newest)

    def floor(self, device: str) -> int | None:
        """The newest second `device` named before this run (nothing at or below it is named again)."""
        return self._floor.get(device)

    def newest(self, device: str) -> int | None:
        return self._newest.get(device)

    def persist(self) -> None:
        """Write the newest seconds if they moved (call off the event loop: it fsyncs). Raises StorageError."""
        if self.path is None:
            return
        with self._lock:
            if self._newest == self._written:
                return
            snapshot = dict(self._newest)
            atomic_write_text(self.path, json.dumps({"newest": snapshot}, sort_keys=True) + "\n")
            self._written = snapshot

    # ------------------------------------------------------------------------------------------------ claims

    def _held(self, device: str, second: int) -> bool:
        floor = self._floor.get(device)
        return (floor is not None and second <= floor) or second in self._taken.get(device, ())

    def _add(self, device: str, second: int) -> None:
        with self._lock:
            taken = self._taken.setdefault(device, set())
            taken.add(second)
            if len(taken) > KEEP_SECONDS:
                for old in sorted(taken)[: KEEP_SECONDS // 2]:
                    taken.discard(old)
            if second > self._newest.get(device, second - 1):
                self._newest[device] = second

    def slot_free(self, device: str, t: float) -> bool:
        return not self._held(device, whole_second(t))

    def claim_slot(self, device: str, t: float) -> bool:
        """Claim the second of a slot at master time `t`; False (nothing claimed) when it is already named."""
        second = whole_second(t)
        if self._held(device, second):
            return False
        self._add(device, second)
        return True

    def claim_single(self, device: str, t: float) -> int:
        """The first free second at or after `t` for a single capture of `device`, claimed; NoFreeSecond."""
        second = whole_second(t)
        floor = self._floor.get(device)
        if floor is not None and second <= floor:
            second = floor + 1
        for candidate in range(second, second + SINGLE_SEARCH_S):
            if not self._held(device, candidate) and not self.reserved(device, candidate):
                self._add(device, candidate)
                return candidate
        raise NoFreeSecond(
            f"no free second for a single capture of {device} within {SINGLE_SEARCH_S} s "
            "(continuous capture names every second: stop it first)"
        )


def capture_seconds(state_dir: Path | None) -> CaptureSeconds:
    """The station's CaptureSeconds, durable in `state_dir` (None: in memory only, e.g. `pycam capture`)."""
    return CaptureSeconds(Path(state_dir) / MARK_NAME if state_dir is not None else None)
