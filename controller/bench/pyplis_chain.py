"""The same processing chain built from pyplis primitives, timed on the same Villarrica pairs as ours.

`pycam bench processing` runs both side by side in one process (controller/bench/processing.py). Per pair, as our
chain does it: read both PNGs (pyplis `Img`), subtract the darks, normalise by the exposure, optical depth with
pyplis's `PlumeBackgroundModel` (the configured mode and sky areas), B registered onto A, light dilution with
pyplis's `DilutionCorr` (`fit` on the terrain pixels at their distances, `correct_img` on the plume pixels, each
band), AA, calibration, Farneback optical flow on the same region as ours (pyplis `Img.crop` to the lines' ROIs plus
Farneback's window, processing.flow.flow_region) with pyplis's `local_flow_params` (its multi-Gauss histogram fit)
on the same plume pixels (processing.flow.plume_pixels, falling back to the whole ROI as ours does) and `get_veff`,
cross-correlation with pyplis's `find_signal_correlation` on the same series (the last `ring_buffer` pairs once they
span `xcorr_min_window_s`, resampled to a quarter of the frame period, both directions), and pyplis's
`det_emission_rate` per line and method. The set-up (darks, clear sky, geometry, reference areas) is not timed, as
for ours. `process` returns the emission rates by "<line>_<method>", compared with ours pair by pair.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from controller.config import Config

MIN_XCORR_SAMPLES = 8  # as processing.flow.CrossCorrelationVelocity


def _mean(paths: list[Path]) -> np.ndarray:
    from pyplis import Img

    return np.mean([Img(str(p)).img for p in paths], axis=0)


class PyplisChain:
    """One pair at a time, from pyplis primitives (module doc)."""

    def __init__(self, cfg: Config, scan, calibration, shape: tuple[int, int]) -> None:  # noqa: ANN001
        from pyplis import DilutionCorr, LineOnImage, OptflowFarneback, PlumeBackgroundModel

        from processing.background import sky_reference_areas
        from processing.dilution import TerrainSamples
        from processing.geometry import geometry_from_config
        from processing.registration import Registration

        proc = cfg.processing
        self.cfg = cfg
        self.darks, self.clear, self.bg = {}, {}, {}
        for band in "AB":
            darks = [f for f in scan.darks if f.name.band == band]
            clears = [f for f in scan.clears if f.name.band == band]
            self.darks[band] = {f.name.shutter_us: _mean([f.path]) for f in darks}
            dark = self._dark(band, clears[0].name.shutter_us)
            self.clear[band] = np.clip(
                np.mean([(_mean([f.path]) - dark) / (f.name.shutter_us * 1e-6) for f in clears], axis=0), 1e-3, None
            )
            self.bg[band] = PlumeBackgroundModel(mode=proc.background_mode)
        self.registration = Registration.from_file(proc.registration) if proc.registration else Registration()
        self.cal = calibration
        self.geometry = geometry_from_config(cfg, shape)
        self.lines = [
            LineOnImage(*xy, normal_orientation=n, line_id=str(i + 1))
            for i, (xy, n) in enumerate(zip(proc.pcs_lines, proc.pcs_line_normals, strict=True))
        ]
        self.xlines = [ln.offset(pixel_num=proc.pcs_line_gap_px) for ln in self.lines]
        self.dx = [ln.get_line_profile(self.geometry.col_dist_m) for ln in self.lines]
        # pyplis's DilutionCorr with the terrain pixels of the dilution lines at their configured distances (pyplis
        # finds line distances from a DEM it downloads; a known distance per pixel is its add_retrieval_point)
        self.dilution = None
        if proc.dilution_lines:
            self.dilution = DilutionCorr()
            t = TerrainSamples.from_lines(proc.dilution_lines, proc.dilution_line_distances_m, shape)
            for x, y, d in zip(np.rint(t.x).astype(int), np.rint(t.y).astype(int), t.dist_m, strict=True):
                self.dilution.add_retrieval_point(int(x), int(y), float(d))
        self.flow = OptflowFarneback()
        self.flow.settings.auto_update = False
        self.flow_roi_abs: list[int] | None = None  # set at the first AA image (processing.flow.flow_region)
        self.flow_lines: list = []
        self.prev = None
        self.ica: dict[str, list] = {ln.line_id: [] for ln in self.lines}
        self.sky = sky_reference_areas
        self.ready = False
        self.xcorr_cpu_ms: list[float] = []  # CPU time of the cross-correlation step per pair (bench figure)

    def _dark(self, band: str, shutter_us: int) -> np.ndarray:
        darks = self.darks[band]
        return darks[min(darks, key=lambda s: abs(s - shutter_us))]

    def _tau(self, band: str, f) -> tuple:  # noqa: ANN001
        from pyplis import Img

        img = Img(str(f.path))
        img.subtract_dark_image(Img(self._dark(band, f.name.shutter_us)))
        img.img = np.clip(img.img / (f.name.shutter_us * 1e-6), 1e-3, None)
        model = self.bg[band]
        if not self.ready:
            model.update(**self.sky(img.img, self.cfg.processing.sky_side))
            model.set_missing_ref_areas(img)
        tau = model.get_tau_image(img, Img(self.clear[band]), check_state=False)
        return img, np.asarray(tau.img, dtype=np.float64)

    def _dilution(self, img, tau: np.ndarray, aa: np.ndarray) -> np.ndarray:  # noqa: ANN001
        """pyplis's DilutionCorr: ε fitted on this image's terrain, then `correct_img` on the plume pixels; the
        corrected optical depth ln(I_bg / I_corr) there."""
        from pyplis import Img

        x0, y0, x1, y1 = self.cfg.processing.dilution_ambient_roi
        img.edit_log["vigncorr"] = True  # DilutionCorr needs it (no vignetting in these images)
        ext = self.dilution.fit(img, float(img.img[y0:y1, x0:x1].mean())).ext
        plume, bg = Img(img.img.copy()), Img(img.img * np.exp(tau))
        plume.edit_log["vigncorr"] = bg.edit_log["vigncorr"] = True
        mask = (aa > self.cfg.processing.dilution_plume_aa_min).astype(float)
        corrected = self.dilution.correct_img(plume, ext, bg, self.geometry.plume_distances(), mask)
        return np.where(mask > 0, np.log(bg.img / np.clip(corrected.img, 1e-6, None)), tau)

    def _flow_region(self, aa: np.ndarray) -> None:
        from processing.flow import flow_region

        lvl = self.cfg.processing.flow_pyrlevel
        from pyplis import Img

        shape = Img(aa.astype(np.float32)).pyr_down(lvl).img.shape
        y0, y1, x0, x1 = flow_region(
            [ln.convert(to_pyrlevel=lvl) for ln in self.lines], shape, int(self.flow.settings._flow_algo["winsize"])
        )
        self.flow_roi_abs = [x0 * 2**lvl, y0 * 2**lvl, x1 * 2**lvl, y1 * 2**lvl]
        self.flow_lines = [ln.convert(to_pyrlevel=lvl, to_roi_abs=self.flow_roi_abs) for ln in self.lines]

    def _flow_params(self, line) -> dict:  # noqa: ANN001
        """pyplis's local_flow_params on the plume pixels of the line's ROI, on the whole ROI when that fails (as
        processing.flow.FlowVelocity.line_velocity)."""
        from processing.flow import plume_pixels

        mask = plume_pixels(self.prev.img, line.get_rotated_roi_mask(self.prev.img.shape))
        res = self.flow.local_flow_params(line=line, pix_mask=mask)
        if mask is not None and not (np.isfinite(res["_len_mu_norm"]) and np.isfinite(res["_dir_mu"])):
            res = self.flow.local_flow_params(line=line)
        return res

    def _xcorr_velocity(self, series: list, pix_m: float) -> float:
        """Plume speed from pyplis's find_signal_correlation on both orders of the two lines' series (the better
        correlation wins, as ours), NaN when the series is not yet long enough or no lag is found."""
        from pyplis.plumespeed import find_signal_correlation

        proc = self.cfg.processing
        series = series[-proc.ring_buffer :]
        span = (series[-1][0] - series[0][0]).total_seconds() if series else 0.0
        if len(series) < MIN_XCORR_SAMPLES or span < proc.xcorr_min_window_s:
            return math.nan
        stamps = np.array([t.replace(tzinfo=None) for t, _, _ in series], dtype=object)
        first, second = np.array([a for _, a, _ in series]), np.array([b for _, _, b in series])
        step_ms = max(int(round(np.median([d.total_seconds() for d in np.diff(stamps)]) * 1e3 / 4)), 1)
        best = None
        for a, b in ((first, second), (second, first)):
            try:
                lag, coeffs, *_ = find_signal_correlation(a, b, time_stamps=stamps, reg_grid_tres=step_ms,
                                                          freq_unit="ms", max_shift_percent=50)  # fmt: skip
            except (ValueError, IndexError):  # flat series: no speed, as in ours
                continue
            if lag > 0 and (best is None or np.nanmax(coeffs) > best[1]):
                best = (lag, float(np.nanmax(coeffs)))
        return proc.pcs_line_gap_px * pix_m / best[0] if best else math.nan

    def process(self, pair) -> dict:  # noqa: ANN001
        from pyplis import Img
        from pyplis.fluxcalc import det_emission_rate
        from pyplis.plumespeed import get_veff

        from processing.flow import contrast_range

        lvl = self.cfg.processing.flow_pyrlevel
        img_a, tau_a = self._tau("A", pair.a)
        img_b, tau_b = self._tau("B", pair.b)
        self.ready = True
        tau_b = self.registration.apply(tau_b)
        img_b.img = self.registration.apply(img_b.img)
        aa = tau_a - tau_b
        if self.dilution is not None:
            aa = self._dilution(img_a, tau_a, aa) - self._dilution(img_b, tau_b, aa)
        if self.flow_roi_abs is None:
            self._flow_region(aa)
        cur = Img(aa.astype(np.float32), start_acq=pair.time.replace(tzinfo=None))
        cur.pyr_down(lvl)
        cur.crop(self.flow_roi_abs)
        out = {}
        if self.prev is not None:
            self.flow.settings.i_min, self.flow.settings.i_max = contrast_range(self.prev.img)
            self.flow.set_images(self.prev, cur)
            self.flow.calc_flow()
        xcorr_s = 0.0
        for ln, xln, dx, lvl_line in zip(self.lines, self.xlines, self.dx, self.flow_lines, strict=True):
            cds = self.cal.slope * ln.get_line_profile(aa) + self.cal.offset
            self.ica[ln.line_id].append((pair.time, float(np.sum(cds * dx)),
                                         float(np.sum(self.cal.slope * xln.get_line_profile(aa) * dx))))  # fmt: skip
            pix = float(np.mean(dx))
            if self.prev is not None:
                res = self._flow_params(lvl_line)
                if np.isfinite(res["_dir_mu"]) and np.isfinite(res["_len_mu_norm"]):
                    v, _ = get_veff(lvl_line.normal_vector, res["_dir_mu"], res["_dir_sigma"], res["_len_mu_norm"],
                                    res["_len_sigma_norm"], pix_dist_m=pix * 2**lvl)  # fmt: skip
                    out[f"{ln.line_id}_flow"] = det_emission_rate(cds, abs(v), dx)[0] / 1e3  # g/s
            c = time.process_time()
            v = self._xcorr_velocity(self.ica[ln.line_id], pix)
            if np.isfinite(v):
                out[f"{ln.line_id}_xcorr"] = det_emission_rate(cds, v, dx)[0] / 1e3
            del self.ica[ln.line_id][: -self.cfg.processing.ring_buffer]
            xcorr_s += time.process_time() - c
        self.xcorr_cpu_ms.append(xcorr_s * 1e3)
        self.prev = cur
        return out


__all__ = ["PyplisChain"]
