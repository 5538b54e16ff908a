"""Optical depth per band, tau = ln(I0 / I), with pyplis's PlumeBackgroundModel.

With Clear images, I0 is the clear-sky image (dark corrected, exposure normalised) and the configured pyplis mode
(1-6; the original's default is 5) corrects it with plume-free sky reference areas found in the first plume image.
Without Clear images the model falls back to mode 0, a 2-D polynomial fitted to the sky pixels of each plume image,
which needs no background image. The mode actually used is recorded in the outputs (`BackgroundChoice`).
All arrays are float64; nothing here is ever cast to an integer type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pyplis import Img, LineOnImage, PlumeBackgroundModel
from scipy.ndimage import gaussian_filter

from controller.logging import get_logger

log = get_logger("processing.background")

# Dark-corrected intensities at or below this (counts per second of exposure) are clipped: ln(I0/I) needs I > 0.
MIN_INTENSITY = 1e-3
SKY_FIT_ROUNDS = 4
SKY_CLIP_SIGMA = 1.5
# floor of the sky spread (optical depth): noise-free or very smooth skies must not clip the sky away
SKY_MIN_SPREAD = 0.01
# the background mode whose optical depth is computed here rather than by pyplis (BandBackground._tau_mode5)
FAST_MODE = 5


@dataclass(frozen=True)
class BackgroundChoice:
    mode: int
    source: str  # "clear images (N)" or "none: sky fit in each plume image"

    @property
    def description(self) -> str:
        return f"pyplis mode {self.mode}; I0 from {self.source}"


def choose_background(configured_mode: int, have_clear: dict[str, bool]) -> BackgroundChoice:
    """Use the configured mode when both bands have Clear images; otherwise mode 0, which needs none."""
    if configured_mode == 0:
        return BackgroundChoice(0, "none: sky surface fit in each plume image")
    if all(have_clear.get(b, False) for b in ("A", "B")):
        return BackgroundChoice(configured_mode, "Clear images")
    log.warning(
        "no_clear_images",
        configured_mode=configured_mode,
        used_mode=0,
        detail="no Clear images for both bands: sky background fitted in each plume image (pyplis mode 0)",
    )
    return BackgroundChoice(0, "none: sky surface fit in each plume image (no Clear images)")


def _img(arr: np.ndarray, time: datetime | None = None) -> Img:
    img = Img(arr, start_acq=time) if time is not None else Img(arr)
    img.edit_log["darkcorr"] = True  # dark correction is done by DarkLibrary before
    return img


def sky_reference_areas(plume: np.ndarray, side: str, sigma_blur: float = 2.0) -> dict:
    """pyplis's find_sky_reference_areas with the clear-sky side given instead of guessed from brightness.

    pyplis picks the brighter image edge; a bright plume or snow on that side fools it (Villarrica: the plume
    drifts to the upper left, the clear sky is upper right).
    """
    img = gaussian_filter(plume, sigma_blur)
    h, w = img.shape
    vm, hm = int(h * 0.005) + 1, int(w * 0.005) + 1
    if side == "right":
        col, x0, x1 = w - hm, int(w - 5 * hm), int(w - hm)
        xs, xe = int(w / 2.0), int(w - 1)
    elif side == "left":
        col, x0, x1 = hm, int(hm), int(5 * hm)
        xs, xe = hm, int(w / 2.0)
    else:
        raise ValueError(f"sky side must be left, right or auto, got {side!r}")
    horizon = int(np.argmin(np.gradient(img[vm : h - vm, col]))) + vm
    stop = max(int(horizon - 2 * vm), 10 * hm)
    return {
        "ygrad_line_colnum": col, "ygrad_line_startrow": 1, "ygrad_line_stoprow": stop,
        "xgrad_line_rownum": vm, "xgrad_line_startcol": xs, "xgrad_line_stopcol": xe,
        "scale_rect": [x0, vm, x1, 5 * vm],
        "ygrad_rect": [x0, int(stop - 8 * hm), x1, int(stop - 4 * hm)],
        "xgrad_rect": [int(w / 2.0 - 2 * hm), vm, int(w / 2.0 + 2 * hm), 5 * vm],
    }  # fmt: skip


class BandBackground:
    """Optical depth of one band's images (dark corrected, counts per second)."""

    def __init__(self, mode: int, clear: np.ndarray | None = None, sky_side: str = "auto") -> None:
        if mode != 0 and clear is None:
            raise ValueError(f"background mode {mode} needs a clear-sky image")
        self.mode = mode
        self.clear = None if clear is None else np.clip(clear.astype(np.float64), MIN_INTENSITY, None)
        self.model = PlumeBackgroundModel(mode=mode)
        self.sky_side = sky_side
        self._ready = False
        self._vert_line: LineOnImage | None = None  # mode 5: pyplis's vertical gradient line, built once

    def _init_areas(self, plume: Img) -> None:
        # Reference areas are found once, in the first plume image, and kept: the view does not move.
        if self.sky_side != "auto":
            self.model.update(**sky_reference_areas(plume.img, self.sky_side))
        self.model.set_missing_ref_areas(plume)
        self._ready = True

    def tau(self, intensity: np.ndarray, time: datetime | None = None, overwrite: bool = False) -> np.ndarray:
        """ln(I0/I) as float64, with pyplis's sky-area corrections for the mode; `overwrite`: computed in the float64
        `intensity` itself (the pair chain: one full-image array less per band)."""
        in_place = overwrite and intensity.dtype == np.float64
        plume_arr = np.maximum(intensity, MIN_INTENSITY, out=intensity if in_place else None, dtype=np.float64)
        if not self._ready:
            self._init_areas(_img(plume_arr, time))
        if self.mode == FAST_MODE and self.clear is not None and self.clear.shape == plume_arr.shape:
            return self._tau_mode5(plume_arr)
        plume = _img(plume_arr, time)
        if self.mode == 0:
            # Sky pixels: brighter than 90 % of the mean in the reference rectangles (pyplis find_sky_background).
            mean, _, _ = self.model.mean_in_rects(plume_arr)
            mask = plume_arr > 0.9 * mean
            if mask.sum() < 0.02 * mask.size:
                mask = np.ones_like(mask, dtype=bool)
            tau = self._tau_surface_fit(plume_arr, mask)
        else:
            tau = self.model.get_tau_image(plume, _img(self.clear), check_state=False).img
        return np.asarray(tau, dtype=np.float64)

    def _tau_mode5(self, plume: np.ndarray) -> np.ndarray:
        """pyplis's mode 5 (`get_tau_image` then `correct_tau_curvature_ref_areas`) with its full-image steps done
        once, in place: the vertical-line polynomial and the two rectangles' means only read their pixels, then each
        row's and each column's offset are subtracted in the order pyplis does (equal to pyplis's to the last bit,
        tests/processing/test_images.py). pyplis's own took ~3 ms per band in four passes and six full-image
        temporaries; this two passes (hand-written for speed: the issue's 3x over the pyplis chain)."""
        m = self.model
        h, w = plume.shape
        tau = np.divide(self.clear, plume, out=plume)  # both >= MIN_INTENSITY: pyplis's r <= 0 guard never fires
        np.log(tau, out=tau)
        col = m.ygrad_line_colnum
        if self._vert_line is None or self._vert_line.x0 != col or self._vert_line.y1 != h:
            self._vert_line = LineOnImage(col, 0, col, h)
        profile = self._vert_line.get_line_profile(tau)
        ygrid = np.linspace(0, h - 1, h, dtype=int)
        mask = m.ygrad_line_mask
        if mask is None or len(mask) != h:
            stop = h if m.ygrad_line_stoprow is None else m.ygrad_line_stoprow
            mask = (ygrid >= m.ygrad_line_startrow) & (ygrid <= stop)
        rows = np.poly1d(np.polyfit(ygrid[mask], profile[mask], m.ygrad_line_polyorder))(ygrid)
        r0, r1 = m.scale_rect, m.xgrad_rect
        mean0, mean1 = (float((tau[r[1] : r[3], r[0] : r[2]] - rows[r[1] : r[3], None]).mean()) for r in (r0, r1))
        x0, x1 = 0.5 * (r0[0] + r0[2]), 0.5 * (r1[0] + r1[2])
        slope = (mean0 - mean1) / float(x0 - x1)
        cols = (mean1 - slope * x1) + slope * np.linspace(0, w - 1, w, dtype=int)
        tau -= rows[:, None]
        tau -= cols
        return tau

    def _tau_surface_fit(self, plume: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mode 0 with sigma clipping: refit the sky surface without the pixels the last fit shows absorbing.

        A single intensity threshold keeps the plume's wings (and, with vignetting, bright plume pixels at the
        image centre) in the fit and pulls the sky down; two clipping rounds remove them.
        """
        tau = self._surface_fit_once(plume, mask)
        for _ in range(SKY_FIT_ROUNDS):
            sky = tau[mask]
            med = float(np.median(sky))
            spread = 1.4826 * float(np.median(np.abs(sky - med)))
            new_mask = mask & (tau < med + SKY_CLIP_SIGMA * max(spread, SKY_MIN_SPREAD))
            if new_mask.sum() < 0.02 * mask.size:
                break
            mask = new_mask
            tau = self._surface_fit_once(plume, mask)
        return tau

    def _surface_fit_once(self, plume: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # pyplis fits at pyramid level 4 and needs the shape divisible by 16: pad by edge values, crop after.
        h, w = plume.shape
        step = 2**self.model.surface_fit_pyrlevel
        ph, pw = (-h) % step, (-w) % step
        padded = np.pad(plume, ((0, ph), (0, pw)), mode="edge")
        pmask = np.pad(mask, ((0, ph), (0, pw)), mode="constant", constant_values=False)
        bg = self.model.bg_from_poly_surface_fit(_img(padded), pmask.astype(np.float64))[:h, :w]
        ratio = np.clip(bg / plume, np.finfo(float).eps, None)
        return np.log(ratio)


class OpticalDepth:
    """tau_A and tau_B for a pair; the background choice is shared by both bands."""

    def __init__(self, choice: BackgroundChoice, clear: dict[str, np.ndarray | None], sky_side: str = "auto") -> None:
        self.choice = choice
        self.bands = {
            band: BandBackground(choice.mode, clear.get(band) if choice.mode != 0 else None, sky_side)
            for band in ("A", "B")
        }

    def tau(
        self, band: str, intensity: np.ndarray, time: datetime | None = None, overwrite: bool = False
    ) -> np.ndarray:
        return self.bands[band].tau(intensity, time, overwrite)
