"""`pycam bench processing`: our chain and the same chain from pyplis primitives, side by side on Villarrica."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from controller.bench.processing import _processor, _villarrica, bench_chain


def test_chain_bench_times_ours_and_the_pyplis_chain_side_by_side(shared_data):
    out = bench_chain(shared_data, repeats=1)
    assert out["light_dilution"] is True  # the chain measured includes the light-dilution correction
    theirs = out["pyplis_chain"]
    assert out["pairs"] == theirs["pairs"] >= 9
    for figures in (out, theirs):
        for key in ("ms_per_pair_mean", "ms_per_pair_p95", "cpu_ms_per_pair_mean"):
            assert math.isfinite(figures[key]) and figures[key] > 0
    # the ratios are computed from the figures (their values are benchmark results, not asserted on a busy machine)
    assert out["speed_ratio_cpu"] == round(theirs["cpu_ms_per_pair_mean"] / out["cpu_ms_per_pair_mean"], 2)
    assert out["p95_over_mean"] == round(out["ms_per_pair_p95"] / out["ms_per_pair_mean"], 2)
    # the two chains compute the same thing: their flow emission rates agree pair by pair (measured: median 3 %,
    # at most 7 %: ε from whole terrain pixels in pyplis's DilutionCorr, its multi-Gauss fit against ours)
    flow = out["flux_vs_pyplis"]["flow"]
    assert flow["pairs_compared"] >= 10
    assert flow["median_rel_diff"] < 0.1 and flow["max_rel_diff"] < 0.25
    lines = out["flux_vs_pyplis"]["per_pair"]  # "<time> <line>_<method> ours/pyplis ...", one per pair
    assert len(lines) >= 5 and all(" 1_flow " in line or " 2_flow " in line for line in lines)


@pytest.fixture(scope="module")
def chains(shared_data):
    from controller.bench.pyplis_chain import PyplisChain
    from processing.images import read_image, scan_folder

    cfg, folder = _villarrica(shared_data)
    proc, pairs = _processor(cfg, folder)
    theirs = PyplisChain(cfg, scan_folder(folder), proc.setup.calibration, read_image(pairs[0].a.path).shape)
    return cfg, proc, pairs, theirs


def test_pyplis_chain_computes_the_flow_on_the_same_region_as_ours(chains):
    """Ours computes the optical flow only around the lines: the pyplis chain is given the same crop (fair)."""
    cfg, proc, pairs, theirs = chains
    proc.process(pairs[0])
    theirs.process(pairs[0])
    lvl = cfg.processing.flow_pyrlevel
    y0, y1, x0, x1 = proc.flow.region(proc.flow._prev.img.shape)
    assert theirs.flow_roi_abs == [x0 * 2**lvl, y0 * 2**lvl, x1 * 2**lvl, y1 * 2**lvl]
    assert theirs.prev.img.shape == (y1 - y0, x1 - x0)


def test_pyplis_chain_cross_correlation_is_not_silently_skipped(chains):
    """Regression: pyplis's find_signal_correlation raised on pandas input and the chain swallowed it, so the
    pyplis side never did its cross-correlation (timed without it). A series whose second line follows the first
    by 3 s gives gap · pixel / 3 s."""
    cfg, _, _, theirs = chains
    rng = np.random.default_rng(1)
    signal = np.convolve(rng.normal(size=80), np.ones(5) / 5, mode="same")
    t0 = datetime(2018, 3, 26, 14, 44, tzinfo=UTC)
    series = [(t0 + timedelta(seconds=k), float(signal[k + 3]), float(signal[k])) for k in range(60)]
    v = theirs._xcorr_velocity(series, pix_m=2.0)
    assert v == pytest.approx(cfg.processing.pcs_line_gap_px * 2.0 / 3.0, rel=0.1)
    assert math.isnan(theirs._xcorr_velocity(series[:5], pix_m=2.0))  # too short: no speed, as ours
