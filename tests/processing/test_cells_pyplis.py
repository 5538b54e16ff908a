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


@pytest.mark.slow
def test_cell_window_finds_the_cells_pyplis_finds(repo_root):
    """pyplis's Etna cell sequence: our search of processing.cell_window assigns the same frames to the same cells
    as pyplis's CellCalibEngine, and the cells' AA and the fitted line agree with pyplis's."""
    from datetime import datetime

    from controller.config import load_config
    from processing.calibration.cells import cell_calibration_from_scan
    from processing.calibration.cellsearch import assign_cell_window
    from processing.images import scan_folder

    src = Path(pyplis.__file__).parent / "data" / "testdata_minimal" / "images"
    cfg = load_config(repo_root / "conf" / "pyplis-testdata.toml")
    columns = {cid: (col, err) for cid, col, err in cfg.processing.cell_columns}
    cam = pyplis.Camera(
        cam_id="ecII", filter_list=[pyplis.Filter(type="on", acronym="F01"), pyplis.Filter(type="off", acronym="F02")]
    )
    setup = pyplis.MeasSetup(
        str(src), datetime(2015, 9, 16, 6, 59), datetime(2015, 9, 16, 7, 3), camera=cam,
        cell_info_dict={k: list(v) for k, v in columns.items()}, auto_topo_access=False,
    )  # fmt: skip
    engine = pyplis.CellCalibEngine(setup)
    engine.find_and_assign_cells_all_filter_lists()
    scan = scan_folder(src)
    assign_cell_window(scan, cfg.processing)
    for band, filter_id in (("A", "on"), ("B", "off")):
        for cell_id, lst in engine.cell_lists[filter_id].items():
            ours = sorted(f.path.name for f in scan.cells if f.name.kind == cell_id and f.name.band == band)
            assert ours == sorted(Path(p).name for p in lst.files), (band, cell_id)
    cal = cell_calibration_from_scan(cfg, scan)
    assert cal is not None and cal.method == "cells"
    engine.prep_tau_stacks()
    stack = engine.tau_stacks["aa"]
    pyplis_aa = {cid: float(stack.stack[i].mean()) for i, cid in enumerate(engine.cell_lists["on"])}
    by_label = {part.split(" AA ")[0]: float(part.split(" AA ")[1]) for part in cal.detail.split(";")[0].split(", ")}
    for cid, aa in pyplis_aa.items():
        assert by_label[cid] == pytest.approx(aa, abs=0.02), cid
    ids = sorted(pyplis_aa)
    ref = pyplis.CellCalibData(
        tau_vec=np.array([pyplis_aa[i] for i in ids]), cd_vec=np.array([columns[i][0] for i in ids]),
        cd_vec_err=np.array([columns[i][1] for i in ids]),
    )  # fmt: skip
    slope, offset = ref.fit_calib_data()
    # pyplis scales its clear-sky frame to each cell's time (a polynomial of the clear frames' means over time),
    # we take the clear frames' mean: the AA differ by up to 0.011, the slopes by ~7 %
    assert cal.slope == pytest.approx(slope, rel=0.1)
    assert abs(cal.offset - offset) < 0.05 * max(columns[i][0] for i in ids)
