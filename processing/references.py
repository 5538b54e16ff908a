"""Reference spectra for the DOAS forward model: solar spectrum, cross-sections, Ring spectrum, ILS.

Wavelength media: reference tables are usually tabulated in vacuum (sao2010, Bogumil SO2, Serdyuchenko O3), while a
spectrometer's wavelength calibration (Hg/Ar lamp lines) is in standard air. At 310 nm the two differ by ~0.09 nm,
a sizeable fraction of the ILS width. The config says which medium each reference and the spectrometer are in
(`processing.*_medium`); `load_references` converts every reference to the spectrometer's medium with the Ciddor
(1996) dispersion of standard dry air (15 °C, 101 325 Pa, 450 ppm CO2), valid 230-1690 nm:
    n - 1 = 0.05792105 / (238.0185 - s²) + 0.00167917 / (57.362 - s²),   s = 1 / λ_vac [µm⁻¹]
    λ_air = λ_vac / n(λ_vac);  λ_vac from λ_air by fixed-point iteration (converges to 1e-9 nm in 3 steps).

File formats (all plain text, two whitespace-separated columns, `#` comments allowed):

- solar reference (sao2010, Chance & Kurucz): wavelength (nm, vacuum), irradiance (photons s-1 cm-2 nm-1)
- SO2 (Bogumil 293 K) and O3 (223 K, Voigt or Serdyuchenko): wavelength (nm), cross-section (cm²/molecule)
- Ring spectrum: wavelength (nm), dimensionless pseudo-absorber (used like an optical depth)
- instrument line shape (ILS): wavelength (nm, offset from the start of the measured line), intensity (DN); it
  is normalised to unit area and centred on its centroid here, because only its shape matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.config import ProcessingConfig
from controller.errors import ProcessingError

__all__ = [
    "MEDIA",
    "InstrumentLineShape",
    "ReferenceSpectra",
    "Spectrum1D",
    "load_ils",
    "load_references",
    "load_two_column",
    "air_to_vacuum_nm",
    "vacuum_to_air_nm",
]

MEDIA = ("vacuum", "air")


def refractive_index_std_air(vacuum_nm: np.ndarray | float) -> np.ndarray:
    """Refractive index of standard dry air at vacuum wavelength(s) in nm (Ciddor 1996, eq. 1)."""
    s2 = (1e3 / np.asarray(vacuum_nm, dtype=np.float64)) ** 2
    return 1.0 + 0.05792105 / (238.0185 - s2) + 0.00167917 / (57.362 - s2)


def vacuum_to_air_nm(vacuum_nm: np.ndarray | float) -> np.ndarray:
    """Wavelengths in standard air of vacuum wavelengths (nm)."""
    v = np.asarray(vacuum_nm, dtype=np.float64)
    return v / refractive_index_std_air(v)


def air_to_vacuum_nm(air_nm: np.ndarray | float) -> np.ndarray:
    """Vacuum wavelengths of wavelengths in standard air (nm): the inverse of `vacuum_to_air_nm`."""
    a = np.asarray(air_nm, dtype=np.float64)
    v = a.copy()
    for _ in range(4):
        v = a * refractive_index_std_air(v)
    return v


def to_medium(wavelengths_nm: np.ndarray, medium: str, target: str, what: str = "wavelengths") -> np.ndarray:
    """`wavelengths_nm` given in `medium` expressed in `target` ("vacuum" or "air")."""
    for m in (medium, target):
        if m not in MEDIA:
            raise ProcessingError(f"{what}: wavelength medium {m!r} is not one of {', '.join(MEDIA)}")
    if medium == target:
        return wavelengths_nm
    return vacuum_to_air_nm(wavelengths_nm) if target == "air" else air_to_vacuum_nm(wavelengths_nm)


@dataclass(frozen=True)
class Spectrum1D:
    """A tabulated function of wavelength (nm), strictly increasing wavelengths."""

    wavelengths_nm: np.ndarray
    values: np.ndarray
    path: str
    unit: str
    medium: str = "vacuum"

    def in_medium(self, target: str) -> Spectrum1D:
        """The same table with its wavelengths expressed in `target` ("vacuum" or "air")."""
        if target == self.medium:
            return self
        wl = to_medium(self.wavelengths_nm, self.medium, target, self.path)
        return Spectrum1D(wl, self.values, self.path, self.unit, target)

    def on_grid(self, grid_nm: np.ndarray) -> np.ndarray:
        """Linear interpolation onto `grid_nm`; refuses grids outside the tabulated range."""
        lo, hi = float(grid_nm[0]), float(grid_nm[-1])
        if lo < self.wavelengths_nm[0] or hi > self.wavelengths_nm[-1]:
            raise ProcessingError(
                f"{self.path}: covers {self.wavelengths_nm[0]:.2f}-{self.wavelengths_nm[-1]:.2f} nm, "
                f"the model needs {lo:.2f}-{hi:.2f} nm"
            )
        return np.interp(grid_nm, self.wavelengths_nm, self.values)


@dataclass(frozen=True)
class InstrumentLineShape:
    """ILS as offsets (nm, centred on the centroid) and unit-area weights."""

    offsets_nm: np.ndarray
    weights: np.ndarray
    path: str

    @property
    def half_width_nm(self) -> float:
        return float(max(-self.offsets_nm[0], self.offsets_nm[-1]))

    @property
    def fwhm_nm(self) -> float:
        """Full width at half maximum, from linear interpolation of the half-maximum crossings."""
        y = self.weights / self.weights.max()
        above = np.nonzero(y >= 0.5)[0]
        i0, i1 = above[0], above[-1]
        x = self.offsets_nm
        left = x[i0] if i0 == 0 else np.interp(0.5, [y[i0 - 1], y[i0]], [x[i0 - 1], x[i0]])
        right = x[i1] if i1 == len(y) - 1 else np.interp(0.5, [y[i1 + 1], y[i1]], [x[i1 + 1], x[i1]])
        return float(right - left)

    def kernel(self, step_nm: float) -> np.ndarray:
        """The ILS sampled at `step_nm` on a symmetric grid (odd length), normalised to sum 1."""
        n = int(np.ceil(self.half_width_nm / step_nm))
        x = np.arange(-n, n + 1) * step_nm
        k = np.interp(x, self.offsets_nm, self.weights, left=0.0, right=0.0)
        total = k.sum()
        if not total > 0:
            raise ProcessingError(f"{self.path}: line shape is empty at a {step_nm} nm step")
        return k / total


@dataclass(frozen=True)
class ReferenceSpectra:
    """Everything the DOAS forward model needs besides the measured spectrum."""

    solar: Spectrum1D
    so2: Spectrum1D
    o3: Spectrum1D
    ring: Spectrum1D
    ils: InstrumentLineShape
    medium: str = "air"  # the medium of the spectrometer's wavelengths, which every table above is now in


def load_two_column(path: str | Path, what: str, unit: str = "") -> Spectrum1D:
    """Read a two-column text table; errors name the file and what is wrong with it."""
    p = Path(path)
    if not str(path):
        raise ProcessingError(f"{what}: no file configured")
    if not p.is_file():
        raise ProcessingError(f"{what}: file not found: {p}")
    try:
        data = np.loadtxt(p, comments="#", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ProcessingError(f"{what}: {p} is not a numeric two-column table: {e}") from e
    if data.ndim != 2 or data.shape[1] < 2:
        raise ProcessingError(f"{what}: {p} needs two columns (wavelength, value), found shape {data.shape}")
    if data.shape[0] < 3:
        raise ProcessingError(f"{what}: {p} has only {data.shape[0]} rows")
    if not np.all(np.isfinite(data[:, :2])):
        raise ProcessingError(f"{what}: {p} contains non-finite values")
    wl, val = data[:, 0], data[:, 1]
    order = np.argsort(wl, kind="stable")
    wl, val = wl[order], val[order]
    if np.any(np.diff(wl) <= 0):
        raise ProcessingError(f"{what}: {p} has repeated wavelengths")
    return Spectrum1D(np.ascontiguousarray(wl), np.ascontiguousarray(val), str(p), unit)


def load_ils(path: str | Path) -> InstrumentLineShape:
    """Read a measured ILS (wavelength offsets in nm, intensity); centre it and normalise to unit area."""
    table = load_two_column(path, "instrument line shape", "DN")
    x, y = table.wavelengths_nm, table.values
    if not np.any(y > 0):
        raise ProcessingError(f"instrument line shape: {table.path} has no positive intensity")
    y = np.clip(y, 0.0, None)
    area = np.trapezoid(y, x)
    centroid = np.trapezoid(x * y, x) / area
    return InstrumentLineShape(x - centroid, y / area, table.path)


def load_references(cfg: ProcessingConfig) -> ReferenceSpectra:
    """Load the reference spectra and ILS named in the processing config, each converted from its configured
    wavelength medium (`processing.<key>_medium`) to the spectrometer's (`processing.spectrometer_medium`)."""
    target = cfg.spectrometer_medium

    def table(key: str, unit: str) -> Spectrum1D:
        medium = getattr(cfg, f"{key}_medium")
        t = load_two_column(getattr(cfg, key), f"processing.{key}", unit)
        return Spectrum1D(t.wavelengths_nm, t.values, t.path, unit, medium).in_medium(target)

    return ReferenceSpectra(
        solar=table("solar_reference", "photons/s/cm2/nm"),
        so2=table("so2_xsec", "cm2/molecule"),
        o3=table("o3_xsec", "cm2/molecule"),
        ring=table("ring_spectrum", "1"),
        ils=load_ils(cfg.ils),
        medium=target,
    )
