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
# Durable single seconds above the newest slot per device (singles taken while nothing is continuous).
KEEP_SINGLES = 4096


class NoFreeSecond(PycamError):
    """A single capture found no second its name could use."""


def whole_second(t: float) -> int:
    """The second a time is named with (names are to the second, truncated)."""
    return math.floor(t + 1e-6)


def _seconds_table(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str | int) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    )


class CaptureSeconds:
    """The seconds each device's names use, and what of them is durable. Safe from threads.

    Durable per device: the newest SLOT second (`floor` after a restart: the slot loop holds until its clock is
    past it) and the single seconds above it (singles may be named ahead of the clock; they stay taken after a
    restart without holding acquisition)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._taken: dict[str, set[int]] = {}
        self._slot_newest: dict[str, int] = {}
        self._singles: dict[str, set[int]] = {}  # single seconds above the newest slot second
        self._written: str = ""  # the document on disk
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
            if self.path.stat().st_size > 1 << 20:  # a real one is a few hundred bytes
                raise ValueError("larger than 1 MiB")
            text = self.path.read_text(encoding="utf-8")
            doc = json.loads(text)
            newest = doc["newest"] if isinstance(doc, dict) else None
            singles = doc.get("singles", {}) if isinstance(doc, dict) else None
            if not _seconds_table(newest) or not isinstance(singles, dict):
                raise ValueError("'newest' is not a table of whole seconds")
            singles = {k: v for k, v in singles.items() if isinstance(v, list) and _seconds_table(dict(enumerate(v)))}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, RecursionError) as e:
            self.problem = f"{self.path}: {type(e).__name__}: {e}; newest names unknown"
            self._log.warning("capture_mark_unreadable", path=str(self.path), error=str(e))
            return {}
        self._written = text
        self._slot_newest = dict(newest)
        self._singles = {k: set(v) for k, v in singles.items()}
        self._taken = {k: set(v) for k, v in singles.items()}
        self._log.info("capture_mark_loaded", path=str(self.path), newest=newest)
        return dict(newest)

    def has_mark(self) -> bool:
        """A readable mark was loaded (else the floors are unknown)."""
        return bool(self._written)

    def seed(self, newest: dict[str, int]) -> None:
        """Floors from another record of what was named (the capture journal), when the mark is missing."""
        for device, second in newest.items():
            if second > self._floor.get(device, second - 1):
                self._floor[device] = second
                self._slot_newest[device] = max(second, self._slot_newest.get(device, second))
        if newest:
            self._log.warning("capture_mark_from_journal", newest=newest)

    def floor(self, device: str) -> int | None:
        """The newest slot second `device` named before this run (no slot at or below it is captured again)."""
        return self._floor.get(device)

    def persist(self) -> None:
        """Write the durable seconds if they changed (call off the event loop: it fsyncs). Raises StorageError."""
        if self.path is None:
            return
        with self._lock:
            doc = {
                "newest": dict(self._slot_newest),
                "singles": {k: sorted(v) for k, v in self._singles.items() if v},
            }
            text = json.dumps(doc, sort_keys=True) + "\n"
            if text == self._written:
                return
            atomic_write_text(self.path, text)
            self._written = text

    # ------------------------------------------------------------------------------------------------ claims

    def _held(self, device: str, second: int) -> bool:
        floor = self._floor.get(device)
        return (floor is not None and second <= floor) or second in self._taken.get(device, ())

    def _add(self, device: str, second: int, slot: bool) -> None:
        with self._lock:
            taken = self._taken.setdefault(device, set())
            taken.add(second)
            if len(taken) > KEEP_SECONDS:
                for old in sorted(taken)[: KEEP_SECONDS // 2]:
                    taken.discard(old)
            singles = self._singles.setdefault(device, set())
            if slot and second > self._slot_newest.get(device, second - 1):
                self._slot_newest[device] = second
                singles.difference_update([s for s in singles if s <= second])
            elif not slot and (device not in self._slot_newest or second > self._slot_newest[device]):
                singles.add(second)
                if len(singles) > KEEP_SINGLES:
                    singles.discard(min(singles))

    def claim_slot(self, device: str, t: float) -> bool:
        """Claim the second of a slot at master time `t`; False (nothing claimed) when it is already named."""
        second = whole_second(t)
        if self._held(device, second):
            return False
        self._add(device, second, slot=True)
        return True

    def claim_single(self, device: str, t: float) -> int:
        """The first free second at or after `t` for a single capture of `device`, claimed; NoFreeSecond."""
        second = whole_second(t)
        floor = self._floor.get(device)
        if floor is not None and second <= floor:
            second = floor + 1
        for candidate in range(second, second + SINGLE_SEARCH_S):
            if not self._held(device, candidate) and not self.reserved(device, candidate):
                self._add(device, candidate, slot=False)
                return candidate
        raise NoFreeSecond(
            f"no free second for a single capture of {device} within {SINGLE_SEARCH_S} s "
            "(continuous capture names every second: stop it first)"
        )


JOURNAL_NAME = "captures.jsonl"
JOURNAL_TAIL_BYTES = 256 * 1024


def _named_second(rec: dict) -> int:
    """The second a journal record's file is named with (its name; else its slot or capture time)."""
    from controller.storage.names import parse_name

    try:
        return whole_second(parse_name(rec["name"]).time.timestamp())
    except ValueError:
        return whole_second(float(rec["slot_time"] if rec.get("slot_time") is not None else rec["capture_time"]))


def newest_in_journal(path: Path) -> dict[str, int]:
    """The newest named second per device in the tail of the capture journal (its last records are its newest)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - JOURNAL_TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return {}
    newest: dict[str, int] = {}
    for line in tail.splitlines():
        try:
            rec = json.loads(line)
            device = str(rec["device"])
            second = _named_second(rec)
        except (ValueError, KeyError, TypeError):
            continue  # the first line of the tail is usually cut
        newest[device] = max(second, newest.get(device, second))
    return newest


def capture_seconds(state_dir: Path | None) -> CaptureSeconds:
    """The station's CaptureSeconds, durable in `state_dir` (None: in memory only, e.g. `pycam capture`). When the
    mark is missing or unreadable, the newest seconds come from the capture journal's tail instead."""
    if state_dir is None:
        return CaptureSeconds(None)
    names = CaptureSeconds(Path(state_dir) / MARK_NAME)
    if not names.has_mark():
        names.seed(newest_in_journal(Path(state_dir) / JOURNAL_NAME))
    return names
