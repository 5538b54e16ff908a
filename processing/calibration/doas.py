"""DOAS calibration: the mean AA in the spectrometer's field of view against the DOAS column over a rolling window.

Only Plume pairs and Plume spectra may feed it (known failure 6: the original ran a FOV search on test images and
failed): the inputs are typed (`PlumeFrame`, `DoasResult.kind`) and anything else is refused.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from controller.config import ProcessingConfig
from controller.errors import ProcessingError
from controller.logging import get_logger
from processing.calibration.base import LinearFit, save_pyplis_fits, weighted_linear_fit
from processing.doas import DoasResult
from processing.fov import FovResult, confirm_fov, find_fov
from processing.images import PLUME_KIND, ImageFile
from processing.outputs import CALIBRATION_COLUMNS, CALIBRATION_UNITS, csv_meta, write_csv

log = get_logger("processing.calibration.doas")

__all__ = [
    "DOAS_MIN_R2",
    "CalibrationPoint",
    "DoasCalibration",
    "PlumeFrame",
    "usable",
    "write_calibration_series",
]


@dataclass(frozen=True)
class PlumeFrame:
    """The AA image of one Plume pair. Any other image type is refused (known failure 6)."""

    time: datetime
    aa: np.ndarray
    kind_a: str = PLUME_KIND
    kind_b: str = PLUME_KIND

    def __post_init__(self) -> None:
        for band, kind in (("A", self.kind_a), ("B", self.kind_b)):
            if kind != PLUME_KIND:
                raise ProcessingError(
                    f"{self.time:%Y-%m-%dT%H%M%S} camera {band}: a {kind} image never enters the FOV search or "
                    "the DOAS calibration; only Plume pairs do"
                )
        if not isinstance(self.aa, np.ndarray) or self.aa.ndim != 2:
            raise ProcessingError(f"{self.time}: AA must be a 2-D array")

    @classmethod
    def from_files(cls, a: ImageFile, b: ImageFile, aa: np.ndarray) -> PlumeFrame:
        for f in (a, b):
            if not f.is_plume:
                raise ProcessingError(
                    f"{f.path.name} is a {f.name.kind}{' darkcorr' if f.name.darkcorr else ''} image; only "
                    "Plume pairs enter the FOV search and the DOAS calibration"
                )
        return cls(a.name.time, aa, a.name.kind, b.name.kind)


@dataclass(frozen=True)
class CalibrationPoint:
    """One row of the calibration series (columns of processing.outputs.CALIBRATION_COLUMNS)."""

    time: datetime
    aa_fov: float
    doas_column: float
    doas_column_err: float
    fit: LinearFit
    method: str = "doas"

    def row(self) -> tuple:
        f = self.fit
        return (
            self.time, self.aa_fov, self.doas_column, self.doas_column_err,
            f.slope, f.slope_err, f.offset, f.offset_err, f.mse, f.r2, self.method,
        )  # fmt: skip


@dataclass
class _Matched:
    time: datetime
    aa_fov: float
    column: float
    column_err: float


# A DOAS calibration point is used for emission rates only when its rolling fit explains at least this fraction of
# the DOAS column variance: below it the FOV-mean AA does not follow the spectrometer (wrong FOV, clouds, too little
# plume variation) and the slope is not trustworthy.
DOAS_MIN_R2 = 0.5


@dataclass
class DoasCalibration:
    """AA in the spectrometer FOV against DOAS columns over a rolling window (`processing.calibration_window_s`).

    Feed it Plume AA frames (`add_frame`) and Plume DOAS results (`add_doas`), roughly in time order. Until the FOV
    is known, frames are kept (at most `max_frames`, a ring buffer) for the FOV search; it runs by itself when the
    buffer is full and enough frames match DOAS results, or on `locate_fov()` / `finish()`. Afterwards only the
    FOV-mean AA of each frame is kept, so memory stays bounded. Every DOAS result matched to a frame gives one
    `CalibrationPoint` (the fit over the window ending at its time): `add_*` return the newest, `pop_points()`
    hands over all of them.
    """

    cfg: ProcessingConfig
    max_frames: int = 200
    match_tolerance_s: float = 2.0
    min_points: int = 5
    fov_min_frames: int = 20
    fov: FovResult | None = None
    _wait_frames: int = field(default=0, repr=False)  # frames to collect before the next FOV search
    _frames: deque = field(default_factory=deque, repr=False)
    _doas: deque = field(default_factory=deque, repr=False)
    _matched: list = field(default_factory=list, repr=False)
    _aa_fov: deque = field(default_factory=deque, repr=False)
    _done: set = field(default_factory=set, repr=False)
    _points: list = field(default_factory=list, repr=False)

    def add_frame(self, frame: PlumeFrame) -> CalibrationPoint | None:
        if not isinstance(frame, PlumeFrame):
            raise ProcessingError(
                f"DOAS calibration takes PlumeFrame inputs (typed Plume AA images), got {type(frame).__name__}"
            )
        if self.fov is None:
            self._frames.append(frame)
            while len(self._frames) > self.max_frames:
                self._frames.popleft()
            self._wait_frames = max(0, self._wait_frames - 1)
            return self.search_if_due()
        aa = float(frame.aa[self.fov.mask(frame.aa.shape)].mean())
        self._aa_fov.append((frame.time, aa))
        return self._match_and_fit()

    def add_doas(self, result: DoasResult) -> CalibrationPoint | None:
        if not isinstance(result, DoasResult):
            raise ProcessingError(f"DOAS calibration takes DoasResult inputs, got {type(result).__name__}")
        if result.kind != PLUME_KIND:
            raise ProcessingError(
                f"{result.source or result.time}: a {result.kind} spectrum never enters the DOAS calibration"
            )
        if result.time is None or not (result.success and math.isfinite(result.so2)):
            return None
        self._doas.append(result)
        self._trim(result.time)
        return self._match_and_fit() if self.fov is not None else None

    def search_if_due(self) -> CalibrationPoint | None:
        """The FOV search, when the buffer is full, enough of its frames match DOAS results and the last search
        (if it was not confirmed) is far enough behind."""
        if self.fov is not None or len(self._frames) < self.max_frames or self._wait_frames > 0:
            return None
        return self.finish()

    def finish(self) -> CalibrationPoint | None:
        """End of the input: run the FOV search on what is buffered if it has not run yet (and can). A FOV the
        two halves of its frames do not confirm is not used (the pairs keep the fallback calibration); the search
        runs again after fov_min_frames (or a quarter of the buffer) new frames."""
        if self.fov is None and self._matched_frames() >= self.fov_min_frames:
            if self.locate_fov(confirm=True) is None:
                self._wait_frames = max(self.fov_min_frames, self.max_frames // 4)
                return None
            return self._match_and_fit()
        return None

    def pop_points(self) -> list[CalibrationPoint]:
        """The calibration points made since the last call, oldest first."""
        out, self._points = self._points, []
        return out

    def _horizon_s(self) -> float:
        return self.cfg.calibration_window_s + 10 * self.match_tolerance_s

    def _trim(self, now: datetime) -> None:
        horizon = self._horizon_s()
        if self.fov is None and self._frames:
            # the FOV search matches every buffered frame: its DOAS results stay however old (a buffer longer than
            # the calibration window otherwise searched only its last window's frames)
            horizon = max(horizon, (now - self._frames[0].time).total_seconds() + self.match_tolerance_s)
        for q, key in ((self._doas, lambda r: r.time), (self._aa_fov, lambda p: p[0])):
            while q and (now - key(q[0])).total_seconds() > horizon:
                q.popleft()
        self._done = {t for t in self._done if (now - t).total_seconds() <= horizon}
        window = self.cfg.calibration_window_s
        self._matched = [m for m in self._matched if (now - m.time).total_seconds() <= window]

    def _pairs(self, times: list[datetime]) -> list[tuple[int, DoasResult]]:
        """(index in `times`, DOAS result) for each DOAS result with a frame within the tolerance."""
        if not times:
            return []
        stamps = np.array([t.timestamp() for t in times])
        out = []
        for r in self._doas:
            i = int(np.argmin(np.abs(stamps - r.time.timestamp())))
            if abs(stamps[i] - r.time.timestamp()) <= self.match_tolerance_s:
                out.append((i, r))
        return out

    def _matched_frames(self) -> int:
        return len(self._pairs([f.time for f in self._frames]))

    def locate_fov(self, confirm: bool = False, **search) -> FovResult | None:
        """Pearson FOV search over the buffered Plume frames that match a DOAS result in time; with `confirm`,
        None when the two halves of those frames do not find the same disk (processing.fov.confirm_fov)."""
        frames = list(self._frames)
        pairs = self._pairs([f.time for f in frames])
        if len(pairs) < self.fov_min_frames:
            raise ProcessingError(
                f"FOV search needs {self.fov_min_frames} Plume frames matched to DOAS results, have {len(pairs)}"
            )
        stack = np.stack([frames[i].aa for i, _ in pairs]).astype(np.float32, copy=False)
        series = np.array([r.so2 for _, r in pairs])
        found = find_fov(stack, series, **search)
        if confirm:
            ok, halves = confirm_fov(stack, series, found, **search)
            if not ok:
                log.warning("fov_unconfirmed", cx=found.cx, cy=found.cy, radius=found.radius, r=found.disk_corr,
                            halves=halves, frames=len(pairs))  # fmt: skip
                return None
        self.fov = found
        log.info("fov_found", cx=self.fov.cx, cy=self.fov.cy, radius=self.fov.radius, r=self.fov.disk_corr)
        mask = self.fov.mask(stack.shape[1:])
        self._aa_fov.extend((f.time, float(f.aa[mask].mean())) for f in frames)
        self._frames.clear()
        return self.fov

    def _match_and_fit(self) -> CalibrationPoint | None:
        """A point (rolling fit ending at its time) for each DOAS result newly matched to a frame's FOV AA."""
        new = [
            _Matched(r.time, self._aa_fov[i][1], r.so2, r.so2_err)
            for i, r in self._pairs([t for t, _ in self._aa_fov])
            if r.time not in self._done
        ]
        last = None
        window = self.cfg.calibration_window_s
        for m in sorted(new, key=lambda m: m.time):
            self._done.add(m.time)
            self._matched.append(m)
            pts = [p for p in self._matched if 0 <= (m.time - p.time).total_seconds() <= window]
            if len(pts) < self.min_points or np.ptp([p.aa_fov for p in pts]) == 0:
                continue
            fit = weighted_linear_fit(
                [p.aa_fov for p in pts], [p.column for p in pts], [p.column_err for p in pts],
                through_origin=self.cfg.calibration_through_origin,
            )  # fmt: skip
            last = CalibrationPoint(m.time, m.aa_fov, m.column, m.column_err, fit)
            self._points.append(last)
        if new:
            self._matched.sort(key=lambda m: m.time)
            self._trim(self._matched[-1].time)
        return last

    # -- restart safety: the worker persists this (small: scalars within the window) and restores it after a crash
    def state(self) -> dict:
        """The FOV (None before it is known) and the rolling-window inputs as JSON-able data. Before the FOV the
        buffered frames are images and are not kept: a restarted worker rebuilds them from the pairs still held
        (not journalled as done), and matches them to the DOAS results kept here (their spectra are journalled)."""
        f = self.fov
        return {
            "fov": None if f is None else [f.cx, f.cy, f.radius, f.pixel_corr, f.disk_corr],
            "matched": [[m.time.isoformat(), m.aa_fov, m.column, m.column_err] for m in self._matched],
            "aa_fov": [[t.isoformat(), a] for t, a in self._aa_fov],
            "doas": [[r.time.isoformat(), r.so2, r.so2_err] for r in self._doas],
            "done": sorted(t.isoformat() for t in self._done),
        }

    def restore(self, state: dict) -> None:
        """Continue from `state()` of an earlier process: the FOV if it was known, the DOAS results and the rolling
        window refilled."""
        self.fov = None
        if state.get("fov") is not None:
            cx, cy, radius, pixel_corr, disk_corr = state["fov"]
            none = np.zeros(0)
            self.fov = FovResult(
                int(cx), int(cy), int(radius), pixel_corr, disk_corr, np.zeros((0, 0)), none, none, none
            )
        self._frames.clear()
        t = datetime.fromisoformat
        self._matched = [_Matched(t(a), aa, c, e) for a, aa, c, e in state.get("matched", [])]
        self._aa_fov = deque((t(a), aa) for a, aa in state.get("aa_fov", []))
        self._doas = deque(_restored_doas(t(a), so2, err, self.cfg) for a, so2, err in state.get("doas", []))
        self._done = {t(a) for a in state.get("done", [])}


def _restored_doas(time: datetime, so2: float, so2_err: float, cfg: ProcessingConfig) -> DoasResult:
    """A DoasResult carrying what the calibration uses (time and column); the fit details are not kept."""
    nan = math.nan
    return DoasResult(
        time, so2, so2_err, nan, nan, nan, nan, nan, nan, nan, 0, 0, True, cfg.ppmm_to_molecules_cm2, nan,
        source="restored",
    )  # fmt: skip


def usable(point: CalibrationPoint, min_points: int = 5) -> bool:
    """Whether a DOAS calibration point is good enough to turn AA into columns for emission rates."""
    f = point.fit
    return f.n >= min_points and f.slope > 0 and math.isfinite(f.r2) and f.r2 >= DOAS_MIN_R2


def write_calibration_series(path: str | Path, points: Sequence[CalibrationPoint], ppmm_factor: float) -> Path:
    """Write the calibration series CSV (atomically); units and the ppm·m factor in its sidecar."""
    meta = csv_meta("calibration series: S = slope * AA + offset", ppmm_factor, CALIBRATION_UNITS)
    return write_csv(path, CALIBRATION_COLUMNS, (p.row() for p in points), meta)


PYPLIS_DOAS_FILE = "doas_calibration_pyplis.fts"


def save_pyplis_doas_calib(
    points: Sequence[CalibrationPoint], fov: FovResult, shape: tuple[int, int], path: str | Path
) -> Path:
    """The DOAS calibration data in pyplis's own format (DoasCalibData FITS with its DoasFOV, Pearson method):
    pyplis loads it with `DoasCalibData().load_from_fits(path)` and refits it with `fit_calib_data()`."""
    from pyplis import Img
    from pyplis.doascalib import DoasCalibData, DoasFOV

    if not points:
        raise ProcessingError("no DOAS calibration points to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pyplis_fov = DoasFOV()
    h, w = shape
    pyplis_fov.fov_mask_rel = fov.mask(shape).astype(np.float64)
    pyplis_fov.search_settings = {"method": "pearson"}
    pyplis_fov.img_prep = {"pyrlevel": 0}
    pyplis_fov.result_pearson.update(cx_rel=fov.cx, cy_rel=fov.cy, rad_rel=fov.radius)
    pyplis_fov.roi_abs = np.array([0, 0, w, h])
    if fov.corr_image.shape == tuple(shape):
        pyplis_fov.corr_img = Img(np.asarray(fov.corr_image, dtype=np.float64))
    data = DoasCalibData(
        tau_vec=np.array([p.aa_fov for p in points]),
        cd_vec=np.array([p.doas_column for p in points]),
        cd_vec_err=np.array([p.doas_column_err for p in points]),
        time_stamps=np.array([p.time.replace(tzinfo=None) for p in points]),
        calib_id="aa",
        senscorr_mask=Img(np.ones((1, 1))),
        fov=pyplis_fov,
    )
    return save_pyplis_fits(data, path)
