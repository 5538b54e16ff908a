"""Auto exposure / integration: the original's decisions, and convergence in the sim from either list end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controller.acquisition.autoexposure import (
    brightest,
    nearest_index,
    next_integration,
    next_shutter,
    saturation_rows,
)
from controller.config import CameraConfig, Config, SpectrometerConfig
from controller.hardware.factory import make_scene, open_camera, open_spectrometer
from controller.timekeeping.clock import ManualClock


def test_brightest_n_and_rows():
    img = np.zeros((10, 10), dtype=np.uint16)
    img[0, :3] = [900, 800, 700]
    img[9, 0] = 1000
    assert brightest(img, 1) == 1000
    assert brightest(img, 3) == 800
    assert brightest(saturation_rows(img, 2), 1) == 900  # + rows from the top
    assert brightest(saturation_rows(img, -1), 1) == 1000  # - rows from the bottom
    assert nearest_index([10, 20, 30], 19) == 1 and nearest_index([10, 20, 30], 99) == 2


def test_in_band_keeps_exposure_and_ends_clamp():
    cfg = CameraConfig(saturation_rows=10)
    shutters = cfg.shutter_list_us
    ok = np.full((10, 10), int(0.8 * 1023), dtype=np.uint16)
    assert next_shutter(ok, 10_000, shutters, cfg, 1023) == 10_000
    saturated = np.full((10, 10), 1023, dtype=np.uint16)
    assert next_shutter(saturated, shutters[0], shutters, cfg, 1023) == shutters[0]
    dark = np.zeros((10, 10), dtype=np.uint16)
    assert next_shutter(dark, shutters[-1], shutters, cfg, 1023) == shutters[-1]
    # direction: too bright goes down, too dark goes up, from a reported (not listed) exposure
    assert next_shutter(saturated, 1_399_829, shutters, cfg, 1023) < 1_399_829
    assert next_shutter(dark, 1_399_829, shutters, cfg, 1023) > 1_400_000


@pytest.mark.parametrize("band", ["A", "B"])
@pytest.mark.parametrize("end", [0, -1])
def test_auto_exposure_converges_in_sim_within_10_frames(band, end):
    cfg = Config()
    clock = ManualClock(1_700_000_000.0)
    cam = open_camera(cfg, band, clock)
    shutters = cfg.camera.shutter_list_us
    max_value = (1 << cfg.camera.bit_depth) - 1
    exposure = cam.set_exposure(shutters[end])
    settled = None
    for frame_no in range(1, 11):
        frame = cam.capture()
        new = next_shutter(frame.pixels, frame.exposure_us, shutters, cfg.camera, max_value)
        if new == shutters[nearest_index(shutters, frame.exposure_us)]:
            settled = frame_no
            break
        exposure = cam.set_exposure(new)
        clock.advance(4.0)
    assert settled is not None, f"not converged after 10 frames (at {exposure} µs)"
    level = brightest(saturation_rows(frame.pixels, cfg.camera.saturation_rows), cfg.camera.saturation_pixels)
    assert 0.7 * max_value <= level <= 0.9 * max_value


@pytest.mark.parametrize("end", [0, -1])
def test_auto_integration_converges_in_sim(end):
    cfg = Config()
    clock = ManualClock(1_700_000_000.0)
    spec = open_spectrometer(cfg, clock, make_scene(cfg))
    values = cfg.spectrometer.integration_list_ms
    spec.set_integration_ms(values[end])
    for _ in range(10):
        s = spec.capture()
        new = next_integration(s.counts, s.wavelengths_nm, s.integration_ms, cfg.spectrometer)
        if new == s.integration_ms:
            break
        spec.set_integration_ms(new)
        clock.advance(4.0)
    else:
        pytest.fail(f"integration did not converge (at {spec.integration_ms} ms)")
    window = (s.wavelengths_nm >= 300) & (s.wavelengths_nm <= 340)
    level = brightest(s.counts[window], cfg.spectrometer.saturation_pixels)
    assert 0.7 * 65535 <= level <= 0.9 * 65535


def test_integration_window_is_honoured():
    cfg = dataclasses.replace(SpectrometerConfig(), saturation_window_nm=(310, 320))
    wl = np.linspace(290, 400, 1000)
    counts = np.where((wl > 350), 65535.0, 0.8 * 65535)  # saturated only outside the window
    assert next_integration(counts, wl, 100, cfg) == 100
