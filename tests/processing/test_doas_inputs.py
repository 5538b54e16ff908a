"""DOAS inputs: the matched dark spectrum, the wavelength media of references and spectrometer, the fit residual."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from controller.sim.scene import SimScene
from processing.darks import SpectrumDark, SpectrumDarks
from processing.doas import DoasRetrieval, Spectrum
from processing.references import air_to_vacuum_nm, load_references, vacuum_to_air_nm
from tests.processing.sim_frames import T0, doas_sim_config


def test_vacuum_air_conversion_is_ciddors_and_inverts():
    # Ciddor (1996) standard air at 310 nm: n - 1 = 2.90e-4, so air is ~0.090 nm shorter
    assert float(310.0 - vacuum_to_air_nm(310.0)) == pytest.approx(0.0900, abs=0.0015)
    wl = np.linspace(240.0, 420.0, 50)
    np.testing.assert_allclose(air_to_vacuum_nm(vacuum_to_air_nm(wl)), wl, atol=1e-9)


def test_dark_spectrum_matched_by_integration_and_coadds_newest_before():
    darks = SpectrumDarks()
    for t, ms, co, name in ((100, 500, 10, "old"), (200, 500, 10, "new"), (150, 500, 1, "other-coadd"),
                            (300, 500, 10, "later"), (50, 1000, 10, "long")):  # fmt: skip
        darks.add(SpectrumDark(t, ms, co, np.zeros(3), name))
    assert darks.match(250, 500, 10).name == "new"  # newest before, same integration and co-adds
    assert darks.match(20, 500, 10).name == "old"  # none before: the oldest after
    assert darks.match(250, 500, 5).name == "new"  # no exact co-adds: same integration time
    assert darks.match(250, 1000, 10).name == "long"
    # no dark at that integration time: per pixel between the two nearest (offset + dark current x time)
    darks.add(SpectrumDark(100, 1000, 10, np.full(3, 20.0), "long2"))
    darks.add(SpectrumDark(220, 500, 10, np.full(3, 10.0), "short2"))
    mid = darks.match(250, 750, 10)
    np.testing.assert_allclose(mid.counts, 15.0)
    assert SpectrumDarks().match(250, 2000, 10) is None  # no dark at all: fitted without one (warned)


@pytest.fixture(scope="module")
def scene_and_cfg(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cfg = doas_sim_config(tmp_path_factory.mktemp("doas-inputs"))
    return SimScene(cfg.sim, cfg.camera, cfg.spectrometer), cfg


def _fit(scene: SimScene, cfg, medium: str, with_dark: bool) -> list:  # noqa: ANN001
    proc = dataclasses.replace(cfg.processing, spectrometer_medium=medium)
    ret = DoasRetrieval(load_references(proc), proc)
    wl, dark = scene.render_spectrum(T0, 500, 10, dark=True)
    out = []
    for k in range(0, 24, 4):
        wl, counts = scene.render_spectrum(T0 + k, 500, 10)
        out.append((ret.fit(Spectrum(wl, counts), Spectrum(wl, dark, source="dark.npy") if with_dark else None),
                    scene.fov_column(T0 + k)))  # fmt: skip
    return out


def test_media_handled_explicitly_the_shift_is_not_left_to_the_fit(scene_and_cfg: tuple):
    """The sim spectrometer's wavelengths are in air, the references in vacuum: converted, the fitted shift is
    near 0; told the spectrometer were in vacuum, the fit has to shift by the ~0.09 nm air-vacuum difference."""
    scene, cfg = scene_and_cfg
    air = np.mean([r.shift_nm for r, _ in _fit(scene, cfg, "air", True)])
    vac = np.mean([r.shift_nm for r, _ in _fit(scene, cfg, "vacuum", True)])
    assert abs(air) < 0.03 and abs(vac - air) > 0.06, (air, vac)


def test_matched_dark_is_subtracted_and_the_residual_reported(scene_and_cfg: tuple):
    scene, cfg = scene_and_cfg
    with_dark = _fit(scene, cfg, "air", True)
    without = _fit(scene, cfg, "air", False)
    for r, truth in with_dark:
        assert r.dark == "dark.npy" and 0 < r.rms_residual <= r.max_residual
        # the scene's own cross-sections and line shape: within 10 % of its FOV column
        assert abs(r.so2 / truth - 1) < 0.10
    # without the dark its fixed pattern stays in the spectrum: a worse fit
    assert np.mean([r.rms_residual for r, _ in without]) > 1.1 * np.mean([r.rms_residual for r, _ in with_dark])
    assert all(r.dark == "" for r, _ in without)


def test_scene_truth_exposes_aerosol_and_light_dilution(tmp_path: Path):
    cfg = doas_sim_config(tmp_path)
    sim = dataclasses.replace(cfg.sim, extinction_a_per_m=6e-5, extinction_b_per_m=4.5e-5, aerosol_angstrom=1.3)
    scene = SimScene(sim, cfg.camera, cfg.spectrometer)
    truth = scene.truth(T0)
    f = truth["dilution_transmission"]
    assert f["A"] == pytest.approx(np.exp(-6e-5 * sim.plume_distance_m))
    assert f["A"] < f["B"] < 1
    assert truth["aerosol_optical_depth_b"] == pytest.approx(sim.aerosol_optical_depth * (330 / 310) ** -1.3)
    # the diluted on-band optical depth is smaller than the plume's own
    clear = scene.expected_counts("A", T0, 6000, 1.0) - scene.expected_counts("A", T0, 6000, 1.0, dark=True)
    undiluted = SimScene(cfg.sim, cfg.camera, cfg.spectrometer)
    clear0 = undiluted.expected_counts("A", T0, 6000, 1.0) - undiluted.expected_counts("A", T0, 6000, 1.0, dark=True)
    assert clear.min() > clear0.min()
