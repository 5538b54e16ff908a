"""Light-dilution correction against truth (synthetic images with a known extinction) and against pyplis."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from controller.config import Config, ProcessingConfig
from controller.errors import ConfigError, ProcessingError
from processing.dilution import (
    DilutionCorrection,
    TerrainSamples,
    correct_tau,
    dilution_model,
    fit_extinction,
)

pyplis = pytest.importorskip("pyplis")

SHAPE = (120, 160)
EXT = {"A": 9e-5, "B": 6e-5}  # 1/m, on-band scatters more (shorter wavelength)
PLUME_DIST = 5000.0
AMBIENT = {"A": 400.0, "B": 5000.0}
TERRAIN_I0 = {"A": 15.0, "B": 300.0}
LINE = (20, 70, 60, 115)  # terrain line, distance 6000 m at its start, 1500 m at its end
LINE_D = (6000.0, 1500.0)
SKY_ROI = (120, 2, 156, 12)


def _scene(rng: np.random.Generator, noise: float = 0.0) -> tuple[dict, dict, np.ndarray]:
    """Per band: the measured intensity (plume diluted by the air in front of it, terrain diluted by its
    distance), the plume-free background, and the true optical depth."""
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    true_aa = 0.25 * np.exp(-(((xx - 100) / 18.0) ** 2 + ((yy - 45) / 12.0) ** 2))
    taus = {"A": true_aa + 0.02, "B": np.full(SHAPE, 0.02) * (true_aa > 0.001)}
    # terrain: in the line's columns, from 2 rows above the line down, at the line's distance of that column
    x0, y0, x1, y1 = LINE
    dist = np.full(SHAPE, np.nan)
    for x in range(x0, x1 + 1):
        f = (x - x0) / (x1 - x0)
        dist[int(y0 + f * (y1 - y0)) - 2 :, x] = LINE_D[0] + f * (LINE_D[1] - LINE_D[0])
    terrain = np.isfinite(dist)
    intensity, background = {}, {}
    for band in "AB":
        bg = AMBIENT[band] * (1.0 - 0.2 * yy / h)  # sky brightens towards the top
        t_plume = np.exp(-EXT[band] * PLUME_DIST)
        plume = bg * np.exp(-taus[band]) * t_plume + bg * (1.0 - t_plume)
        d = np.where(np.isfinite(dist), dist, 1e4)
        ground = dilution_model(d, AMBIENT[band], TERRAIN_I0[band], EXT[band])
        img = np.where(terrain, ground, plume)
        intensity[band] = img * (1.0 + noise * rng.standard_normal(SHAPE))
        background[band] = bg
    return intensity, background, true_aa


def _cfg(**proc) -> Config:
    base = ProcessingConfig(
        dilution_lines=(LINE,), dilution_line_distances_m=(LINE_D,), dilution_ambient_roi=SKY_ROI,
        dilution_plume_aa_min=0.01,
    )  # fmt: skip
    return Config(processing=dataclasses.replace(base, **proc))


def test_extinction_fit_recovers_truth_and_agrees_with_pyplis():
    rng = np.random.default_rng(3)
    d = np.linspace(1500, 9000, 60)
    for band in "AB":
        rads = dilution_model(d, AMBIENT[band], TERRAIN_I0[band], EXT[band]) * (1 + 0.005 * rng.standard_normal(60))
        fit = fit_extinction(rads, d, AMBIENT[band], band)
        assert fit.ext == pytest.approx(EXT[band], rel=0.03)
        assert 0 < fit.ext_err < 0.1 * fit.ext
        assert abs(fit.ext - EXT[band]) < 4 * fit.ext_err
        ref = pyplis.optimisation.dilution_corr_fit(rads, d, AMBIENT[band])
        assert fit.ext == pytest.approx(ref.x[1], rel=0.03)
        assert fit.i0 == pytest.approx(ref.x[0], rel=0.1, abs=0.01 * AMBIENT[band])


def test_correct_tau_equals_pyplis_correct_img():
    rng = np.random.default_rng(5)
    intensity, background, true_aa = _scene(rng)
    t = np.exp(-EXT["A"] * PLUME_DIST)
    tau = np.log(background["A"] / intensity["A"])
    mask = true_aa > 0.01  # the plume pixels
    ours = correct_tau(tau, t, mask)
    plume, bg = pyplis.Img(intensity["A"].copy()), pyplis.Img(background["A"].copy())
    plume.edit_log["vigncorr"] = bg.edit_log["vigncorr"] = True
    corrected = pyplis.dilutioncorr.correct_img(plume, EXT["A"], bg, PLUME_DIST, mask.astype(float))
    ref = np.log(background["A"] / corrected.img)
    np.testing.assert_allclose(ours[mask], ref[mask], rtol=1e-9, atol=1e-12)
    assert np.array_equal(ours[~mask], tau[~mask])
    # pixels darker than the diluting air alone allows (terrain) are never "corrected" to absurd depths
    everywhere = correct_tau(tau, t)
    dark = np.exp(-tau) < 1 - t
    assert dark.any() and np.array_equal(everywhere[dark], tau[dark])


def test_dilution_correction_recovers_the_true_aa_on_a_synthetic_scene():
    rng = np.random.default_rng(11)
    intensity, background, true_aa = _scene(rng, noise=0.002)
    corr = DilutionCorrection.from_config(_cfg(), SHAPE)
    fits = {band: corr.fit(band, intensity[band]) for band in "AB"}
    for band in "AB":
        assert fits[band].ext == pytest.approx(EXT[band], rel=0.1), band
    tau = {b: np.log(background[b] / intensity[b]) for b in "AB"}
    tau_a, tau_b = corr.correct(tau["A"], tau["B"], PLUME_DIST)
    core = true_aa > 0.1
    raw = (tau["A"] - tau["B"])[core]
    fixed = (tau_a - tau_b)[core]
    # uncorrected, the plume loses ~40 % of its AA; corrected it is back within a few per cent
    assert np.median(raw / true_aa[core]) < 0.7
    assert np.median(fixed / true_aa[core]) == pytest.approx(1.0, abs=0.05)
    # the pipeline's fast path (AA straight away, float32 on the plume pixels) gives the same AA, for a scalar
    # plume distance and for a per-pixel distance image
    for dist in (PLUME_DIST, np.full(SHAPE, PLUME_DIST) + np.arange(SHAPE[1])[None, :]):
        a, b = corr.correct(tau["A"], tau["B"], dist)
        np.testing.assert_allclose(corr.correct_aa(tau["A"], tau["B"], dist), a - b, atol=2e-5)
    state = corr.state()
    assert state["corrected"] and state["band_A"]["ext_per_m"] == fits["A"].ext
    assert state["terrain_distance_m"] == [1500.0, 6000.0]


def test_distance_map_gives_the_same_samples(tmp_path: Path):
    from_lines = TerrainSamples.from_lines((LINE,), (LINE_D,), SHAPE)
    dist = np.full(SHAPE, np.nan)
    xi, yi = np.round(from_lines.x).astype(int), np.round(from_lines.y).astype(int)
    dist[yi, xi] = from_lines.dist_m
    np.save(tmp_path / "dist.npy", dist)
    cfg = _cfg(dilution_lines=(), dilution_line_distances_m=(), dilution_distance_map=str(tmp_path / "dist.npy"))
    corr = DilutionCorrection.from_config(cfg, SHAPE)
    assert corr is not None and corr.samples.source.startswith("distance map")
    assert corr.samples.dist_m.size == np.unique(np.stack([yi, xi]), axis=1).shape[1]


def test_configuration_errors_name_the_key():
    assert DilutionCorrection.from_config(Config(), SHAPE) is None
    with pytest.raises(ConfigError, match="dilution_line_distances_m"):
        DilutionCorrection.from_config(_cfg(dilution_line_distances_m=()), SHAPE)
    with pytest.raises(ConfigError, match=r"dilution_lines\[0\]"):
        DilutionCorrection.from_config(_cfg(dilution_lines=((0, 0, 500, 10),)), SHAPE)
    with pytest.raises(ConfigError, match="dilution_ambient_roi"):
        DilutionCorrection.from_config(_cfg(dilution_ambient_roi=(10, 10, 5, 5)), SHAPE)
    with pytest.raises(ProcessingError, match="3\\+ distances"):
        fit_extinction(np.array([1.0, 2.0]), np.array([1000.0, 1000.0]), 10.0)


def test_villarrica_rates_with_and_without_light_dilution(repo_root, shared_data, tmp_path):
    """The closing note's figures: Villarrica emission rates corrected vs uncorrected (printed by pytest -s)."""
    from controller.config import load_config
    from processing.folder import process_folder
    from processing.outputs import read_meta, read_series

    cfg = load_config(repo_root / "conf" / "villarrica.toml")
    assert cfg.processing.dilution_lines
    off = dataclasses.replace(
        cfg, processing=dataclasses.replace(cfg.processing, dilution_lines=(), dilution_line_distances_m=())
    )
    on_sum = process_folder(shared_data / "villarrica-2018-03-26", cfg, tmp_path / "on")
    off_sum = process_folder(shared_data / "villarrica-2018-03-26", off, tmp_path / "off")
    print("villarrica light dilution", on_sum["light_dilution"], "corrected", on_sum["mean_flux_kg_s"],
          "uncorrected", off_sum["mean_flux_kg_s"])  # fmt: skip
    state = on_sum["light_dilution"]
    assert state["corrected"] and not off_sum["light_dilution"]["corrected"]
    for band in "AB":
        assert 0 < state[f"band_{band}"]["ext_per_m"] < 1e-3
    # every output carries the correction: the rows' coefficients and the sidecar's state
    path = tmp_path / "on" / "emission_rates_line1_flow.csv"
    rows = read_series(path)
    assert np.all(np.isfinite(rows["ext_A_(1/m)"])) and np.all(np.isfinite(rows["ext_B_(1/m)"]))
    assert read_meta(path)["light_dilution"]["corrected"]
    assert np.all(np.isnan(read_series(tmp_path / "off" / "emission_rates_line1_flow.csv")["ext_A_(1/m)"]))
    # the diluted plume signal is larger once corrected: the ICA (no plume speed in it) grows on every row
    ica_on = np.array(rows["ICA_mass_(kg/m)"])
    ica_off = np.array(read_series(tmp_path / "off" / "emission_rates_line1_flow.csv")["ICA_mass_(kg/m)"])
    n = min(ica_on.size, ica_off.size)
    assert n >= 3 and np.all(ica_on[:n] > ica_off[:n])
