"""The sim scene's terrain and light dilution: the Campion model it renders, what it tells a station."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from controller.config import config_from_dict
from controller.errors import ConfigError
from controller.hardware.factory import make_scene
from controller.sim.scene import SIM_AIR, SimScene, station_dilution
from controller.sim.terrain import ALBEDO, FAR_M, NEAR_M
from processing.dilution import read_flat_field

T0 = 1_700_000_000.0


def scene_for(**sim) -> SimScene:
    return make_scene(config_from_dict({"sim": sim}))


def test_terrain_radiance_is_the_campion_model_of_its_distance():
    """Noise-free terrain counts = horizon sky x vignetting x (a·T + 1 - T), T = exp(-ε d), per band."""
    scene = scene_for(**SIM_AIR)
    clear = scene_for(emission_rate_kg_s=0.0, aerosol_optical_depth=0.0)
    ter = scene.terrain
    assert ter.mask.any() and np.nanmin(ter.distance_m) >= NEAR_M and np.nanmax(ter.distance_m) <= FAR_M
    for band, exposure in (("A", 6000), ("B", 2000)):
        signal = scene.expected_counts(band, T0, exposure, 1.0) - scene.expected_counts(band, T0, exposure, 1.0, True)
        sky = clear.expected_counts(band, T0, exposure, 1.0) - clear.expected_counts(band, T0, exposure, 1.0, True)
        # sky at the horizon row of each column, the vignetting of each pixel: the clear scene's sky there
        horizon = sky[ter.horizon_row][None, :] / clear._vignetting[ter.horizon_row][None, :] * clear._vignetting
        t = np.exp(-scene.extinction(band) * ter.distance_m)
        expected = horizon * (ALBEDO[band] * t + 1.0 - t)
        np.testing.assert_allclose(signal[ter.mask], expected[ter.mask], rtol=1e-9)
        # nearer terrain is darker (less air lit by the sky in front of it)
        col = signal[:, 5]
        rows = np.nonzero(ter.mask[:, 5])[0]
        assert col[rows[-1]] < 0.6 * col[rows[0]]


def test_terrain_keeps_clear_of_the_plume_and_of_the_default_pcs_line():
    scene = scene_for()
    tau = scene.optical_depth("A", T0)
    assert tau[scene.terrain.mask].max() < 1e-3 * tau.max()
    cfg = config_from_dict({})
    x0, y0, x1, y1 = cfg.processing.pcs_lines[0]
    assert not scene.terrain.mask[y0:y1, x0 : x0 + cfg.processing.pcs_line_gap_px + 1].any()


def test_terrain_without_extinction_is_the_bare_flank():
    scene = scene_for()
    signal = scene.expected_counts("A", T0, 6000, 1.0) - scene.expected_counts("A", T0, 6000, 1.0, dark=True)
    ter = scene.terrain
    horizon = scene._sky[ter.horizon_row][None, :] * scene._vignetting * 0.3 * 6.0
    np.testing.assert_allclose(signal[ter.mask], ALBEDO["A"] * horizon[ter.mask], rtol=1e-9)


def test_spectrometer_dilution_acts_on_the_plume_absorption_only():
    """With no SO2 in view, dilution changes nothing: the diluting air is lit by light that crossed the same ozone."""
    clear = scene_for(emission_rate_kg_s=0.0)
    diluted = scene_for(emission_rate_kg_s=0.0, **SIM_AIR)
    np.testing.assert_allclose(diluted.expected_spectrum(T0, 500), clear.expected_spectrum(T0, 500), rtol=1e-12)
    plume, plume_diluted = scene_for(), scene_for(**SIM_AIR)
    a, b = (s.expected_spectrum(T0, 500) for s in (plume, plume_diluted))
    assert not np.allclose(a, b)


def test_station_is_told_lines_flat_field_and_never_the_extinction(tmp_path: Path):
    told = station_dilution(tmp_path, seed=3, size=(648, 486), flat_field=True)
    assert not {"extinction_a_per_m", "extinction_b_per_m"} & set(told)
    flat = read_flat_field(told["flat_field"])
    scene = scene_for(seed=3)
    # a lab flat field: the lens's vignetting to within its shot noise (~0.6 % per pixel)
    ratio = flat / scene._vignetting
    assert abs(ratio.mean() - 1) < 0.005 and ratio.std() < 0.01
    assert len(told["dilution_lines"]) == len(told["dilution_line_distances_m"]) == 3
    # the same seed, the same lines and map distances; another seed, other map errors
    assert (
        station_dilution(tmp_path / "again", seed=3, size=(648, 486))["dilution_line_distances_m"]
        == told["dilution_line_distances_m"]
    )
    assert (
        station_dilution(tmp_path / "other", seed=4, size=(648, 486))["dilution_line_distances_m"]
        != told["dilution_line_distances_m"]
    )
    # 74 % of the on-band plume signal reaches the camera at the scene's 5 km
    assert scene_for(**SIM_AIR).dilution_transmission("A") == pytest.approx(math.exp(-0.3))


def test_flat_field_that_is_not_an_image_is_one_clear_config_error(tmp_path: Path):
    bad = tmp_path / "flat.npy"
    np.save(bad, np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="processing.flat_field"):
        read_flat_field(str(bad))
    with pytest.raises(ConfigError, match="processing.flat_field"):
        read_flat_field(str(tmp_path / "missing.npy"))


def test_sim_station_air_is_clear_by_default_and_hazy_on_request(tmp_path):
    """`pycam sim station --air hazy` puts SIM_AIR's extinction between plume and station; the default day is
    clear air (its FOV check holds to 3 px there; hazy days found it 1-3 px off)."""
    from controller.config import config_from_dict
    from controller.hardware.factory import make_scene
    from controller.sim.station import StationRun, station_configs

    for hazy, extinction in ((False, 0.0), (True, SIM_AIR["extinction_a_per_m"])):
        run = StationRun(out=tmp_path / str(hazy), hazy=hazy, image_size=(160, 120))
        mcfg, scfg = station_configs(run, 1, 2, ("127.0.0.1", "127.0.0.1"))
        assert mcfg["sim"] == scfg["sim"]  # both Pis see the same sky
        scene = make_scene(config_from_dict(mcfg))
        assert scene.extinction("A") == extinction
