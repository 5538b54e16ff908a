"""One answer: the live worker and `pycam process` give the same rows for the same data and config.

A sim day (scene frames, spectra and darks written to a folder) is processed twice: by `process_folder`, and by
the worker's child state fed the files one by one as a station's master receives them (darks first, then per slot
camera A, and camera B and the spectrum in either order), ending with the process phase's drain.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from processing.folder import process_folder
from processing.outputs import read_series
from processing.worker import _ChildState
from tests.processing.sim_frames import doas_sim_config, render_sequence, render_spectra

N_PAIRS = 36


def _live_order(folder: Path) -> list[Path]:
    """The folder's files in a station's arrival order: darks, then slot by slot A, then B and the spectrum
    (alternating which of the two comes first)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    darks = [p for p in files if "_Dark" in p.name]
    slots: dict[str, list[Path]] = {}
    for p in files:
        if p not in darks:
            slots.setdefault(p.name[:17], []).append(p)
    order = list(darks)
    for i, key in enumerate(sorted(slots)):
        group = slots[key]
        a = [p for p in group if "_fltrA_" in p.name]
        rest = sorted((p for p in group if p not in a), key=lambda p: p.suffix == ".npy", reverse=bool(i % 2))
        order += a + rest
    return order


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(process summary, process out, worker out, folder) of one rendered sim day processed both ways."""
    tmp_path = tmp_path_factory.mktemp("one-answer")
    cfg = doas_sim_config(tmp_path, flow_pyrlevel=2, velocity_method="xcorr", ring_buffer=20)
    folder = tmp_path / "day"
    scene = render_sequence(cfg, folder, n_pairs=N_PAIRS, period_s=2.0)
    render_spectra(scene, folder, N_PAIRS)

    summary = process_folder(folder, cfg, tmp_path / "process")

    root, out = tmp_path / "live-data", tmp_path / "live"
    state = _ChildState(cfg, root, out, None)
    for src in _live_order(folder):
        dest = root / src.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        state.on_stored(src.name)
    state.full_scan(token="drain")  # the process phase: held pairs end, daily products written
    return summary, tmp_path / "process", out, folder, cfg


@pytest.mark.slow  # ~1 min: 36 rendered pairs and spectra, processed twice
def test_worker_and_process_give_the_same_rows_for_a_sim_day(both_ways: tuple) -> None:
    summary, process_out, out, folder, _ = both_ways
    assert summary["calibration_method"] == "doas"
    for method in ("xcorr", "flow"):
        a = read_series(process_out / f"emission_rates_line1_{method}.csv")
        b = read_series(out / f"emission_rates_line1_{method}.csv")
        assert a["datetime"] == b["datetime"], method
        assert len(a["datetime"]) >= 15
        assert a["calibration"] == b["calibration"], method
        for col in ("flux_(kg/s)", "velo_eff_(m/s)"):
            np.testing.assert_allclose(b[col], a[col], rtol=0.01, err_msg=f"{method} {col}")
    doas_a = read_series(process_out / "doas_results.csv")
    doas_b = read_series(out / "doas_results.csv")
    np.testing.assert_allclose(doas_b["Column density"], doas_a["Column density"], rtol=1e-9)
    # both subtracted the day's dark spectrum
    assert set(read_series(out / "doas_fit.csv")["dark"]) == {p.name for p in folder.rglob("*_Dark.npy")}


@pytest.mark.slow
def test_daily_products_of_a_sim_day_are_written_and_the_same_both_ways(both_ways: tuple) -> None:
    """Per day: emission CSV per line and method, plot, summary JSON (kg/s and t/d, rows, valid-flow fraction,
    calibration, light dilution, coverage); the worker writes them at its drain, `pycam process` at its end."""
    import json

    summary, process_out, out, _, _ = both_ways
    day = "2024-03-01"
    got = {}
    for name, root in (("process", process_out), ("worker", out)):
        folder = root / "daily" / day
        for method in ("xcorr", "flow"):
            assert (folder / f"emission_rates_line1_{method}.csv").exists(), (name, method)
        assert (folder / f"plot_{day}.png").stat().st_size > 10_000
        s = json.loads((folder / f"summary_{day}.json").read_text())
        st = s["lines"]["line1"]["xcorr"]
        assert st["rows"] >= 15 and 0 < st["fraction_valid_flow"] <= 1
        kg, td = st["emission_rate_kg_s"], st["emission_rate_t_d"]
        assert kg["min"] <= kg["mean"] <= kg["max"] and kg["std"] > 0
        assert td["mean"] == pytest.approx(kg["mean"] * 86.4)
        assert s["pairs_processed"] == N_PAIRS and s["calibration_method"] == "doas"
        assert s["light_dilution"] and s["coverage"]["pairs_processed"] == N_PAIRS
        assert 0 < s["coverage"]["fraction"] <= 1
        got[name] = st
    assert got["worker"]["rows"] == got["process"]["rows"]
    assert got["worker"]["emission_rate_kg_s"]["mean"] == pytest.approx(got["process"]["emission_rate_kg_s"]["mean"],
                                                                         rel=0.01)  # fmt: skip
    assert summary["daily_products"]


@pytest.mark.slow
def test_daily_products_written_at_the_drain_by_a_restarted_worker(both_ways: tuple) -> None:
    """A worker restarted after its last pair (nothing new to process) still writes the day's products when the
    process phase drains it."""
    _, _, out, _, cfg = both_ways
    summary = next((out / "daily").glob("*/summary_*.json"))
    summary.unlink()
    restarted = _ChildState(cfg, out.parent / "live-data", out, None)
    restarted.full_scan(token="drain")
    assert summary.exists()
