"""Render a sim sequence (A/B pairs and darks) with HW's SimScene into a station-layout folder."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from controller.config import Config
from controller.sim.scene import SO2_SIGMA_EFF_CM2, SimScene
from controller.storage.names import ImageName

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
EXPOSURE_US = {"A": 6000, "B": 2000}


def sim_config(**processing: object) -> Config:
    cfg = Config()
    proc = dataclasses.replace(
        cfg.processing,
        plume_distance_m=cfg.sim.plume_distance_m,
        background_mode=0,
        # the scene's on-band cross-section: a perfect calibration, so the test checks images -> flux
        default_calibration_slope=1.0 / SO2_SIGMA_EFF_CM2,
        **processing,
    )
    return dataclasses.replace(cfg, processing=proc)


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"cannot write {path}")


def render_sequence(cfg: Config, root: Path, n_pairs: int, period_s: float = 2.0, darks: bool = True) -> SimScene:
    scene = SimScene(cfg.sim, cfg.camera, cfg.spectrometer)
    for k in range(n_pairs):
        t = T0 + k * period_s
        for band in "AB":
            name = ImageName(datetime.fromtimestamp(t, UTC), band, 1, EXPOSURE_US[band], "Plume")
            write_png(root / name.date_folder / str(name), scene.render_raw(band, t, EXPOSURE_US[band]))
    if darks:
        for band in "AB":
            t = T0 - 60
            name = ImageName(datetime.fromtimestamp(t, UTC), band, 1, EXPOSURE_US[band], "Dark")
            write_png(root / name.date_folder / str(name), scene.render_raw(band, t, EXPOSURE_US[band], dark=True))
    return scene
