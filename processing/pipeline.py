"""The processing chain, shared by `pycam process` (a folder) and the worker (files as they land).

pair -> dark correction -> optical depth per band -> B registered onto A -> AA = tau_A - tau_B -> columns
(calibration) -> plume speed (optical flow, cross-correlation) -> emission rate per PCS line and velocity method.

`PairProcessor` is the streaming core: it keeps only the previous AA image and bounded ring buffers
(`processing.ring_buffer`), so memory does not grow with the number of pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from controller.config import Config
from controller.errors import ProcessingError
from controller.logging import get_logger
from processing.background import BackgroundChoice, OpticalDepth, choose_background
from processing.calibration import (
    Calibration,
    DoasCalibration,
    PlumeFrame,
    cell_calibration_from_scan,
    default_calibration,
    save_pyplis_doas_calib,
    usable,
)
from processing.calibration.cellsearch import assign_cell_window
from processing.calibration.doas import PYPLIS_DOAS_FILE
from processing.darks import DarkLibrary
from processing.dilution import NOT_CORRECTED, DilutionCorrection
from processing.emission import emission_rate, ica_mass, offset_line, pcs_lines, profile
from processing.flow import CrossCorrelationVelocity, FlowVelocity, LineVelocity
from processing.geometry import PlumeGeometry, geometry_from_config
from processing.images import PLUME_KIND, FolderScan, ImageFile, read_image, scan_folder
from processing.outputs import (
    CALIBRATION_COLUMNS,
    CALIBRATION_UNITS,
    EMISSION_COLUMNS,
    CsvSeries,
    csv_meta,
    emission_csv_name,
    emission_meta,
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
        self.dilution: DilutionCorrection | None = None
        self._ext: dict[datetime, tuple[float, float]] = {}  # per pair time, from aa_image to process_aa
        self._pool: ThreadPoolExecutor | None = None  # the two bands of a pair in parallel (aa_image)

    def _init_shape(self, shape: tuple[int, int]) -> None:
        proc = self.cfg.processing
        self.geometry = geometry_from_config(self.cfg, shape)
        self.lines = pcs_lines(proc, shape)
        self.xcorr_lines = [offset_line(line, proc.pcs_line_gap_px) for line in self.lines]
        self.xcorr = {
            line.line_id: CrossCorrelationVelocity(
                proc.pcs_line_gap_px, proc.ring_buffer, min_window_s=proc.xcorr_min_window_s
            )
            for line in self.lines
        }
        self._dx = [profile(line, self.geometry.col_dist_m) for line in self.lines]
        self.flow.region_lines = self.lines  # optical flow only around the lines (processing.flow)
        self.dilution = DilutionCorrection.from_config(self.cfg, shape)

    def dilution_state(self) -> dict:
        """Light-dilution correction state for the outputs (coefficients of the latest fit per band)."""
        return self.dilution.state() if self.dilution is not None else dict(NOT_CORRECTED)

    def _corrected_aa(
        self, time: datetime, intensity: dict[str, np.ndarray], tau_a: np.ndarray, tau_b: np.ndarray
    ) -> np.ndarray:
        """processing.dilution: ε per band fitted on this pair's terrain (B sampled through the registration), then
        AA from both optical depths corrected."""
        d = self.dilution
        try:
            d.fit("A", intensity["A"])
            d.fit("B", intensity["B"], self.setup.registration.matrix)
        except ProcessingError as e:
            log.warning("dilution_fit_failed", time=str(time), error=str(e))
            return tau_a - tau_b
        if len(self._ext) > 256:  # pairs whose AA never reached process_aa
            self._ext.clear()
        self._ext[time] = (d.fits["A"].ext, d.fits["B"].ext)
        return d.correct_aa(tau_a, tau_b, self.geometry.plume_distances())

    def _band(self, band: str, f: ImageFile, time: datetime) -> tuple[np.ndarray, np.ndarray, str]:
        """One band of a pair: dark-corrected intensity per second of exposure, optical depth, the dark used."""
        img, match = self.setup.darks.correct(band, f.name.shutter_us, read_image(f.path))
        img *= 1e6 / f.name.shutter_us
        return img, self.optical_depth.tau(band, img, time), f"{band}:{match.description}"

    def aa_image(self, pair: ImagePair) -> tuple[np.ndarray, str]:
        """Apparent absorbance (float64) of a pair, on camera A's grid. The two bands are read and turned into
        optical depths in two threads (PNG decoding and numpy release the GIL: ~40 % less wall time on 2+ cores)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pycam-band")
        jobs = [self._pool.submit(self._band, band, f, pair.time) for band, f in (("A", pair.a), ("B", pair.b))]
        (int_a, tau_a, dark_a), (int_b, tau_b, dark_b) = (j.result() for j in jobs)
        intensity, taus, dark_desc = {"A": int_a, "B": int_b}, {"A": tau_a, "B": tau_b}, [dark_a, dark_b]
        tau_a, tau_b = taus["A"], self.setup.registration.apply(taus["B"])
        if tau_b.shape != tau_a.shape:
            raise ProcessingError(f"{pair.a.path.name}: A is {tau_a.shape}, registered B is {tau_b.shape}")
        if DilutionCorrection.configured(self.cfg.processing):  # needs the plume distances: the geometry first
            if self.geometry is None or self.geometry.shape != tau_a.shape:
                self._init_shape(tau_a.shape)
            return self._corrected_aa(pair.time, intensity, tau_a, tau_b), " ".join(dark_desc)
        return tau_a - tau_b, " ".join(dark_desc)

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


def calibration_row(time: datetime, cal: Calibration, aa_fov: float = math.nan, doas=None) -> tuple:
    col = getattr(doas, "so2", math.nan)
    err = getattr(doas, "so2_err", math.nan)
    return (
        time, aa_fov, col, err, cal.slope, cal.slope_err, cal.offset, cal.offset_err, cal.mse, cal.r2, cal.method,
    )  # fmt: skip


# Frames kept for the FOV search (float32 AA images, ~1.3 MB each at 648 x 486): the benchmark size.
FOV_FRAMES = 100


class CalibrationRun:
    """Which calibration a run uses: DOAS when there are Plume spectra and the fit is good enough, else gas cells,
    else the configured slope.

    DOAS columns are retrieved for every Plume spectrum (processing.doas) and written to doas_results.csv. The
    DOAS calibration needs the AA images of the same times, so `doas_pass` makes a first pass over the pairs that
    have a spectrum within the matching tolerance: their AA images feed processing.calibration.DoasCalibration
    (FOV search on up to FOV_FRAMES frames, then the rolling AA-vs-DOAS fit, one point per spectrum). The emission
    rates then use, for each pair, the usable calibration point nearest in time (`at`).
    """

    def __init__(self, cfg: Config, scan: FolderScan, out: Path) -> None:
        self.cfg = cfg
        self.scan = scan
        self.out = out
        self.doas_results: list = []
        self.notes: dict[str, str] = {}
        self.needs_aa = False
        self.points: list = []  # processing.calibration.CalibrationPoint, one per matched spectrum
        self._usable: list = []
        self.fov = None
        # AA images of the first pass, reused by the second (bounded: the FOV search holds as many anyway)
        self._aa_cache: dict[str, tuple[np.ndarray, str]] = {}
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
            if f.name.kind != PLUME_KIND:  # known failure 6: only Plume spectra are retrieved for calibration
                continue
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
        return cell_calibration_from_scan(self.cfg, self.scan, self.out)

    def initial(self) -> Calibration:
        return self.calibration

    def doas_pass(self, processor: PairProcessor, pairs: list[ImagePair]) -> None:
        """First pass: FOV search and rolling DOAS calibration from the pairs that have a spectrum."""
        dcal = DoasCalibration(self.cfg.processing, max_frames=FOV_FRAMES)
        results = sorted((r for r in self.doas_results if r.time is not None), key=lambda r: r.time)
        stamps = np.array([r.time.timestamp() for r in results])
        tol = dcal.match_tolerance_s
        k = 0
        for pair in sorted(pairs, key=lambda p: p.time):
            t = pair.time.timestamp()
            while k < len(results) and stamps[k] <= t + tol:
                dcal.add_doas(results[k])
                k += 1
            i = int(np.searchsorted(stamps, t))
            near = [j for j in (i - 1, i) if 0 <= j < len(stamps) and abs(stamps[j] - t) <= tol]
            if not near:
                continue  # no spectrum at this time: the pair plays no part in the calibration
            aa, dark_desc = processor.aa_image(pair)
            aa32 = aa.astype(np.float32)
            dcal.add_frame(PlumeFrame.from_files(pair.a, pair.b, aa32))
            if len(self._aa_cache) < FOV_FRAMES:
                self._aa_cache[pair.key] = (aa32, dark_desc)
        for r in results[k:]:
            dcal.add_doas(r)
        dcal.finish()
        self.fov = dcal.fov
        self.points = dcal.pop_points()
        if self.points and dcal.fov is not None and self._aa_cache:
            shape = next(iter(self._aa_cache.values()))[0].shape
            save_pyplis_doas_calib(self.points, dcal.fov, shape, self.out / PYPLIS_DOAS_FILE)
        self._usable = [p for p in self.points if usable(p, dcal.min_points)]
        if dcal.fov is None:
            self.notes["doas_calibration"] = "no FOV: too few pairs matched to spectra; not used"
            return
        fov = f"FOV x {dcal.fov.cx} y {dcal.fov.cy} r {dcal.fov.radius} px (r {dcal.fov.disk_corr:.2f})"
        if not self._usable:
            best = max((p.fit.r2 for p in self.points), default=math.nan)
            self.notes["doas_calibration"] = f"{fov}; fit not good enough (best r2 {best:.2f}): not used"
            log.warning("doas_calibration_unusable", points=len(self.points), best_r2=best)
            return
        slopes = [p.fit.slope for p in self._usable]
        window = self.cfg.processing.calibration_window_s
        self.calibration = self._from_point(self._usable[-1])
        self.calibration = dataclasses.replace(
            self.calibration,
            detail=f"{fov}; rolling {window:g} s window, {len(self._usable)}/{len(self.points)} usable points, "
            f"median slope {np.median(slopes):.4g}",
        )
        self.notes["doas_calibration"] = self.calibration.detail
        log.info("doas_calibration", points=len(self.points), usable=len(self._usable), fov=fov)

    @staticmethod
    def _from_point(p) -> Calibration:  # noqa: ANN001
        f = p.fit
        return Calibration(f.slope, f.slope_err, f.offset, f.offset_err, "doas", "", f.r2, f.mse)

    def take_aa(self, key: str) -> tuple[np.ndarray, str] | None:
        """The first pass's AA image of a pair (and its dark description), once."""
        return self._aa_cache.pop(key, None)

    def at(self, time: datetime) -> Calibration:
        """The calibration for a pair at `time`: the nearest usable DOAS point, else the run's fallback."""
        if not self._usable:
            return self.calibration
        stamps = [p.time.timestamp() for p in self._usable]
        i = int(np.argmin(np.abs(np.asarray(stamps) - time.timestamp())))
        return self._from_point(self._usable[i])

    def finish(self, processor: PairProcessor) -> list[tuple]:
        """Calibration series rows for the run: every DOAS point, or the one fixed calibration."""
        if self.points:
            return [p.row() for p in self.points]
        t = processor.last_time or datetime.now()
        return [calibration_row(t, self.calibration)]

    def summary(self) -> dict:
        out = {"doas_spectra": len(self.doas_results), "calibration_notes": self.notes}
        if self.fov is not None:
            out["fov"] = {"x": self.fov.cx, "y": self.fov.cy, "radius": self.fov.radius, "r": self.fov.disk_corr}
            out["calibration_points"] = len(self.points)
            out["calibration_points_usable"] = len(self._usable)
        return out


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
    cell_window = assign_cell_window(scan, cfg.processing)  # cells among plume images (processing.cell_window)
    pairs, unpaired = pair_images(scan.plume, cfg.processing.pair_tolerance_s)
    log.info("scan", folder=str(folder), pairs=len(pairs), unpaired=len(unpaired), **scan.counts())
    cal_run = CalibrationRun(cfg, scan, out)
    setup = build_setup(cfg, scan, cal_run.initial())
    processor = PairProcessor(cfg, setup)
    if cal_run.needs_aa:
        cal_run.doas_pass(processor, pairs)
        setup.calibration = cal_run.calibration
    extra = {
        "background": setup.background.description,
        "registration": setup.registration.source,
        "calibration": setup.calibration.description,
    }
    writer = ResultWriter(out, cfg, processor, extra)
    calib_csv = CsvSeries(
        out / "calibration_series.csv",
        CALIBRATION_COLUMNS,
        csv_meta("calibration series", cfg.processing.ppmm_to_molecules_cm2, CALIBRATION_UNITS, extra),
    )
    iterator = progress(pairs) if progress is not None else pairs
    results: list[PairResult] = []
    for pair in iterator:
        cached = cal_run.take_aa(pair.key)
        if cached is None:
            res = processor.process(pair, cal_run.at(pair.time))
        else:
            res = processor.process_aa(pair.key, pair.time, cached[0], cached[1], cal_run.at(pair.time))
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
        "light_dilution": processor.dilution_state(),
        "cell_window": cell_window,
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
