"""The predominant flow direction and length in a line's ROI: a replacement for pyplis's multi-Gauss histogram fit.

pyplis `OptflowFarneback.local_flow_params` fits up to 10 Gaussians to the 10° orientation histogram to find the
main direction (μ, σ of the main peak) and to reject ROIs with a second significant direction (an additional
Gaussian holding more than 20 % of the main peak's count); that fit was most of the chain's time. Here, on the raw
angles of the vectors longer than `min_length`:

1. the main peak is the fullest bin of the 10° histogram (smoothed over 3 bins, circularly);
2. μ, σ: clipped moments about it, iterated (angles within ±2.5σ of μ; σ corrected for the clipping, a normal's
   standard deviation truncated at ±2.5σ is 0.9546σ), angles taken relative to the peak so ±180° wraps;
3. rejected (NaN, as pyplis) when the vectors outside μ ± (sigma_tol + 1)σ gather in a second peak holding more
   than 20 % of the main peak's count, or when fewer than `min_count_frac` of the ROI's vectors remain;
4. the length: moments of the lengths whose direction lies within μ ± sigma_tol·σ (pyplis: moments of their
   histogram), per second.

Same keys as pyplis's result dict. tests/processing/test_flow.py compares it with pyplis's on the same flow fields.
"""

from __future__ import annotations

import math

import numpy as np

BIN_DEG = 10.0
CLIP_SIGMAS = 2.5
CLIP_SD_FACTOR = 0.9546  # sd of a normal truncated at ±2.5 sd, in units of its sd
SECOND_PEAK_MAX = 0.2
MIN_SIGMA_DEG = 1.0

__all__ = ["local_flow_params", "main_direction"]


def _wrap(deg: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


def main_direction(angles: np.ndarray, sigma_tol: float = 2.0) -> tuple[float, float] | None:
    """(μ, σ) in degrees of the main direction peak of `angles` (degrees); None when a second peak is significant."""
    n_bins = int(round(360.0 / BIN_DEG))
    count, _ = np.histogram(angles, n_bins, range=(-180.0, 180.0))
    smooth = count + 0.5 * (np.roll(count, 1) + np.roll(count, -1))
    peak = -180.0 + (int(np.argmax(smooth)) + 0.5) * BIN_DEG
    rel = _wrap(angles - peak)
    mu, sigma = 0.0, BIN_DEG
    for _ in range(6):
        sel = rel[np.abs(rel - mu) <= CLIP_SIGMAS * sigma]
        if sel.size < 3:
            return None
        new_mu = float(sel.mean())
        new_sigma = max(float(sel.std()) / CLIP_SD_FACTOR, MIN_SIGMA_DEG)
        if abs(new_mu - mu) < 0.01 and abs(new_sigma - sigma) < 0.01:
            mu, sigma = new_mu, new_sigma
            break
        mu, sigma = new_mu, new_sigma
    main = np.abs(rel - mu) <= CLIP_SIGMAS * sigma
    outside = rel[np.abs(rel - mu) > (sigma_tol + 1) * sigma]
    if outside.size:
        # the fullest 30° sector of the rest: a second plume direction, or scattered noise
        other, _ = np.histogram(_wrap(outside - mu), n_bins, range=(-180.0, 180.0))
        sector = other + np.roll(other, 1) + np.roll(other, -1)
        if sector.max() > SECOND_PEAK_MAX * main.sum():
            return None
    return float(_wrap(mu + peak)), float(sigma)


def local_flow_params(
    flow: np.ndarray,
    mask: np.ndarray,
    del_t: float,
    min_length: float = 1.0,
    min_count_frac: float = 0.1,
    sigma_tol: float = 2.0,
    len_bin_px: float = 0.05,
) -> dict:
    """pyplis's `local_flow_params` result keys for the flow vectors of `mask` (module doc)."""
    res = {"_len_mu_norm": math.nan, "_len_sigma_norm": math.nan, "_dir_mu": math.nan, "_dir_sigma": 180.0,
           "_del_t": del_t, "_significance": 0.0}  # fmt: skip
    fx, fy = flow[..., 0][mask], flow[..., 1][mask]
    if fx.size == 0:
        return res
    lens = np.hypot(fx, fy)
    angles = np.rad2deg(np.arctan2(fx, -fy))  # pyplis: 0° is up, clockwise positive
    long = lens > min_length
    if long.sum() < max(3, min_count_frac * lens.size):
        return res
    found = main_direction(angles[long], sigma_tol)
    if found is None:
        return res
    mu, sigma = found
    cond = (np.abs(_wrap(angles - mu)) < sigma_tol * sigma) & long
    frac = float(cond.sum()) / lens.size
    if frac < min_count_frac:
        return res
    res["_dir_mu"], res["_dir_sigma"], res["_significance"] = mu, sigma, frac
    sel = lens[cond]
    # moments of the length histogram (bins of len_bin_px, as processing.flow.FineBinFarneback)
    centres = (np.floor(sel / len_bin_px) + 0.5) * len_bin_px
    len_mu = float(centres.mean())
    res["_len_mu_norm"] = len_mu / del_t
    res["_len_sigma_norm"] = float(np.sqrt(np.mean((centres - len_mu) ** 2))) / del_t
    return res
