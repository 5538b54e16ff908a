"""The processing chain, shared by `pycam process` (a folder) and the worker (files as they land).

pair -> dark correction -> optical depth per band -> B registered onto A -> AA = tau_A - tau_B -> columns
(calibration) -> plume speed (optical flow, cross-correlation) -> emission rate per PCS line and velocity method.

`PairProcessor` is the streaming core: it keeps only the previous AA image and bounded ring buffers
(`processing.ring_buffer`), so memory does not grow with the number of pairs.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from controller.config import Config
from controller.errors import ConfigError, ProcessingError
from controller.logging import get_logger
from processing.background import BackgroundChoice, OpticalDepth, choose_background
from processing.calibration import (
    Calibration,
    cell_calibration_from_scan,
    default_calibration,
)
from processing.darks import DarkLibrary
from processing.dilution import NOT_CORRECTED, DilutionCorrection, read_flat_field
from processing.emission import emission_rate, ica_mass, offset_line, pcs_lines, profile
from processing.flow import CrossCorrelationVelocity, FlowVelocity, LineVelocity
from processing.geometry import PlumeGeometry, geometry_from_config
from processing.images import FolderScan, ImageFile, read_image
from processing.outputs import (
    EMISSION_COLUMNS,
    CsvSeries,
    emission_csv_name,
    emission_meta,
)
from processing.pairing import ImagePair
from processing.registration import Registration

log = get_logger("processing.pipeline")


def quiet_pyplis() -> None:
    """pyplis logs every aborted histogram fit at warning level; our own events say what matters."""
    import logging

    for name in ("pyplis", "pyplis_print"):
        logging.getLogger(name).setLevel(logging.ERROR)


METHODS = ("flow", "xcorr")
# Flow between two AA images further apart than this is meaningless (the plume has changed): start again.
MAX_FLOW_GAP_S = 60.0


@dataclass
class LineResult:
    line_id: str
    method: str
    flux: float
    flux_err: float
    velocity: LineVelocity
    ica: float
    calibration: str = ""
    ext: tuple[float, float] = (math.nan, math.nan)  # light dilution: extinction coefficients A, B (1/m)

    def row(self, time: datetime) -> tuple:
        v = self.velocity
        return (
            time, self.flux, self.flux_err, v.v_eff, v.v_err, v.frac_ok, v.frac_ok_ica, self.ica, self.calibration,
            *self.ext,
        )  # fmt: skip


@dataclass
class PairResult:
    key: str
    time: datetime
    aa: np.ndarray | None
    lines: list[LineResult] = field(default_factory=list)
    dark: str = ""

    def flux(self, line_id: str, method: str) -> LineResult | None:
        for r in self.lines:
            if r.line_id == line_id and r.method == method:
                return r
        return None


@dataclass
class Setup:
    """Everything a PairProcessor needs that comes from the data (darks, clear sky) and the config."""

    darks: DarkLibrary
    background: BackgroundChoice
    clear: dict[str, np.ndarray | None]
    registration: Registration
    calibration: Calibration
    flat: np.ndarray | None = None  # processing.flat_field (vignetting), divided out of every image


def _mean_clear(files: list[ImageFile], darks: DarkLibrary, band: str) -> np.ndarray | None:
    imgs = []
    for f in files:
        if f.name.band != band:
            continue
        img, _ = darks.correct(band, f.name.shutter_us, read_image(f.path))
        imgs.append(img / (f.name.shutter_us * 1e-6))
    return np.mean(imgs, axis=0) if imgs else None


def build_setup(cfg: Config, scan: FolderScan, calibration: Calibration | None = None) -> Setup:
    """Dark library, clear-sky background choice, registration and calibration for one folder."""
    darks = DarkLibrary.from_files(scan.darks)
    if not len(darks):
        log.warning("no_dark_images", detail="no Dark images found: plume images are NOT dark corrected")
    clear = {b: _mean_clear(scan.clears, darks, b) for b in ("A", "B")}
    choice = choose_background(cfg.processing.background_mode, {b: clear[b] is not None for b in clear})
    reg_path = cfg.processing.registration
    registration = Registration.from_file(reg_path) if reg_path else Registration()
    flat = read_flat_field(cfg.processing.flat_field)
    if flat is not None:
        clear = {
            b: None if c is None else _flat_corrected(c, flat, cfg.processing.flat_field) for b, c in clear.items()
        }
    return Setup(darks, choice, clear, registration, calibration or default_calibration(cfg), flat)


def _flat_corrected(img: np.ndarray, flat: np.ndarray, path: str) -> np.ndarray:
    """`img` divided by the flat field in place (vignetting corrected)."""
    if flat.shape != img.shape:
        raise ConfigError("processing.flat_field", f"{path} is {flat.shape}, the images {img.shape}")
    img /= flat
    return img


class PairProcessor:
    """Streaming processor of A/B pairs. Memory: the previous AA image plus ring buffers."""

    def __init__(self, cfg: Config, setup: Setup) -> None:
        self.cfg = cfg
        self.setup = setup
        proc = cfg.processing
        self.optical_depth = OpticalDepth(setup.background, setup.clear, proc.sky_side)
        self.flow = FlowVelocity(proc.flow_pyrlevel)
        self.geometry: PlumeGeometry | None = None
        self.lines = []
        self.xcorr_lines = []
        self.xcorr = {}
        self.last_time: datetime | None = None
        self.dilution: DilutionCorrection | None = None
        self._ext: dict[datetime, tuple[float, float]] = {}  # per pair time, from aa_image to process_aa
        self._pool: ThreadPoolExecutor | None = None  # the two bands of a pair in parallel (aa_image)
        self._buffers: dict[str, np.ndarray] = {}  # scratch images reused pair after pair (_buffer)

    def _init_shape(self, shape: tuple[int, int]) -> None:
        proc = self.cfg.processing
        # Everything for this shape first, `self.geometry` (what says it is done) last: lines outside the image are
        # a ConfigError for every pair (logged, the pair skipped), never a half-set-up processor that crashes the
        # worker on the next pair.
        lines = pcs_lines(proc, shape)
        geometry = geometry_from_config(self.cfg, shape)
        self.lines = lines
        self.xcorr_lines = [offset_line(line, proc.pcs_line_gap_px) for line in lines]
        self.xcorr = {
            line.line_id: CrossCorrelationVelocity(
                proc.pcs_line_gap_px, proc.ring_buffer, min_window_s=proc.xcorr_min_window_s
            )
            for line in lines
        }
        self._dx = [profile(line, geometry.col_dist_m) for line in lines]
        self.flow.region_lines = lines  # optical flow only around the lines (processing.flow)
        self.dilution = DilutionCorrection.from_config(self.cfg, shape)
        self.geometry = geometry

    def dilution_state(self) -> dict:
        """Light-dilution correction state for the outputs (coefficients of the latest fit per band)."""
        return self.dilution.state() if self.dilution is not None else dict(NOT_CORRECTED)

    def _fit_dilution(self, band: str, intensity: np.ndarray) -> ProcessingError | None:
        """processing.dilution: ε of `band` fitted on this pair's terrain (B sampled through the registration)."""
        try:
            self.dilution.fit(band, intensity, self.setup.registration.matrix if band == "B" else None)
        except ProcessingError as e:
            return e
        return None

    def _corrected_aa(
        self, time: datetime, errors: list[ProcessingError | None], tau_a: np.ndarray, tau_b: np.ndarray
    ) -> np.ndarray:
        """AA from both optical depths corrected for light dilution (uncorrected when a band's fit failed)."""
        d = self.dilution
        failed = [e for e in errors if e is not None]
        if failed:
            log.warning("dilution_fit_failed", time=str(time), error=str(failed[0]))
            return tau_a - tau_b
        if len(self._ext) > 256:  # pairs whose AA never reached process_aa
            self._ext.clear()
        self._ext[time] = (d.fits["A"].ext, d.fits["B"].ext)
        return d.correct_aa(tau_a, tau_b, self.geometry.plume_distances())

    def _buffer(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float64 scratch image reused pair after pair (a fresh full-size array costs its page faults). Only for
        arrays that do not outlive aa_image: the bands' intensities and optical depths, registered B."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = self._buffers[key] = np.empty(shape, np.float64)
        return buf

    def _band(self, band: str, f: ImageFile, time: datetime, fit: bool) -> tuple:
        """One band of a pair: (dark-corrected intensity per second of exposure or None, optical depth, the dark
        used, the light-dilution fit's error). With `fit` (the processor set up for this shape) the band's dilution
        fit is done here, in its thread, and the optical depth computed in the intensity's own array; otherwise the
        intensity is returned for the caller to fit."""
        raw = read_image(f.path)
        img, match = self.setup.darks.correct(band, f.name.shutter_us, raw, out=self._buffer(band, raw.shape))
        img *= 1e6 / f.name.shutter_us
        if self.setup.flat is not None:
            _flat_corrected(img, self.setup.flat, self.cfg.processing.flat_field)
        desc = f"{band}:{match.description}"
        if not DilutionCorrection.configured(self.cfg.processing):
            return None, self.optical_depth.tau(band, img, time, overwrite=True), desc, None
        if fit and self.geometry is not None and self.geometry.shape == img.shape:
            error = self._fit_dilution(band, img)
            return None, self.optical_depth.tau(band, img, time, overwrite=True), desc, error
        return img, self.optical_depth.tau(band, img, time), desc, None

    def aa_image(self, pair: ImagePair) -> tuple[np.ndarray, str]:
        """Apparent absorbance (float64) of a pair, on camera A's grid. The two bands are read, dark corrected,
        fitted for light dilution and turned into optical depths in two threads (PNG decoding and numpy release the
        GIL: ~40 % less wall time on 2+ cores)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pycam-band")
        fit = self.dilution is not None
        jobs = [self._pool.submit(self._band, band, f, pair.time, fit) for band, f in (("A", pair.a), ("B", pair.b))]
        bands = dict(zip("AB", (j.result() for j in jobs), strict=True))
        tau_b = bands["B"][1]
        tau_a, tau_b = bands["A"][1], self.setup.registration.apply(tau_b, self._buffer("B_on_A", tau_b.shape))
        dark_desc = " ".join(bands[b][2] for b in "AB")
        if tau_b.shape != tau_a.shape:
            raise ProcessingError(f"{pair.a.path.name}: A is {tau_a.shape}, registered B is {tau_b.shape}")
        if DilutionCorrection.configured(self.cfg.processing):  # needs the plume distances: the geometry first
            if self.geometry is None or self.geometry.shape != tau_a.shape:
                self._init_shape(tau_a.shape)
            # bands not fitted in their thread (the first pair, a new shape) are fitted here
            errors = [self._fit_dilution(b, bands[b][0]) if bands[b][0] is not None else bands[b][3] for b in "AB"]
            return self._corrected_aa(pair.time, errors, tau_a, tau_b), dark_desc
        return tau_a - tau_b, dark_desc

    def process(self, pair: ImagePair, calibration: Calibration | None = None) -> PairResult:
        aa, dark_desc = self.aa_image(pair)
        return self.process_aa(pair.key, pair.time, aa, dark_desc, calibration)

    def process_aa(
        self, key: str, time: datetime, aa: np.ndarray, dark_desc: str = "", calibration: Calibration | None = None
    ) -> PairResult:
        """Columns, plume speeds and emission rates of one AA image (`calibration` overrides the setup's)."""
        if self.geometry is None or self.geometry.shape != aa.shape:
            self._init_shape(aa.shape)
        if self.last_time is not None and (time - self.last_time).total_seconds() > MAX_FLOW_GAP_S:
            self.flow = FlowVelocity(self.cfg.processing.flow_pyrlevel, self.lines)
        self.last_time = time
        self.flow.update(aa, time)
        cal = calibration or self.setup.calibration
        geom = self.geometry
        result = PairResult(key, time, aa, dark=dark_desc)
        ext = self._ext.pop(time, (math.nan, math.nan))
        for line, xline, dx in zip(self.lines, self.xcorr_lines, self._dx, strict=True):
            aa_line = profile(line, aa)
            cols, cols_err = cal.columns(aa_line)
            ica = ica_mass(cols, dx)
            xc = self.xcorr[line.line_id]
            # The lag between the lines does not depend on the calibration: the series hold AA integrals, so a
            # calibration that changes within the buffer (default slope -> DOAS) does not put a common step in both.
            xc.add(time, float(np.nansum(aa_line * dx)), float(np.nansum(profile(xline, aa) * dx)))
            pix = float(np.mean(dx))
            velocities = {
                "flow": self.flow.line_velocity(line, pix, cols),
                "xcorr": xc.velocity(pix),
            }
            for method, vel in velocities.items():
                if not vel.ok:
                    continue
                flux, flux_err = emission_rate(cols, vel.v_eff, dx, cols_err, vel.v_err, dx * geom.rel_err)
                result.lines.append(LineResult(line.line_id, method, flux, flux_err, vel, ica, cal.method, ext))
        return result


class ResultWriter:
    """The CSV files of a processing run (per line and method), unique by datetime."""

    def __init__(self, out: Path, cfg: Config, processor: PairProcessor, extra: dict[str, str]) -> None:
        self.out = out
        self.cfg = cfg
        self.processor = processor
        self.extra = extra
        self.files: dict[tuple[str, str], CsvSeries] = {}
        self.rows = 0

    def series(self, line_id: str, method: str) -> CsvSeries:
        key = (line_id, method)
        if key not in self.files:
            meta = emission_meta(line_id, method, self.cfg.processing.ppmm_to_molecules_cm2, self.extra)
            meta["light_dilution"] = self.processor.dilution_state()
            self.files[key] = CsvSeries(self.out / emission_csv_name(line_id, method), EMISSION_COLUMNS, meta)
        return self.files[key]

    def write(self, result: PairResult) -> int:
        n = 0
        for r in result.lines:
            n += self.series(r.line_id, r.method).append(r.row(result.time))
        self.rows += n
        return n


# Frames kept for the FOV search (float32 AA images, ~1.3 MB each at 648 x 486): the benchmark size.
FOV_FRAMES = 100


def fallback_calibration(cfg: Config, scan: FolderScan, out: Path | None = None) -> Calibration:
    """The calibration before (or without) the DOAS one: gas cells of the scan when usable (saved in pyplis's
    format under `out` too), else the configured slope."""
    if scan.cells:
        cells = cell_calibration_from_scan(cfg, scan, out)
        if cells is not None:
            return cells
    return default_calibration(cfg)
