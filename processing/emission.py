"""Emission rates through plume cross-section (PCS) lines, in kg/s, with propagated errors.

    Φ = Σ_i S_i · 1e4 · M_SO2 / N_A · v⊥_i · Δx_i      (spec/physics.md)

S_i column (molecules/cm²) along the line, v⊥_i the velocity normal to the line (m/s), Δx_i the integration step
(the pixel size at the plume, m; the line profile is sampled once per pixel of line length). The error model is
pyplis's `det_emission_rate`: column, velocity and pixel-size errors summed along the line, added in quadrature.

Sign convention: an emission rate is positive in the direction the plume crosses the line, whatever the line's
orientation. The configured normal (`processing.pcs_line_normals`) only names a side: v⊥ is the plume's speed
through the line (processing.flow.LineVelocity, never negative), and which way it crosses (+1 along the normal, -1
against it) is found from the data (the predominant flow direction; the cross-correlation lag searched both ways).
So swapping the line's end points or its normal gives the same rates; negative columns (a background error) still
give a negative rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyplis import LineOnImage

from controller.config import ProcessingConfig
from controller.errors import ConfigError

M_SO2_KG_MOL = 64.066e-3
N_A = 6.022e23
KG_PER_MOLECULE = M_SO2_KG_MOL / N_A
CM2_PER_M2 = 1e4


def _arr(x: float | np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return np.broadcast_to(a, (n,)) if a.ndim == 0 else a


def emission_rate(
    columns: np.ndarray,
    v_perp: float | np.ndarray,
    dx_m: float | np.ndarray,
    columns_err: float | np.ndarray,
    v_err: float | np.ndarray,
    dx_err: float | np.ndarray,
) -> tuple[float, float]:
    """(Φ, σΦ) in kg/s for the column profile `columns` (molecules/cm²) along a line."""
    s = np.asarray(columns, dtype=np.float64)
    n = s.size
    v, dx = _arr(v_perp, n), _arr(dx_m, n)
    ds, dv, ddx = _arr(columns_err, n), _arr(v_err, n), _arr(dx_err, n)
    c = CM2_PER_M2 * KG_PER_MOLECULE
    phi = c * float(np.nansum(s * v * dx))
    e1 = np.nansum(v * dx * ds) ** 2
    e2 = np.nansum(s * dx * dv) ** 2
    e3 = np.nansum(s * v * ddx) ** 2
    return phi, c * float(np.sqrt(e1 + e2 + e3))


def ica_mass(columns: np.ndarray, dx_m: float | np.ndarray) -> float:
    """Integrated column amount along the line as SO2 mass per metre of plume (kg/m)."""
    s = np.asarray(columns, dtype=np.float64)
    return CM2_PER_M2 * KG_PER_MOLECULE * float(np.nansum(s * _arr(dx_m, s.size)))


def pcs_lines(proc: ProcessingConfig, shape: tuple[int, int] | None = None) -> list[LineOnImage]:
    """The configured PCS lines as pyplis LineOnImage objects with ids "1", "2", ..."""
    lines = []
    normals = list(proc.pcs_line_normals)
    for i, (x0, y0, x1, y1) in enumerate(proc.pcs_lines):
        normal = normals[i] if i < len(normals) else "right"
        if normal not in ("left", "right"):
            raise ConfigError(f"processing.pcs_line_normals[{i}]", f"{normal!r} is not 'left' or 'right'")
        if shape is not None:
            h, w = shape
            if not all(0 <= x < w for x in (x0, x1)) or not all(0 <= y < h for y in (y0, y1)):
                raise ConfigError(f"processing.pcs_lines[{i}]", f"({x0}, {y0}, {x1}, {y1}) lies outside {w}x{h}")
        if (x0, y0) == (x1, y1):
            raise ConfigError(f"processing.pcs_lines[{i}]", "start and end are the same point")
        lines.append(LineOnImage(x0, y0, x1, y1, normal_orientation=normal, line_id=str(i + 1)))
    return lines


def offset_line(line: LineOnImage, gap_px: int) -> LineOnImage:
    """The parallel line `gap_px` downstream (along the normal), for cross-correlation."""
    return line.offset(pixel_num=gap_px, line_id=f"{line.line_id}_xcorr")


def profile(line: LineOnImage, img: np.ndarray) -> np.ndarray:
    return np.asarray(line.get_line_profile(img), dtype=np.float64)


def read_line_file(path: str) -> tuple[tuple[int, int, int, int], str]:
    """Read the original's PCS line file (`x=x0,x1`, `y=y0,y1`, `orientation=left|right`)."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            if "=" in raw:
                k, v = raw.strip().split("=", 1)
                values[k.strip()] = v.strip()
    try:
        xs = [int(round(float(v))) for v in values["x"].split(",")]
        ys = [int(round(float(v))) for v in values["y"].split(",")]
    except (KeyError, ValueError) as e:
        raise ConfigError("processing.pcs_lines", f"{path}: cannot read x=.., y=.. ({e})") from e
    return (xs[0], ys[0], xs[1], ys[1]), values.get("orientation", "right")


def line_lengths(lines: Sequence[LineOnImage]) -> list[int]:
    return [line.length() for line in lines]
