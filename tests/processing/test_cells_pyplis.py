"""Gas-cell calibration against pyplis: the same cells give the same line as pyplis's CellCalibData fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processing.calibration import cell_calibration_from_folder, save_pyplis_cell_calib

pyplis = pytest.importorskip("pyplis")

PPMM = 2.504e15


@pytest.fixture(scope="module")
def cal1_dir(shared_data: Path) -> Path:
    return shared_data / "villarrica-2018-03-26" / "Cal_1"


def _pyplis_mean(path: Path, dark: pyplis.Img) -> float:
    img = pyplis.Img(str(path))
    img.subtract_dark_image(dark)
    return float(img.img.mean())


def _pyplis_cell_taus(folder: Path) -> dict[int, float]:
    """AA per cell computed independently with pyplis images: ln(clear / cell) per band, clear sky as I0."""
    darks = {
        band: pyplis.Img(np.mean([pyplis.Img(str(p)).img for p in sorted(folder.glob(f"*_{f}_*_Dark.png"))], axis=0))
        for band, f in (("A", "fltrA"), ("B", "fltrB"))
    }
    tau = {}
    for band, f in (("A", "fltrA"), ("B", "fltrB")):
        clear = np.mean([_pyplis_mean(p, darks[band]) for p in sorted(folder.glob(f"*_{f}_*_Clear.png"))])
        for ppmm in (0, 304, 1257):
            cell = np.mean([_pyplis_mean(p, darks[band]) for p in sorted(folder.glob(f"*_{f}_*_{ppmm}ppmm.png"))])
            tau.setdefault(ppmm, {})[band] = np.log(clear / cell)
    return {k: v["A"] - v["B"] for k, v in tau.items()}


def test_cell_calibration_agrees_with_pyplis_cellcalibdata(cal1_dir):
    ours = cell_calibration_from_folder(cal1_dir, PPMM)
    aa = _pyplis_cell_taus(cal1_dir)
    by = {c.ppmm: c for c in ours.cells}
    assert sorted(by) == sorted(aa)
    for ppmm, value in aa.items():
        assert by[ppmm].aa == pytest.approx(value, abs=1e-6)
    ref = pyplis.CellCalibData(
        tau_vec=np.array([aa[p] for p in sorted(aa)]),
        cd_vec=np.array([by[p].column for p in sorted(aa)]),
        cd_vec_err=np.array([by[p].column_err for p in sorted(aa)]),
    )
    slope, offset = ref.fit_calib_data()
    assert ours.fit.slope == pytest.approx(slope, rel=0.02)
    assert ours.fit.offset == pytest.approx(offset, rel=0.02)
    # honest uncertainties: never smaller than pyplis's propagated (absolute sigma) errors of the same fit
    perr = np.sqrt(np.diag(ref.cov))
    assert ours.fit.slope_err >= perr[0] and ours.fit.offset_err >= perr[1]
    assert ours.fit.slope_err < 0.5 * ours.fit.slope


def test_i0_images_are_not_calibration_points(cal1_dir, tmp_path):
    with_clear = cell_calibration_from_folder(cal1_dir, PPMM)
    assert with_clear.i0.startswith("Clear images") and with_clear.fit.n == 3
    # every point is a cell image, none is a Clear image
    assert [c.ppmm for c in with_clear.cells] == [0, 304, 1257]
    for p in cal1_dir.glob("*.png"):
        if "_Clear" not in p.name:
            (tmp_path / p.name).symlink_to(p)
    no_clear = cell_calibration_from_folder(tmp_path, PPMM)
    # the 0 ppm·m cell is then I0 and never a point (it would have AA 0 exactly and pin the line)
    assert no_clear.i0.startswith("0ppmm") and [c.ppmm for c in no_clear.cells] == [304, 1257]
    assert all(c.aa > 0.1 for c in no_clear.cells)


def test_pyplis_loads_the_saved_cell_calibration(cal1_dir, tmp_path):
    ours = cell_calibration_from_folder(cal1_dir, PPMM)
    path = save_pyplis_cell_calib(ours, tmp_path / "cell_calibration_pyplis.fts")
    loaded = pyplis.CellCalibData()
    loaded.load_from_fits(str(path))
    assert loaded.calib_id == "aa"
    np.testing.assert_allclose(loaded.tau_vec, [c.aa for c in ours.cells])
    slope, offset = loaded.fit_calib_data()
    assert slope == pytest.approx(ours.fit.slope, rel=1e-6) and offset == pytest.approx(ours.fit.offset, rel=1e-6)
