"""The one processing path: pairs and spectra, in the order they come, to emission rates, DOAS results, the
calibration series and the daily products.

`pycam process` (processing.folder.process_folder) feeds a folder's files in time order (a slot's spectrum before
its pair); the worker (processing.worker) feeds files as they land. Both call the same `Stream`, so the same files
give the same rows. What could make them differ is handled here, not in either caller:

- A pair's calibration is the DOAS point at or before its time (processing.livecal). A pair waits (its AA image
  kept, float32) until that choice is final: while the FOV search waits for its frames (at most the search's own
  buffer, the same images), then until a spectrum at or after its time is in (at most HOLD_PAIRS pairs). So it does
  not matter whether a slot's spectrum lands before or after its B image.
- The last LOOKBACK AA frames are kept before the first Plume spectrum, so the frame of the slot whose spectrum
  starts the DOAS calibration enters the FOV search however the two arrived.
- Each spectrum is fitted after subtracting its matched dark spectrum (processing.darks.SpectrumDarks).
- With light dilution corrected (processing.dilution), each spectrum is fitted with the plume's absorption diluted
  by the on-band transmission the cameras' terrain fit gives (processing.doas), so the DOAS columns are the plume's
  own as the corrected AA is. Spectra before the day's first pair (no fit yet) wait for it, in their order.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import Config
from controller.errors import ProcessingError
from controller.logging import get_logger
from processing.darks import SpectrumDark, SpectrumDarks
from processing.images import PLUME_KIND, FolderScan
from processing.memory import trim_heap
from processing.outputs import CALIBRATION_COLUMNS, CsvSeries

log = get_logger("processing.stream")

HOLD_PAIRS = 10  # pairs waiting for the spectrum of their slot, at most (then calibrated with what is known)
LOOKBACK = 2  # AA frames kept before the first Plume spectrum
POINTS_KEPT = 2000  # DOAS calibration points kept (scalars; a day at one spectrum a minute)
PRODUCTS_EVERY_S = 3600.0  # the day's products are refreshed when the data has moved on this far


@dataclasses.dataclass
class _Held:
    pair: Any  # processing.pairing.ImagePair
    aa: np.ndarray  # float32
    dark: str


class Stream:
    """Pairs and spectra in, rows out. `on_pair(key, rows)` / `on_spectrum(key)` after each is written."""

    def __init__(
        self,
        cfg: Config,
        out_dir: Path,
        on_pair: Callable[[str, int], None] | None = None,
        on_spectrum: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.on_pair = on_pair or (lambda key, rows: None)
        self.on_spectrum = on_spectrum or (lambda key: None)
        self.processor = None  # processing.pipeline.PairProcessor
        self.writer = None
        self.fallback = None
        self.setup_key: tuple | None = None
        self.spec_darks = SpectrumDarks()
        self.doas = None
        self.doas_csv: CsvSeries | None = None
        self.fit_csv: CsvSeries | None = None
        self.doas_count = 0
        self.livecal = None  # processing.livecal.LiveCalibration, from the first Plume spectrum on
        self.calib_csv: CsvSeries | None = None
        self.held: deque[_Held] = deque()
        self.points: deque = deque(maxlen=POINTS_KEPT)  # DOAS calibration points, for pyplis's calibration file
        self.recent: deque[tuple[Any, np.ndarray]] = deque(maxlen=LOOKBACK)
        self.waiting_spectra: deque[tuple[Path, Any]] = deque()  # spectra before the first light-dilution fit
        self.days = None  # processing.daily.DailyProducts
        self.rows = 0
        self.pairs = 0
        self.last_time: datetime | None = None

    # ------------------------------------------------------------------------------------------------ setup

    def setup(self, scan: FolderScan) -> None:
        """Darks, clear sky, cells (the fallback calibration) and dark spectra of `scan`; rebuilt when they change."""
        from processing.daily import DailyProducts
        from processing.pipeline import PairProcessor, ResultWriter, build_setup, fallback_calibration

        for f in scan.dark_spectra:
            self._add_dark_spectrum(f.path, f.name)
        key = (len(scan.darks), len(scan.clears), len(scan.cells))
        if self.processor is not None and key == self.setup_key:
            return
        self.fallback = fallback_calibration(self.cfg, scan, self.out)
        setup = build_setup(self.cfg, scan, self.fallback)
        self.processor = PairProcessor(self.cfg, setup)
        if self.livecal is not None:
            self.livecal.fallback = self.fallback
        elif self._livecal_state_exists():  # restarted after the DOAS calibration had begun: continue it
            self._ensure_livecal(None)
        self.extra = {
            "background": setup.background.description,
            "registration": setup.registration.source,
            "calibration": self.calibration_policy(),
        }
        self.writer = ResultWriter(self.out, self.cfg, self.processor, self.extra)
        self.days = DailyProducts(self.cfg, self.out, self.extra, self.processor)
        self.setup_key = key
        log.info("stream_setup", darks=len(scan.darks), clears=len(scan.clears), calibration=self.fallback.method)

    def calibration_policy(self) -> str:
        """What calibrates the rows (each row's own method is in its `calibration` column)."""
        fb = self.fallback.description if self.fallback is not None else "default"
        if not self.cfg.processing.so2_xsec:
            return fb
        window = self.cfg.processing.calibration_window_s
        return f"doas (FOV search, rolling {window:g} s fit, point at or before each pair) when known, else {fb}"

    def _livecal_state_exists(self) -> bool:
        from processing.livecal import STATE_NAME

        return (self.out / STATE_NAME).exists()

    def _ensure_livecal(self, first: datetime | None) -> None:
        """The live calibration, from the first Plume spectrum (at `first`) on; the frames kept of that slot join
        its FOV search (the pair may have come before the spectrum)."""
        from processing.livecal import LiveCalibration

        if self.livecal is not None:
            return
        self.livecal = LiveCalibration(self.cfg, self.fallback, self.out)
        ppmm = self.cfg.processing.ppmm_to_molecules_cm2
        self.calib_csv = CsvSeries(
            self.out / "calibration_series.csv", CALIBRATION_COLUMNS,
            ["# S = slope * AA + offset, columns in molecules/cm2", f"# 1 ppm.m = {ppmm:.4g} molecules/cm2"],
        )  # fmt: skip
        tol = self.livecal.dcal.match_tolerance_s
        for pair, aa in self.recent:
            if first is not None and pair.time.timestamp() >= first.timestamp() - tol:
                self._add_frame(pair, aa)
        self.recent.clear()

    # ------------------------------------------------------------------------------------------------ spectra

    def _add_dark_spectrum(self, path: Path, name: Any) -> None:
        from processing.doas import load_spectrum

        try:
            spec = load_spectrum(path, name)
        except (ProcessingError, OSError, ValueError) as e:
            log.warning("dark_spectrum_unreadable", file=path.name, error=str(e))
            return
        self.spec_darks.add(
            SpectrumDark(name.time.timestamp(), name.integration_ms, name.coadd, spec.counts, path.name)
        )

    def _ensure_doas(self) -> None:
        from processing.doas import DOAS_CSV_COLUMNS, DOAS_FIT_COLUMNS, DoasRetrieval
        from processing.references import load_references

        if self.doas is not None:
            return
        self.doas = DoasRetrieval(load_references(self.cfg.processing), self.cfg.processing)
        ppmm = self.cfg.processing.ppmm_to_molecules_cm2
        self.doas_csv = CsvSeries(
            self.out / "doas_results.csv", DOAS_CSV_COLUMNS,
            ["# SO2 column density and CD error in molecules/cm2", f"# 1 ppm.m = {ppmm:.4g} molecules/cm2"],
        )  # fmt: skip
        self.fit_csv = CsvSeries(
            self.out / "doas_fit.csv", DOAS_FIT_COLUMNS,
            ["# DOAS fit residual (RMS, max) relative to the mean intensity in the fit window; shift in nm; "
             f"references converted to the spectrometer's medium ({self.cfg.processing.spectrometer_medium})"],
        )  # fmt: skip

    def add_spectrum(self, path: Path, name: Any, transmission: float | None = None) -> bool:
        """A spectrum file (processing.images / controller.storage.names SpectrumName): dark spectra go to the dark
        library, Plume spectra are fitted (dark subtracted; light dilution at `transmission`, by default the cameras'
        fit, waiting for the first one) and feed the DOAS calibration. True when fitted."""
        if name.kind == "Dark":
            self._add_dark_spectrum(path, name)
            return False
        if name.kind != PLUME_KIND:  # known failure 6: only Plume spectra are retrieved for calibration
            return False
        transmission = self._dilution_transmission() if transmission is None else transmission
        if transmission is None:
            self.waiting_spectra.append((path, name))
            return False
        from processing.doas import doas_fit_row, doas_row, load_spectrum

        try:
            self._ensure_doas()
            self.doas.dilution_transmission = transmission
            spec = load_spectrum(path, name)
            dark = self.spec_darks.match(name.time.timestamp(), name.integration_ms, name.coadd)
            dark_spec = None
            if dark is not None:
                from processing.doas import Spectrum

                dark_spec = Spectrum(spec.wavelengths_nm, dark.counts, kind="Dark", source=dark.name)
            r = self.doas.fit(spec, dark_spec)
        except (ProcessingError, OSError, ValueError) as e:
            log.warning("spectrum_failed", file=path.name, error=str(e))
            self.on_spectrum(name.time_key)
            return False
        self.doas_csv.append(doas_row(r))
        self.fit_csv.append(doas_fit_row(r))
        self.doas_count += 1
        self._ensure_livecal(name.time)
        try:
            self.livecal.add_doas(r)
        except ProcessingError as e:
            log.warning("calibration_refused", time=str(r.time), error=str(e))
        self._calibration_rows()
        self.on_spectrum(name.time_key)
        self._release()
        return True

    def _dilution_transmission(self) -> float | None:
        """On-band transmission T between plume and instruments for the DOAS fit: 1 without light-dilution
        correction (or when the day's fit failed: the AA is not corrected either), None before the first pair."""
        from processing.dilution import DilutionCorrection

        proc = self.processor
        if not DilutionCorrection.configured(self.cfg.processing):
            return 1.0
        if proc is None or proc.geometry is None:
            return None
        fit = proc.dilution.fits.get("A") if proc.dilution is not None else None
        return 1.0 if fit is None else float(fit.transmission(proc.geometry.plume_distance_m))

    def _fit_waiting_spectra(self) -> None:
        while self.waiting_spectra and self._dilution_transmission() is not None:
            self.add_spectrum(*self.waiting_spectra.popleft())

    # ------------------------------------------------------------------------------------------------ pairs

    def _add_frame(self, pair: Any, aa: np.ndarray) -> None:
        self.livecal.add_pair(pair, aa)
        self._calibration_rows()

    def add_pair(self, pair: Any) -> None:
        """A complete A/B Plume pair: AA now; columns, speeds and emission rates once its calibration is final."""
        try:
            aa, dark_desc = self.processor.aa_image(pair)
        except (ProcessingError, OSError, ValueError) as e:
            log.warning("pair_failed", pair=pair.key, error=str(e))
            self.on_pair(pair.key, 0)  # a broken pair is not retried forever
            return
        aa32 = aa.astype(np.float32)
        self._fit_waiting_spectra()
        if self.livecal is None:
            self.recent.append((pair, aa32))
            self._finish_pair(_Held(pair, aa32, dark_desc))
            return
        self._add_frame(pair, aa32)
        self.held.append(_Held(pair, aa32, dark_desc))
        self._release()

    def _release(self, everything: bool = False) -> None:
        """Process the held pairs whose calibration is final (in time order), and any beyond the hold limits."""
        cal = self.livecal
        while self.held:
            first = self.held[0]
            limit = HOLD_PAIRS if cal is None or cal.dcal.fov is not None else cal.dcal.max_frames
            if not (everything or cal is None or cal.settled(first.pair.time) or len(self.held) > limit):
                return
            self._finish_pair(self.held.popleft())

    def _finish_pair(self, h: _Held) -> None:
        cal = self.livecal.at(h.pair.time) if self.livecal is not None else self.fallback
        try:
            result = self.processor.process_aa(h.pair.key, h.pair.time, h.aa.astype(np.float64), h.dark, cal)
        except (ProcessingError, ValueError) as e:
            log.warning("pair_failed", pair=h.pair.key, error=str(e))
            self.on_pair(h.pair.key, 0)
            return
        rows = self.writer.write(result)
        self.days.add(result, cal)
        self.rows += rows
        self.pairs += 1
        self.last_time = h.pair.time
        result.aa = None
        trim_heap()  # processing/memory.py: keeps the RSS flat over thousands of pairs
        self.on_pair(h.pair.key, rows)

    def _calibration_rows(self) -> None:
        for p in self.livecal.pop_points():
            self.calib_csv.append(p.row())
            self.days.calibration_row(p.row())
            self.points.append(p)

    def _save_pyplis(self) -> None:
        """The DOAS calibration in pyplis's own format too (processing.calibration.save_pyplis_doas_calib)."""
        from processing.calibration import save_pyplis_doas_calib
        from processing.calibration.doas import PYPLIS_DOAS_FILE

        fov = self.livecal.dcal.fov if self.livecal is not None else None
        if not self.points or fov is None or self.processor.geometry is None:
            return
        try:
            save_pyplis_doas_calib(list(self.points), fov, self.processor.geometry.shape, self.out / PYPLIS_DOAS_FILE)
        except (ImportError, ProcessingError, OSError, ValueError) as e:
            log.warning("pyplis_doas_calib_not_saved", error=str(e))

    # ------------------------------------------------------------------------------------------------ end

    def flush(self) -> list[Path]:
        """End of the input (a folder's end, the worker's drain in the process phase): the FOV search if it has
        not run, every held pair, and the daily products of the days seen. Returns the product files."""
        while self.waiting_spectra:  # no pair came: no light-dilution fit, nothing to calibrate
            log.warning("spectrum_without_dilution_fit", file=self.waiting_spectra[0][0].name)
            self.add_spectrum(*self.waiting_spectra.popleft(), transmission=1.0)
        if self.livecal is not None:
            self.livecal.finish()
            self._calibration_rows()
        self._release(everything=True)
        self._save_pyplis()
        if self.livecal is None and self.fallback is not None and self.last_time is not None:
            # no DOAS calibration: the series holds the one calibration the rows used
            c = self.fallback
            row = (self.last_time, math.nan, math.nan, math.nan, c.slope, c.slope_err, c.offset, c.offset_err,
                   c.mse, c.r2, c.method)  # fmt: skip
            CsvSeries(self.out / "calibration_series.csv", CALIBRATION_COLUMNS, [f"# {c.description}"]).append(row)
        return self.days.write_all() if self.days is not None else []

    def status(self) -> dict:
        cal = self.livecal
        out: dict[str, Any] = {"pairs": self.pairs, "rows": self.rows, "doas_spectra": self.doas_count,
                               "held_pairs": len(self.held), "dark_spectra": len(self.spec_darks)}  # fmt: skip
        if cal is not None and cal.dcal.fov is not None:
            f = cal.dcal.fov
            out["fov"] = {"x": f.cx, "y": f.cy, "radius": f.radius, "r": f.disk_corr}
        return out


def item_order(pairs: list, spectra: list) -> list[tuple[datetime, int, Any]]:
    """Pairs and spectra in time order, a slot's spectrum before its pair (the order `pycam process` uses)."""
    items = [(s.name.time, 0, s) for s in spectra] + [(p.time, 1, p) for p in pairs]
    return sorted(items, key=lambda x: x[:2])
