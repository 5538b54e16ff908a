"""The processing chain, shared by `pycam process` (a folder) and the worker (files as they land).

pair -> dark correction -> optical depth per band -> B registered onto A -> AA = tau_A - tau_B -> columns
(calibration) -> plume speed (optical flow, cross-correlation) -> emission rate per PCS line and velocity method.

`PairProcessor` is the streaming core: it keeps only the previous AA image and bounded ring buffers
(`processing.ring_buffer`), so memory does not grow with the number of pairs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from controller.config import Config
from controller.errors import ProcessingError
from controller.logging import get_logger
from processing.background import BackgroundChoice, OpticalDepth, choose_background
from processing.darks import DarkLibrary
from processing.emission import emission_rate, ica_mass, offset_line, pcs_lines, profile
from processing.flow import CrossCorrelationVelocity, FlowVelocity, LineVelocity
from processing.geometry import PlumeGeometry, geometry_from_config
from processing.images import FolderScan, ImageFile, read_image, scan_folder
from processing.outputs import (
    CALIBRATION_COLUMNS,
    EMISSION_COLUMNS,
    CsvSeries,
    emission_csv_name,
    emission_header,
    write_summary,
)
from processing.pairing import ImagePair, pair_images
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
    slope = cfg.processing.default_calibration_slope
    # No measurement behind it: 20 % uncertainty, the magnitude pyplis assumes for unspecified column errors.
    return Calibration(slope, 0.2 * slope, method="default", detail="processing.default_calibration_slope")


@dataclass
class LineResult:
    line_id: str
    method: str
    flux: float
    flux_err: float
    velocity: LineVelocity
    ica: float

    def row(self, time: datetime) -> tuple:
        v = self.velocity
        return (time, self.flux, self.flux_err, v.v_eff, v.v_err, v.frac_ok, v.frac_ok_ica, self.ica)


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
    return Setup(darks, choice, clear, registration, calibration or default_calibration(cfg))


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
        self.aa_history: deque[tuple[datetime, np.ndarray]] = deque(maxlen=proc.ring_buffer)
        self.keep_aa = False

    def _init_shape(self, shape: tuple[int, int]) -> None:
        proc = self.cfg.processing
        self.geometry = geometry_from_config(self.cfg, shape)
        self.lines = pcs_lines(proc, shape)
        self.xcorr_lines = [offset_line(line, proc.pcs_line_gap_px) for line in self.lines]
        self.xcorr = {
            line.line_id: CrossCorrelationVelocity(proc.pcs_line_gap_px, proc.ring_buffer) for line in self.lines
        }
        self._dx = [profile(line, self.geometry.col_dist_m) for line in self.lines]

    def aa_image(self, pair: ImagePair) -> tuple[np.ndarray, str]:
        """Apparent absorbance (float64) of a pair, on camera A's grid."""
        taus = {}
        dark_desc = []
        for band, f in (("A", pair.a), ("B", pair.b)):
            img, match = self.setup.darks.correct(band, f.name.shutter_us, read_image(f.path))
            dark_desc.append(f"{band}:{match.description}")
            taus[band] = self.optical_depth.tau(band, img / (f.name.shutter_us * 1e-6), pair.time)
        tau_b = self.setup.registration.apply(taus["B"])
        if tau_b.shape != taus["A"].shape:
            raise ProcessingError(f"{pair.a.path.name}: A is {taus['A'].shape}, registered B is {tau_b.shape}")
        return taus["A"] - tau_b, " ".join(dark_desc)

    def process(self, pair: ImagePair) -> PairResult:
        aa, dark_desc = self.aa_image(pair)
        return self.process_aa(pair.key, pair.time, aa, dark_desc)

    def process_aa(self, key: str, time: datetime, aa: np.ndarray, dark_desc: str = "") -> PairResult:
        if self.geometry is None or self.geometry.shape != aa.shape:
            self._init_shape(aa.shape)
        if self.last_time is not None and (time - self.last_time).total_seconds() > MAX_FLOW_GAP_S:
            self.flow = FlowVelocity(self.cfg.processing.flow_pyrlevel)
        self.last_time = time
        self.flow.update(aa, time)
        if self.keep_aa:
            self.aa_history.append((time, aa.astype(np.float32)))
        cal = self.setup.calibration
        geom = self.geometry
        result = PairResult(key, time, aa, dark=dark_desc)
        for line, xline, dx in zip(self.lines, self.xcorr_lines, self._dx, strict=True):
            cols, cols_err = cal.columns(profile(line, aa))
            ica = ica_mass(cols, dx)
            xcols, _ = cal.columns(profile(xline, aa))
            xc = self.xcorr[line.line_id]
            xc.add(time, ica, ica_mass(xcols, dx))
            pix = float(np.mean(dx))
            velocities = {
                "flow": self.flow.line_velocity(line, pix, cols),
                "xcorr": xc.velocity(pix),
            }
            for method, vel in velocities.items():
                if not vel.ok:
                    continue
                flux, flux_err = emission_rate(cols, vel.v_eff, dx, cols_err, vel.v_err, dx * geom.rel_err)
                result.lines.append(LineResult(line.line_id, method, flux, flux_err, vel, ica))
        return result


class ResultWriter:
    """The CSV files of a processing run (per line and method), unique by datetime."""

    def __init__(self, out: Path, cfg: Config, processor: PairProcessor, extra: dict[str, str]) -> None:
        self.out = out
        self.cfg = cfg
        self.extra = extra
        self.files: dict[tuple[str, str], CsvSeries] = {}
        self.rows = 0

    def series(self, line_id: str, method: str) -> CsvSeries:
        key = (line_id, method)
        if key not in self.files:
            header = emission_header(line_id, method, self.cfg.processing.ppmm_to_molecules_cm2, self.extra)
            self.files[key] = CsvSeries(self.out / emission_csv_name(line_id, method), EMISSION_COLUMNS, header)
        return self.files[key]

    def write(self, result: PairResult) -> int:
        n = 0
        for r in result.lines:
            n += self.series(r.line_id, r.method).append(r.row(result.time))
        self.rows += n
        return n


def calibration_row(time: datetime, cal: Calibration, aa_fov: float = math.nan, doas=None) -> tuple:
    col = getattr(doas, "so2", math.nan)
    err = getattr(doas, "so2_err", math.nan)
    return (
        time, aa_fov, col, err, cal.slope, cal.slope_err, cal.offset, cal.offset_err, cal.mse, cal.r2, cal.method,
    )  # fmt: skip


class CalibrationRun:
    """Which calibration a run uses: DOAS when there are spectra, else gas cells, else the configured slope.

    DOAS columns are retrieved for every plume spectrum (P1's processing.doas) and written to doas_results.csv;
    the AA-vs-DOAS fit needs the AA images of the same times, so it is made at the end of the run from the AA ring
    buffer and recorded in the calibration series.
    """

    def __init__(self, cfg: Config, scan: FolderScan, out: Path) -> None:
        self.cfg = cfg
        self.scan = scan
        self.out = out
        self.doas_results: list = []
        self.notes: dict[str, str] = {}
        self.needs_aa = False
        if scan.spectra:
            self._run_doas()
        self.calibration = self._cells() or default_calibration(cfg)

    def _run_doas(self) -> None:
        try:
            from processing.doas import DoasRetrieval, load_spectrum, write_doas_results
            from processing.references import load_references

            refs = load_references(self.cfg.processing)
        except (ImportError, ProcessingError, OSError, ValueError) as e:
            self.notes["doas"] = f"not run: {e}"
            log.warning("doas_unavailable", error=str(e))
            return
        retrieval = DoasRetrieval(refs, self.cfg.processing)
        dark = load_spectrum(self.scan.dark_spectra[-1].path) if self.scan.dark_spectra else None
        for f in self.scan.spectra:
            try:
                self.doas_results.append(retrieval.fit(load_spectrum(f.path), dark))
            except ProcessingError as e:
                log.warning("doas_fit_failed", file=f.path.name, error=str(e))
        write_doas_results(self.out / "doas_results.csv", self.doas_results, self.cfg.processing.ppmm_to_molecules_cm2)
        self.notes["doas"] = f"{len(self.doas_results)} spectra retrieved"
        self.needs_aa = bool(self.doas_results)

    def _cells(self) -> Calibration | None:
        if not self.scan.cells:
            return None
        try:
            from processing import calibration as p1
        except ImportError:
            self.notes["cells"] = "cell calibration module not available"
            return None
        fit = getattr(p1, "cell_calibration_from_scan", None)
        if fit is None:
            self.notes["cells"] = "cell calibration function not available"
            return None
        return fit(self.cfg, self.scan)

    def initial(self) -> Calibration:
        return self.calibration

    def finish(self, processor: PairProcessor) -> list[tuple]:
        """Calibration series rows for the run."""
        cal = self.calibration
        t = processor.last_time or datetime.now()
        return [calibration_row(t, cal)]

    def summary(self) -> dict:
        return {"doas_spectra": len(self.doas_results), "calibration_notes": self.notes}


def process_folder(
    folder: str | Path,
    cfg: Config,
    out: str | Path,
    progress: Callable[[Iterable[ImagePair]], Iterable[ImagePair]] | None = None,
) -> dict:
    """Process every pair (and spectrum) in `folder`; write CSVs, calibration series, plot and summary to `out`."""
    quiet_pyplis()
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_folder(folder)
    pairs, unpaired = pair_images(scan.plume, cfg.processing.pair_tolerance_s)
    log.info("scan", folder=str(folder), pairs=len(pairs), unpaired=len(unpaired), **scan.counts())
    cal_run = CalibrationRun(cfg, scan, out)
    setup = build_setup(cfg, scan, cal_run.initial())
    processor = PairProcessor(cfg, setup)
    processor.keep_aa = cal_run.needs_aa
    extra = {
        "background": setup.background.description,
        "registration": setup.registration.source,
        "calibration": setup.calibration.description,
    }
    writer = ResultWriter(out, cfg, processor, extra)
    calib_csv = CsvSeries(
        out / "calibration_series.csv", CALIBRATION_COLUMNS, [f"# {k}: {v}" for k, v in extra.items()]
    )
    iterator = progress(pairs) if progress is not None else pairs
    results: list[PairResult] = []
    for pair in iterator:
        res = processor.process(pair)
        writer.write(res)
        res.aa = None  # only the summary of each pair is kept
        results.append(res)
    cal_rows = cal_run.finish(processor)
    for row in cal_rows:
        calib_csv.append(row)
    summary = {
        "folder": str(folder),
        "out": str(out),
        "pairs": len(pairs),
        "unpaired_images": len(unpaired),
        "not_plume_images": {
            "dark": len(scan.darks), "clear": len(scan.clears), "cell": len(scan.cells), "test": len(scan.tests),
        },
        "darks": [f"{b}:{s}us" for b, s in setup.darks.keys()],
        "background": setup.background.description,
        "background_mode": setup.background.mode,
        "registration": setup.registration.source,
        "calibration": setup.calibration.description,
        "calibration_method": setup.calibration.method,
        "geometry": processor.geometry.method if processor.geometry else None,
        "pixel_size_m": processor.geometry.pixel_size_m() if processor.geometry else None,
        "plume_distance_m": processor.geometry.plume_distance_m if processor.geometry else None,
        "emission_rows": writer.rows,
        "emission_files": sorted(str(s.path.name) for s in writer.files.values()),
        "spectra": len(scan.spectra),
        **cal_run.summary(),
    }  # fmt: skip
    summary["mean_flux_kg_s"] = _mean_flux(results)
    from processing.plot import daily_plots

    summary["plots"] = [p.name for p in daily_plots(out, results, cal_rows, cfg.processing.velocity_method)]
    write_summary(out / "summary.json", summary)
    return summary


def _mean_flux(results: list[PairResult]) -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for res in results:
        for r in res.lines:
            acc.setdefault(f"line{r.line_id}_{r.method}", []).append(r.flux)
    return {k: float(np.nanmean(v)) for k, v in acc.items()}
