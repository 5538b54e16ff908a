"""The FOV search on a sim station day's inputs: AA frames of 60 s slots and single noisy spectra, fed to the DOAS
calibration the way the worker's live calibration feeds it (issue 12, point 6: centre and radius within 3 px).

The station day's numbers (measured on `pycam sim station`): the plume moves ~7 px per slot, the AA pixel noise is
0.03, a single spectrum's column is 3-4 % noisy (1-1.5 s). With the 20 pairs the sim station used to search on, the
FOV found was 5-12 px off across the plume and its radius 2-7 for 10: across a smooth plume a disk a few pixels
off correlates almost as well as the right one, and with so few noisy points it wins by chance. The sim station
now co-adds its spectra (controller.sim.station.SIM_SPECTRA_COADD) and searches on SIM_FOV_FRAMES pairs. Rendered
here on a 320 x 240 camera (same plume, FOV radius, speed and noise; the FOV at 0.6 of the width) so the test
stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from controller.config import Config
from controller.sim.scene import SimScene
from controller.sim.station import (
    SIM_EMISSION_KG_S,
    SIM_FOV_FRAMES,
    SIM_PERIOD_S,
    SIM_SPECTRA_COADD,
    SIM_WIND_M_S,
)
from processing.calibration import DoasCalibration, PlumeFrame
from processing.doas import DoasResult
from processing.fov import find_fov
from processing.livecal import fov_frames

AA_NOISE = 0.03  # AA pixel noise of the station day's frames (frame minus the scene's optical depths)
SINGLE_NOISE = 0.035  # relative column noise of a single spectrum (DOAS against the scene's FOV column)
COADDED_NOISE = SINGLE_NOISE / math.sqrt(SIM_SPECTRA_COADD)
T0 = datetime(2024, 3, 1, 11, 1, tzinfo=UTC).timestamp()


def station_day(n: int, seed: int, noise: float) -> tuple[SimScene, list[float], np.ndarray, np.ndarray]:
    """(scene, times, AA stack, DOAS columns) of `n` station slots starting somewhere in a 6 h day."""
    cfg = Config()
    sim = dataclasses.replace(cfg.sim, wind_speed_m_s=SIM_WIND_M_S, emission_rate_kg_s=SIM_EMISSION_KG_S)
    scene = SimScene(sim, dataclasses.replace(cfg.camera, width=320, height=240), cfg.spectrometer)
    rng = np.random.default_rng(seed)
    times = list(T0 + rng.uniform(0, 6 * 3600) + SIM_PERIOD_S * np.arange(n))
    shape = (scene.height, scene.width)
    stack = np.stack([
        scene.optical_depth("A", t) - scene.optical_depth("B", t) + rng.normal(0.0, AA_NOISE, shape) for t in times
    ]).astype(np.float32)  # fmt: skip
    columns = np.array([scene.fov_column(t) for t in times]) * (1.0 + rng.normal(0.0, noise, n))
    return scene, times, stack, columns


def _doas(t: float, column: float, noise: float) -> DoasResult:
    nan = math.nan
    when = datetime.fromtimestamp(t, UTC)
    return DoasResult(when, column, noise * column, nan, nan, nan, nan, nan, nan, nan, 0, 0, True, 2.5e15, nan)


def _off(scene: SimScene, cx: int, cy: int, radius: int) -> tuple[int, int, int]:
    tx, ty = scene.fov_centre_px
    return abs(cx - tx), abs(cy - ty), abs(radius - scene.fov_radius_px)


@pytest.mark.parametrize("seed", [0, 1])
def test_station_day_fov_within_3_px_with_the_sim_stations_fov_frames(seed):
    """The live calibration's buffer as the sim station configures it, fed frame by frame and spectrum by spectrum:
    the FOV search runs by itself once the buffer is full and finds centre and radius within 3 px."""
    cfg = Config()
    proc = dataclasses.replace(cfg.processing, fov_frames=SIM_FOV_FRAMES)
    dcal = DoasCalibration(proc, max_frames=fov_frames(proc))
    scene, times, stack, columns = station_day(dcal.max_frames, seed, COADDED_NOISE)
    for t, aa, column in zip(times, stack, columns, strict=True):
        dcal.add_doas(_doas(t, column, COADDED_NOISE))
        dcal.add_frame(PlumeFrame(datetime.fromtimestamp(t, UTC), aa))
    assert dcal.fov is not None, "the FOV search did not run when its buffer was full"
    f = dcal.fov
    dx, dy, dr = _off(scene, f.cx, f.cy, f.radius)
    print(f"seed {seed}: FOV found ({f.cx}, {f.cy}) r {f.radius}, scene {scene.fov_centre_px} r {scene.fov_radius_px}")
    assert dx <= 3 and dy <= 3 and dr <= 3, (f.cx, f.cy, f.radius, scene.fov_centre_px, scene.fov_radius_px)


def test_station_day_twenty_single_spectra_is_what_failed():
    """The situation that failed: 20 pairs with single spectra. pyplis' Pearson method (best smoothed pixel, then
    the radius) lands more than 3 px off the scene's FOV, and so may the refined search with so few noisy points
    (it is the data, not the method: hence more pairs and co-added spectra)."""
    scene, _, stack, columns = station_day(20, 3, SINGLE_NOISE)
    pyplis_way = find_fov(stack, columns, refine=False)
    refined = find_fov(stack, columns)
    off_pyplis, off_refined = (
        _off(scene, pyplis_way.cx, pyplis_way.cy, pyplis_way.radius),
        _off(scene, refined.cx, refined.cy, refined.radius),
    )
    print(f"20 single spectra: pyplis' method {off_pyplis} px off (x, y, r), refined search {off_refined}")
    assert max(off_pyplis) > 3


def test_livecal_buffer_is_fov_frames_else_the_ring_buffer_within_20_to_100():
    proc = Config().processing
    assert fov_frames(dataclasses.replace(proc, fov_frames=150)) == 150
    assert fov_frames(dataclasses.replace(proc, fov_frames=0, ring_buffer=8)) == 20
    assert fov_frames(dataclasses.replace(proc, fov_frames=0, ring_buffer=64)) == 64
    assert fov_frames(dataclasses.replace(proc, fov_frames=0, ring_buffer=500)) == 100
