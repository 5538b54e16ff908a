"""FOV search: finds a known disk, agrees with pyplis' own Pearson search, refuses bad input."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from controller.errors import ProcessingError
from processing.fov import bench_fov, disk_radius_search, find_fov, pearson_image, synthetic_fov_stack


def test_pearson_image_matches_numpy_corrcoef():
    stack, series = synthetic_fov_stack(20, (12, 15), (7, 6), 3, seed=5)
    img = pearson_image(stack, series)
    for y, x in [(0, 0), (6, 7), (11, 14), (5, 9)]:
        assert img[y, x] == pytest.approx(np.corrcoef(stack[:, y, x].astype(float), series)[0, 1], abs=1e-9)


def test_constant_pixels_give_zero_not_nan():
    stack, series = synthetic_fov_stack(10, (8, 8), (4, 4), 2)
    stack[:, 0, 0] = 3.0
    img = pearson_image(stack, series)
    assert np.all(np.isfinite(img)) and img[0, 0] == 0.0


@pytest.mark.parametrize("downsample", [1, 4])
def test_find_fov_recovers_synthetic_disk(downsample):
    centre, radius = (150, 70), 9
    stack, series = synthetic_fov_stack(60, (160, 240), centre, radius, seed=2)
    res = find_fov(stack, series, downsample=downsample)
    assert abs(res.cx - centre[0]) <= 2 and abs(res.cy - centre[1]) <= 2, (res.cx, res.cy)
    assert abs(res.radius - radius) <= 2, res.radius
    assert res.disk_corr > 0.95
    assert res.disk_corr >= res.pixel_corr
    assert res.tau_series.shape == (60,)
    assert res.mask().sum() > 100


def test_fov_search_agrees_with_pyplis():
    """pyplis' DoasFOVEngine (pixel loop over scipy pearsonr, radius loop) on the same input."""
    from pydoas.analysis import DoasResults
    from pyplis.doascalib import DoasFOVEngine
    from pyplis.processing import ImgStack

    logging.getLogger("pyplis").setLevel(logging.WARNING)
    stack, series = synthetic_fov_stack(30, (64, 96), (60, 30), 5, seed=3)
    times = np.array([datetime(2019, 5, 29, 12) + timedelta(seconds=4 * i) for i in range(len(series))])
    pstack = ImgStack(img_prep={"pyrlevel": 0, "is_aa": True}, stack=stack, start_acq=times, texps=np.zeros(len(times)))
    engine = DoasFOVEngine(pstack, DoasResults(pd.Series(series, index=times)), maxrad=20, blur=2)
    calib = engine.perform_fov_search(mergeopt="nearest")
    ref = calib.fov.result_pearson

    ours = find_fov(stack, series, max_radius=20, blur_sigma=2, refine=False)  # pyplis' method exactly
    assert (ours.cx, ours.cy, ours.radius) == (ref["cx_rel"], ref["cy_rel"], ref["rad_rel"])
    # the refinement (disk means instead of single pixels for the centre) lands on the truth, (60, 30) r 5
    refined = find_fov(stack, series, max_radius=20, blur_sigma=2)
    assert (refined.cx, refined.cy, refined.radius) == (60, 30, 5)
    np.testing.assert_allclose(ours.corr_image, calib.fov.corr_img.img, atol=1e-6)
    curve = np.asarray(ref["corr_curve"].values)
    np.testing.assert_allclose(ours.corr_curve[: curve.size], curve, atol=1e-5)
    np.testing.assert_allclose(ours.tau_series, calib.tau_vec, rtol=1e-5)


def test_bad_input_raises():
    stack, series = synthetic_fov_stack(10, (8, 8), (4, 4), 2)
    with pytest.raises(ProcessingError, match="does not match 10 frames"):
        find_fov(stack, series[:9])
    with pytest.raises(ProcessingError, match=r"\(T, H, W\)"):
        find_fov(stack[0], series)
    with pytest.raises(ProcessingError, match="constant"):
        find_fov(stack, np.ones(10))
    with pytest.raises(ProcessingError, match="border"):
        disk_radius_search(stack, series, 0, 4)


def test_bench_fov_reports_figures():
    out = bench_fov(n_frames=20, shape=(96, 128))
    assert out["found"][:2] == pytest.approx(out["truth"][:2], abs=2)
    assert out["fov_search_s"] > 0 and out["target_s"] == 2.0
