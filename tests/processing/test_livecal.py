"""The worker's live DOAS calibration with a FOV search buffer longer than its calibration window (as the sim
station's: 100 pairs of 60 s slots against a 30 min window)."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path

from controller.config import Config
from controller.storage.names import ImageName
from processing.calibration import Calibration
from processing.doas import DoasResult
from processing.fov import synthetic_fov_stack
from processing.images import ImageFile
from processing.livecal import LiveCalibration
from processing.pairing import ImagePair

T0 = datetime(2024, 3, 1, 11, 0, tzinfo=UTC).timestamp()
PERIOD_S = 60.0


def _pair(t: float) -> ImagePair:
    when = datetime.fromtimestamp(t, UTC)
    a, b = (ImageFile(Path(f"{band}.png"), ImageName(when, band, 1, 1000, "Plume")) for band in "AB")
    return ImagePair(a, b)


def _doas(t: float, column: float) -> DoasResult:
    nan = math.nan
    when = datetime.fromtimestamp(t, UTC)
    return DoasResult(when, column, 0.02 * column, nan, nan, nan, nan, nan, nan, nan, 0, 0, True, 2.5e15, nan)


def test_fov_buffer_longer_than_the_window_searches_every_frame_and_calibrates_every_held_pair(tmp_path):
    """Two failures of a buffer spanning more than the calibration window: the DOAS results older than the window
    were dropped before the search (it searched only the buffer's last window, or never ran), and the points older
    than two windows were dropped before the held pairs of the buffer asked for them (they fell back)."""
    cfg = Config()
    proc = dataclasses.replace(cfg.processing, fov_frames=60, calibration_window_s=600.0)
    cfg = dataclasses.replace(cfg, processing=proc)
    fallback = Calibration(5.7e18, 0.0, method="default")
    lc = LiveCalibration(cfg, fallback, tmp_path)
    assert lc.dcal.max_frames == 60
    stack, series = synthetic_fov_stack(60, (48, 64), (32, 22), 4, seed=7)
    times = [T0 + PERIOD_S * k for k in range(60)]
    for t, aa, column in zip(times, stack, series, strict=True):
        lc.add_doas(_doas(t, column))
        lc.add_pair(_pair(t), aa)
    fov = lc.dcal.fov
    assert fov is not None, "the FOV search never ran"
    assert fov.tau_series.shape == (60,), "the search did not use every buffered frame"
    assert abs(fov.cx - 32) <= 2 and abs(fov.cy - 22) <= 2 and abs(fov.radius - 4) <= 2, (fov.cx, fov.cy, fov.radius)
    # the held pairs ask in time order once the FOV is known: each from the first full window on is DOAS-calibrated
    methods = [lc.at(datetime.fromtimestamp(t, UTC)).method for t in times]
    first = lc.dcal.min_points - 1
    assert methods[:first] == ["default"] * first
    assert methods[first:] == ["doas"] * (60 - first), methods


def test_state_is_written_when_it_changes_not_for_every_pair(tmp_path, monkeypatch):
    """Before the FOV, a pair only adds to the frame buffer (images, not kept): the state file is written for each
    DOAS result, not again for each pair (an atomic, fsynced write on the station's SD card)."""
    import processing.livecal as livecal

    writes = []
    real = livecal.atomic_write_text
    monkeypatch.setattr(livecal, "atomic_write_text", lambda path, text: writes.append(text) or real(path, text))
    cfg = Config()
    cfg = dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing, fov_frames=60))
    lc = LiveCalibration(cfg, Calibration(5.7e18, 0.0, method="default"), tmp_path)
    stack, series = synthetic_fov_stack(10, (48, 64), (32, 22), 4, seed=7)
    for k, (aa, column) in enumerate(zip(stack, series, strict=True)):
        lc.add_doas(_doas(T0 + PERIOD_S * k, column))
        lc.add_pair(_pair(T0 + PERIOD_S * k), aa)
    assert lc.dcal.fov is None and len(writes) == 10 and len(set(writes)) == 10
    restored = LiveCalibration(cfg, Calibration(5.7e18, 0.0, method="default"), tmp_path)
    assert len(restored.dcal._doas) == 10  # what was written is what a restarted worker continues with
