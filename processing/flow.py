"""Plume speed: Farneback optical flow with pyplis's histogram analysis, and cross-correlation between two lines.

Optical flow runs on consecutive AA images reduced `flow_pyrlevel` times (a 648 x 486 image at level 1 costs
~20 ms). The predominant displacement direction and length in the rotated ROI around each plume cross-section line
come from pyplis's `local_flow_params` analysis with its multi-Gauss fit of the orientation histogram replaced
(processing.flowhist: ~0.5 ms instead of ~25 ms per line, compared with pyplis's in the tests), restricted to the
plume pixels of that ROI as pyplis's EmissionRates analysis does; `get_veff` projects it on the line's normal with
its uncertainty.

Cross-correlation: the integrated column amount (ICA) along a line and along a parallel line `gap` pixels
downstream; the time lag of the best Pearson correlation (pyplis `find_signal_correlation`, on a series resampled to
a quarter of the frame period as pyplis does for time series) gives v = gap · pixel size / lag.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

import cv2
import numpy as np
from pyplis import Img, LineOnImage, OptflowFarneback
from pyplis.helpers import bytescale
from pyplis.optimisation import MultiGaussFit
from pyplis.plumespeed import get_veff
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares

from controller.logging import get_logger
from processing.flowhist import local_flow_params

log = get_logger("processing.flow")

SIGMA_TOL = 2  # pyplis default: expectation interval of the histogram analysis in sigmas
# Plume pixels for the histogram analysis: AA above this fraction of the robust maximum (99.5th percentile) in the
# line's ROI. pyplis's EmissionRates analysis passes such a mask too (`min_cd_flow`); without it the clear-sky and
# plume-edge pixels of the ROI, where Farneback's smoothness prior drags the flow towards zero, pull the length
# histogram down (measured on the sim: 8-9 % low unmasked, 2-4 % low with this mask).
PLUME_MASK_FRACTION = 0.3


@dataclass(frozen=True)
class LineVelocity:
    """Speed normal to a line (m/s, never negative) with error and the quality fractions of the original's CSV.

    Sign convention (processing.emission): the plume's speed through the line, positive in the direction the plume
    crosses it; `crossing` says which way that is: +1 along the line's configured normal, -1 against it.
    """

    v_eff: float
    v_err: float
    frac_ok: float = float("nan")
    frac_ok_ica: float = float("nan")
    crossing: int = 1

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.v_eff))


NO_VELOCITY = LineVelocity(float("nan"), float("nan"), 0.0, 0.0)


def _multi_gauss(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum of Gaussians (amplitude, mu, sigma triples in `p`) at `x`, with each Gaussian's exponential term."""
    amp, mu, sigma = np.reshape(p, (-1, 3)).T
    d = x[:, None] - mu
    e = np.exp(-(d**2) / (2 * sigma**2))
    return (amp * e).sum(axis=1), e, d


def _multi_gauss_residual(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _multi_gauss(p, x)[0] - y


def _multi_gauss_jacobian(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    amp, _, sigma = np.reshape(p, (-1, 3)).T
    _, e, d = _multi_gauss(p, x)
    jac = np.empty((x.size, p.size))
    jac[:, 0::3] = e
    jac[:, 1::3] = amp * e * d / sigma**2
    jac[:, 2::3] = amp * e * d**2 / sigma**3
    return jac


class FastMultiGaussFit(MultiGaussFit):
    """pyplis's MultiGaussFit with a vectorised model and its analytic Jacobian in the least-squares fit.

    pyplis sums the Gaussians in a Python loop and lets scipy differentiate numerically (one model call per
    parameter per iteration): with up to 10 Gaussians on the orientation histogram that was ~85 % of the whole
    chain (0.1-1.5 s per line). Same model, bounds, peak search and iteration; only the derivative is exact, so
    the fitted parameters agree with pyplis's to the fit tolerance (tests/processing/test_flow.py compares them).
    """

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.err_fun = _multi_gauss_residual

    def do_fit(self, x, y, guess) -> bool:  # noqa: ANN001
        try:
            params, bds = self.prepare_fit_boundaries(guess)
            self._fit_result = res = least_squares(
                _multi_gauss_residual, params, jac=_multi_gauss_jacobian, args=(x, y), bounds=bds
            )
        except (ValueError, np.linalg.LinAlgError):  # pyplis swallows every error here too: the fit failed
            return False
        if not res.success:
            return False
        self.params = res.x
        return True

    def get_residual(self, params=None, mask=None) -> np.ndarray:  # noqa: ANN001
        if not self.has_results():
            return self.data - self.offset
        x, y = self.index, self.data
        if mask is not None and len(mask) == len(x):
            x, y = x[mask], y[mask]
        return (y - self.offset) - _multi_gauss(np.asarray(self.params if params is None else params), x)[0]


class FineBinFarneback(OptflowFarneback):
    """pyplis's Farneback engine with sub-pixel bins in the displacement-length histogram and a fast multi-Gauss fit.

    pyplis bins lengths in whole pixels; at the pyramid levels that suit 648 x 486 images a plume moves 1-4 px per
    frame, so whole-pixel bins quantise the speed by up to 30 %. The orientation histogram's multi-Gauss fit is
    pyplis's with an analytic Jacobian (FastMultiGaussFit). Everything else is pyplis's analysis.
    """

    LENGTH_BIN_PX = 0.05

    def flow_length_histo(self, pix_mask=None, bin_res_pix=None, min_length=1.0, **kwargs):  # noqa: ANN001, ANN201
        return super().flow_length_histo(pix_mask, self.LENGTH_BIN_PX, min_length, **kwargs)

    def fit_multigauss_to_histo(self, count, bins, noise_amp=None, max_num_gaussians=None):  # noqa: ANN001, ANN201
        c, x = self._prep_histo_data(count, bins)
        fit = FastMultiGaussFit(data=c, index=x, noise_amp=noise_amp, max_num_gaussians=max_num_gaussians, do_fit=False)
        return fit, bool(fit.run_optimisation())


def contrast_range(img: np.ndarray) -> tuple[float, float]:
    """Byte-scaling range for flow input: robust percentiles, so bright terrain does not flatten the plume."""
    lo, hi = np.percentile(img[np.isfinite(img)], [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def flow_region(lines_at_level: list[LineOnImage], shape: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the bounding box of the lines' rotated ROIs (lines at the flow level) plus `margin` pixels
    (Farneback's window), within `shape`. The flow inside is then that of the whole image to within its own noise
    (tests compare)."""
    corners = np.vstack([np.asarray(ln.rect_roi_rot) for ln in lines_at_level])
    h, w = shape
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + margin
    return max(int(y0), 0), min(int(y1), h), max(int(x0), 0), min(int(x1), w)


def plume_pixels(img: np.ndarray, roi: np.ndarray) -> np.ndarray | None:
    """The pixels of `roi` (a boolean mask of `img`'s shape) whose AA exceeds PLUME_MASK_FRACTION of its robust
    maximum (99.5th percentile); None when there is no positive AA in the ROI."""
    vals = img[roi]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return None
    top = float(np.percentile(vals, 99.5))
    if not top > 0:
        return None
    return roi & (img > PLUME_MASK_FRACTION * top)


class FlowVelocity:
    """Keeps the previous AA image and gives per-line velocities from the flow to the current one."""

    def __init__(self, pyrlevel: int = 1, lines: list[LineOnImage] | None = None, **farneback_settings: float) -> None:
        self.pyrlevel = pyrlevel
        self.engine = FineBinFarneback(**farneback_settings)
        self.engine.settings.auto_update = False
        self._prev: Img | None = None
        self._lines: dict[str, LineOnImage] = {}
        self._first: np.ndarray | None = None
        self.has_flow = False
        # the flow is computed only in the region around these lines' ROIs (None: the whole image)
        self.region_lines = list(lines or [])
        self._region: tuple[tuple[int, int], tuple[int, int, int, int]] | None = None

    def region(self, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """(y0, y1, x0, x1) at the flow level (`flow_region`), once per shape."""
        if not self.region_lines:
            return None
        if self._region is None or self._region[0] != shape:
            lines = [self._line_at_level(ln) for ln in self.region_lines]
            self._region = (shape, flow_region(lines, shape, int(self.engine.settings._flow_algo["winsize"])))
        return self._region[1]

    def update(self, aa: np.ndarray, time: datetime) -> bool:
        """Add the next AA image; True when a flow field to the previous image is available."""
        img = Img(np.asarray(aa, dtype=np.float32), start_acq=time)
        if self.pyrlevel >= 0:
            img.pyr_down(self.pyrlevel)
        else:  # small images (pyplis's test data): upsampled, so a plume moving < 1 px per frame is measurable
            img.pyr_up(-self.pyrlevel)
        prev, self._prev = self._prev, img
        self.has_flow = False
        self._first = None
        if prev is None or prev.img.shape != img.img.shape or (time - prev.meta["start_acq"]).total_seconds() <= 0:
            return False
        s = self.engine.settings
        box = self.region(img.img.shape)
        if box is None:
            s.i_min, s.i_max = contrast_range(prev.img)
            self.engine.set_images(prev, img)
            self.engine.calc_flow()
        else:
            # pyplis's set_images byte-scales both whole images: only the region is needed
            self.engine.images_input["this"], self.engine.images_input["next"] = prev, img
            y0, y1, x0, x1 = box
            s.i_min, s.i_max = contrast_range(prev.img[y0:y1, x0:x1])  # the contrast of what the flow sees
            this, nxt = (bytescale(im.img[y0:y1, x0:x1], cmin=s.i_min, cmax=s.i_max) for im in (prev, img))
            flow = np.zeros((*img.img.shape, 2), dtype=np.float32)
            flow[y0:y1, x0:x1] = cv2.calcOpticalFlowFarneback(
                this, nxt, None, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN, **self.engine.settings._flow_algo
            )
            self.engine.flow = flow
        self._first = prev.img  # the flow field lives on the first image's grid
        self.has_flow = True
        return True

    def _line_at_level(self, line: LineOnImage) -> LineOnImage:
        key = f"{line.line_id}:{line.x0},{line.y0},{line.x1},{line.y1}:{line.normal_orientation}"
        if key not in self._lines:
            self._lines[key] = line.convert(to_pyrlevel=self.pyrlevel)
        return self._lines[key]

    def line_velocity(self, line: LineOnImage, pix_size_m: float, columns: np.ndarray | None = None) -> LineVelocity:
        """Velocity normal to `line` (full-resolution coordinates); `pix_size_m` at full resolution.

        `columns` (the column profile along the line, full resolution) weights frac_ok_ica.
        """
        if not self.has_flow:
            return NO_VELOCITY
        lvl_line = self._line_at_level(line)
        # the ROI's bounding box: masks and flow vectors are selected there, not over the whole image (the same
        # pixels in the same order)
        box, roi = self._roi_box(lvl_line, self.engine.flow.shape[:2])
        flow = self.engine.flow[box]
        plume = self.plume_mask(lvl_line, box)
        res = self._local_params(flow, roi if plume is None else plume & roi)
        if not np.isfinite(res["_len_mu_norm"]) or not np.isfinite(res["_dir_mu"]):
            # too few plume pixels for the histograms: the analysis of the whole ROI
            res = self._local_params(flow, roi)
        if not np.isfinite(res["_len_mu_norm"]) or not np.isfinite(res["_dir_mu"]):
            return NO_VELOCITY
        pix_m = pix_size_m * 2**self.pyrlevel
        v, verr = get_veff(
            lvl_line.normal_vector, res["_dir_mu"], res["_dir_sigma"], res["_len_mu_norm"],
            res["_len_sigma_norm"], pix_dist_m=pix_m, del_t=1.0, sigma_tol=SIGMA_TOL,
        )  # fmt: skip
        frac, frac_ica = self._fractions_ok(lvl_line, res, columns)
        # the predominant flow direction decides which way the plume crosses: against the normal is as valid
        return LineVelocity(abs(float(v)), float(verr), frac, frac_ica, 1 if v >= 0 else -1)

    def _roi_box(self, line: LineOnImage, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
        """The bounding box (slices) of the line's rotated ROI mask at `shape`, and the mask within it; once per
        line and shape."""
        key = (id(line), shape)
        cache = self.__dict__.setdefault("_roi_boxes", {})
        if key not in cache:
            roi = line.get_rotated_roi_mask(shape)  # pyplis caches it on the line
            ys, xs = np.nonzero(roi)
            if ys.size:
                box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
            else:
                box = (slice(0, 0), slice(0, 0))
            cache[key] = (box, roi[box])
        return cache[key]

    def _local_params(self, flow: np.ndarray, mask: np.ndarray) -> dict:
        """pyplis's local_flow_params analysis without its multi-Gauss fit (processing.flowhist)."""
        s = self.engine.settings
        return local_flow_params(
            flow, mask, self.engine.del_t, s.min_length, s.min_count_frac, SIGMA_TOL, FineBinFarneback.LENGTH_BIN_PX
        )

    def plume_mask(self, line: LineOnImage, box: tuple[slice, slice] | None = None) -> np.ndarray | None:
        """Pixels of the line's rotated ROI (flow level) whose AA exceeds PLUME_MASK_FRACTION of its maximum; within
        `box` (the ROI's bounding box, `_roi_box`) when given, else over the whole image."""
        img = self._first
        if img is None:
            return None
        if box is None:
            roi = line.get_rotated_roi_mask(img.shape)
        else:
            _, roi = self._roi_box(line, img.shape)
            img = img[box]
        return plume_pixels(img, roi)

    def _fractions_ok(self, line: LineOnImage, res: dict, columns: np.ndarray | None) -> tuple[float, float]:
        """Fraction of line pixels whose own flow vector agrees with the histogram result (and ICA-weighted)."""
        flow = self.engine.flow
        fx = line.get_line_profile(flow[:, :, 0])
        fy = line.get_line_profile(flow[:, :, 1])
        lens = np.hypot(fx, fy)
        angles = np.rad2deg(np.arctan2(fx, -fy))
        d = (angles - res["_dir_mu"] + 180.0) % 360.0 - 180.0
        ok = (np.abs(d) <= SIGMA_TOL * res["_dir_sigma"]) & (lens > self.engine.settings.min_length)
        frac = float(ok.mean()) if ok.size else 0.0
        if columns is None or columns.size == 0:
            return frac, frac
        w = np.interp(np.linspace(0, 1, ok.size), np.linspace(0, 1, columns.size), np.clip(columns, 0, None))
        total = float(w.sum())
        return frac, (float(w[ok].sum()) / total if total > 0 else frac)


class CrossCorrelationVelocity:
    """Plume speed from the lag between the ICA series of a line and of a parallel line downstream."""

    def __init__(self, gap_px: float, maxlen: int, min_samples: int = 8, min_window_s: float = 0.0) -> None:
        self.gap_px = gap_px
        self.min_samples = min(min_samples, maxlen)
        # No speed until the buffer spans this long (processing.xcorr_min_window_s): the searchable lag is half
        # the span, and a series too short for the true lag reads it too short (the speed 2-4x too high).
        self.min_window_s = min_window_s
        self._warned_short = False
        self.times: deque[float] = deque(maxlen=maxlen)
        self.first: deque[float] = deque(maxlen=maxlen)
        self.second: deque[float] = deque(maxlen=maxlen)

    def add(self, time: datetime, ica_first: float, ica_second: float) -> None:
        if self.times and time.timestamp() <= self.times[-1]:
            return
        self.times.append(time.timestamp())
        self.first.append(ica_first)
        self.second.append(ica_second)

    @property
    def ready(self) -> bool:
        """The buffer holds enough samples over the minimum window for a plume speed."""
        if len(self.times) < self.min_samples:
            return False
        if self.times[-1] - self.times[0] >= self.min_window_s:
            return True
        if len(self.times) == self.times.maxlen and not self._warned_short:
            self._warned_short = True
            log.warning(
                "xcorr_buffer_too_short",
                samples=len(self.times),
                span_s=round(self.times[-1] - self.times[0], 1),
                min_window_s=self.min_window_s,
                detail="processing.ring_buffer samples never span processing.xcorr_min_window_s: no xcorr speeds",
            )
        return False

    def velocity(self, pix_size_m: float) -> LineVelocity:
        """The second line lies `gap` pixels along the first line's normal: a plume crossing along the normal
        reaches it later, one crossing against the normal earlier. Both lags are searched; the better correlation
        gives the speed and which way the plume crosses."""
        if not self.ready:
            return NO_VELOCITY
        times, first, second = np.asarray(self.times), np.asarray(self.first), np.asarray(self.second)
        best = None
        for crossing, (a, b) in ((1, (first, second)), (-1, (second, first))):
            lag_s, r = xcorr_lag(times, a, b)
            if np.isfinite(lag_s) and lag_s > 0 and (best is None or r > best[2]):
                best = (crossing, lag_s, r)
        if best is None:
            return NO_VELOCITY
        crossing, lag_s, r = best
        v = self.gap_px * pix_size_m / lag_s
        # The lag is known to about half a resampling step; the error follows from dv/v = dlag/lag.
        step = _grid_step(times)
        return LineVelocity(float(v), float(v * 0.5 * step / lag_s), float(max(r, 0.0)), float(max(r, 0.0)), crossing)


def _grid_step(times: np.ndarray) -> float:
    dt = float(np.median(np.diff(times)))
    return max(dt / 4.0, 1e-3)


def shifted_correlation(
    first: np.ndarray, second: np.ndarray, max_shift_percent: float = 20.0, sigma_smooth: float = 1
) -> np.ndarray:
    """Pearson coefficient of `first` shifted by k samples against `second`, k = 0 .. max_shift - 1.

    The coefficients of pyplis's `find_signal_correlation` on arrays (same smoothing, shifts and Pearson
    coefficient per shift) without its per-shift scipy and pandas overhead (~15 ms per call at 1 Hz with a
    full ring buffer), all shifts at once (cumulative sums and one correlate: ~0.1 ms instead of a Python loop's
    ~4 ms). tests/processing/test_flow.py compares the two.
    """
    s1 = gaussian_filter(np.asarray(first, dtype=np.float64), sigma_smooth)
    s2 = gaussian_filter(np.asarray(second, dtype=np.float64), sigma_smooth)
    n = s1.size
    shifts = int(n * max_shift_percent / 100.0)
    out = np.full(shifts, np.nan)
    if shifts == 0:
        return out
    # all shifts at once: a = s1[:n-k], b = s2[k:] (sums from cumulative sums, cross products from one correlate);
    # centred first so the sums of squares do not cancel
    s1, s2 = s1 - s1.mean(), s2 - s2.mean()
    k = np.arange(shifts)
    m = (n - k).astype(np.float64)
    c1, c2 = np.concatenate([[0.0], np.cumsum(s1)]), np.concatenate([[0.0], np.cumsum(s2)])
    q1, q2 = np.concatenate([[0.0], np.cumsum(s1 * s1)]), np.concatenate([[0.0], np.cumsum(s2 * s2)])
    sum_a, sum_aa = c1[n - k], q1[n - k]
    sum_b, sum_bb = c2[n] - c2[k], q2[n] - q2[k]
    sum_ab = np.correlate(s2, s1, mode="full")[n - 1 : n - 1 + shifts]  # Σ_i s1[i] · s2[i + k]
    cov = sum_ab - sum_a * sum_b / m
    var = (sum_aa - sum_a**2 / m) * (sum_bb - sum_b**2 / m)
    ok = var > 0
    out[ok] = np.clip(cov[ok] / np.sqrt(var[ok]), -1.0, 1.0)
    return out


def xcorr_lag(
    times: np.ndarray, first: np.ndarray, second: np.ndarray, max_shift_percent: float = 50.0
) -> tuple[float, float]:
    """Lag (s) by which `second` follows `first`, and the correlation coefficient at that lag.

    A lag shorter than one sampling interval is not resolved by the samples: it is the interpolation's answer to
    a signal common to both lines (a sky background, light dilution or exposure that changes from image to image),
    and one that is 20 % of the plume's variation put a sixth of the lags there, the mean speed 2.6x too high
    (tests/processing/test_flow.py). Such a lag gives no speed (NaN), as a peak at the longest shift does."""
    ok = np.isfinite(first) & np.isfinite(second)
    times, first, second = times[ok], first[ok], second[ok]
    if times.size < 4 or np.std(first) == 0 or np.std(second) == 0:
        return float("nan"), float("nan")
    interval = float(np.median(np.diff(times)))
    step = _grid_step(times)
    grid = np.arange(times[0], times[-1] + step / 2, step)
    s1 = np.interp(grid, times, first)
    s2 = np.interp(grid, times, second)
    coeffs = shifted_correlation(s1, s2, max_shift_percent=max_shift_percent, sigma_smooth=1)
    k = int(np.argmax(coeffs)) if coeffs.size else -1
    if not 0 <= k < len(coeffs) - 1:
        # no maximum inside the searched shifts (or the best is the longest one, where the correlation may still
        # be rising: a series too short for the lag reads a too short lag, i.e. a too high speed)
        return float("nan"), float("nan")
    frac = 0.0
    if 0 < k < len(coeffs) - 1:  # parabolic refinement of the peak between grid steps
        y0, y1, y2 = coeffs[k - 1], coeffs[k], coeffs[k + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            frac = float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    lag = (k + frac) * step
    if lag < interval:
        return float("nan"), float("nan")
    return lag, float(coeffs[k])
