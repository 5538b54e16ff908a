"""Calibration of apparent absorbance (AA) to SO2 columns: S = slope · AA + offset (molecules/cm²).

Two sources (spec/physics.md):
- gas cells: AA of each `<N>ppmm` cell image against its column (ppm·m x the ONE factor
  `processing.ppmm_to_molecules_cm2`), with the 0 ppm·m cell as I0;
- DOAS: the mean AA in the spectrometer's field of view against the DOAS column over a rolling time window.

Only Plume pairs and Plume spectra may feed the DOAS calibration (known failure 6: the original ran a FOV search on
test images and failed): the inputs are typed (`PlumeFrame`, `DoasResult.kind`) and anything else is refused.
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from controller.config import Config, ProcessingConfig
from controller.errors import ProcessingError
from controller.logging import get_logger
from controller.storage.atomic import atomic_write_text
from controller.storage.names import cell_ppmm
from processing.darks import DarkLibrary
from processing.doas import DoasResult
from processing.fov import FovResult, find_fov
from processing.images import PLUME_KIND, FolderScan, ImageFile, read_image, scan_folder
from processing.outputs import CALIBRATION_COLUMNS, fmt

if TYPE_CHECKING:
    from processing.pipeline import Calibration

log = get_logger("processing.calibration")

__all__ = [
    "CalibrationPoint",
    "CellCalibration",
    "CellMeasurement",
    "DoasCalibration",
    "LinearFit",
    "PlumeFrame",
    "cell_calibration",
    "cell_calibration_from_folder",
    "cell_calibration_from_scan",
    "weighted_linear_fit",
    "usable",
    "write_calibration_series",
]


# ---------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class LinearFit:
    """S = slope · AA + offset. Attribute names match processing.pipeline.Calibration."""

    slope: float
    slope_err: float
    offset: float
    offset_err: float
    r2: float
    mse: float  # mean squared residual of the columns, (molecules/cm²)²
    n: int

    def columns(self, aa: np.ndarray | float) -> np.ndarray | float:
        return self.slope * np.asarray(aa) + self.offset

    def as_dict(self) -> dict[str, float]:
        return {
            "slope": self.slope,
            "slope_err": self.slope_err,
            "offset": self.offset,
            "offset_err": self.offset_err,
            "r2": self.r2,
            "mse": self.mse,
        }


def weighted_linear_fit(
    aa: Sequence[float] | np.ndarray,
    columns: Sequence[float] | np.ndarray,
    column_err: Sequence[float] | np.ndarray | None = None,
    aa_err: Sequence[float] | np.ndarray | None = None,
    through_origin: bool = False,
) -> LinearFit:
    """Weighted least squares of columns against AA with standard errors.

    Weights 1/σ², σ² = σ_S² + (slope·σ_AA)² (effective variance, two passes so the AA errors count with the
    fitted slope). Coefficient errors are scaled by the reduced chi² when there are more points than
    parameters (as curve_fit does by default), so they reflect the real scatter about the line.
    `through_origin` fits S = slope · AA (offset 0 exactly, its error 0).
    """
    x = np.asarray(aa, dtype=np.float64)
    y = np.asarray(columns, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ProcessingError(f"calibration fit: AA {x.shape} and columns {y.shape} must be 1-D of equal length")
    if x.size < 2:
        raise ProcessingError(f"calibration fit needs at least 2 points, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ProcessingError("calibration fit: non-finite AA or column values")
    if np.ptp(x) == 0:
        raise ProcessingError("calibration fit: all AA values are equal, the slope is undefined")
    sy = np.zeros_like(y) if column_err is None else np.abs(np.asarray(column_err, dtype=np.float64))
    sx = np.zeros_like(x) if aa_err is None else np.abs(np.asarray(aa_err, dtype=np.float64))
    design = x[:, None] if through_origin else np.column_stack([x, np.ones_like(x)])
    slope = float(x @ y / (x @ x)) if through_origin else np.polyfit(x, y, 1)[0]
    for _ in range(2):
        var = sy**2 + (slope * sx) ** 2
        if np.all(var > 0):
            w = 1.0 / var
        else:
            w = np.ones_like(y)  # no usable errors: ordinary least squares
        aw = design * w[:, None]
        cov = np.linalg.inv(design.T @ aw)
        coef = cov @ (aw.T @ y)
        slope, offset = (coef[0], 0.0) if through_origin else (coef[0], coef[1])
    resid = y - (slope * x + offset)
    dof = x.size - design.shape[1]
    if dof > 0:
        chi2_red = float(np.sum(w * resid**2)) / dof
        cov = cov * chi2_red
    errs = np.append(np.sqrt(np.clip(np.diag(cov), 0.0, None)), 0.0)  # offset error 0 when through the origin
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else math.nan
    return LinearFit(
        float(slope), float(errs[0]), float(offset), float(errs[1]), r2, float(np.mean(resid**2)), int(x.size)
    )


# ---------------------------------------------------------------------- gas cells


@dataclass(frozen=True)
class CellMeasurement:
    ppmm: int
    column: float  # molecules/cm²
    aa: float
    aa_err: float
    tau_a: float
    tau_b: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class CellCalibration:
    cells: tuple[CellMeasurement, ...]
    fit: LinearFit
    ppmm_factor: float
    region: str
    linearity_r2: float  # Pearson r² of (AA, column) over the cells: how straight the points lie, any weights

    @property
    def aa_per_column(self) -> float:
        """Sensitivity dAA/dS (per molecules/cm²)."""
        return 1.0 / self.fit.slope


def _region(shape: tuple[int, int], region: str) -> tuple[slice, slice]:
    h, w = shape
    if region == "whole":
        return slice(None), slice(None)
    if region == "centre":
        return slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4)
    raise ProcessingError(f"cell calibration region {region!r}: use 'whole' or 'centre'")


def cell_calibration(
    cells: Iterable[ImageFile],
    darks: DarkLibrary,
    ppmm_factor: float,
    *,
    region: str = "whole",
    column_rel_err: float = 0.05,
    reader=read_image,
) -> CellCalibration:
    """AA of each gas cell against its column, with the 0 ppm·m cell as I0 (plain dark-corrected ratio).

    I = (raw - dark) / exposure, averaged over `region` and over the repeats of each cell and band;
    τ = ln(I0 / I) per band, AA = τ_A - τ_B; σ_AA from the scatter of the repeats. `column_rel_err` is the cell
    column's uncertainty (makers quote 5-10 %).
    """
    groups: dict[tuple[int, str], list[float]] = {}
    for f in cells:
        ppmm = cell_ppmm(f.name.kind)
        if ppmm is None or f.name.darkcorr:
            raise ProcessingError(f"{f.path.name} is a {f.name.kind} image, not a raw gas-cell image")
        raw = reader(f.path)
        img, match = darks.correct(f.name.band, f.name.shutter_us, raw)
        if match.dark is None:
            raise ProcessingError(f"{f.path.name}: no dark image for band {f.name.band}")
        sl = _region(img.shape, region)
        groups.setdefault((ppmm, f.name.band), []).append(float(np.mean(img[sl])) / f.name.shutter_us)
    if (0, "A") not in groups or (0, "B") not in groups:
        raise ProcessingError("cell calibration needs 0ppmm images of both bands (fltrA and fltrB) as I0")
    i0 = {band: float(np.mean(groups[(0, band)])) for band in "AB"}
    # I0 is measured too: its scatter over the repeats adds to every cell's AA error
    i0_err = {band: _log_scatter(np.asarray(groups[(0, band)])) for band in "AB"}
    measurements = []
    for ppmm in sorted({p for p, _ in groups}):
        if (ppmm, "A") not in groups or (ppmm, "B") not in groups:
            log.warning("cell_band_missing", ppmm=ppmm)
            continue
        taus, errs, counts = [], [], []
        for band in "AB":
            vals = np.asarray(groups[(ppmm, band)])
            if np.any(vals <= 0):
                raise ProcessingError(f"{ppmm}ppmm cell, band {band}: no light left after dark correction")
            taus.append(float(np.log(i0[band] / vals.mean())))
            errs.append(i0_err[band] if ppmm == 0 else float(np.hypot(_log_scatter(vals), i0_err[band])))
            counts.append(int(vals.size))
        measurements.append(
            CellMeasurement(
                ppmm, ppmm * ppmm_factor, taus[0] - taus[1], float(np.hypot(*errs)), taus[0], taus[1], *counts
            )
        )
    if len(measurements) < 2:
        raise ProcessingError(f"cell calibration needs at least 2 cells with both bands, got {len(measurements)}")
    aa = np.array([m.aa for m in measurements])
    cols = np.array([m.column for m in measurements])
    fit = weighted_linear_fit(
        aa,
        [m.column for m in measurements],
        [column_rel_err * m.column for m in measurements],
        [m.aa_err for m in measurements],
    )
    linearity = float(np.corrcoef(aa, cols)[0, 1] ** 2) if len(measurements) > 2 else 1.0
    return CellCalibration(tuple(measurements), fit, ppmm_factor, region, linearity)


def _log_scatter(vals: np.ndarray) -> float:
    """Standard error of the mean of ln(values): the repeat-to-repeat scatter of one cell's optical depth."""
    return float(np.log(vals).std(ddof=1) / np.sqrt(vals.size)) if vals.size > 1 else 0.0


def _scan_cells(scan: FolderScan, ppmm_factor: float, **kwargs) -> CellCalibration:
    if not scan.cells:
        raise ProcessingError("no gas-cell (<N>ppmm) images")
    return cell_calibration(scan.cells, DarkLibrary.from_files(scan.darks), ppmm_factor, **kwargs)


def cell_calibration_from_folder(folder: str | Path, ppmm_factor: float, **kwargs) -> CellCalibration:
    """Scan a folder (e.g. an original Cal_N archive) and calibrate with its cells and darks."""
    try:
        return _scan_cells(scan_folder(folder), ppmm_factor, **kwargs)
    except ProcessingError as e:
        raise ProcessingError(f"{folder}: {e}") from e


def cell_calibration_from_scan(cfg: Config, scan: FolderScan) -> Calibration | None:
    """The pipeline's hook: a `processing.pipeline.Calibration` from the scan's cells, None when unusable."""
    from processing.pipeline import Calibration  # lazy: the pipeline imports this module lazily too

    try:
        cal = _scan_cells(scan, cfg.processing.ppmm_to_molecules_cm2)
    except ProcessingError as e:
        log.warning("cell_calibration_failed", error=str(e))
        return None
    f = cal.fit
    cells = ", ".join(f"{c.ppmm}ppmm AA {c.aa:.3f}" for c in cal.cells)
    return Calibration(f.slope, f.slope_err, f.offset, f.offset_err, method="cells", detail=cells, r2=f.r2, mse=f.mse)


# ---------------------------------------------------------------------- DOAS calibration


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
            if len(self._frames) == self.max_frames and self._matched_frames() >= self.fov_min_frames:
                self.locate_fov()
                return self._match_and_fit()
            return None
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

    def finish(self) -> CalibrationPoint | None:
        """End of the input: run the FOV search on what is buffered if it has not run yet (and can)."""
        if self.fov is None and self._matched_frames() >= self.fov_min_frames:
            self.locate_fov()
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

    def locate_fov(self, **search) -> FovResult:
        """Pearson FOV search over the buffered Plume frames that match a DOAS result in time."""
        frames = list(self._frames)
        pairs = self._pairs([f.time for f in frames])
        if len(pairs) < self.fov_min_frames:
            raise ProcessingError(
                f"FOV search needs {self.fov_min_frames} Plume frames matched to DOAS results, have {len(pairs)}"
            )
        stack = np.stack([frames[i].aa for i, _ in pairs]).astype(np.float32, copy=False)
        series = np.array([r.so2 for _, r in pairs])
        self.fov = find_fov(stack, series, **search)
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
    def state(self) -> dict | None:
        """The FOV and the rolling-window inputs as JSON-able data; None before the FOV is known (the buffered
        frames are images: after a restart the FOV search starts again)."""
        if self.fov is None:
            return None
        f = self.fov
        return {
            "fov": [f.cx, f.cy, f.radius, f.pixel_corr, f.disk_corr],
            "matched": [[m.time.isoformat(), m.aa_fov, m.column, m.column_err] for m in self._matched],
            "aa_fov": [[t.isoformat(), a] for t, a in self._aa_fov],
            "doas": [[r.time.isoformat(), r.so2, r.so2_err] for r in self._doas],
            "done": sorted(t.isoformat() for t in self._done),
        }

    def restore(self, state: dict) -> None:
        """Continue from `state()` of an earlier process (FOV known, rolling window refilled)."""
        cx, cy, radius, pixel_corr, disk_corr = state["fov"]
        none = np.zeros(0)
        self.fov = FovResult(int(cx), int(cy), int(radius), pixel_corr, disk_corr, np.zeros((0, 0)), none, none, none)
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
    """Write the calibration series CSV (atomically) with a header stating units and the ppm·m factor."""
    buf = io.StringIO()
    buf.write("# PyCam Permanent calibration series: S = slope * AA + offset, columns in molecules/cm2\n")
    buf.write(f"# ppm·m conversion: 1 ppm·m = {ppmm_factor:.4g} molecules/cm2\n")
    buf.write(",".join(CALIBRATION_COLUMNS) + "\n")
    for p in points:
        buf.write(",".join(fmt(v) for v in p.row()) + "\n")
    return atomic_write_text(path, buf.getvalue())
