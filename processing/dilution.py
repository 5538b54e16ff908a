"""Light-dilution correction (Campion et al. 2015, as pyplis.dilutioncorr implements it).

Between the plume and the camera, air scatters sky light into the line of sight: a plume at distance d is seen
through a transmission T = exp(-ε·d), and the signal it leaves is diluted. The extinction coefficient ε of each
band is fitted on dark terrain at known distances (pyplis `DilutionCorr.fit`, model `dilutioncorr_model`):

    I_meas(d) = I0 · exp(-ε d) + I_A · (1 - exp(-ε d))

(I0 the terrain's own radiance, I_A the ambient sky radiance, from a sky region). pyplis fits vignetting-corrected
images: the pipeline divides each image by `processing.flat_field` (the lens's relative sensitivity, `read_flat_field`)
first; without one the vignetting between the sky region and the terrain biases ε (+5-7 % on the sim scene's flank).
Each plume pixel is then corrected
before its optical depth is used (pyplis `correct_img`, Campion eq. 4):

    I_corr = (I - I_bg · (1 - T)) / T,    T = exp(-ε · d_plume)

with I_bg the plume-free background of that pixel. Since τ = ln(I_bg / I), this is a correction of the optical depth
alone: τ_corr = -ln((exp(-τ) - 1 + T) / T) — applied to τ_A and (registered) τ_B on the plume pixels (AA above
`processing.dilution_plume_aa_min`, pyplis's ex11 threshold), everything else unchanged.

Terrain distances come from `processing.dilution_lines` with the distance at each end
(`processing.dilution_line_distances_m`, linear along the line), or along the same lines from a DEM file
(`processing.dilution_dem`, an ESRI ASCII grid: each pixel's viewing ray marched over it, processing.terrain), or
from a terrain-distance image (`processing.dilution_distance_map`: a .npy of the image's shape, metres, NaN off
terrain).

API: `DilutionCorrection.from_config(cfg, shape)` -> `.fit(band, intensity)` per band (an `ExtinctionFit`), then
`.correct_tau(tau, ext, plume_distance_m, mask)`; `state()` is the JSON-able record every output carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from controller.config import Config, ProcessingConfig
from controller.errors import ConfigError, ProcessingError
from controller.logging import get_logger

log = get_logger("processing.dilution")

__all__ = [
    "DilutionCorrection",
    "ExtinctionFit",
    "TerrainSamples",
    "correct_tau",
    "dilution_model",
    "fit_extinction",
]

# pyplis DilutionCorr.fit bounds: ε in [0, 1e-3] /m, I0 in [0, 0.5 I_A]
EXT_MAX = 1e-3
I0_MAX_FRACTION = 0.5
# the diluted plume keeps at least this transmission: beyond it (ε·d > 4.6) nothing can be recovered
MIN_TRANSMISSION = 0.01


def dilution_model(dist: np.ndarray, ambient: float, i0: float, ext: float) -> np.ndarray:
    """pyplis `dilutioncorr_model`: terrain radiance seen at `dist` metres."""
    t = np.exp(-ext * np.asarray(dist, dtype=np.float64))
    return i0 * t + ambient * (1.0 - t)


@dataclass(frozen=True)
class ExtinctionFit:
    """One band's fitted extinction coefficient (1/m) and terrain radiance, with 1-sigma errors."""

    band: str
    ext: float
    ext_err: float
    i0: float
    i0_err: float
    ambient: float
    n: int
    rms: float

    def transmission(self, distance_m: float | np.ndarray) -> np.ndarray:
        return np.exp(-self.ext * np.asarray(distance_m, dtype=np.float64))

    def as_dict(self) -> dict[str, float]:
        return {
            "ext_per_m": self.ext, "ext_err": self.ext_err, "i0": self.i0, "i0_err": self.i0_err,
            "ambient": self.ambient, "n": self.n, "rms": self.rms,
        }  # fmt: skip


def fit_extinction(radiances: np.ndarray, distances: np.ndarray, ambient: float, band: str = "") -> ExtinctionFit:
    """Least squares of the Campion model to terrain radiances, within pyplis `dilution_corr_fit`'s bounds (ε in
    [0, 1e-3] /m, I0 in [0, 0.5 I_A]); the residual itself is minimised, where pyplis squares it once more.

    The model is linear in I0 for a given ε, so I0 is solved in closed form (clipped to its bounds) and only ε is
    searched: on a grid of the bounded range, refined on finer grids about the best point (~0.3 ms; scipy's
    least_squares took ~10 ms per band). Errors from the Jacobian at the optimum, scaled by the residual scatter.
    """
    rads = np.asarray(radiances, dtype=np.float64)
    dists = np.asarray(distances, dtype=np.float64)
    ok = np.isfinite(rads) & np.isfinite(dists) & (dists > 0)
    rads, dists = rads[ok], dists[ok]
    if rads.size < 3 or np.ptp(dists) <= 0:
        raise ProcessingError(f"light dilution fit{' ' + band if band else ''}: needs terrain at 3+ distances")
    if not ambient > 0:
        raise ProcessingError(f"light dilution fit {band}: ambient sky radiance {ambient} is not positive")
    y = rads - ambient  # = (I0 - I_A) · exp(-ε d)

    def solve(ext: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best I0 and the residual sum of squares for each ε in `ext`."""
        t = np.exp(-np.outer(ext, dists))
        tt = np.einsum("ij,ij->i", t, t)
        a = np.where(tt > 0, (t @ y) / np.where(tt > 0, tt, 1.0), 0.0)  # I0 - I_A
        i0 = np.clip(a + ambient, 0.0, I0_MAX_FRACTION * ambient)
        resid = (i0 - ambient)[:, None] * t - y[None, :]
        return i0, np.einsum("ij,ij->i", resid, resid)

    lo, hi = 0.0, EXT_MAX
    for _ in range(4):  # grid of the bracket, then of the best point's neighbours (1e-3 / 100^4 at the end)
        grid = np.linspace(lo, hi, 101)
        k = int(np.argmin(solve(grid)[1]))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    ext = float(grid[k])
    i0_arr, sse_arr = solve(np.array([ext]))
    i0, sse_min = float(i0_arr[0]), float(sse_arr[0])
    t = np.exp(-ext * dists)
    jac = np.column_stack([t, -(i0 - ambient) * dists * t])
    chi2 = sse_min / max(rads.size - 2, 1)
    try:
        i0_err, ext_err = np.sqrt(np.clip(np.diag(np.linalg.inv(jac.T @ jac)) * chi2, 0, None))
    except np.linalg.LinAlgError:
        i0_err = ext_err = math.nan
    return ExtinctionFit(
        band, float(ext), float(ext_err), i0, float(i0_err), float(ambient), int(rads.size), math.sqrt(chi2)
    )


def correct_tau(tau: np.ndarray, transmission: np.ndarray | float, mask: np.ndarray | None = None) -> np.ndarray:
    """Optical depth after light-dilution correction (module doc): τ_corr = -ln((e^-τ - 1 + T) / T) on `mask`."""
    t = np.clip(np.asarray(transmission), MIN_TRANSMISSION, 1.0)
    # ratio = (e^-τ - 1 + T) / T = I_corr / I_bg, the same operations in the same order, in place where possible
    ratio = np.exp(np.negative(tau))
    ratio -= 1.0
    ratio = np.asarray(ratio + t)  # dtype and shape of τ and T together
    ratio /= t
    # darker than the diluting air alone would make it: not plume in front of sky at that distance (terrain, an
    # obstacle): left as it is
    valid = ratio > MIN_TRANSMISSION
    if mask is not None:
        valid &= mask
    np.log(ratio, out=ratio, where=valid)
    np.negative(ratio, out=ratio, where=valid)
    return np.where(valid, ratio, tau)


@dataclass(frozen=True)
class TerrainSamples:
    """Terrain pixels (float coordinates) and their distances from the camera (m)."""

    x: np.ndarray
    y: np.ndarray
    dist_m: np.ndarray
    source: str

    def radiances(self, img: np.ndarray, matrix: np.ndarray | None = None) -> np.ndarray:
        """Radiances at the samples; `matrix` (2x3, processing.registration's A -> B) samples a B image at the
        samples' A coordinates without resampling the whole image."""
        x, y = self.x, self.y
        if matrix is not None:
            x, y = (
                matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2],
                matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2],
            )
        return map_coordinates(np.asarray(img, dtype=np.float64), [y, x], order=1)

    @classmethod
    def from_lines(cls, lines: tuple, distances: tuple, shape: tuple[int, int], step_px: float = 1.0) -> TerrainSamples:
        if len(lines) != len(distances):
            raise ConfigError(
                "processing.dilution_line_distances_m",
                f"{len(distances)} distance pairs for {len(lines)} processing.dilution_lines (one [start, end] each)",
            )
        h, w = shape
        xs, ys, ds = [], [], []
        for i, ((x0, y0, x1, y1), (d0, d1)) in enumerate(zip(lines, distances, strict=True)):
            if not all(0 <= x < w for x in (x0, x1)) or not all(0 <= y < h for y in (y0, y1)):
                raise ConfigError(f"processing.dilution_lines[{i}]", f"({x0}, {y0}, {x1}, {y1}) lies outside {w}x{h}")
            if not (d0 > 0 and d1 > 0):
                raise ConfigError(f"processing.dilution_line_distances_m[{i}]", f"[{d0}, {d1}] must be > 0 m")
            n = max(int(math.hypot(x1 - x0, y1 - y0) / step_px) + 1, 2)
            f = np.linspace(0.0, 1.0, n)
            xs.append(x0 + f * (x1 - x0))
            ys.append(y0 + f * (y1 - y0))
            ds.append(d0 + f * (d1 - d0))
        return cls(np.concatenate(xs), np.concatenate(ys), np.concatenate(ds), f"{len(lines)} dilution line(s)")

    @classmethod
    def from_dem(cls, cfg: Config, shape: tuple[int, int]) -> TerrainSamples:
        """The dilution lines' pixels with distances from the DEM (processing.terrain) instead of configured ones."""
        from processing.terrain import read_esri_ascii, terrain_distances, viewing_directions

        proc, st = cfg.processing, cfg.station
        lines = cls.from_lines(proc.dilution_lines, tuple((1.0, 1.0) for _ in proc.dilution_lines), shape)
        azim, elev = viewing_directions(cfg, shape, lines.x, lines.y)
        dem = read_esri_ascii(proc.dilution_dem)
        dist = terrain_distances(dem, st.latitude_deg, st.longitude_deg, st.altitude_m, azim, elev)
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            raise ConfigError(
                "processing.dilution_dem",
                f"{proc.dilution_dem}: the dilution lines' rays meet its terrain {ok.sum()} times",
            )
        name = Path(proc.dilution_dem).name
        return cls(lines.x[ok], lines.y[ok], dist[ok], f"{len(proc.dilution_lines)} dilution line(s) on DEM {name}")

    @classmethod
    def from_distance_map(cls, path: str | Path, shape: tuple[int, int]) -> TerrainSamples:
        try:
            dist = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConfigError("processing.dilution_distance_map", f"{path}: {e}") from e
        if dist.shape != tuple(shape):
            raise ConfigError("processing.dilution_distance_map", f"{path} is {dist.shape}, the images {shape}")
        y, x = np.nonzero(np.isfinite(dist) & (dist > 0))
        return cls(x.astype(float), y.astype(float), dist[y, x].astype(float), f"distance map {Path(path).name}")


def read_flat_field(path: str) -> np.ndarray | None:
    """processing.flat_field: relative sensitivity per pixel (float64, > 0), or None when not configured."""
    if not path:
        return None
    try:
        flat = np.load(path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as e:
        raise ConfigError("processing.flat_field", f"{path}: {e}") from e
    if flat.ndim != 2 or not (np.all(np.isfinite(flat)) and flat.min() > 0):
        raise ConfigError("processing.flat_field", f"{path}: must be a 2-D array of finite values > 0")
    return flat


class DilutionCorrection:
    """Fits ε per band on the terrain samples and corrects optical depths (module doc)."""

    def __init__(self, samples: TerrainSamples, ambient_roi: tuple[int, int, int, int], aa_min: float) -> None:
        self.samples = samples
        self.ambient_roi = ambient_roi
        self.aa_min = aa_min
        self.fits: dict[str, ExtinctionFit] = {}

    @staticmethod
    def configured(proc: ProcessingConfig) -> bool:
        return bool(proc.dilution_lines or proc.dilution_distance_map)

    @classmethod
    def from_config(cls, cfg: Config, shape: tuple[int, int]) -> DilutionCorrection | None:
        """None when no dilution lines or distance map are configured (no correction, stated in the outputs)."""
        proc = cfg.processing
        if proc.dilution_distance_map:
            samples = TerrainSamples.from_distance_map(proc.dilution_distance_map, shape)
        elif proc.dilution_lines and proc.dilution_dem:
            samples = TerrainSamples.from_dem(cfg, shape)
        elif proc.dilution_lines:
            samples = TerrainSamples.from_lines(proc.dilution_lines, proc.dilution_line_distances_m, shape)
        else:
            return None
        x0, y0, x1, y1 = proc.dilution_ambient_roi
        h, w = shape
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ConfigError("processing.dilution_ambient_roi", f"[{x0}, {y0}, {x1}, {y1}] is not a region of {w}x{h}")
        return cls(samples, (x0, y0, x1, y1), proc.dilution_plume_aa_min)

    def ambient(self, intensity: np.ndarray, matrix: np.ndarray | None = None) -> float:
        x0, y0, x1, y1 = self.ambient_roi
        if matrix is not None:  # the region's corners through the registration (a sky region: no need to be exact)
            xs, ys = (matrix[0, 0] * np.array([x0, x1]) + matrix[0, 1] * np.array([y0, y1]) + matrix[0, 2],
                      matrix[1, 0] * np.array([x0, x1]) + matrix[1, 1] * np.array([y0, y1]) + matrix[1, 2])  # fmt: skip
            h, w = intensity.shape
            x0, x1 = (int(np.clip(round(v), 0, w)) for v in sorted(xs))
            y0, y1 = (int(np.clip(round(v), 0, h)) for v in sorted(ys))
        return float(np.mean(intensity[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]))

    def fit(self, band: str, intensity: np.ndarray, matrix: np.ndarray | None = None) -> ExtinctionFit:
        """ε of `band` from one dark-corrected, exposure-normalised image (kept as the band's current fit); `matrix`:
        the A -> B registration when `intensity` is a B image on its own grid."""
        rads = self.samples.radiances(intensity, matrix)
        fit = fit_extinction(rads, self.samples.dist_m, self.ambient(intensity, matrix), band)
        if band not in self.fits:
            log.info("dilution_fit", band=band, ext_per_m=fit.ext, i0=fit.i0, ambient=fit.ambient, n=fit.n)
        self.fits[band] = fit
        return fit

    def correct(
        self, tau_a: np.ndarray, tau_b: np.ndarray, plume_distance_m: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both bands' optical depths corrected on the plume pixels (uncorrected AA above `aa_min`)."""
        if "A" not in self.fits or "B" not in self.fits:
            raise ProcessingError("light dilution: fit both bands before correcting")
        idx = np.nonzero((tau_a - tau_b) > self.aa_min)  # only the plume pixels are computed (speed)
        dist = plume_distance_m[idx] if np.ndim(plume_distance_m) else plume_distance_m
        out = []
        for band, tau in (("A", tau_a), ("B", tau_b)):
            corrected = tau.copy()
            corrected[idx] = correct_tau(tau[idx], self.fits[band].transmission(dist))
            out.append(corrected)
        return out[0], out[1]

    def correct_aa(self, tau_a: np.ndarray, tau_b: np.ndarray, plume_distance_m: np.ndarray | float) -> np.ndarray:
        """AA = τ_A - τ_B with both corrected on the plume pixels (as `correct`; float32 arithmetic on the plume
        pixels only, relative precision 1e-6 — the correction itself is known to a few per cent)."""
        if "A" not in self.fits or "B" not in self.fits:
            raise ProcessingError("light dilution: fit both bands before correcting")
        aa = tau_a - tau_b
        flat = aa.reshape(-1)  # a view: aa is a new contiguous array
        idx = np.flatnonzero(flat > self.aa_min)  # flat indices: take and assignment are ~2x faster than 2-D masks
        a, b = (np.ravel(t).take(idx).astype(np.float32) for t in (tau_a, tau_b))
        cols = self._column_distances(plume_distance_m) if np.ndim(plume_distance_m) else None
        if cols is not None:  # T per column (the same float32 values as per pixel), gathered by column
            col = self._column_of(aa.shape).take(idx)
            ta, tb = (np.exp(np.float32(-self.fits[band].ext) * cols).take(col) for band in "AB")
        else:
            if np.ndim(plume_distance_m):
                dist = np.ravel(plume_distance_m).take(idx).astype(np.float32)
            else:
                dist = np.full(idx.size, plume_distance_m, dtype=np.float32)
            ta, tb = (np.exp(np.float32(-self.fits[band].ext) * dist) for band in "AB")
        flat[idx] = correct_tau(a, ta) - correct_tau(b, tb)
        return aa

    def _column_of(self, shape: tuple[int, int]) -> np.ndarray:
        """Column index of each flat pixel index (int32, made once per shape): no modulo over the plume pixels."""
        if getattr(self, "_col_of_shape", None) != shape:
            self._col_of = np.tile(np.arange(shape[1], dtype=np.int32), shape[0])
            self._col_of_shape = shape
        return self._col_of

    def _column_distances(self, dist_img: np.ndarray) -> np.ndarray | None:
        """The plume distance per column (float32) when it does not vary down the columns (pyplis's geometry), else
        None."""
        key = id(dist_img)
        if getattr(self, "_cols_key", None) != key:
            col = dist_img[dist_img.shape[0] // 2]
            same = np.allclose(dist_img, col[None, :], rtol=1e-9)
            self._cols = col.astype(np.float32) if same else None
            self._cols_key = key
        return self._cols

    def state(self) -> dict:
        return {
            "corrected": bool(self.fits),
            "terrain": self.samples.source,
            "terrain_distance_m": [float(self.samples.dist_m.min()), float(self.samples.dist_m.max())],
            "plume_aa_min": self.aa_min,
            **{f"band_{b}": f.as_dict() for b, f in sorted(self.fits.items())},
        }


NOT_CORRECTED = {"corrected": False, "reason": "no processing.dilution_lines or dilution_distance_map configured"}
