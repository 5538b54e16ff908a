"""iFit-style DOAS retrieval of SO2 slant columns from spectrometer spectra.

Forward model (spec/physics.md), evaluated on a fine wavelength grid and then sampled at the measured pixels:

    I_model(λ) = ILS ⊗ [ F(λ) · P(λ) · exp(-σ_SO2 c_SO2 - σ_O3 c_O3 - R · c_Ring) ] (λ + Δλ(λ)) + offset

F the solar reference, P a polynomial, R the Ring pseudo-absorber, Δλ = shift + stretch·(λ - λ_centre).
Everything that does not depend on the fit parameters (fine grid, references on it, the ILS kernel, the pixel
selection) is prepared once per wavelength calibration, so a fit costs a few ms.

Units: columns in molecules/cm². ppm·m uses the ONE factor `ProcessingConfig.ppmm_to_molecules_cm2`
(2.504e15 molecules/cm² per ppm·m: 20 °C, 1 atm), which the CSV header states.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from controller.config import ProcessingConfig
from controller.errors import FileNameError, ProcessingError
from controller.storage.atomic import atomic_write_text
from controller.storage.names import SpectrumName
from processing.images import read_spectrum
from processing.outputs import csv_meta, fmt_time, write_meta
from processing.references import ReferenceSpectra

__all__ = [
    "DOAS_CSV_COLUMNS",
    "DOAS_FIT_COLUMNS",
    "DoasResult",
    "DoasRetrieval",
    "Spectrum",
    "doas_csv_header",
    "doas_csv_row",
    "doas_fit_row",
    "doas_row",
    "load_spectrum",
    "write_doas_results",
]

DOAS_CSV_COLUMNS = ("Time", "Column density", "CD error", "LDF")  # the original's, exactly
# The fit's quality and inputs per spectrum, next to the results (doas_fit.csv): residual RMS and largest residual
# (relative to the mean measured intensity in the fit window), wavelength shift, stray light, the dark subtracted.
DOAS_FIT_COLUMNS = (
    "Time", "Column density", "fit_rms", "fit_max_residual", "shift_nm", "stray_light_counts", "dark",
)  # fmt: skip


@dataclass(frozen=True)
class Spectrum:
    """A measured spectrum: wavelengths (nm), counts, and what its file name says."""

    wavelengths_nm: np.ndarray
    counts: np.ndarray
    time: datetime | None = None
    kind: str = "Plume"
    integration_ms: int | None = None
    source: str = ""
    coadd: int | None = None


def load_spectrum(path: str | Path, name: SpectrumName | None = None) -> Spectrum:
    """Read a `.npy` spectrum (2, N): row 0 wavelengths (nm), row 1 counts; the name gives time and type (`name`:
    the file's name parsed already, where it came in; else it is parsed here)."""
    p = Path(path)
    wl, counts = read_spectrum(p)
    try:
        name = name if name is not None else SpectrumName.parse(p.name)
        time, kind, int_ms, coadd = name.time, name.kind, name.integration_ms, name.coadd
    except FileNameError:
        time, kind, int_ms, coadd = None, "unknown", None, None  # not a station name: never calibration input
    return Spectrum(wl, counts, time, kind, int_ms, str(p), coadd)


@dataclass(frozen=True)
class DoasResult:
    """One retrieval. Columns in molecules/cm² (ppm·m via the factor stored with it)."""

    time: datetime | None
    so2: float
    so2_err: float
    o3: float
    ring: float
    shift_nm: float
    stretch: float
    offset: float
    rms_residual: float  # RMS of (measured - model) / mean measured, in the fit window
    chi2_reduced: float
    n_points: int
    nfev: int
    success: bool
    ppmm_factor: float
    stray_light: float
    ldf: float = 0.0  # light-dilution factor 1 - T the fit assumed (DoasRetrieval.dilution_transmission); 0: none
    source: str = ""
    max_residual: float = float("nan")  # largest |measured - model| / mean measured in the fit window
    dark: str = ""  # the dark spectrum subtracted (file name), "" when none
    kind: str = "Plume"  # file type of the spectrum: only Plume spectra feed the calibration (known failure 6)
    fit: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def so2_ppmm(self) -> float:
        return self.so2 / self.ppmm_factor

    @property
    def so2_ppmm_err(self) -> float:
        return self.so2_err / self.ppmm_factor


@dataclass
class _Grid:
    """Everything precomputed for one measured wavelength calibration."""

    key: tuple
    pix: np.ndarray  # indices of measured pixels in the fit window
    stray_mask: np.ndarray
    lam: np.ndarray  # measured wavelengths in the window
    fine: np.ndarray  # fine model grid (before convolution)
    conv_grid: np.ndarray  # grid after 'valid' convolution
    solar: np.ndarray  # F / mean(F) on the fine grid
    absorbers: np.ndarray  # (n_abs, n_fine) optical depth per unit (scaled) parameter
    scales: np.ndarray  # molecules/cm² per unit parameter (1 for Ring)
    t_fine: np.ndarray  # normalised coordinate for P on the fine grid
    vander: np.ndarray  # (n_fine, poly_order+1) powers of t_fine
    kernel: np.ndarray
    centre: float
    half: float


class DoasRetrieval:
    """Fits the forward model to spectra; reuse one instance for a series (the grid is cached)."""

    ABSORBERS = ("so2", "o3", "ring")

    def __init__(
        self,
        refs: ReferenceSpectra,
        cfg: ProcessingConfig,
        *,
        poly_order: int = 3,
        model_step_nm: float = 0.02,
        fit_shift: bool = True,
        fit_stretch: bool = False,
        fit_offset: bool = True,
        max_shift_nm: float = 1.0,
        saturation_counts: float = 65535.0,
    ):
        lo, hi = cfg.fit_window_nm
        s_lo, s_hi = cfg.stray_window_nm
        if not lo < hi:
            raise ProcessingError(f"processing.fit_window_nm: {cfg.fit_window_nm} is not an interval")
        if not s_lo < s_hi:
            raise ProcessingError(f"processing.stray_window_nm: {cfg.stray_window_nm} is not an interval")
        if poly_order < 0 or poly_order > 8:
            raise ProcessingError(f"poly_order {poly_order} outside 0..8")
        self.refs = refs
        self.window = (float(lo), float(hi))
        self.stray_window = (float(s_lo), float(s_hi))
        self.ppmm_factor = float(cfg.ppmm_to_molecules_cm2)
        self.poly_order = poly_order
        self.step = float(model_step_nm)
        self.fit_shift = fit_shift
        self.fit_stretch = fit_stretch
        self.fit_offset = fit_offset
        self.max_shift = float(max_shift_nm)
        self.saturation = float(saturation_counts)
        # Light dilution (processing.dilution): the fraction T of the plume's light that reaches the instrument; the
        # model dilutes the SO2 absorption as the air between plume and instrument does, I = F·(T·e^-τ_SO2 + 1 - T),
        # so the column is the plume's own. 1: no dilution (set per spectrum by processing.stream).
        self.dilution_transmission = 1.0
        self._grid: _Grid | None = None

    # ------------------------------------------------------------------ preparation

    def _prepare(self, wl: np.ndarray) -> _Grid:
        key = (wl.shape[0], float(wl[0]), float(wl[-1]), float(wl[wl.shape[0] // 2]))
        if self._grid is not None and self._grid.key == key:
            return self._grid
        lo, hi = self.window
        if not (wl[0] <= lo and wl[-1] >= hi):
            raise ProcessingError(
                f"fit window {lo}-{hi} nm outside the spectrum's wavelength range {wl[0]:.2f}-{wl[-1]:.2f} nm"
            )
        s_lo, s_hi = self.stray_window
        stray_mask = (wl >= s_lo) & (wl <= s_hi)
        if stray_mask.sum() < 3:
            raise ProcessingError(
                f"stray-light window {s_lo}-{s_hi} nm has fewer than 3 pixels in the spectrum's range "
                f"{wl[0]:.2f}-{wl[-1]:.2f} nm"
            )
        pix = np.nonzero((wl >= lo) & (wl <= hi))[0]
        n_par = self.poly_order + 1 + len(self.ABSORBERS) + 3
        if pix.size < n_par + 5:
            raise ProcessingError(f"fit window {lo}-{hi} nm holds only {pix.size} pixels")
        kernel = self.refs.ils.kernel(self.step)
        half_k = (kernel.size - 1) // 2
        margin = self.max_shift + self.max_shift * 0.5 + 0.5
        n_conv = int(np.ceil((hi - lo + 2 * margin) / self.step)) + 1
        conv_grid = (lo - margin) + self.step * np.arange(n_conv)
        fine = (lo - margin) + self.step * np.arange(-half_k, n_conv + half_k)
        solar = self.refs.solar.on_grid(fine)
        solar = solar / solar.mean()
        xs = [self.refs.so2.on_grid(fine), self.refs.o3.on_grid(fine), self.refs.ring.on_grid(fine)]
        in_win = (fine >= lo) & (fine <= hi)
        scales = np.ones(len(xs))
        for i, name in enumerate(self.ABSORBERS):
            if name != "ring":
                # one unit of parameter = optical depth 1 at the strongest band in the window: keeps the
                # problem well conditioned without knowing the magnitude of the columns beforehand
                scales[i] = 1.0 / np.abs(xs[i][in_win]).max()
        absorbers = np.vstack([x * s for x, s in zip(xs, scales, strict=True)])
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        t_fine = (fine - centre) / half
        vander = np.vander(t_fine, self.poly_order + 1, increasing=True)
        self._grid = _Grid(
            key,
            pix,
            stray_mask,
            wl[pix].copy(),
            fine,
            conv_grid,
            solar,
            absorbers,
            scales,
            t_fine,
            vander,
            kernel,
            centre,
            half,
        )
        return self._grid

    # ------------------------------------------------------------------ the model

    def _unpack(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        k = self.poly_order + 1
        n_abs = len(self.ABSORBERS)
        poly = p[:k]
        cols = p[k : k + n_abs]
        i = k + n_abs
        shift = p[i] if self.fit_shift else 0.0
        i += self.fit_shift
        stretch = p[i] if self.fit_stretch else 0.0
        i += self.fit_stretch
        offset = p[i] if self.fit_offset else 0.0
        return poly, cols, float(shift), float(stretch), float(offset)

    def _model(self, g: _Grid, p: np.ndarray, lam: np.ndarray | None = None) -> np.ndarray:
        """Normalised model intensity at the measured window wavelengths (or `lam`)."""
        poly, cols, shift, stretch, offset = self._unpack(p)
        od = cols @ g.absorbers
        hi_res = g.solar * (g.vander @ poly) * np.exp(-od)
        t = self.dilution_transmission
        if t < 1.0:  # the SO2 absorption (absorber 0) diluted; ozone and Ring act on the diluting light too
            so2 = np.exp(-cols[0] * g.absorbers[0])
            hi_res = hi_res / so2 * (t * so2 + 1.0 - t)
        conv = np.convolve(hi_res, g.kernel, mode="valid")
        lam = g.lam if lam is None else lam
        where = lam + shift + stretch * (lam - g.centre)
        return np.interp(where, g.conv_grid, conv) + offset

    def _initial_guess(self, g: _Grid, y: np.ndarray) -> np.ndarray:
        """Linear DOAS in log space (convolved references, no I0 effect) for columns and polynomial."""
        k = self.poly_order + 1
        conv_solar = np.interp(g.lam, g.conv_grid, np.convolve(g.solar, g.kernel, mode="valid"))
        conv_abs = np.vstack(
            [np.interp(g.lam, g.conv_grid, np.convolve(a, g.kernel, mode="valid")) for a in g.absorbers]
        )
        t = (g.lam - g.centre) / g.half
        vander = np.vander(t, k, increasing=True)
        safe = np.clip(y, 1e-6 * np.abs(y).max(), None)
        rhs = np.log(safe / conv_solar)
        design = np.hstack([vander, -conv_abs.T])
        sol, *_ = np.linalg.lstsq(design, rhs, rcond=None)
        cols = sol[k:]
        # P multiplies F before the convolution; as P is smooth, fitting it to y / (F_conv·T) is close enough
        ratio = y / (conv_solar * np.exp(-cols @ conv_abs))
        poly, *_ = np.linalg.lstsq(vander, ratio, rcond=None)
        extra = [0.0] * (int(self.fit_shift) + int(self.fit_stretch) + int(self.fit_offset))
        return np.concatenate([poly, cols, extra])

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        k = self.poly_order + 1
        n = k + len(self.ABSORBERS) + int(self.fit_shift) + int(self.fit_stretch) + int(self.fit_offset)
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        i = k + len(self.ABSORBERS)
        if self.fit_shift:
            lo[i], hi[i] = -self.max_shift, self.max_shift
            i += 1
        if self.fit_stretch:
            lo[i], hi[i] = -0.05, 0.05
        return lo, hi

    # ------------------------------------------------------------------ public API

    def corrected_counts(
        self, spectrum: Spectrum, dark: Spectrum | np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """Dark-subtract (when given), then subtract the stray light (mean counts in the stray window)."""
        wl, counts = self._validate(spectrum)
        g = self._prepare(wl)
        raw_window = counts[g.pix]
        if np.any(raw_window >= self.saturation):
            raise ProcessingError(f"{spectrum.source or 'spectrum'}: saturated pixels in the fit window")
        if dark is not None:
            dark_counts = dark.counts if isinstance(dark, Spectrum) else np.asarray(dark, dtype=np.float64)
            if dark_counts.shape != counts.shape:
                raise ProcessingError(f"dark spectrum has {dark_counts.shape} pixels, the spectrum {counts.shape}")
            counts = counts - dark_counts
        stray = float(counts[g.stray_mask].mean())
        return counts - stray, stray

    def fit(self, spectrum: Spectrum, dark: Spectrum | np.ndarray | None = None) -> DoasResult:
        """Retrieve the SO2 column of one spectrum (`dark`: its matched dark spectrum, subtracted first)."""
        counts, stray = self.corrected_counts(spectrum, dark)
        g = self._prepare(spectrum.wavelengths_nm)
        y_counts = counts[g.pix]
        norm = float(np.mean(y_counts))
        if not norm > 0:
            raise ProcessingError(
                f"{spectrum.source or 'spectrum'}: no signal in the fit window after dark and stray light"
            )
        y = y_counts / norm
        p0 = self._initial_guess(g, y)
        lo, hi = self._bounds()
        p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
        sol = least_squares(lambda p: self._model(g, p) - y, p0, bounds=(lo, hi), x_scale="jac", method="trf")
        resid = sol.fun
        dof = max(1, y.size - sol.x.size)
        chi2 = float(resid @ resid) / dof
        err = _param_errors(sol.jac, chi2)
        k = self.poly_order + 1
        poly, cols, shift, stretch, offset = self._unpack(sol.x)
        columns = cols * g.scales
        col_errs = err[k : k + len(self.ABSORBERS)] * g.scales
        return DoasResult(
            time=spectrum.time,
            so2=float(columns[0]),
            so2_err=float(col_errs[0]),
            o3=float(columns[1]),
            ring=float(columns[2]),
            shift_nm=shift,
            stretch=stretch,
            offset=offset * norm,
            rms_residual=float(np.sqrt(np.mean(resid**2))),
            chi2_reduced=chi2,
            n_points=int(y.size),
            nfev=int(sol.nfev),
            success=bool(sol.success),
            ppmm_factor=self.ppmm_factor,
            stray_light=stray,
            ldf=1.0 - self.dilution_transmission,
            source=spectrum.source,
            kind=spectrum.kind,
            max_residual=float(np.max(np.abs(resid))),
            dark=Path(dark.source).name if isinstance(dark, Spectrum) else ("array" if dark is not None else ""),
            fit={"wavelengths_nm": g.lam, "measured": y_counts, "model": (y - resid) * norm},
        )

    def fit_many(self, spectra: Sequence[Spectrum], dark: Spectrum | None = None) -> list[DoasResult]:
        return [self.fit(s, dark) for s in spectra]

    def forward(
        self,
        wavelengths_nm: np.ndarray,
        *,
        so2: float,
        o3: float = 0.0,
        ring: float = 0.0,
        poly: Sequence[float] = (1.0,),
        shift_nm: float = 0.0,
        stretch: float = 0.0,
        offset: float = 0.0,
        scale: float = 1.0,
    ) -> np.ndarray:
        """Model counts over the fit window at `wavelengths_nm` (zero outside it): for synthetic tests."""
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
        g = self._prepare(wl)
        k = self.poly_order + 1
        coefs = np.zeros(k)
        coefs[: min(k, len(poly))] = list(poly)[:k]
        p = [*coefs, so2 / g.scales[0], o3 / g.scales[1], ring / g.scales[2]]
        p += [shift_nm] * self.fit_shift + [stretch] * self.fit_stretch + [offset] * self.fit_offset
        out = np.zeros_like(wl)
        out[g.pix] = scale * self._model(g, np.asarray(p, dtype=np.float64))
        return out

    def _validate(self, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
        wl, counts = np.asarray(spectrum.wavelengths_nm), np.asarray(spectrum.counts)
        where = spectrum.source or "spectrum"
        if wl.ndim != 1 or counts.ndim != 1 or wl.shape != counts.shape:
            raise ProcessingError(
                f"{where}: wavelengths {wl.shape} and counts {counts.shape} must be 1-D of equal length"
            )
        if wl.size < 10:
            raise ProcessingError(f"{where}: only {wl.size} pixels")
        if not (np.all(np.isfinite(wl)) and np.all(np.isfinite(counts))):
            raise ProcessingError(f"{where}: non-finite wavelengths or counts")
        if np.any(np.diff(wl) <= 0):
            raise ProcessingError(f"{where}: wavelengths are not strictly increasing")
        return wl.astype(np.float64, copy=False), counts.astype(np.float64, copy=False)


def _param_errors(jac: np.ndarray, chi2_reduced: float) -> np.ndarray:
    """1-sigma parameter errors from the Jacobian, scaled by the reduced chi² (as curve_fit does)."""
    _, s, vt = np.linalg.svd(jac, full_matrices=False)
    tiny = np.finfo(float).eps * max(jac.shape) * s[0]
    s = s[s > tiny]
    vt = vt[: s.size]
    cov = (vt.T / s**2) @ vt
    return np.sqrt(np.clip(np.diag(cov), 0.0, None) * chi2_reduced)


# ---------------------------------------------------------------------- CSV (the original's columns)


def doas_csv_header(ppmm_factor: float) -> str:
    """The column names: the first line of the file (units and the ppm·m factor go to its sidecar, doas_csv_meta)."""
    return ",".join(DOAS_CSV_COLUMNS) + "\n"


def doas_csv_meta(ppmm_factor: float) -> dict:
    units = {
        "Time": "UTC, %Y-%m-%d %H:%M:%S", "Column density": "molecules/cm2", "CD error": "molecules/cm2",
        "LDF": "light dilution factor 1 - T the fit assumed (cameras' on-band T; 0: not corrected)",
    }  # fmt: skip
    return csv_meta("SO2 column densities (iFit-style DOAS, pycam processing.doas)", ppmm_factor, units)


def doas_row(r: DoasResult) -> tuple:
    """One doas_results.csv row (DOAS_CSV_COLUMNS)."""
    return (r.time, r.so2, r.so2_err, r.ldf)


def doas_fit_row(r: DoasResult) -> tuple:
    """One doas_fit.csv row (DOAS_FIT_COLUMNS): the fit residual and what went into the fit."""
    return (r.time, r.so2, r.rms_residual, r.max_residual, r.shift_nm, r.stray_light, r.dark or "none")


def doas_csv_row(r: DoasResult) -> str:
    time = fmt_time(r.time) if r.time is not None else ""
    return f"{time},{r.so2:.6e},{r.so2_err:.6e},{r.ldf:g}\n"


def write_doas_results(path: str | Path, results: Sequence[DoasResult], ppmm_factor: float) -> Path:
    """Write a complete DOAS results file atomically."""
    buf = io.StringIO()
    buf.write(doas_csv_header(ppmm_factor))
    for r in results:
        buf.write(doas_csv_row(r))
    out = atomic_write_text(path, buf.getvalue())
    write_meta(out, {**doas_csv_meta(ppmm_factor), "columns": list(DOAS_CSV_COLUMNS)})
    return out
