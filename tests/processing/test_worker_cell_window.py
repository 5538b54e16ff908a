"""A cell calibration taken during `processing.cell_window` (cells that are not named as cells): the live worker
never processes the window's frames as plume and calibrates with its cells as `pycam process` does (one answer)."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from controller.storage.names import ImageName
from processing.folder import process_folder
from processing.outputs import read_series
from processing.worker import _ChildState
from tests.processing.sim_frames import EXPOSURE_US, T0, render_sequence, sim_config

PERIOD_S = 2.0
N_PAIRS = 30
# pairs 0-11 are the cell sequence: clear, cell 1, cell 2, clear (whole-image optical depth per cell)
SEQUENCE = ["clear"] * 2 + ["c1"] * 4 + ["c2"] * 4 + ["clear"] * 2
CELL_TAU = {"c1": 0.25, "c2": 0.55}
CELL_COLUMNS = [["c1", 1.0e18, 1.0e17], ["c2", 2.2e18, 1.5e17]]


def _iso(k: float) -> str:
    return datetime.fromtimestamp(T0 + k * PERIOD_S, UTC).isoformat()


def _cell_day(tmp: Path, n_pairs: int = N_PAIRS) -> tuple[Path, object]:
    window = [_iso(-0.5), _iso(len(SEQUENCE) - 0.5)]
    cfg = sim_config(velocity_method="xcorr", cell_window=window, cell_columns=CELL_COLUMNS)
    folder = tmp / "day"
    scene = render_sequence(cfg, folder, n_pairs=n_pairs, period_s=PERIOD_S)
    for k, what in enumerate(SEQUENCE):
        if what == "clear":
            continue
        t = T0 + k * PERIOD_S
        for band in "AB":  # the cell in front of the lens: the signal above the dark attenuated everywhere
            name = ImageName(datetime.fromtimestamp(t, UTC), band, 1, EXPOSURE_US[band], "Plume")
            path = folder / name.date_folder / str(name)
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64)
            dark = scene.render_raw(band, t, EXPOSURE_US[band], dark=True).astype(np.float64)
            cell = dark + (raw - dark) * np.exp(-CELL_TAU[what] * (1.0 if band == "A" else 0.6))
            assert cv2.imwrite(str(path), np.clip(np.rint(cell), 0, 65535).astype(np.uint16))
    return folder, cfg


@pytest.fixture(scope="module")
def cell_day(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("cell-window")
    folder, cfg = _cell_day(tmp)
    summary = process_folder(folder, cfg, tmp / "process")
    root, out = tmp / "live-data", tmp / "live"
    state = _ChildState(cfg, root, out, None)
    processed_in_window = []
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: ("_Dark" not in p.name, p.name))
    for src in files:
        dest = root / src.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        state.on_stored(src.name)
        processed_in_window += [k for k in state.journal.done["pairs"] if k <= _key(len(SEQUENCE) - 1)]
    state.full_scan(token="drain")
    return summary, tmp / "process", out, processed_in_window


def _key(k: int) -> str:
    return datetime.fromtimestamp(T0 + k * PERIOD_S, UTC).strftime("%Y-%m-%dT%H%M%S")


@pytest.mark.slow  # ~40 s: a rendered day processed twice
def test_live_worker_calibrates_with_the_cell_window_as_pycam_process(cell_day: tuple) -> None:
    summary, process_out, out, processed_in_window = cell_day
    assert summary["calibration_method"] == "cells", summary["calibration"]
    # as pyplis: the first and last frame of each cell (moving in and out) dropped
    assert {k: summary["cell_window"][k] for k in ("c1", "c2")} == {"c1": {"A": 2, "B": 2}, "c2": {"A": 2, "B": 2}}
    assert summary["pairs"] == N_PAIRS - len(SEQUENCE)
    assert processed_in_window == []  # no frame of the window was ever a plume pair, not even while it was taken
    a = read_series(process_out / "emission_rates_line1_xcorr.csv")
    b = read_series(out / "emission_rates_line1_xcorr.csv")
    assert a["datetime"] == b["datetime"] and len(a["datetime"]) >= 5
    assert set(b["calibration"]) == {"cells"}
    for col in ("flux_(kg/s)", "velo_eff_(m/s)"):
        np.testing.assert_allclose(b[col], a[col], rtol=0.01, err_msg=col)


def test_a_cell_window_that_cannot_be_assigned_keeps_its_frames_out_of_the_plume(tmp_path: Path) -> None:
    """Three cells configured for a window holding two: the worker says so and processes only the plume after it."""
    folder, cfg = _cell_day(tmp_path, n_pairs=len(SEQUENCE) + 6)
    proc = dataclasses.replace(cfg.processing, cell_columns=[*CELL_COLUMNS, ["c3", 4e18, 2e17]])
    cfg = dataclasses.replace(cfg, processing=proc)
    state = _ChildState(cfg, folder, tmp_path / "live", None)
    state.full_scan(token="drain")
    assert state.journal.done["pairs"] == {_key(k) for k in range(len(SEQUENCE), len(SEQUENCE) + 6)}


def test_a_finished_cell_window_is_read_once_however_often_the_worker_rescans(tmp_path: Path) -> None:
    """The worker rescans every minute: the window's frames are read and assigned once, the assignment replayed."""
    from processing.calibration.cellsearch import LiveCellWindow
    from processing.images import read_image, scan_folder

    folder, cfg = _cell_day(tmp_path, n_pairs=len(SEQUENCE) + 2)
    reads = []
    window = LiveCellWindow(cfg.processing, reader=lambda p: reads.append(p) or read_image(p))
    scans = []
    for _ in range(3):
        scan = scan_folder(folder)
        window.apply(scan)
        scans.append(scan)
    assert len(reads) == 2 * len(SEQUENCE)  # each window frame of each band, once
    first, *later = scans
    assert len(first.cells) == 8 and len(first.clears) == 8 and len(first.plume) == 4
    for scan in later:
        assert [f.path for f in scan.cells] == [f.path for f in first.cells]
        assert [f.name.kind for f in scan.cells] == [f.name.kind for f in first.cells]
        assert scan.clears == first.clears and scan.plume == first.plume and scan.skipped == first.skipped
