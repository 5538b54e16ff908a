"""`pycam bench processing`: our chain and the same chain from pyplis primitives, side by side on Villarrica."""

from __future__ import annotations

import math

from controller.bench.processing import bench_chain


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
