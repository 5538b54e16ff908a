"""The same processing chain built from pyplis primitives, timed on the same Villarrica pairs as ours.

`pycam bench processing` runs both side by side in one process (controller/bench/processing.py). Per pair, as our
chain does it: read both PNGs (pyplis `Img`), subtract the darks, normalise by the exposure, optical depth with
pyplis's `PlumeBackgroundModel` (the configured mode and sky areas), light dilution (pyplis `dilution_corr_fit` on
the terrain line, `correct_img` on the plume pixels), B registered onto A, AA, calibration, Farneback optical flow
with pyplis's `local_flow_params` (its multi-Gauss histogram fit) and `get_veff`, cross-correlation with pyplis's
`find_signal_correlation`, and pyplis's `det_emission_rate` per line and method. The set-up (darks, clear sky,
geometry, reference areas) is not timed, as for ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.config import Config


def _mean(paths: list[Path]) -> np.ndarray:
    from pyplis import Img

    return np.mean([Img(str(p)).img for p in paths], axis=0)


class PyplisChain:
    """One pair at a time, from pyplis primitives (module doc)."""

    def __init__(self, cfg: Config, scan, calibration, shape: tuple[int, int]) -> None:  # noqa: ANN001
        from pyplis import LineOnImage, OptflowFarneback, PlumeBackgroundModel

        from processing.background import sky_reference_areas
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
        self.terrain = [LineOnImage(*xy) for xy in proc.dilution_lines]
        self.terrain_d = list(proc.dilution_line_distances_m)
        self.flow = OptflowFarneback()
        self.flow.settings.auto_update = False
        self.prev = None
        self.ica: dict[str, list] = {ln.line_id: [] for ln in self.lines}
        self.sky = sky_reference_areas
        self.ready = False

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
        from pyplis import Img
        from pyplis.dilutioncorr import correct_img
        from pyplis.optimisation import dilution_corr_fit

        if not self.terrain:
            return tau
        x0, y0, x1, y1 = self.cfg.processing.dilution_ambient_roi
        profiles = [ln.get_line_profile(img.img) for ln in self.terrain]
        rads = np.concatenate(profiles)
        dists = np.concatenate(
            [np.linspace(d0, d1, r.size) for (d0, d1), r in zip(self.terrain_d, profiles, strict=True)]
        )
        ext = dilution_corr_fit(rads, dists, float(img.img[y0:y1, x0:x1].mean())).x[1]
        plume, bg = Img(img.img.copy()), Img(img.img * np.exp(tau))
        plume.edit_log["vigncorr"] = bg.edit_log["vigncorr"] = True
        mask = (aa > self.cfg.processing.dilution_plume_aa_min).astype(float)
        corrected = correct_img(plume, ext, bg, self.geometry.plume_distances(), mask)
        return np.where(mask > 0, np.log(bg.img / np.clip(corrected.img, 1e-6, None)), tau)

    def process(self, pair) -> dict:  # noqa: ANN001
        from pyplis import Img
        from pyplis.fluxcalc import det_emission_rate
        from pyplis.plumespeed import find_signal_correlation, get_veff

        from processing.flow import contrast_range

        img_a, tau_a = self._tau("A", pair.a)
        img_b, tau_b = self._tau("B", pair.b)
        self.ready = True
        tau_b = self.registration.apply(tau_b)
        img_b.img = self.registration.apply(img_b.img)
        aa0 = tau_a - tau_b
        aa = self._dilution(img_a, tau_a, aa0) - self._dilution(img_b, tau_b, aa0)
        cur = Img(aa.astype(np.float32), start_acq=pair.time.replace(tzinfo=None))
        cur.pyr_down(self.cfg.processing.flow_pyrlevel)
        out = {}
        if self.prev is not None:
            self.flow.settings.i_min, self.flow.settings.i_max = contrast_range(self.prev.img)
            self.flow.set_images(self.prev, cur)
            self.flow.calc_flow()
        for ln, xln, dx in zip(self.lines, self.xlines, self.dx, strict=True):
            cds = self.cal.slope * ln.get_line_profile(aa) + self.cal.offset
            self.ica[ln.line_id].append((pair.time, float(np.sum(cds * dx)),
                                         float(np.sum(self.cal.slope * xln.get_line_profile(aa) * dx))))  # fmt: skip
            if self.prev is not None:
                lvl = ln.convert(to_pyrlevel=self.cfg.processing.flow_pyrlevel)
                res = self.flow.local_flow_params(line=lvl)
                if np.isfinite(res["_dir_mu"]):
                    pix = float(np.mean(dx)) * 2**self.cfg.processing.flow_pyrlevel
                    v, _ = get_veff(lvl.normal_vector, res["_dir_mu"], res["_dir_sigma"], res["_len_mu_norm"],
                                    res["_len_sigma_norm"], pix_dist_m=pix)  # fmt: skip
                    out[f"{ln.line_id}_flow"] = det_emission_rate(cds, abs(v), dx)[0]
            series = self.ica[ln.line_id][-64:]
            if len(series) >= 8:
                import pandas as pd

                idx = pd.DatetimeIndex([t.replace(tzinfo=None) for t, _, _ in series])
                first = pd.Series([a for _, a, _ in series], index=idx)
                second = pd.Series([b for _, _, b in series], index=idx)
                try:
                    find_signal_correlation(first, second, max_shift_percent=50)
                except (ValueError, IndexError):  # too short or flat series: no speed, as in ours
                    pass
        self.prev = cur
        return out


__all__ = ["PyplisChain"]
