"""The worker's DOAS calibration: fed Plume DOAS results and pair AA images as they land, restart-safe.

`LiveCalibration` wraps processing.calibration.DoasCalibration for processing.stream (the worker and `pycam
process`). Before the spectrometer's field of view is known, the AA images (float32) wait in a ring buffer of
`frames` entries; the FOV search runs once the buffer is full and enough of them match DOAS results in time (checked
when a frame and when a DOAS result arrives, so the arrival order of a slot's files does not matter), or at
`finish()`. Afterwards each pair leaves one scalar (its FOV-mean AA) and each matched spectrum one rolling-window
calibration point. A pair at time t is calibrated with the newest usable point at or before t and no older than the
window (`at`), else with the fallback (gas cells or the configured slope); the method goes into each emission row.
`settled(t)` says when that choice can no longer change (the FOV is known and a spectrum at or after t is in).
The FOV and the window's scalars are saved atomically (`livecal_state.json`) after every change, so a restarted
worker continues with them instead of searching again; before the FOV it keeps the DOAS results (their spectra are
journalled as done) and rebuilds the frames from the pairs it still held.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import Config
from controller.errors import ProcessingError
from controller.logging import get_logger
from controller.storage.atomic import atomic_write_text
from processing.calibration import Calibration, CalibrationPoint, DoasCalibration, PlumeFrame, usable
from processing.pipeline import FOV_FRAMES


def point_calibration(p: CalibrationPoint) -> Calibration:
    """The Calibration of one DOAS calibration point."""
    f = p.fit
    return Calibration(f.slope, f.slope_err, f.offset, f.offset_err, "doas", "", f.r2, f.mse)


log = get_logger("processing.livecal")


def fov_frames(proc: Any) -> int:
    """Frames the FOV search waits for: `processing.fov_frames`, or (0) the ring buffer within 20..FOV_FRAMES."""
    return int(proc.fov_frames) if proc.fov_frames else int(np.clip(proc.ring_buffer, 20, FOV_FRAMES))


STATE_NAME = "livecal_state.json"
MAX_POINTS = 20_000  # calibration points kept at most (scalars), whatever the pairs ask for


class LiveCalibration:
    """DOAS calibration of the worker: `add_doas`, `add_pair`, then `current(time)` for each pair."""

    def __init__(self, cfg: Config, fallback: Calibration, state_dir: Path) -> None:
        proc = cfg.processing
        self.cfg = cfg
        self.fallback = fallback
        # the pre-FOV frame buffer is the worker's largest memory user (1.3 MB per 648 x 486 frame): the configured
        # FOV frames, or the ring buffer within what the FOV search needs and the 100-frame benchmark size
        self.dcal = DoasCalibration(proc, max_frames=fov_frames(proc))
        self.dcal.fov_min_frames = min(self.dcal.fov_min_frames, self.dcal.max_frames)
        self.path = Path(state_dir) / STATE_NAME
        self.points: list[CalibrationPoint] = []  # usable points the pairs still to come may ask for, oldest first
        self.new_points: list[CalibrationPoint] = []
        self.newest_doas: datetime | None = None
        self.asked: datetime | None = None  # the latest pair time `at` was asked for
        self._saved = ""  # the state last written: an unchanged state is not written again (an fsync per pair)
        self._load()

    @property
    def newest(self) -> CalibrationPoint | None:
        return self.points[-1] if self.points else None

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.dcal.restore(data["dcal"])
            self.points = [p for p in (_point_from(d) for d in data.get("points", [])) if p is not None]
            newest_doas = data.get("newest_doas")
            self.newest_doas = datetime.fromisoformat(newest_doas) if newest_doas else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("livecal_state_unreadable", path=str(self.path), error=str(e))
            return
        fov = data["dcal"].get("fov")
        log.info("livecal_restored", fov=fov and fov[:3], doas_results=len(self.dcal._doas),
                 newest=str(self.newest and self.newest.time))  # fmt: skip

    def _save(self) -> None:
        state = self.dcal.state()
        newest_doas = self.newest_doas.isoformat() if self.newest_doas else None
        points = [_point_json(p) for p in self.points]
        text = json.dumps({"dcal": state, "points": points, "newest_doas": newest_doas})
        if text != self._saved:  # before the FOV, a pair only adds to the frame buffer, which is not kept
            atomic_write_text(self.path, text)
            self._saved = text

    def _collect(self) -> None:
        points = self.dcal.pop_points()
        self.new_points += points
        good = [p for p in points if usable(p, self.dcal.min_points)]
        if good:
            self.points = sorted(self.points + good, key=lambda p: _naive(p.time))
            window = self.cfg.processing.calibration_window_s
            horizon = _naive(self.points[-1].time).timestamp() - 2 * window
            if self.asked is not None:  # pairs come in time order: none asks for a point before this one's window
                horizon = min(horizon, self.asked.timestamp() - window - self.dcal.match_tolerance_s)
            else:  # the pairs held for the FOV search are still to ask (the search's buffer may span hours)
                horizon = -math.inf
            self.points = [p for p in self.points if _naive(p.time).timestamp() >= horizon][-MAX_POINTS:]
        self._save()

    def add_doas(self, result: Any) -> None:
        """A DOAS result of a Plume spectrum (others are refused by DoasCalibration)."""
        self.dcal.add_doas(result)
        if result.time is not None and (self.newest_doas is None or _naive(result.time) > self.newest_doas):
            self.newest_doas = _naive(result.time)
        if self.dcal.fov is None:
            self._try_fov(self.dcal.search_if_due)  # the frame came first: the search waited for this result
        self._collect()

    def _try_fov(self, search: Callable[[], object]) -> None:
        try:
            search()
        except ProcessingError as e:  # a failed FOV search is retried with later frames
            log.warning("livecal_fov_failed", error=str(e))

    def finish(self) -> None:
        """End of the input (a folder's end, the worker's drain): the FOV search on what is buffered, if due."""
        if self.dcal.fov is None:
            self._try_fov(self.dcal.finish)
            self._collect()

    @property
    def buffered(self) -> int:
        """AA frames waiting for the FOV search."""
        return len(self.dcal._frames) if self.dcal.fov is None else 0

    def settled(self, time: datetime) -> bool:
        """Whether the calibration of a pair at `time` is final: the FOV is known and a spectrum at or after `time`
        (within the matching tolerance) has been added."""
        if self.dcal.fov is None or self.newest_doas is None:
            return False
        return (self.newest_doas - _naive(time)).total_seconds() >= -self.dcal.match_tolerance_s

    def add_pair(self, pair: Any, aa: np.ndarray) -> None:
        """The AA image of a Plume pair (processing.pairing.ImagePair)."""
        try:
            # no copy of a float32 image: the stream holds the same array for the pair's rows
            self.dcal.add_frame(PlumeFrame.from_files(pair.a, pair.b, aa.astype(np.float32, copy=False)))
        except ProcessingError as e:  # a failed FOV search is retried with later frames
            log.warning("livecal_frame_refused", pair=pair.key, error=str(e))
            return
        self._collect()

    def at(self, time: datetime) -> Calibration:
        """The newest usable DOAS point at or before `time` (matching tolerance) and within the calibration window,
        else the fallback."""
        t = _naive(time)
        self.asked = t if self.asked is None else max(self.asked, t)
        window = self.cfg.processing.calibration_window_s
        tol = self.dcal.match_tolerance_s
        before = [p for p in self.points if -tol <= (t - _naive(p.time)).total_seconds() <= window]
        p = before[-1] if before else None
        if p is not None:
            fov = self.dcal.fov
            where = f"FOV x {fov.cx} y {fov.cy} r {fov.radius} px; " if fov is not None else ""
            detail = f"{where}point {p.time:%Y-%m-%d %H:%M:%S}, n {p.fit.n}, r2 {p.fit.r2:.2f}"
            return dataclasses.replace(point_calibration(p), detail=detail)
        return self.fallback

    current = at  # the name processing.bench uses

    def pop_points(self) -> list[CalibrationPoint]:
        """The calibration points made since the last call."""
        points, self.new_points = self.new_points, []
        return points

    def pop_rows(self) -> list[tuple]:
        """Calibration-series rows of the points made since the last call."""
        return [p.row() for p in self.pop_points()]


def _naive(t: datetime) -> datetime:
    return t.replace(tzinfo=None) if t.tzinfo is not None else t


def _point_json(p: CalibrationPoint | None) -> dict | None:
    if p is None:
        return None
    f = p.fit
    return {
        "time": p.time.isoformat(), "aa_fov": p.aa_fov, "column": p.doas_column, "column_err": p.doas_column_err,
        "fit": [f.slope, f.slope_err, f.offset, f.offset_err, f.r2, f.mse, f.n],
    }  # fmt: skip


def _point_from(data: dict | None) -> CalibrationPoint | None:
    from processing.calibration import LinearFit

    if not data:
        return None
    slope, slope_err, offset, offset_err, r2, mse, n = data["fit"]
    fit = LinearFit(slope, slope_err, offset, offset_err, r2, mse, int(n))
    return CalibrationPoint(
        datetime.fromisoformat(data["time"]), data["aa_fov"], data["column"], data["column_err"], fit
    )
