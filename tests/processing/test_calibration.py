"""Gas-cell calibration on Villarrica Cal_1, the weighted fit, the rolling DOAS calibration, and known failure 6."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.config import ProcessingConfig
from controller.errors import ProcessingError
from controller.storage.names import ImageName
from processing.calibration import (
    CellCalibration,
    DoasCalibration,
    PlumeFrame,
    cell_calibration_from_folder,
    cell_calibration_from_scan,
    weighted_linear_fit,
    write_calibration_series,
)
from processing.doas import DoasResult
from processing.fov import synthetic_fov_stack
from processing.images import ImageFile
from processing.outputs import CALIBRATION_COLUMNS, meta_path

PPMM = 2.504e15
T0 = datetime(2019, 5, 29, 12, 0, 0)


@pytest.fixture(scope="module")
def cal1(shared_data: Path) -> CellCalibration:
    return cell_calibration_from_folder(shared_data / "villarrica-2018-03-26" / "Cal_1", PPMM)


def test_cells_lie_on_a_straight_line(cal1):
    by = {c.ppmm: c for c in cal1.cells}
    assert sorted(by) == [0, 304, 1257]
    assert all(c.n_a == 3 and c.n_b == 3 for c in cal1.cells)
    # physics.md: AA ≈ 0.16 at 304 ppm·m and ≈ 0.46 at 1257 ppm·m (whole image, plain ratio)
    # clear sky is I0, so the 0 ppm·m cell is a data point of its own: its windows absorb about equally in both bands
    assert by[0].aa == pytest.approx(0.0, abs=0.02)
    assert by[304].aa == pytest.approx(0.16, abs=0.02)
    assert by[1257].aa == pytest.approx(0.46, abs=0.03)
    # the off-band barely sees SO2 (both bands lose ~0.25 to the cell windows against clear sky)
    assert abs(by[1257].tau_b - by[0].tau_b) < 0.05 < by[1257].tau_a - by[0].tau_a
    # straightness of the three points (independent of weights), then the weighted line itself: it is pinned
    # near the origin by the precise 0 and 304 cells and passes the 1257 cell within ~0.5e18 (~7 % in AA)
    assert cal1.linearity_r2 > 0.98
    fit = cal1.fit
    assert fit.r2 > 0.9
    assert fit.slope > 0 and 0 < fit.slope_err < 0.3 * fit.slope
    assert fit.offset_err > 0
    # columns: ppm·m times the one factor
    assert by[1257].column == pytest.approx(1257 * PPMM)
    # the line predicts each cell's column within 25 % (0 cell: within 3 % of the largest column): AA grows less
    # than linearly at large columns, a known SO2-camera effect, and three cells weighted by their errors share it
    for c in cal1.cells:
        assert abs(fit.columns(c.aa) - c.column) < max(0.25 * c.column, 0.03 * 1257 * PPMM), c


def test_cell_calibration_centre_region(shared_data):
    cal = cell_calibration_from_folder(shared_data / "villarrica-2018-03-26" / "Cal_1", PPMM, region="centre")
    assert cal.region == "centre" and cal.linearity_r2 > 0.98 and cal.fit.r2 > 0.9


def test_cell_calibration_without_zero_cell_raises(shared_data, tmp_path):
    """Without an I0 (neither Clear images nor the 0 ppm·m cell) there is no calibration."""
    src = shared_data / "villarrica-2018-03-26" / "Cal_1"
    for p in src.glob("*.png"):
        if "_0ppmm" not in p.name and "_Clear" not in p.name:
            (tmp_path / p.name).symlink_to(p)
    with pytest.raises(ProcessingError, match="0ppmm images\\) of both bands"):
        cell_calibration_from_folder(tmp_path, PPMM)


def test_weighted_fit_recovers_line_and_errors():
    rng = np.random.default_rng(4)
    x = np.linspace(0.0, 0.5, 40)
    err = np.full(x.size, 5e16)
    y = 1.1e19 * x + 2e16 + rng.normal(0, 5e16, x.size)
    fit = weighted_linear_fit(x, y, err)
    assert fit.slope == pytest.approx(1.1e19, rel=0.02)
    assert abs(fit.offset - 2e16) < 3 * fit.offset_err
    # standard error matches the analytic one of ordinary least squares with this noise
    analytic = 5e16 / np.sqrt(np.sum((x - x.mean()) ** 2))
    assert fit.slope_err == pytest.approx(analytic, rel=0.3)
    assert fit.r2 > 0.99 and fit.mse == pytest.approx(np.mean((y - fit.columns(x)) ** 2))
    with pytest.raises(ProcessingError, match="equal"):
        weighted_linear_fit([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])


def _doas(t: datetime, so2: float, kind: str = "Plume") -> DoasResult:
    return DoasResult(
        time=t, so2=so2, so2_err=0.02 * abs(so2) + 1e16, o3=0.0, ring=0.0, shift_nm=0.0, stretch=0.0, offset=0.0,
        rms_residual=0.01, chi2_reduced=1.0, n_points=120, nfev=10, success=True, ppmm_factor=PPMM,
        stray_light=0.0, kind=kind,
    )  # fmt: skip


def test_doas_calibration_finds_fov_and_slope(tmp_path):
    n = 60
    stack, series = synthetic_fov_stack(n, (120, 160), (100, 50), 6, seed=7)
    cfg = ProcessingConfig(calibration_window_s=120.0)
    cal = DoasCalibration(cfg, max_frames=100, fov_min_frames=30)
    times = [T0 + timedelta(seconds=2 * i) for i in range(n)]
    for i in range(40):  # frames and spectra arrive in any order; the spectrometer clock is 0.4 s off
        cal.add_frame(PlumeFrame(times[i], stack[i]))
        assert cal.add_doas(_doas(times[i] + timedelta(seconds=0.4), series[i])) is None
    fov = cal.locate_fov()
    assert abs(fov.cx - 100) <= 2 and abs(fov.cy - 50) <= 2 and abs(fov.radius - 6) <= 2
    points = []
    for i in range(40, n):
        cal.add_frame(PlumeFrame(times[i], stack[i]))
        p = cal.add_doas(_doas(times[i] + timedelta(seconds=0.4), series[i]))
        assert p is not None
        points.append(p)
    last = points[-1]
    # series = disk-mean AA x 1e19 (+2 % noise): the slope is 1e19 molecules/cm² per AA
    assert last.fit.slope == pytest.approx(1e19, rel=0.05)
    assert last.fit.r2 > 0.95
    # rolling window of 120 s at one point per 2 s: never more than 61 points
    assert last.fit.n <= 61
    path = write_calibration_series(tmp_path / "calibration_series.csv", points, PPMM)
    df = pd.read_csv(path, comment="#")
    assert tuple(df.columns) == CALIBRATION_COLUMNS and len(df) == len(points)
    assert "1 ppm·m = 2.504e+15 molecules/cm2" in meta_path(path).read_text()


def _image_file(kind: str, band: str, t: datetime = T0) -> ImageFile:
    name = ImageName(t, band, 1, 100000, kind)
    return ImageFile(Path(str(name)), name)


@pytest.mark.parametrize("kind", ["Test", "Dark", "Clear", "304ppmm"])
def test_bug6_test_images_never_feed_fov_calibration(kind):
    aa = np.zeros((8, 8))
    with pytest.raises(ProcessingError, match=f"{kind}.*only Plume"):
        PlumeFrame.from_files(_image_file("Plume", "A"), _image_file(kind, "B"), aa)
    with pytest.raises(ProcessingError, match=f"{kind}.*only Plume"):
        PlumeFrame.from_files(_image_file(kind, "A"), _image_file("Plume", "B"), aa)
    with pytest.raises(ProcessingError, match=f"a {kind} image never enters"):
        PlumeFrame(T0, aa, kind_a=kind)
    cal = DoasCalibration(ProcessingConfig())
    with pytest.raises(ProcessingError, match="PlumeFrame"):
        cal.add_frame(aa)  # an untyped array is refused: it could be anything
    with pytest.raises(ProcessingError, match=f"a {kind} spectrum never enters"):
        cal.add_doas(_doas(T0, 1e18, kind=kind))
    # nothing was buffered, so a FOV search cannot run on them
    assert not cal._frames and not cal._doas
    ok = PlumeFrame.from_files(_image_file("Plume", "A"), _image_file("Plume", "B"), aa)
    assert cal.add_frame(ok) is None and len(cal._frames) == 1


def test_darkcorr_copies_never_feed_fov_calibration():
    name = ImageName(T0, "A", 1, 100000, "Plume", darkcorr=True)
    with pytest.raises(ProcessingError, match="darkcorr"):
        PlumeFrame.from_files(ImageFile(Path(str(name)), name), _image_file("Plume", "B"), np.zeros((4, 4)))


def test_cell_calibration_from_scan_feeds_the_pipeline(shared_data, cal1):
    from controller.config import Config
    from processing.images import scan_folder

    cal = cell_calibration_from_scan(Config(), scan_folder(shared_data / "villarrica-2018-03-26" / "Cal_1"))
    assert cal is not None and cal.method == "cells"
    assert cal.slope == pytest.approx(cal1.fit.slope) and cal.slope_err == pytest.approx(cal1.fit.slope_err)
    assert "1257ppmm" in cal.detail
    # a scan without cells gives no calibration (the pipeline then falls back), not a crash
    assert cell_calibration_from_scan(Config(), scan_folder(shared_data / "spectra-2019-05-29")) is None


def test_pyplis_loads_the_saved_doas_calibration(tmp_path):
    """The DOAS calibration in pyplis's own format (DoasCalibData with its FOV): pyplis loads and refits it."""
    pyplis = pytest.importorskip("pyplis")
    from processing.calibration import save_pyplis_doas_calib

    n = 50
    stack, series = synthetic_fov_stack(n, (60, 80), (50, 25), 5, seed=3)
    cal = DoasCalibration(ProcessingConfig(calibration_window_s=600.0), max_frames=60, fov_min_frames=30)
    times = [T0 + timedelta(seconds=2 * i) for i in range(n)]
    for i in range(n):
        cal.add_frame(PlumeFrame(times[i], stack[i]))
        cal.add_doas(_doas(times[i], series[i]))
    cal.finish()
    points = cal.pop_points()
    assert cal.fov is not None and len(points) >= 10
    path = save_pyplis_doas_calib(points, cal.fov, stack.shape[1:], tmp_path / "doas_calibration_pyplis.fts")
    loaded = pyplis.doascalib.DoasCalibData()
    loaded.load_from_fits(str(path))
    np.testing.assert_allclose(loaded.tau_vec, [p.aa_fov for p in points])
    np.testing.assert_allclose(loaded.cd_vec, [p.doas_column for p in points])
    assert loaded.fov.method == "pearson"
    assert (loaded.fov.result_pearson["cx_rel"], loaded.fov.result_pearson["cy_rel"]) == (cal.fov.cx, cal.fov.cy)
    slope, _ = loaded.fit_calib_data()
    assert slope == pytest.approx(1e19, rel=0.1)  # the synthetic series: AA x 1e19 molecules/cm²


def test_fov_search_on_uncorrelated_columns_is_not_used_and_searched_again_later():
    """A chance winner (DOAS columns that have nothing to do with the images) is not confirmed by the two halves of
    its frames: no FOV, the pairs keep the fallback, and the search runs again when enough frames are new;
    the true FOV of the same images is confirmed."""
    from processing.fov import confirm_fov, find_fov

    n = 120
    stack, series = synthetic_fov_stack(n, (120, 160), (100, 50), 6, seed=11)
    ok, halves = confirm_fov(stack[:60], series[:60], find_fov(stack[:60], series[:60]))
    assert ok and len(halves) == 2
    noise = np.random.default_rng(5).normal(1e18, 2e17, n)
    cal = DoasCalibration(ProcessingConfig(calibration_window_s=600.0), max_frames=60, fov_min_frames=30)
    times = [T0 + timedelta(seconds=2 * i) for i in range(n)]
    searches = []
    for i in range(n):
        cal.add_doas(_doas(times[i], noise[i]))
        cal.add_frame(PlumeFrame(times[i], stack[i]))
        if cal._wait_frames == 30:  # an unconfirmed search just ran (fov_min_frames new frames to wait)
            searches.append(i)
    assert cal.fov is None and cal.finish() is None and cal.fov is None
    assert searches == [59, 89, 119]


def test_fov_confirmation_is_not_vetoed_by_a_half_search_that_stops_on_a_worse_disk(monkeypatch):
    """A half whose own search ends on a disk that correlates worse there than the FOV found (a loaded sim day:
    r 21 at 11 px off, r 0.9962 against the FOV's 0.9973 in the same frames) still confirms the FOV; a half whose
    winner correlates better than the FOV found does not."""
    import processing.fov as fov

    stack, series = synthetic_fov_stack(60, (120, 160), (100, 50), 6, seed=11)
    found = fov.find_fov(stack, series)
    assert fov.confirm_fov(stack, series, found)[0]
    real_find = fov.find_fov
    elsewhere = fov.FovResult(30, 90, 20, 0.0, 0.0, np.zeros(stack.shape[1:]), *[np.zeros(0)] * 3)
    for part in (slice(0, None, 2), slice(1, None, 2)):
        assert fov._disk_corr(stack[part], series[part], elsewhere) < fov._disk_corr(stack[part], series[part], found)

    def half_stops_elsewhere(s, y, **search):
        if len(y) == len(series):
            return real_find(s, y, **search)
        h = elsewhere
        return fov.FovResult(h.cx, h.cy, h.radius, 0.0, fov._disk_corr(s, y, h), h.corr_image, *[np.zeros(0)] * 3)

    monkeypatch.setattr(fov, "find_fov", half_stops_elsewhere)
    ok, halves = fov.confirm_fov(stack, series, found)
    assert ok and halves == [(30, 90, 20), (30, 90, 20)]
    # the other way round: the FOV "found" is the far disk, each half's winner correlates better there
    monkeypatch.setattr(fov, "find_fov", real_find)
    ok, _ = fov.confirm_fov(stack, series, elsewhere)
    assert not ok


def test_fov_confirmation_takes_a_half_radius_that_gives_the_same_calibration(monkeypatch):
    """Across a smooth plume the radius is weakly determined: a half finding the same centre with a radius beyond
    CONFIRM_RADIUS_RATIO still confirms the FOV when its disk calibrates the frames within CONFIRM_SLOPE_TOL (a short
    sim day's half found r 24 for r 10 at the same centre, 3.7 % apart, and the day kept the fallback slope); a
    radius reaching other AA does not."""
    import processing.fov as fov

    rng = np.random.default_rng(4)
    n, shape, (cx, cy) = 60, (120, 160), (80, 60)
    y, x = np.mgrid[: shape[0], : shape[1]]
    pattern = np.where((x - cx) ** 2 + (y - cy) ** 2 < 30**2, 1.0, 0.3)  # uniform AA within 30 px of the centre
    amp = rng.uniform(0.2, 1.0, n)
    stack = (amp[:, None, None] * pattern).astype(np.float32)
    series = amp * 5e18 * (1 + rng.normal(0, 0.01, n))
    found = fov.FovResult(cx, cy, 10, 0.0, 0.0, np.zeros(shape), *[np.zeros(0)] * 3)
    real_find = fov.find_fov

    def half_finds(radius):
        def find(s, y, **search):
            if len(y) == n:
                return real_find(s, y, **search)
            return fov.FovResult(cx, cy, radius, 0.0, 1.0, np.zeros(shape), *[np.zeros(0)] * 3)  # beats the FOV

        return find

    monkeypatch.setattr(fov, "find_fov", half_finds(25))  # radius ratio 2.5, the same AA: the same calibration
    assert fov.confirm_fov(stack, series, found) == (True, [(cx, cy, 25)] * 2)
    monkeypatch.setattr(fov, "find_fov", half_finds(55))  # reaches the 0.3 region: a calibration far off
    assert fov.confirm_fov(stack, series, found)[0] is False
