"""Field of view of the spectrometer in the camera image (pyplis' Pearson method, vectorised).

1. Pearson correlation of every pixel's AA time series with the DOAS column series: the stack is centred and
   normalised per pixel and multiplied by the centred DOAS series in one matrix product per block of pixels
   (pyplis loops over pixels with scipy.stats.pearsonr: ~50 s for 100 full frames; this takes well under 1 s).
2. The correlation image is smoothed (as pyplis does) and its maximum is the FOV centre.
3. The disk radius maximising the correlation of the disk-mean AA with the DOAS series: every radius at once,
   from cumulative sums of the pixels sorted by distance from the centre.

4. (`refine`, on by default; off is pyplis' method exactly) the centre again from the disk means: the Pearson
   image of the disk-filtered stack near the first guess, then the radius again, until the centre stays. Across a
   smooth plume a single pixel's correlation is nearly flat over tens of pixels; the disk mean's is not.

The disk convention is pyplis' (`make_circular_mask`): pixels with (x-cx)² + (y-cy)² < r².

How close the FOV comes is set by the data more than by the method: across a smooth plume disks a few pixels
apart correlate almost equally, so the DOAS noise decides between them. On a sim station day 20 pairs of single
spectra (3-4 % noise) gave 5-12 px off across the plume; 100 pairs of co-added spectra give 0-1 px
(tests/processing/test_fov_station.py; processing.fov_frames sets the search's buffer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from controller.errors import ProcessingError

__all__ = [
    "FovResult",
    "bench_fov",
    "confirm_fov",
    "disk_mask",
    "disk_radius_search",
    "find_fov",
    "pearson_image",
    "synthetic_fov_stack",
]

_BLOCK_PIXELS = 1 << 16  # bounds the float64 working copy to T x 65536 values


@dataclass(frozen=True)
class FovResult:
    """Best FOV disk: centre (x, y) in stack pixels, radius, and what the search saw."""

    cx: int
    cy: int
    radius: int
    pixel_corr: float  # Pearson r of the centre pixel (unsmoothed)
    disk_corr: float  # Pearson r of the disk-mean series
    corr_image: np.ndarray
    radii: np.ndarray
    corr_curve: np.ndarray
    tau_series: np.ndarray  # disk-mean AA per frame

    def mask(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        return disk_mask(shape or self.corr_image.shape, self.cx, self.cy, self.radius)


def disk_mask(shape: tuple[int, int], cx: int, cy: int, radius: float) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return (x - cx) ** 2 + (y - cy) ** 2 < radius**2


def _check(stack: np.ndarray, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stack = np.asarray(stack)
    series = np.asarray(series, dtype=np.float64)
    if stack.ndim != 3:
        raise ProcessingError(f"FOV search needs an image stack (T, H, W), got shape {stack.shape}")
    if series.ndim != 1 or series.shape[0] != stack.shape[0]:
        raise ProcessingError(f"FOV search: DOAS series of shape {series.shape} does not match {stack.shape[0]} frames")
    if stack.shape[0] < 3:
        raise ProcessingError(f"FOV search needs at least 3 frames, got {stack.shape[0]}")
    if not np.all(np.isfinite(series)) or np.ptp(series) == 0:
        raise ProcessingError("FOV search: DOAS series is constant or not finite")
    return stack, series


def pearson_image(stack: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Pearson r of each pixel's time series with `series`; (H, W) float64, 0 where a pixel is constant."""
    stack, series = _check(stack, series)
    t, h, w = stack.shape
    flat = stack.reshape(t, h * w)
    y = series - series.mean()
    y /= np.sqrt(y @ y)
    out = np.zeros(h * w)
    for start in range(0, h * w, _BLOCK_PIXELS):
        x = flat[:, start : start + _BLOCK_PIXELS].astype(np.float64)
        x -= x.mean(axis=0)
        norm = np.sqrt(np.einsum("ij,ij->j", x, x))
        num = y @ x
        ok = norm > 0
        out[start : start + x.shape[1]][ok] = num[ok] / norm[ok]
    return out.reshape(h, w)


def disk_radius_search(
    stack: np.ndarray, series: np.ndarray, cx: int, cy: int, max_radius: int = 80
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Radius r in 1..max maximising corr(mean AA in disk(r), series). Returns (r, radii, corr, series_r)."""
    stack, series = _check(stack, series)
    t, h, w = stack.shape
    rmax = int(min(max_radius, cx, cy, w - 1 - cx, h - 1 - cy))
    if rmax < 1:
        raise ProcessingError(f"FOV centre ({cx}, {cy}) lies on the image border of {w}x{h}")
    y0, y1, x0, x1 = cy - rmax, cy + rmax + 1, cx - rmax, cx + rmax + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2).ravel()
    order = np.argsort(d2, kind="stable")
    box = stack[:, y0:y1, x0:x1].reshape(t, -1)[:, order].astype(np.float64)
    csum = np.cumsum(box, axis=1)
    radii = np.arange(1, rmax + 1)
    counts = np.searchsorted(d2[order], radii**2, side="left")  # pixels with d² < r²
    means = csum[:, counts - 1] / counts  # (t, n_radii)
    yc = series - series.mean()
    mc = means - means.mean(axis=0)
    denom = np.sqrt(np.einsum("ij,ij->j", mc, mc) * (yc @ yc))
    corr = np.where(denom > 0, (yc @ mc) / np.where(denom > 0, denom, 1.0), 0.0)
    best = int(np.argmax(corr))
    return int(radii[best]), radii, corr, means[:, best]


def _block_mean(stack: np.ndarray, k: int) -> np.ndarray:
    t, h, w = stack.shape
    hh, ww = h // k * k, w // k * k
    return stack[:, :hh, :ww].reshape(t, hh // k, k, ww // k, k).mean(axis=(2, 4), dtype=np.float64)


def find_fov(
    stack: np.ndarray,
    series: np.ndarray,
    *,
    max_radius: int = 80,
    blur_sigma: float = 2.0,
    downsample: int = 1,
    refine: bool = True,
) -> FovResult:
    """Locate the spectrometer FOV: best pixel of the (smoothed) Pearson image, then the best disk radius.

    With `downsample` k > 1 the correlation image is computed on k x k block means and the centre is then
    refined at full resolution within +-k pixels, which saves time on large stacks.
    """
    stack, series = _check(stack, series)
    _, h, w = stack.shape
    if downsample > 1:
        coarse = pearson_image(_block_mean(stack, downsample), series)
        if blur_sigma > 0:
            coarse = gaussian_filter(coarse, blur_sigma / downsample)
        cyc, cxc = np.unravel_index(np.argmax(coarse), coarse.shape)
        k = downsample
        ya, yb = max(0, cyc * k - k), min(h, cyc * k + 2 * k)
        xa, xb = max(0, cxc * k - k), min(w, cxc * k + 2 * k)
        pad = int(np.ceil(3 * blur_sigma))
        pa, pb, qa, qb = max(0, ya - pad), min(h, yb + pad), max(0, xa - pad), min(w, xb + pad)
        fine = pearson_image(stack[:, pa:pb, qa:qb], series)
        fine_s = gaussian_filter(fine, blur_sigma) if blur_sigma > 0 else fine
        inner = fine_s[ya - pa : yb - pa, xa - qa : xb - qa]
        iy, ix = np.unravel_index(np.argmax(inner), inner.shape)
        cy, cx = ya + int(iy), xa + int(ix)
        corr_img = np.kron(coarse, np.ones((k, k)))
        corr_img = np.pad(corr_img, ((0, h - corr_img.shape[0]), (0, w - corr_img.shape[1])), mode="edge")
        pixel_corr = float(fine[cy - pa, cx - qa])
    else:
        raw = pearson_image(stack, series)
        corr_img = gaussian_filter(raw, blur_sigma) if blur_sigma > 0 else raw
        inner = corr_img[1:-1, 1:-1]  # a centre on the border has no disk (the radius search refuses it)
        cy, cx = (int(v) + 1 for v in np.unravel_index(np.argmax(inner), inner.shape))
        pixel_corr = float(raw[cy, cx])
    radius, radii, curve, tau = disk_radius_search(stack, series, cx, cy, max_radius)
    first = (cx, cy, radius)
    for _ in range(REFINE_STEPS if refine else 0):
        # the centre again, now from the disk means (a single pixel's series is noisy and, across a smooth plume,
        # nearly the same over tens of pixels): Pearson of every disk-filtered pixel within bounds of the first
        # guess; kept only when the disk correlates better there
        ncx, ncy = _refine_centre(stack, series, cx, cy, radius, first)
        if (ncx, ncy) == (cx, cy):
            break
        r2, radii2, curve2, tau2 = disk_radius_search(stack, series, ncx, ncy, max_radius)
        if curve2[r2 - 1] <= curve[radius - 1]:
            break
        cx, cy, radius, radii, curve, tau = ncx, ncy, r2, radii2, curve2, tau2
    return FovResult(int(cx), int(cy), radius, pixel_corr, float(curve[radius - 1]), corr_img, radii, curve, tau)


REFINE_STEPS = 3
CONFIRM_CENTRE_PX = 3  # the halves' centres agree within max(this, half the radius found) ...
CONFIRM_RADIUS_RATIO = 2.0  # ... and their radii within this factor of it ...
CONFIRM_SLOPE_TOL = 0.05  # ... or their disks calibrate all the frames within this of the FOV's disk
CONFIRM_MIN_FRAMES = 25  # per half: fewer frames are too noisy to confirm anything (the search is then taken)


def confirm_fov(stack: np.ndarray, series: np.ndarray, found: FovResult, **search) -> tuple[bool, list[tuple]]:
    """Whether the FOV found is the data's and not its noise, judged on the even and on the odd frames (two
    independent halves spanning the same time). In each half the search runs again; the half confirms the FOV when
    - it finds the same disk: the centre within max(CONFIRM_CENTRE_PX, radius / 2), and the radius within
      CONFIRM_RADIUS_RATIO or, across a smooth plume where the radius is weakly determined, a disk that calibrates
      all the frames within CONFIRM_SLOPE_TOL of the FOV's (column / AA through the origin: what the emission rates
      take from the FOV; a short sim day's half found r 24 for r 10 at the same centre, 3.7 % apart), or
    - the disk found correlates in that half at least as well as the half's own winner (the search on half the
      frames can stop on a worse disk: one loaded sim day's half found r 21 at 11 px off with r 0.9962 where the
      FOV's disk had 0.9973 in the same frames).
    Across a smooth plume, noisy DOAS columns can make a wrong disk correlate best by chance (one loaded day found
    r 33 at 70 px off: +354 %); a chance winner is beaten by another disk in a half. Returns (confirmed,
    [(cx, cy, radius) of each half]); a search on fewer than 2 x CONFIRM_MIN_FRAMES frames is taken as it is."""
    if len(series) < 2 * CONFIRM_MIN_FRAMES:
        return True, []
    tol = max(CONFIRM_CENTRE_PX, found.radius / 2)
    slope = _disk_slope(stack, series, found)
    halves, ok = [], True
    for part in (slice(0, None, 2), slice(1, None, 2)):
        h = find_fov(stack[part], series[part], **search)
        halves.append((h.cx, h.cy, h.radius))
        same = math.hypot(h.cx - found.cx, h.cy - found.cy) <= tol and (
            1 / CONFIRM_RADIUS_RATIO <= h.radius / found.radius <= CONFIRM_RADIUS_RATIO
            or abs(_disk_slope(stack, series, h) / slope - 1) <= CONFIRM_SLOPE_TOL
        )
        ok &= same or _disk_corr(stack[part], series[part], found) >= h.disk_corr
    return ok, halves


def _disk_tau(stack: np.ndarray, fov: FovResult) -> np.ndarray:
    return stack[:, fov.mask(stack.shape[1:])].mean(axis=1, dtype=np.float64)


def _disk_corr(stack: np.ndarray, series: np.ndarray, fov: FovResult) -> float:
    """Pearson r of the mean AA in `fov`'s disk with `series`."""
    tau = _disk_tau(stack, fov)
    return float(np.corrcoef(tau, series)[0, 1]) if np.ptp(tau) > 0 else -1.0


def _disk_slope(stack: np.ndarray, series: np.ndarray, fov: FovResult) -> float:
    """Column per AA of `fov`'s disk, through the origin (the calibration the disk gives, to compare disks)."""
    tau = _disk_tau(stack, fov)
    return float(tau @ series / (tau @ tau)) if np.any(tau) else math.nan


def _refine_centre(
    stack: np.ndarray, series: np.ndarray, cx: int, cy: int, radius: int, first: tuple[int, int, int]
) -> tuple[int, int]:
    """The centre whose disk of `radius` correlates best with `series`, within two first radii of (cx, cy) and
    four of the first guess (the search never wanders off with a growing radius)."""
    import cv2

    _, h, w = stack.shape
    reach = 2 * first[2] + 2
    y0, y1 = max(0, cy - reach - radius), min(h, cy + reach + radius + 1)
    x0, x1 = max(0, cx - reach - radius), min(w, cx + reach + radius + 1)
    k = np.arange(-radius, radius + 1)
    kernel = ((k[:, None] ** 2 + k[None, :] ** 2) < radius**2).astype(np.float32)
    kernel /= kernel.sum()
    box = np.stack([cv2.filter2D(f[y0:y1, x0:x1].astype(np.float32), -1, kernel) for f in stack])
    corr = pearson_image(box, series)
    # only centres whose whole disk lies inside the box (the filter's border is not a disk mean)
    valid = np.zeros_like(corr, dtype=bool)
    valid[radius : corr.shape[0] - radius, radius : corr.shape[1] - radius] = True
    yy, xx = np.mgrid[y0:y1, x0:x1]
    valid &= (xx - first[0]) ** 2 + (yy - first[1]) ** 2 <= (2 * reach) ** 2
    corr = np.where(valid, corr, -np.inf)
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    return x0 + int(ix), y0 + int(iy)


def synthetic_fov_stack(
    n_frames: int = 100,
    shape: tuple[int, int] = (486, 648),
    centre: tuple[int, int] = (410, 190),
    radius: int = 15,
    noise: float = 0.02,
    seed: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """A plume-like AA stack (float32) and the DOAS series (molecules/cm²) its FOV disk would measure.

    Each frame is a sum of Gaussian puffs (random positions in a band around the FOV, widths about the FOV
    radius) plus pixel noise; the DOAS series is the noise-free disk mean x 1e19 plus 2 % noise. So the pixel
    correlation peaks at the FOV centre and the disk mean correlates best at the true radius.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    cx, cy = centre
    n_puffs = 40
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    stack = np.empty((n_frames, h, w), dtype=np.float32)
    truth = disk_mask(shape, cx, cy, radius)
    series = np.empty(n_frames)
    for i in range(n_frames):
        py = cy + rng.normal(0.0, 4 * radius, n_puffs)
        px = rng.uniform(0.0, w, n_puffs)
        width = radius * rng.uniform(0.6, 1.4, n_puffs)
        amp = rng.uniform(0.05, 0.3, n_puffs)
        gy = np.exp(-0.5 * ((ys[:, None] - py[None, :]) / width) ** 2)  # (h, K)
        gx = np.exp(-0.5 * ((xs[None, :] - px[:, None]) / width[:, None]) ** 2)  # (K, w)
        frame = gy @ (amp[:, None] * gx)  # separable puffs: one matrix product per frame
        series[i] = frame[truth].mean()
        stack[i] = frame + noise * rng.standard_normal(shape)
    series = series * 1e19
    series *= 1.0 + 0.02 * rng.standard_normal(n_frames)
    return stack, series


def bench_fov(n_frames: int = 100, shape: tuple[int, int] = (486, 648)) -> dict:
    """Seconds for the full FOV search on `n_frames` frames of `shape` (synthetic stack with a known FOV)."""
    centre, radius = (shape[1] * 5 // 8, shape[0] * 2 // 5), max(3, min(shape) // 30)
    stack, series = synthetic_fov_stack(n_frames, shape, centre, radius)
    t0 = time.perf_counter()
    res = find_fov(stack, series)
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    res_ds = find_fov(stack, series, downsample=4)
    dt_ds = time.perf_counter() - t1
    return {
        "n_frames": n_frames,
        "shape": list(shape),
        "fov_search_s": round(dt, 4),
        "fov_search_downsample4_s": round(dt_ds, 4),
        "found": [res.cx, res.cy, res.radius],
        "found_downsample4": [res_ds.cx, res_ds.cy, res_ds.radius],
        "truth": [centre[0], centre[1], radius],
        "target_s": 2.0,
    }
