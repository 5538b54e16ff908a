"""Gas-cell calibration: AA of each `<N>ppmm` cell against its column, with clear sky as I0.

As pyplis's CellCalibEngine does it: τ = ln(I0 / I_cell) per band with I0 the clear-sky (`Clear`) images, AA =
τ_A - τ_B, and a line S = slope · AA + offset fitted to the cells weighted by their column errors
(pyplis `CellCalibData.fit_calib_data`). Every cell is a data point, the 0 ppm·m cell too (its windows absorb a
little); the I0 images never are. Only without Clear images is the 0 ppm·m cell taken as I0, and it is then left
out of the fit (a point with AA 0 by construction and no error would pin the line).

Intensities are dark corrected, divided by the exposure and averaged over the region and over each cell's repeats;
σ_AA comes from the scatter of the repeats (I0's scatter included). The fit's errors are the larger of the
propagated ones and those scaled by the scatter about the line (reduced χ²), so they are never smaller than what
the points show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from controller.config import Config
from controller.errors import ProcessingError
from controller.logging import get_logger
from controller.storage.names import cell_ppmm
from processing.calibration.base import Calibration, LinearFit, save_pyplis_fits
from processing.darks import DarkLibrary
from processing.images import FolderScan, ImageFile, read_image, scan_folder

log = get_logger("processing.calibration.cells")

__all__ = [
    "CellCalibration",
    "CellMeasurement",
    "cell_calibration",
    "cell_calibration_from_folder",
    "cell_calibration_from_scan",
    "save_pyplis_cell_calib",
]

# Column uncertainty of a gas cell: makers quote 5-10 %, plus an absolute part for the filling (the 0 ppm·m cell
# has one too). 20 ppm·m is the order of the cells' filling tolerance.
CELL_COLUMN_REL_ERR = 0.05
CELL_COLUMN_ABS_ERR_PPMM = 20.0


@dataclass(frozen=True)
class CellMeasurement:
    ppmm: int
    column: float  # molecules/cm²
    column_err: float
    aa: float
    aa_err: float
    tau_a: float
    tau_b: float
    n_a: int
    n_b: int
    time: datetime
    label: str = ""  # the cell's id when it has no <N>ppmm name (processing.cell_columns)


@dataclass(frozen=True)
class CellCalibration:
    cells: tuple[CellMeasurement, ...]  # the fitted data points, by column
    fit: LinearFit
    ppmm_factor: float
    region: str
    linearity_r2: float  # Pearson r² of (AA, column) over the cells: how straight the points lie, any weights
    i0: str  # "Clear images (N per band)" or "0ppmm cell (no Clear images)"

    @property
    def aa_per_column(self) -> float:
        """Sensitivity dAA/dS (per molecules/cm²)."""
        return 1.0 / self.fit.slope

    def calibration(self) -> Calibration:
        f = self.fit
        cells = ", ".join(f"{c.label or f'{c.ppmm}ppmm'} AA {c.aa:.3f}" for c in self.cells)
        return Calibration(
            f.slope, f.slope_err, f.offset, f.offset_err, method="cells", detail=f"{cells}; I0 {self.i0}",
            r2=f.r2, mse=f.mse,
        )  # fmt: skip

    def as_dict(self) -> dict:
        return {
            **self.fit.as_dict(),
            "n": self.fit.n,
            "linearity_r2": self.linearity_r2,
            "region": self.region,
            "i0": self.i0,
            "ppmm_to_molecules_cm2": self.ppmm_factor,
            "cells": [
                {
                    "ppmm": c.ppmm, "column": c.column, "column_err": c.column_err, "aa": c.aa, "aa_err": c.aa_err,
                    "tau_a": c.tau_a, "tau_b": c.tau_b, "n_a": c.n_a, "n_b": c.n_b, "time": c.time.isoformat(),
                    "label": c.label or f"{c.ppmm}ppmm",
                }
                for c in self.cells
            ],
        }  # fmt: skip


def _region(shape: tuple[int, int], region: str) -> tuple[slice, slice]:
    h, w = shape
    if region == "whole":
        return slice(None), slice(None)
    if region == "centre":
        return slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4)
    raise ProcessingError(f"cell calibration region {region!r}: use 'whole' or 'centre'")


def _log_scatter(vals: np.ndarray) -> float:
    """Standard error of the mean of ln(values): the repeat-to-repeat scatter of one optical depth."""
    return float(np.log(vals).std(ddof=1) / np.sqrt(vals.size)) if vals.size > 1 else 0.0


def _mean_intensities(
    files: Iterable[ImageFile], darks: DarkLibrary, region: str, reader
) -> dict[tuple[str, str], tuple[list[float], list[datetime]]]:
    """Region mean of (raw - dark) / exposure per (kind, band), with the acquisition times."""
    groups: dict[tuple[str, str], tuple[list[float], list[datetime]]] = {}
    for f in files:
        if f.name.darkcorr:
            raise ProcessingError(f"{f.path.name} is a darkcorr copy, not a raw image")
        img, match = darks.correct(f.name.band, f.name.shutter_us, reader(f.path))
        if match.dark is None:
            raise ProcessingError(f"{f.path.name}: no dark image for band {f.name.band}")
        vals, times = groups.setdefault((f.name.kind, f.name.band), ([], []))
        vals.append(float(np.mean(img[_region(img.shape, region)])) / f.name.shutter_us)
        times.append(f.name.time)
    return groups


def cell_line_fit(aa: np.ndarray, cols: np.ndarray, col_err: np.ndarray, aa_err: np.ndarray) -> LinearFit:
    """S = slope · AA + offset as pyplis fits cell data (least squares weighted by the column errors only, its
    `CellCalibData.fit_calib_data`), with honest errors: the covariance of that estimator when each point's
    variance is σ_S² + (slope·σ_AA)² (sandwich form), scaled up (never down) by the reduced χ² of the residuals."""
    design = np.column_stack([aa, np.ones_like(aa)])
    w = 1.0 / col_err**2
    bread = np.linalg.inv(design.T @ (design * w[:, None]))
    slope, offset = bread @ (design.T @ (w * cols))
    var = col_err**2 + (slope * aa_err) ** 2
    cov = bread @ (design.T @ (design * (w**2 * var)[:, None])) @ bread
    resid = cols - (slope * aa + offset)
    dof = aa.size - 2
    if dof > 0:
        cov = cov * max(1.0, float(np.sum(resid**2 / var)) / dof)
    errs = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ss_tot = float(np.sum((cols - cols.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan")
    return LinearFit(
        float(slope), float(errs[0]), float(offset), float(errs[1]), r2, float(np.mean(resid**2)), int(aa.size)
    )


def cell_calibration(
    cells: Iterable[ImageFile],
    darks: DarkLibrary,
    ppmm_factor: float,
    clears: Iterable[ImageFile] = (),
    *,
    region: str = "whole",
    column_rel_err: float = CELL_COLUMN_REL_ERR,
    column_abs_err_ppmm: float = CELL_COLUMN_ABS_ERR_PPMM,
    columns: Mapping[str, tuple[float, float]] | None = None,
    reader=read_image,
) -> CellCalibration:
    """Fit S = slope · AA + offset to the gas cells (see the module doc). `columns`: column and error (molecules/cm²)
    of cells named by an id instead of `<N>ppmm` (processing.cell_columns)."""
    cells = list(cells)
    columns = dict(columns or {})
    for f in cells:
        if cell_ppmm(f.name.kind) is None and f.name.kind not in columns:
            raise ProcessingError(f"{f.path.name} is a {f.name.kind} image, not a gas-cell image")
    groups = _mean_intensities(cells, darks, region, reader)
    clear = _mean_intensities(clears, darks, region, reader)
    if all(("Clear", b) in clear for b in "AB"):
        i0_key = "Clear"
        groups.update(clear)
        i0_desc = f"Clear images ({len(clear[('Clear', 'A')][0])}/{len(clear[('Clear', 'B')][0])} per band)"
    elif all(("0ppmm", b) in groups for b in "AB"):
        i0_key = "0ppmm"
        i0_desc = "0ppmm cell (no Clear images of both bands)"
        log.warning("cell_calibration_no_clear", detail="no Clear images: the 0 ppm·m cell is I0 and not fitted")
    else:
        raise ProcessingError(
            "cell calibration needs Clear images (or 0ppmm images) of both bands (fltrA and fltrB) as I0"
        )
    i0 = {b: float(np.mean(groups[(i0_key, b)][0])) for b in "AB"}
    i0_err = {b: _log_scatter(np.asarray(groups[(i0_key, b)][0])) for b in "AB"}
    measurements = []

    def column_of(kind: str) -> tuple[float, float]:
        if kind in columns:
            return columns[kind]
        col = cell_ppmm(kind) * ppmm_factor
        return col, float(np.hypot(column_rel_err * col, column_abs_err_ppmm * ppmm_factor))

    kinds = sorted({k for k, _ in groups if k != i0_key and k not in ("Clear",)}, key=lambda k: column_of(k)[0])
    for kind in kinds:
        column, column_err = column_of(kind)
        ppmm = int(round(column / ppmm_factor))
        if (kind, "A") not in groups or (kind, "B") not in groups:
            log.warning("cell_band_missing", ppmm=ppmm)
            continue
        taus, errs, counts = [], [], []
        for band in "AB":
            vals = np.asarray(groups[(kind, band)][0])
            if np.any(vals <= 0):
                raise ProcessingError(f"{ppmm}ppmm cell, band {band}: no light left after dark correction")
            taus.append(float(np.log(i0[band] / vals.mean())))
            errs.append(float(np.hypot(_log_scatter(vals), i0_err[band])))
            counts.append(int(vals.size))
        time = min(groups[(kind, "A")][1])
        measurements.append(
            CellMeasurement(
                ppmm, column, column_err, taus[0] - taus[1], float(np.hypot(*errs)), taus[0], taus[1], *counts, time,
                "" if kind in (f"{ppmm}ppmm",) else kind,
            )
        )  # fmt: skip
    if len(measurements) < 2:
        raise ProcessingError(f"cell calibration needs at least 2 cells with both bands, got {len(measurements)}")
    aa = np.array([m.aa for m in measurements])
    cols = np.array([m.column for m in measurements])
    fit = cell_line_fit(
        aa, cols, np.array([m.column_err for m in measurements]), np.array([m.aa_err for m in measurements])
    )
    linearity = float(np.corrcoef(aa, cols)[0, 1] ** 2) if len(measurements) > 2 else 1.0
    return CellCalibration(tuple(measurements), fit, ppmm_factor, region, linearity, i0_desc)


def _scan_cells(scan: FolderScan, ppmm_factor: float, **kwargs) -> CellCalibration:
    if not scan.cells:
        raise ProcessingError("no gas-cell (<N>ppmm) images")
    return cell_calibration(scan.cells, DarkLibrary.from_files(scan.darks), ppmm_factor, scan.clears, **kwargs)


def cell_calibration_from_folder(folder: str | Path, ppmm_factor: float, **kwargs) -> CellCalibration:
    """Scan a folder (e.g. an original Cal_N archive) and calibrate with its cells, Clear images and darks."""
    try:
        return _scan_cells(scan_folder(folder), ppmm_factor, **kwargs)
    except ProcessingError as e:
        raise ProcessingError(f"{folder}: {e}") from e


PYPLIS_CELL_FILE = "cell_calibration_pyplis.fts"


def cell_calibration_from_scan(cfg: Config, scan: FolderScan, out: Path | None = None) -> Calibration | None:
    """The pipeline's hook: a `Calibration` from the scan's cells, None when unusable (logged). With `out`, the
    cell data is saved there in pyplis's format too (`PYPLIS_CELL_FILE`)."""
    columns = {cid: (col, err) for cid, col, err in cfg.processing.cell_columns}
    try:
        cal = _scan_cells(scan, cfg.processing.ppmm_to_molecules_cm2, columns=columns)
    except ProcessingError as e:
        log.warning("cell_calibration_failed", error=str(e))
        return None
    if out is not None:
        save_pyplis_cell_calib(cal, Path(out) / PYPLIS_CELL_FILE)
    log.info("cell_calibration", slope=cal.fit.slope, offset=cal.fit.offset, r2=cal.fit.r2, i0=cal.i0)
    return cal.calibration()


def save_pyplis_cell_calib(cal: CellCalibration, path: str | Path) -> Path:
    """The cell data in pyplis's own format (CellCalibData FITS, calib_id "aa"): pyplis loads it with
    `CellCalibData().load_from_fits(path)` and refits it with `fit_calib_data()`."""
    from pyplis import CellCalibData, Img

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = CellCalibData(
        tau_vec=np.array([c.aa for c in cal.cells]),
        cd_vec=np.array([c.column for c in cal.cells]),
        cd_vec_err=np.array([c.column_err for c in cal.cells]),
        time_stamps=np.array([c.time.replace(tzinfo=None) for c in cal.cells]),
        calib_id="aa",
        senscorr_mask=Img(np.ones((1, 1))),
    )
    return save_pyplis_fits(data, path)
