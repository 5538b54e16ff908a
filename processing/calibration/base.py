"""The calibration a pair is processed with (S = slope · AA + offset), the configured default slope, and the fit.

`Calibration` is what the pipeline applies; `LinearFit` / `weighted_linear_fit` make one from measured points (gas
cells, DOAS). This module imports nothing of the pipeline: processing.pipeline imports it, never the reverse.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import Config
from controller.errors import ProcessingError

__all__ = ["Calibration", "LinearFit", "default_calibration", "weighted_linear_fit"]


@dataclass(frozen=True)
class Calibration:
    """S = slope · AA + offset (molecules/cm²), and where it came from."""

    slope: float
    slope_err: float
    offset: float = 0.0
    offset_err: float = 0.0
    method: str = "default"
    detail: str = ""
    r2: float = float("nan")
    mse: float = float("nan")

    def columns(self, aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.slope * aa + self.offset
        err = np.hypot(self.slope_err * aa, self.offset_err)
        return s, err

    @property
    def description(self) -> str:
        return f"{self.method}: slope {self.slope:.4g} +- {self.slope_err:.2g} molecules/cm2 per AA" + (
            f" ({self.detail})" if self.detail else ""
        )


def default_calibration(cfg: Config) -> Calibration:
    """The configured slope (`processing.default_calibration_slope`), used when neither DOAS nor cells calibrate."""
    slope = cfg.processing.default_calibration_slope
    # No measurement behind it: 20 % uncertainty, the magnitude pyplis assumes for unspecified column errors.
    return Calibration(slope, 0.2 * slope, method="default", detail="processing.default_calibration_slope")


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


def save_pyplis_fits(data: Any, path: Path) -> Path:
    """Save a pyplis calibration object (`save_as_fits`) as `path`, written whole before it takes the name."""
    from astropy.io.fits.verify import VerifyWarning

    tmp = path.with_name(path.stem.replace(".", "_") + "_tmp.fts")  # pyplis cuts the name at its first dot
    with warnings.catch_warnings():  # pyplis's header keys (pos_x_abs, ...) are long: astropy says so each time
        warnings.simplefilter("ignore", VerifyWarning)
        data.save_as_fits(str(tmp.parent), tmp.name)
    tmp.replace(path)  # a calibration file is refreshed (not station data: that is never replaced)
    return path
