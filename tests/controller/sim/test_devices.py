"""The sim scene and sim devices: determinism, physics, flux, faults."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controller.config import Config, SimConfig, config_from_dict
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError
from controller.hardware.checks import check_frame, check_spectrum
from controller.hardware.factory import make_scene, open_camera, open_spectrometer
from controller.sim.scene import BLACK_LEVEL_DN, SO2_SIGMA_EFF_CM2, SimScene, flame_wavelengths
from controller.timekeeping.clock import ManualClock

T0 = 1_700_000_000.0


def scene_for(**sim) -> SimScene:
    cfg = config_from_dict({"sim": sim})
    return make_scene(cfg)


def test_sim_frames_identical_for_same_seed():
    cfg = config_from_dict({"sim": {"seed": 7}})
    frames = []
    for _ in range(2):
        cam = open_camera(cfg, "A", ManualClock(T0))
        frames.append(cam.capture().pixels)
    assert np.array_equal(frames[0], frames[1])


def test_sim_frames_differ_between_seeds_and_times():
    a = scene_for(seed=1).render_raw("A", T0, 20_000)
    b = scene_for(seed=2).render_raw("A", T0, 20_000)
    c = scene_for(seed=1).render_raw("A", T0 + 4, 20_000)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_frame_is_10_bit_and_scales_with_exposure():
    scene = scene_for()
    short = scene.render_raw("B", T0, 200).astype(float)
    longer = scene.render_raw("B", T0, 400).astype(float)
    assert short.dtype == np.float64 and short.max() <= 1023
    ratio = (longer - BLACK_LEVEL_DN).mean() / (short - BLACK_LEVEL_DN).mean()
    assert ratio == pytest.approx(2.0, rel=0.03)
    saturated = scene.render_raw("B", T0, 6_000_000)
    assert saturated.max() == 1023


def test_on_off_band_ratio_matches_scene_physics():
    """ln(B/A) in plume pixels minus the same with no plume equals σ_eff·S (aerosol cancels)."""
    scene = scene_for(seed=3, aerosol_optical_depth=0.2)
    clear = scene_for(seed=3, aerosol_optical_depth=0.2, emission_rate_kg_s=0.0)
    t = T0 + 123.0
    exp_a, exp_b = 6_000, 1_800
    dark_a = scene.render_raw("A", t, exp_a, dark=True, noise=False).astype(float)
    dark_b = scene.render_raw("B", t, exp_b, dark=True, noise=False).astype(float)

    def ratio(s: SimScene) -> np.ndarray:
        a = s.render_raw("A", t, exp_a).astype(float) - dark_a
        b = s.render_raw("B", t, exp_b).astype(float) - dark_b
        return np.log(b / a)

    aa = ratio(scene) - ratio(clear)
    column = scene.column_field(t)
    rows = slice(int(scene.centre_y_px) - 5, int(scene.centre_y_px) + 5)
    measured = aa[rows].mean()
    expected = SO2_SIGMA_EFF_CM2 * column[rows].mean()
    assert expected > 0.3
    assert measured == pytest.approx(expected, rel=0.03)
    # and per column, so the texture (not only the mean) follows the physics
    corr = np.corrcoef(aa[rows].mean(axis=0), SO2_SIGMA_EFF_CM2 * column[rows].mean(axis=0))[0, 1]
    assert corr > 0.95


def test_flux_through_vertical_lines_equals_emission_rate_on_average():
    scene = scene_for(emission_rate_kg_s=12.5, wind_speed_m_s=6.0)
    times = T0 + np.arange(0.0, 3000.0, 7.3)
    for x in (50, 324, 600):
        mean_flux = np.mean([scene.flux_through_column(t, x) for t in times])
        assert mean_flux == pytest.approx(12.5, rel=0.03)


def test_flux_holds_for_a_slanted_wind():
    scene = scene_for(emission_rate_kg_s=5.0, wind_direction_deg=15.0, plume_width_px=20.0)
    times = T0 + np.arange(0.0, 3000.0, 7.3)
    assert np.mean([scene.flux_through_column(t, 324) for t in times]) == pytest.approx(5.0, rel=0.03)


def test_plume_drifts_in_plus_x_at_the_wind_speed():
    scene = scene_for(wind_speed_m_s=7.0)
    t = T0 + 50.0
    dt = 4.0
    shift_px = scene.speed_px_s * dt
    row = int(scene.centre_y_px)
    before = scene.column_field(t)[row]
    after = scene.column_field(t + dt)[row]
    lags = np.arange(0, 40)
    errors = [np.abs(after[lag:] - before[: before.size - lag]).mean() for lag in lags]
    assert lags[int(np.argmin(errors))] == round(shift_px)
    assert scene.truth(t)["plume_speed_m_s"] == 7.0
    assert scene.truth(t)["pixel_size_m"] == pytest.approx(5000 * 5.6e-6 / 12e-3)


def test_spectrum_shows_the_fov_column():
    scene = scene_for()
    clear = scene_for(emission_rate_kg_s=0.0)
    t = T0 + 10
    wl, plume = scene.render_spectrum(t, 500, coadd=4)
    _, sky = clear.render_spectrum(t, 500, coadd=4)
    assert wl.shape == plume.shape == (2048,)
    np.testing.assert_allclose(wl, flame_wavelengths())
    window = (wl > 310) & (wl < 316)
    dark = 1000.0
    od = np.log((sky[window] - dark) / (plume[window] - dark)).mean()
    assert od > 0.1  # SO2 absorbs at 310-316 nm
    off = (wl > 345) & (wl < 360)
    assert abs(np.log((sky[off] - dark) / (plume[off] - dark)).mean()) < 0.02
    assert scene.truth(t)["fov_column_molecules_cm2"] > 1e18


def test_spectrum_from_reference_files(shared_data):
    scene = scene_for(references_dir=str(shared_data / "references"))
    wl, counts = scene.render_spectrum(T0, 1000, coadd=1)
    assert scene.references.source.endswith("references")
    assert np.isfinite(counts).all() and counts.max() <= 65535
    assert counts[(wl > 330) & (wl < 340)].mean() > 5 * counts[(wl > 290) & (wl < 294)].mean() - 5000


def test_sim_camera_faults_and_history():
    cfg = Config()
    clock = ManualClock(T0)
    cam = open_camera(cfg, "B", clock)
    assert cam.set_exposure(1_400_000) == 1_399_860
    cam.inject_fault("unplug")
    with pytest.raises(DeviceUnavailable):
        cam.capture()
    cam.inject_fault("replug")
    check_frame(cam.capture(), cfg.camera.width, cfg.camera.height)
    cam.inject_fault("garbage")
    with pytest.raises(HardwareError, match="garbage"):
        check_frame(cam.capture(), cfg.camera.width, cfg.camera.height)
    check_frame(cam.capture(), cfg.camera.width, cfg.camera.height)  # garbage is one frame only
    cam.inject_fault("stall")
    with pytest.raises(DeviceTimeout):
        cam.capture()
    cam.close()
    cam.close()
    events = [e for _, e, _ in cam.history]
    assert events == ["open", "set_exposure", "fault", "error", "fault", "capture", "fault", "capture", "capture",
                      "fault", "error", "close"]  # fmt: skip
    with pytest.raises(ValueError):
        cam.inject_fault("melt")


def test_sim_spectrometer_faults():
    cfg = Config()
    spec = open_spectrometer(cfg, ManualClock(T0))
    assert spec.set_integration_ms(250) == 250
    check_spectrum(spec.capture(2), 2048)
    spec.inject_fault("garbage")
    with pytest.raises(HardwareError):
        check_spectrum(spec.capture(), 2048)
    spec.inject_fault("unplug")
    with pytest.raises(DeviceUnavailable):
        spec.wavelengths()
    assert open_spectrometer(config_from_dict({"spectrometer": {"backend": "none"}}), ManualClock()) is None


def test_dark_frames_have_no_sky():
    cfg = Config()
    cam = open_camera(cfg, "A", ManualClock(T0))
    cam.lens_covered = True
    frame = cam.capture()
    assert frame.pixels.mean() < BLACK_LEVEL_DN + 5


def test_scene_is_a_pure_function_of_config():
    sim = dataclasses.replace(SimConfig(), seed=11)
    cfg = Config()
    one = SimScene(sim, cfg.camera, cfg.spectrometer).column_field(T0)
    two = SimScene(sim, cfg.camera, cfg.spectrometer).column_field(T0)
    assert np.array_equal(one, two)
