"""The whole chain: simulator ground truth, the Villarrica sequence, pyplis's test data, `pycam process`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from controller.config import load_config
from processing.folder import process_folder
from processing.outputs import EMISSION_COLUMNS, meta_path, read_series
from tests.processing.sim_frames import T0, doas_sim_config, render_sequence, render_spectra


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A sim run with A/B pairs, darks and spectra at the spectrometer FOV: DOAS-calibrated emission rates."""
    root = tmp_path_factory.mktemp("sim")
    # Level 2 suits the sim's smooth, large-scale plume texture (Farneback sees nothing at level 0-1 there).
    cfg = doas_sim_config(root, flow_pyrlevel=2, velocity_method="xcorr")
    n = 30
    scene = render_sequence(cfg, root / "data", n_pairs=n, period_s=2.0)
    render_spectra(scene, root / "data", n)
    summary = process_folder(root / "data", cfg, root / "out")
    return cfg, scene, summary, root / "out"


def _truth_flux(cfg, scene, times) -> np.ndarray:  # noqa: ANN001
    x = cfg.processing.pcs_lines[0][0]
    return np.array([scene.flux_through_column(T0 + (t - _dt(T0)).total_seconds(), x) for t in times])


@pytest.mark.slow  # the sim run: end-to-end, ~17 s of CPU (30 rendered pairs and spectra, the whole chain)
def test_sim_doas_calibration_finds_fov_and_is_used(sim_run: tuple) -> None:
    cfg, scene, summary, out = sim_run
    assert summary["calibration_method"] == "doas", summary["calibration_notes"]
    fov = summary["fov"]
    cx, cy = scene.fov_centre_px
    # Pearson search on 30 frames: the scene's texture runs along the wind, so y is the loose coordinate
    assert abs(fov["x"] - cx) <= 5 and abs(fov["y"] - cy) <= scene.fov_radius_px, (fov, (cx, cy))
    cal = read_series(out / "calibration_series.csv")
    assert len(cal["datetime"]) >= 20  # one row per matched spectrum (the first few lack points for a fit)
    for col in ("aa_fov", "doas_column_(molecules/cm2)", "doas_column_err", "slope_(molecules/cm2)", "mse", "r2"):
        assert np.all(np.isfinite(cal[col])), col
    assert set(cal["method"]) == {"doas"}
    # the scene's truth: S = AA / sigma_eff; the rolling DOAS fit recovers it within 10 %
    truth_slope = 1.0 / scene.truth(T0)["so2_sigma_eff_cm2"]
    assert abs(np.median(cal["slope_(molecules/cm2)"]) / truth_slope - 1) < 0.10
    assert summary["doas_spectra"] == 30 and (out / "doas_results.csv").exists()
    assert "doas" in meta_path(out / "emission_rates_line1_xcorr.csv").read_text()
    # the DOAS calibration data in pyplis's own format too (pyplis loads it: tests/processing/test_calibration.py)
    assert (out / "doas_calibration_pyplis.fts").stat().st_size > 0


@pytest.mark.slow  # the sim run (above)
@pytest.mark.parametrize("method", ["xcorr", "flow"])
def test_sim_emission_rate_within_10_percent_of_truth(sim_run: tuple, method: str) -> None:
    cfg, scene, summary, out = sim_run
    rows = read_series(out / f"emission_rates_line1_{method}.csv")
    assert len(rows["datetime"]) >= 15
    truth = _truth_flux(cfg, scene, rows["datetime"])
    ours = np.array(rows["flux_(kg/s)"])
    # the default slope is 1.5x the truth: only the DOAS calibration gets this right
    assert abs(ours.mean() / np.mean(truth) - 1) < 0.10, (ours.mean(), np.mean(truth))
    # the propagated error covers the deviation on average
    assert np.mean(np.abs(ours - truth)) < np.mean(rows["flux_err"]) * 2
    assert summary["background_mode"] == 0 and "I0 from none" in summary["background"]


@pytest.mark.slow  # the sim run (above)
def test_sim_plume_speed_within_10_percent(sim_run: tuple) -> None:
    cfg, scene, _, out = sim_run
    v_true = scene.truth(T0)["plume_speed_m_s"]
    for method in ("xcorr", "flow"):
        rows = read_series(out / f"emission_rates_line1_{method}.csv")
        assert abs(np.median(rows["velo_eff_(m/s)"]) / v_true - 1) < 0.10, method


def _dt(t: float):  # noqa: ANN202
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def test_villarrica_seq1_yields_emission_rates_for_both_lines(
    shared_data: Path, repo_root: Path, tmp_path: Path
) -> None:
    cfg = load_config(repo_root / "conf" / "villarrica.toml")
    summary = process_folder(shared_data / "villarrica-2018-03-26", cfg, tmp_path)
    assert summary["pairs"] == 10
    assert summary["background_mode"] == 5 and "Clear" in summary["background"]
    assert summary["not_plume_images"] == {"dark": 6, "clear": 6, "cell": 18, "test": 0}
    for line in ("1", "2"):
        path = tmp_path / f"emission_rates_line{line}_flow.csv"
        # units and constants: the sidecar; the CSV starts with its header line (pandas defaults read it)
        assert "ppm·m conversion: 1 ppm·m = 2.504e+15 molecules/cm2" in meta_path(path).read_text()
        text = path.read_text()
        assert ",".join(EMISSION_COLUMNS) in text
        rows = read_series(path)
        assert len(rows["datetime"]) >= 3
        flux = np.array(rows["flux_(kg/s)"])
        assert np.all(np.isfinite(flux)) and np.median(flux) > 0
    assert (tmp_path / "plot_2018-03-26.png").stat().st_size > 1000
    assert (tmp_path / "calibration_series.csv").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["pairs"] == 10


@pytest.mark.slow
def test_pyplis_testdata_runs_through_the_pipeline(repo_root: Path, tmp_path: Path) -> None:
    """pyplis's Etna data processed as it is (its FITS folder): the cell sequence's frames are cells and clear sky
    (as pyplis's CellCalibEngine assigns them), its cells calibrate, and the rates are positive."""
    import pyplis

    src = Path(pyplis.__file__).parent / "data" / "testdata_minimal" / "images"
    cfg = load_config(repo_root / "conf" / "pyplis-testdata.toml")
    assert cfg.station.altitude_m > 500  # the camera is not at 15 m
    summary = process_folder(src, cfg, tmp_path / "out")
    assert summary["pairs"] >= 80
    # pyplis test_auto_cellcalib / ex05: cells a53, a37, a57 with 3, 2, 3 images per band
    window = summary["cell_window"]
    assert {k: window[k] for k in ("a53", "a37", "a57")} == {
        "a53": {"A": 3, "B": 3},
        "a37": {"A": 2, "B": 2},
        "a57": {"A": 3, "B": 3},
    }
    assert summary["not_plume_images"]["cell"] == 16 and summary["not_plume_images"]["clear"] >= 20
    assert summary["calibration_method"] == "cells"
    assert 10_000 < summary["plume_distance_m"] < 11_500  # pyplis: 10.7-10.9 km
    rows = read_series(tmp_path / "out" / "emission_rates_line1_xcorr.csv")
    flux = np.array(rows["flux_(kg/s)"])
    assert flux.size >= 50 and np.all(np.isfinite(flux))
    # positive, and of the magnitude pyplis reports for this plume (3.35 kg/s uncorrected, its ex11)
    assert np.all(flux > 0) and 1.0 < np.median(flux) < 10.0
    # the optical flow on the images upsampled once (flow_pyrlevel -1, as pyplis's own test): most pairs, positive,
    # plume speeds near pyplis's 4.14 m/s for this plume (its ex11)
    rows = read_series(tmp_path / "out" / "emission_rates_line1_flow.csv")
    assert len(rows["datetime"]) >= 30 and np.all(np.array(rows["flux_(kg/s)"]) > 0)
    assert 2.5 < np.median(rows["velo_eff_(m/s)"]) < 7.0


def test_process_command(shared_data: Path, repo_root: Path, tmp_path: Path) -> None:
    from controller.cli import main

    res = CliRunner().invoke(
        main,
        ["process", str(shared_data / "pairs-2019-09-18"), "--config", str(repo_root / "conf" / "villarrica.toml"),
         "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert summary["pairs"] == 2
    assert summary["background_mode"] == 0  # no Clear images in that folder: recorded


@pytest.mark.slow  # the sim run (above)
def test_sim_fov_search_finds_the_scenes_fov_within_3_px(sim_run: tuple) -> None:
    """The honest simulator: the processing finds the spectrometer's FOV itself (centre and radius within 3 px)."""
    cfg, scene, summary, out = sim_run
    fov = summary["fov"]
    cx, cy = scene.fov_centre_px
    assert abs(fov["x"] - cx) <= 3 and abs(fov["y"] - cy) <= 3, (fov, (cx, cy))
    assert abs(fov["radius"] - scene.fov_radius_px) <= 3, (fov, scene.fov_radius_px)
