"""A deterministic, seeded SO2 plume scene seen by camera A (on-band), camera B (off-band) and the spectrometer.

The model (all of it a pure function of `sim.seed` and the epoch time t):

- Column field S(x, y, t) [molecules/cm²]: a Gaussian plume (1-sigma width `sim.plume_width_px` across the wind)
  whose along-wind texture is "frozen turbulence" (a sum of seeded cosine modes, mean 1, always >= 0.25) that
  drifts with the wind at `wind_speed_m_s / pixel_size_m` px/s, in +x for wind_direction_deg = 0 (positive angles
  point up in the image). The peak column is chosen so that the flux through any vertical line,
  Σ S·1e4·M/N_A·v⊥·Δx, equals `emission_rate_kg_s` on average (physics.md), Δx = d·pitch/focal length.
- Camera radiance: a sky with a vertical and slight horizontal gradient, cos⁴-like vignetting, on-band (A)
  transmission exp(-σ_eff·S - τ_aer,A), off-band (B) transmission exp(-τ_aer,B); the plume aerosol optical depth
  follows the plume's shape, τ_aer,A = `aerosol_optical_depth` at the plume peak and τ_aer,B = τ_aer,A ·
  (330/310)^-α (Angstrom exponent α = `aerosol_angstrom`), so AA does not remove the aerosol completely.
- Light dilution (Campion et al. 2015): between plume and camera (distance d = `plume_distance_m`) the
  atmosphere transmits f = exp(-ε·d) of the plume's light and scatters (1 - f) of the sky's into the path:
  I = I_sky · (f · exp(-τ) + 1 - f), with ε = `extinction_a_per_m` / `extinction_b_per_m` per band (the
  spectrometer sees the on-band's, on the plume's absorption: the diluting air is lit by sunlight that crossed
  the same ozone). `truth()` gives ε and f of both bands.
- Terrain (controller/sim/terrain.py): a dark volcano flank in the lower left at known distances (2-10 km), diluted
  by the same ε per band, in front of the plume; it is what a station fits ε on. `dilution_lines()` gives what a
  station knows of it (lines with distances read off a map, ±3 %), `flat_field()` a lab flat field of the lens. σ_eff = 1.75e-19 cm²
  (SO2_SIGMA_EFF_CM2), between the Villarrica cell values (AA 0.16 at 304 ppm·m, 0.46 at 1257 ppm·m with
  2.504e15 molecules/cm² per ppm·m, i.e. 2.1e-19 and 1.46e-19).
- Sensor: counts = radiance · band throughput · exposure · gain + dark (black level + dark current + fixed
  hot pixels), shot noise (Poisson in electrons), read noise, rounded and clipped to `camera.bit_depth` bits.
- Spectrometer: a Flame-S like grid (2048 px, 242-404 nm, the grid of the 2019-05-29 spectra, wavelengths in
  standard air), solar spectrum × exp(-σ_SO2·S_fov - σ_O3·O3 - σ_ring·c_ring) on the scene's own 0.01 nm grid,
  convolved with the scene's own ILS (an asymmetric super-Gaussian, FWHM ~0.63 nm: not the Gaussian the fit is
  told), times a smooth throughput, scaled by integration time, plus stray light, a dark (offset, dark current
  growing with the integration time, a fixed pixel pattern: only a matched dark spectrum removes it), shot and
  read noise, co-added. The scene's cross-sections are its own: the vacuum tables interpolated (Akima) onto
  its 0.01 nm grid, which is in air by Edlén's (1966) dispersion formula (the processing uses Ciddor's).
  References come from `sim.references_dir` (sao2010.txt, SO2_293K.txt, O3_Voigt_223K.txt, Ring.txt, as in
  shared/data/references) or, when it is empty, from a built-in synthetic set: a 5778 K black body with seeded
  Fraunhofer-like Gaussian lines, an SO2 cross-section with an exponential envelope (6e-19 cm² at 305 nm, 1/e per
  8 nm) modulated by 2.6 nm vibronic bands, an O3 Huggins-like exponential (3.6e-19 cm² at 300 nm, 1/e per 7 nm),
  and a Ring spectrum derived from the synthetic solar lines (filled-in lines).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.config import CameraConfig, SimConfig, SpectrometerConfig
from controller.sim.terrain import Terrain, make_terrain

M_SO2_KG_MOL = 64.066e-3
N_A = 6.022e23
KG_PER_MOLECULE_CM2_TO_M2 = 1e4 * M_SO2_KG_MOL / N_A  # molecules/cm² -> kg/m²
SO2_SIGMA_EFF_CM2 = 1.75e-19  # effective on-band SO2 cross-section of camera A's ~310 nm filter
O3_SLANT_COLUMN = 4.0e18  # molecules/cm² along the light path (≈ 150 DU at an air mass of 1)
RING_COLUMN = 0.02
ILS_FWHM_NM = 0.6  # the Gaussian the sim station tells the processing (sim_gaussian_ils.txt)
SCENE_ILS_HWHM_NM = (0.29, 0.31)  # the scene's own line shape: left and right half widths at half maximum
SCENE_ILS_POWER = 2.2  # super-Gaussian exponent (2 would be a Gaussian)
HIRES_STEP_NM = 0.01
ONBAND_NM, OFFBAND_NM = 310.0, 330.0
BAND_THROUGHPUT = {"A": 0.3, "B": 1.0}  # on-band is darker: less sunlight at 310 nm, narrower filter
ELECTRONS_PER_DN = 4.4  # at gain 1 (OV5647: ~4500 e- full well over 10 bits)
READ_NOISE_DN = 1.2
BLACK_LEVEL_DN = 16.0
DARK_CURRENT_DN_S = 0.5
SPEC_COUNTS_PER_MS = 50.0  # peak counts per ms in the 300-340 nm window, clear sky
SPEC_DARK_COUNTS = 1000.0
SPEC_DARK_CURRENT_PER_MS = 0.05  # counts per ms of integration
SPEC_DARK_PATTERN = 80.0  # counts: fixed pixel-to-pixel dark pattern (amplitude)
SPEC_ELECTRONS_PER_COUNT = 0.15
SPEC_READ_NOISE = 8.0
N_TEXTURE_MODES = 6
N_FINE_MODES = 4  # small-scale texture (8-24 px): the spectrometer's FOV disk mean depends on its radius
# Hazy air: at the scene's 5 km, 74 % (on-band) and 80 % (off-band) of the plume's signal reach the cameras (issue
# 12: 69-78 % at 5 km and 310 nm with pyplis's Etna coefficients). The sim station's on request (`--air hazy`), not
# by default (clear air): three hazy station days gave ε_A 6.21-6.29e-5, flux +0.9, +0.5, +2.7 % and the FOV centre
# 1, 3 and 3 px off (the diluted DOAS columns are noisier), where the station test holds it to 3 px.
SIM_AIR = {"extinction_a_per_m": 6e-5, "extinction_b_per_m": 4.5e-5}
FLAT_FIELD_NAME = "flat_field.npy"


def pixel_size_m(sim: SimConfig, camera: CameraConfig) -> float:
    """Pixel size projected to the plume distance (physics.md: Δx = d · pixel pitch / focal length)."""
    return sim.plume_distance_m * camera.pixel_pitch_um * 1e-6 / (camera.focal_length_mm * 1e-3)


def flame_wavelengths(n: int = 2048) -> np.ndarray:
    """The wavelength calibration of the real 2019-05-29 Flame-S spectra (cubic in pixel index)."""
    i = np.arange(n, dtype=np.float64)
    return np.polyval([-4.26125505e-22, -8.28690000e-06, 9.59535440e-02, 2.42033853e02], i)


@dataclass(frozen=True)
class References:
    """Solar spectrum and cross-sections on the scene's high-resolution grid."""

    wavelengths_nm: np.ndarray
    solar: np.ndarray
    so2_cm2: np.ndarray
    o3_cm2: np.ndarray
    ring: np.ndarray
    source: str


def _load_two_columns(path: Path, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, comments="#", usecols=(0, 1))
    keep = (data[:, 0] >= lo - 1) & (data[:, 0] <= hi + 1)
    return data[keep, 0], data[keep, 1]


def edlen_air_to_vacuum_nm(air_nm: np.ndarray) -> np.ndarray:
    """Vacuum wavelengths of standard-air wavelengths by Edlén (1966): n - 1 = 1e-8 (8342.13 + 2406030 /
    (130 - s²) + 15997 / (38.9 - s²)), s in 1/µm (the scene's own conversion; the processing uses Ciddor's)."""
    a = np.asarray(air_nm, dtype=np.float64)
    s2 = (1e3 / a) ** 2
    return a * (1.0 + 1e-8 * (8342.13 + 2406030.0 / (130.0 - s2) + 15997.0 / (38.9 - s2)))


@functools.lru_cache(maxsize=4)
def load_references(references_dir: str, lo: float = 238.0, hi: float = 410.0) -> References:
    """References on the scene's 0.01 nm grid in standard air from the vacuum tables of `references_dir`
    (Akima interpolation), or the built-in synthetic set when it is empty."""
    grid = np.arange(lo, hi, HIRES_STEP_NM)
    if not references_dir:
        return _synthetic_references(grid)
    from scipy.interpolate import Akima1DInterpolator  # only for real reference tables (the sim station's)

    folder = Path(references_dir)
    vacuum = edlen_air_to_vacuum_nm(grid)
    columns = {}
    for key, name in (("solar", "sao2010.txt"), ("so2", "SO2_293K.txt"), ("o3", "O3_Voigt_223K.txt"),
                      ("ring", "Ring.txt")):  # fmt: skip
        w, v = _load_two_columns(folder / name, lo, hi)
        inside = np.clip(vacuum, w[0], w[-1])
        columns[key] = Akima1DInterpolator(w, v)(inside)
    solar = columns["solar"] / columns["solar"].max()
    return References(grid, solar, np.clip(columns["so2"], 0, None), np.clip(columns["o3"], 0, None),
                      columns["ring"], str(folder))  # fmt: skip


def _synthetic_references(grid: np.ndarray) -> References:
    rng = np.random.default_rng(20_190_529)  # fixed: the built-in set does not depend on the sim seed
    h, c, k = 6.626e-34, 2.998e8, 1.381e-23
    lam = grid * 1e-9
    planck = 1.0 / (lam**5 * (np.exp(h * c / (lam * k * 5778.0)) - 1.0))
    lines = np.ones_like(grid)
    for centre, depth, width in zip(rng.uniform(grid[0], grid[-1], 220), rng.uniform(0.05, 0.6, 220),
                                    rng.uniform(0.05, 0.4, 220), strict=True):  # fmt: skip
        lines *= 1.0 - depth * np.exp(-0.5 * ((grid - centre) / width) ** 2)
    solar = planck * lines
    solar /= solar.max()
    so2 = 6e-19 * np.exp(-(np.maximum(grid, 290.0) - 305.0) / 8.0) * (1.0 + 0.6 * np.sin(2 * np.pi * grid / 2.6))
    o3 = 3.6e-19 * np.exp(-(grid - 300.0) / 7.0)
    ring = (1.0 - lines) * 0.5 - np.mean((1.0 - lines) * 0.5)
    return References(grid, solar, so2, o3, ring, "built-in synthetic")


def station_dilution(out: Path, seed: int, size: tuple[int, int], flat_field: bool = False) -> dict:
    """The `processing` entries a sim station has for light dilution: the scene's dilution lines with distances read
    off a map and a sky region — never ε; with `flat_field` also the lens's flat field as a lab measures it (written
    to `out`; without it the vignetting biases ε by +5-7 %, ~1e-6 /m in the sim station's clear air)."""
    scene = SimScene(SimConfig(seed=seed), CameraConfig(width=size[0], height=size[1]), SpectrometerConfig())
    if not flat_field:
        return scene.dilution_lines()
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / FLAT_FIELD_NAME, scene.flat_field())
    return {**scene.dilution_lines(), "flat_field": str(out / FLAT_FIELD_NAME)}


def scene_ils_kernel(step_nm: float) -> np.ndarray:
    """The scene spectrometer's line shape sampled at `step_nm`, unit sum: an asymmetric super-Gaussian."""
    left, right = SCENE_ILS_HWHM_NM
    half = int(3 * max(left, right) / step_nm)
    x = np.arange(-half, half + 1) * step_nm
    width = np.where(x < 0, left, right) / math.log(2) ** (1 / SCENE_ILS_POWER)  # value 1/2 at the HWHM
    kernel = np.exp(-((np.abs(x) / width) ** SCENE_ILS_POWER))
    return kernel / kernel.sum()


class SimScene:
    """The simulated world: plume, sky, sensors. Deterministic in `sim.seed` and the epoch time t."""

    def __init__(self, sim: SimConfig, camera: CameraConfig, spectrometer: SpectrometerConfig):
        self.plugs: dict = {}  # device name -> its SimPlug (controller/sim/devices.py): the sim world's connections
        self.sim = sim
        self.camera = camera
        self.spectrometer = spectrometer
        self.width, self.height = camera.width, camera.height
        self.pixel_size_m = pixel_size_m(sim, camera)
        self.speed_px_s = sim.wind_speed_m_s / self.pixel_size_m
        theta = math.radians(sim.wind_direction_deg)
        # image rows grow downwards; positive wind angles point up in the image
        self._dir = (math.cos(theta), -math.sin(theta))
        self.sigma_px = sim.plume_width_px
        self.centre_y_px = 0.45 * self.height
        self.peak_column = sim.emission_rate_kg_s / (
            KG_PER_MOLECULE_CM2_TO_M2 * sim.wind_speed_m_s * self.pixel_size_m * math.sqrt(2 * math.pi) * self.sigma_px
        )
        rng = np.random.default_rng([sim.seed, 0x5C3E])
        wavelengths_px = rng.uniform(25.0, 220.0, N_TEXTURE_MODES)
        amplitudes = rng.uniform(0.5, 1.0, N_TEXTURE_MODES)
        self._tex_k = 2 * np.pi / wavelengths_px
        self._tex_m = rng.uniform(-0.5, 0.5, N_TEXTURE_MODES) * 2 * np.pi / (6 * self.sigma_px)
        self._tex_phi = rng.uniform(0, 2 * np.pi, N_TEXTURE_MODES)
        fine = np.random.default_rng([sim.seed, 0xF1E]).uniform(size=(4, N_FINE_MODES))
        self._tex_k = np.append(self._tex_k, 2 * np.pi / (8.0 + 16.0 * fine[0]))
        self._tex_m = np.append(self._tex_m, (fine[1] - 0.5) * 2 * np.pi / 12.0)
        self._tex_phi = np.append(self._tex_phi, 2 * np.pi * fine[2])
        amplitudes = np.append(amplitudes, 0.35 + 0.25 * fine[3])
        self._tex_a = 0.75 * amplitudes / amplitudes.sum()  # sum 0.75 keeps the texture >= 0.25
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        self._xx, self._yy = xx, yy
        r2 = ((xx - self.width / 2) / (self.width / 2)) ** 2 + ((yy - self.height / 2) / (self.width / 2)) ** 2
        self._vignetting = 1.0 / (1.0 + 0.25 * r2) ** 2
        self._sky = sim.sky_counts * (1.0 + 0.25 * (yy / self.height - 0.5) + 0.08 * (xx / self.width - 0.5))
        self.terrain: Terrain = make_terrain(self.width, self.height)
        # the terrain's diluting air is lit like the horizon sky of its column (controller/sim/terrain.py)
        horizon = np.broadcast_to(self._sky[self.terrain.horizon_row], self._sky.shape)
        self._terrain_sky = (horizon * self._vignetting)[self.terrain.mask]
        # fixed-pattern dark current: a few hot pixels, so dark correction matters
        hot = np.ones((self.height, self.width))
        idx = rng.integers(0, self.height * self.width, max(1, self.height * self.width // 2000))
        hot.flat[idx] = rng.uniform(5.0, 50.0, idx.size)
        self._dark_pattern = hot
        self._spec_wavelengths = flame_wavelengths()
        self._refs: References | None = None

    # ------------------------------------------------------------------------------------------------ plume

    def _plume_coords(self, x: np.ndarray, y: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = self._dir
        rel_y = y - self.centre_y_px
        along = x * dx + rel_y * dy - self.speed_px_s * t
        across = -x * dy + rel_y * dx
        return along, across

    def _shape(self, x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
        """The plume's normalised shape (peak 1 on average): Gaussian across the wind × drifting texture."""
        along, across = self._plume_coords(x, y, t)
        texture = np.ones_like(along)
        for k, m, a, phi in zip(self._tex_k, self._tex_m, self._tex_a, self._tex_phi, strict=True):
            texture += a * np.cos(k * along + m * across + phi)
        return np.exp(-0.5 * (across / self.sigma_px) ** 2) * texture

    def column_field(self, t: float) -> np.ndarray:
        """SO2 column per pixel at time t, molecules/cm², float64 (height, width)."""
        return self.peak_column * self._shape(self._xx, self._yy, t)

    def flux_through_column(self, t: float, x: int) -> float:
        """Instantaneous SO2 flux [kg/s] through the vertical line at image column x."""
        ys = np.arange(self.height, dtype=np.float64)
        column = self.peak_column * self._shape(np.full_like(ys, float(x)), ys, t)
        v_normal = self.sim.wind_speed_m_s * self._dir[0]
        return float(column.sum() * KG_PER_MOLECULE_CM2_TO_M2 * v_normal * self.pixel_size_m)

    def truth(self, t: float) -> dict:
        """Ground truth at time t."""
        fov_column = self.fov_column(t)
        return {
            "emission_rate_kg_s": self.sim.emission_rate_kg_s,
            "flux_centre_line_kg_s": self.flux_through_column(t, self.width // 2),
            "plume_speed_m_s": self.sim.wind_speed_m_s,
            "plume_speed_px_s": self.speed_px_s,
            "pixel_size_m": self.pixel_size_m,
            "wind_direction_deg": self.sim.wind_direction_deg,
            "plume_distance_m": self.sim.plume_distance_m,
            "plume_centre_y_px": self.centre_y_px,
            "plume_sigma_px": self.sigma_px,
            "peak_column_molecules_cm2": self.peak_column,
            "fov_column_molecules_cm2": fov_column,
            "so2_sigma_eff_cm2": SO2_SIGMA_EFF_CM2,
            "aerosol_optical_depth": self.sim.aerosol_optical_depth,
            "aerosol_optical_depth_b": self.aerosol_peak("B"),
            "aerosol_angstrom": self.sim.aerosol_angstrom,
            "extinction_per_m": {"A": self.sim.extinction_a_per_m, "B": self.sim.extinction_b_per_m},
            "dilution_transmission": {b: self.dilution_transmission(b) for b in "AB"},
            "fov_centre_px": list(self.fov_centre_px),
            "fov_radius_px": self.fov_radius_px,
            "terrain_distance_m": [
                float(np.nanmin(self.terrain.distance_m)),
                float(np.nanmax(self.terrain.distance_m)),
            ],
        }

    def extinction(self, band: str) -> float:
        """ε of `band` (1/m)."""
        return self.sim.extinction_a_per_m if band == "A" else self.sim.extinction_b_per_m

    def aerosol_peak(self, band: str) -> float:
        """Plume aerosol optical depth at the plume peak in `band` (Angstrom scaling from the on-band)."""
        aod = self.sim.aerosol_optical_depth
        return aod if band == "A" else aod * (OFFBAND_NM / ONBAND_NM) ** -self.sim.aerosol_angstrom

    def dilution_transmission(self, band: str, distance_m: float | None = None) -> float:
        """f = exp(-ε·d): the fraction of the plume's light that reaches the camera in `band`."""
        return math.exp(-self.extinction(band) * (self.sim.plume_distance_m if distance_m is None else distance_m))

    def dilution_lines(self) -> dict:
        """What a station knows of the terrain, as `processing` config entries: dilution lines on the flank with the
        distances at their ends read off a map (±3 %, seeded) and a sky region above it — never ε."""
        lines, dists = self.terrain.dilution_lines(self.sim.seed)
        return {"dilution_lines": [list(v) for v in lines], "dilution_line_distances_m": [list(d) for d in dists],
                "dilution_ambient_roi": list(self.terrain.ambient_roi())}  # fmt: skip

    def flat_field(self, frames: int = 16) -> np.ndarray:
        """The lens's relative sensitivity as a lab measures it (pyplis's vignetting mask): the mean of `frames`
        frames of a uniform source at ~3/4 of full scale, shot noise included, divided by its mean in the centre
        (float32)."""
        rng = np.random.default_rng([self.sim.seed, 0xF1A7])
        electrons = 0.75 * ((1 << self.camera.bit_depth) - 1) * ELECTRONS_PER_DN * self._vignetting
        mean = rng.poisson(electrons * frames) / frames
        cy, cx = self.height // 2, self.width // 2
        return (mean / mean[cy - 10 : cy + 11, cx - 10 : cx + 11].mean()).astype(np.float32)

    @functools.cached_property
    def _terrain_factor(self) -> dict[str, np.ndarray]:
        return {b: self.terrain.factor(b, self.extinction(b)) for b in "AB"}

    # ------------------------------------------------------------------------------------------------ camera

    def optical_depth(self, band: str, t: float) -> np.ndarray:
        """ln(I0/I) of the plume in `band` ("A" SO2 + aerosol, "B" aerosol only)."""
        shape = self._shape(self._xx, self._yy, t)
        tau = self.aerosol_peak(band) * shape
        if band == "A":
            tau = tau + SO2_SIGMA_EFF_CM2 * self.peak_column * shape
        return tau

    def expected_counts(self, band: str, t: float, exposure_us: float, gain: float, dark: bool = False) -> np.ndarray:
        """Noise-free expected raw counts (float, before quantisation)."""
        if band not in BAND_THROUGHPUT:
            raise ValueError(f"band must be 'A' or 'B', not {band!r}")
        exposure_ms = exposure_us / 1000.0
        dark_dn = BLACK_LEVEL_DN + DARK_CURRENT_DN_S * exposure_ms / 1000.0 * self._dark_pattern * gain
        if dark:
            return dark_dn
        f = self.dilution_transmission(band)
        radiance = self._sky * self._vignetting * (f * np.exp(-self.optical_depth(band, t)) + 1.0 - f)
        radiance[self.terrain.mask] = self._terrain_sky * self._terrain_factor[band]  # the flank hides the plume
        return radiance * BAND_THROUGHPUT[band] * exposure_ms * gain + dark_dn

    def render_raw(
        self, band: str, t: float, exposure_us: float, gain: float = 1.0, rng: np.random.Generator | None = None,
        dark: bool = False, noise: bool = True,
    ) -> np.ndarray:  # fmt: skip
        """One raw frame, uint16 (height, width), `camera.bit_depth` bits. Same arguments, same frame.

        `dark=True` renders with the lens covered (dark frames)."""
        if rng is None:
            rng = np.random.default_rng([self.sim.seed, ord(band), round(t * 1000), round(exposure_us), int(dark)])
        expected = self.expected_counts(band, t, exposure_us, gain, dark)
        if noise:
            electrons_per_dn = ELECTRONS_PER_DN / gain
            signal = np.maximum(expected - BLACK_LEVEL_DN, 0.0)
            counts = rng.poisson(signal * electrons_per_dn) / electrons_per_dn + BLACK_LEVEL_DN
            counts = counts + rng.normal(0.0, READ_NOISE_DN, counts.shape)
        else:
            counts = expected
        max_value = (1 << self.camera.bit_depth) - 1
        return np.clip(np.rint(counts), 0, max_value).astype(np.uint16)

    # ------------------------------------------------------------------------------------------- spectrometer

    @property
    def fov_centre_px(self) -> tuple[int, int]:
        """(x, y) of the spectrometer's field of view in camera A's image: on the plume axis, right of centre."""
        x = int(round(0.6 * self.width))
        dx, dy = self._dir
        y = int(round(self.centre_y_px - (x * dy / dx if abs(dx) > 1e-6 else 0.0)))
        return x, min(max(y, 0), self.height - 1)

    @property
    def fov_radius_px(self) -> int:
        return max(2, int(round(0.25 * self.sigma_px)))

    def fov_mask(self) -> np.ndarray:
        cx, cy = self.fov_centre_px
        return (self._xx - cx) ** 2 + (self._yy - cy) ** 2 <= self.fov_radius_px**2

    def fov_column(self, t: float) -> float:
        """Mean SO2 column in the spectrometer's field of view, molecules/cm²."""
        mask = self.fov_mask()
        return float(self.peak_column * self._shape(self._xx[mask], self._yy[mask], t).mean())

    @property
    def spectrometer_wavelengths_nm(self) -> np.ndarray:
        return self._spec_wavelengths.copy()

    @property
    def references(self) -> References:
        if self._refs is None:
            self._refs = load_references(self.sim.references_dir)
        return self._refs

    @functools.cached_property
    def _spectral_model(self) -> tuple[np.ndarray, np.ndarray]:
        """The ILS kernel on the fine grid and the per-pixel scale (throughput x counts per ms)."""
        refs = self.references
        kernel = scene_ils_kernel(HIRES_STEP_NM)
        wl = self._spec_wavelengths
        throughput = 1.0 / (1.0 + np.exp(-(wl - 285.0) / 6.0)) * np.exp(-(((wl - 340.0) / 90.0) ** 2))
        clear = self._convolved(0.0, kernel) * throughput
        window = (wl >= 300) & (wl <= 340)
        scale = throughput * SPEC_COUNTS_PER_MS / clear[window].max()
        del refs
        return kernel, scale

    def _convolved(self, so2_column: float, kernel: np.ndarray) -> np.ndarray:
        refs = self.references
        sky = refs.solar * np.exp(-(refs.o3_cm2 * O3_SLANT_COLUMN + refs.ring * RING_COLUMN))
        f = self.dilution_transmission("A")  # light dilution as seen at the on-band, of the plume's absorption
        hires = np.convolve(sky * (f * np.exp(-refs.so2_cm2 * so2_column) + 1.0 - f), kernel, mode="same")
        return np.interp(self._spec_wavelengths, refs.wavelengths_nm, hires)

    def expected_spectrum(self, t: float, integration_ms: float) -> np.ndarray:
        """Noise-free mean counts per scan at time t (without saturation)."""
        kernel, scale = self._spectral_model
        signal = self._convolved(self.fov_column(t), kernel) * scale * integration_ms
        stray = 0.02 * signal.mean()
        return self.spectrum_dark(integration_ms) + stray + signal

    def spectrum_dark(self, integration_ms: float) -> np.ndarray:
        """Noise-free dark counts: offset, dark current over the integration time, the detector's fixed pattern."""
        return SPEC_DARK_COUNTS + integration_ms * SPEC_DARK_CURRENT_PER_MS + self._spec_dark_pattern

    @functools.cached_property
    def _spec_dark_pattern(self) -> np.ndarray:
        rng = np.random.default_rng([self.sim.seed, 0xDA2C])
        i = np.arange(self._spec_wavelengths.size)
        ripple = np.sin(2 * np.pi * i / 37.0 + rng.uniform(0, 2 * np.pi)) * 0.6
        return SPEC_DARK_PATTERN * (ripple + rng.normal(0.0, 0.4, i.size))

    def render_spectrum(
        self, t: float, integration_ms: float, coadd: int = 1, rng: np.random.Generator | None = None,
        dark: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(wavelengths_nm, mean counts of `coadd` scans) at the spectrometer's FOV, float64 each."""
        if rng is None:
            rng = np.random.default_rng([self.sim.seed, 0x5BEC, round(t * 1000), round(integration_ms), coadd])
        dark_counts = self.spectrum_dark(integration_ms)
        expected = dark_counts if dark else self.expected_spectrum(t, integration_ms)
        signal = np.maximum(expected - dark_counts, 0.0)
        total = np.zeros_like(expected)
        for _ in range(max(1, coadd)):
            scan = rng.poisson(signal * SPEC_ELECTRONS_PER_COUNT) / SPEC_ELECTRONS_PER_COUNT + dark_counts
            scan = scan + rng.normal(0.0, SPEC_READ_NOISE, scan.shape)
            total += np.clip(np.rint(scan), 0, self.spectrometer.max_counts)
        return self._spec_wavelengths.copy(), total / max(1, coadd)
