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


def test_radius_search_next_to_the_right_or_bottom_border_stays_in_the_image():
    """A centre one pixel from the right/bottom border: the largest radius used to index past the image."""
    stack, series = synthetic_fov_stack(10, (20, 30), (28, 18), 2, seed=4)
    radius, radii, curve, tau = disk_radius_search(stack, series, 28, 18)
    assert radius == 1 and list(radii) == [1] and tau.shape == (10,)
    radius, radii, _, _ = disk_radius_search(stack, series, 26, 10)
    assert radii[-1] == 3  # 30 - 1 - 26


def test_fov_whose_best_pixel_lies_on_the_border_is_not_refused():
    """The smoothed correlation's maximum on the image's edge has no disk: the first guess stays one pixel in."""
    stack, series = synthetic_fov_stack(30, (40, 60), (59, 20), 4, seed=6)
    res = find_fov(stack, series, refine=False)
    assert 1 <= res.cx <= 58 and 1 <= res.cy <= 38 and abs(res.cy - 20) <= 3, (res.cx, res.cy)
    assert find_fov(stack, series).radius >= 1
