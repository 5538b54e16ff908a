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


REFERENCES = Path(__file__).resolve().parents[3] / "shared" / "data" / "references"
SPEC_INTEGRATION_MS = 500
SPEC_COADD = 10


def doas_sim_config(tmp: Path, **processing: object) -> Config:
    """A sim config whose scene and DOAS retrieval share the real references, and the scene's Gaussian ILS.

    The default calibration slope is deliberately 1.5x the scene's truth: a run that really uses the DOAS
    calibration gets the emission rate right, one that falls back to the default does not.
    """
    from controller.sim.station import write_scene_ils

    ils = write_scene_ils(tmp / "gaussian_ils.txt")
    refs = {
        "solar_reference": str(REFERENCES / "sao2010.txt"),
        "so2_xsec": str(REFERENCES / "SO2_293K.txt"),
        "o3_xsec": str(REFERENCES / "O3_Voigt_223K.txt"),
        "ring_spectrum": str(REFERENCES / "Ring.txt"),
        "ils": str(ils),
    }
    cfg = sim_config(**refs, **processing)
    proc = dataclasses.replace(cfg.processing, default_calibration_slope=1.5 / SO2_SIGMA_EFF_CM2)
    return dataclasses.replace(cfg, processing=proc, sim=dataclasses.replace(cfg.sim, references_dir=str(REFERENCES)))


def render_spectra(
    scene: SimScene, root: Path, n: int, period_s: float = 2.0, kind: str = "Plume", start: int = 0
) -> None:
    """Spectra at the FOV at the pair times (T0 + k·period, k from `start`), plus one dark spectrum."""
    from controller.storage.names import SpectrumName

    def save(t: float, arr: np.ndarray, kind: str) -> None:
        name = SpectrumName(datetime.fromtimestamp(t, UTC), SPEC_INTEGRATION_MS, SPEC_COADD, kind)
        path = root / name.date_folder / str(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)

    for k in range(start, n):
        t = T0 + k * period_s
        save(t, np.vstack(scene.render_spectrum(t, SPEC_INTEGRATION_MS, SPEC_COADD)), kind)
    save(T0 - 30, np.vstack(scene.render_spectrum(T0 - 30, SPEC_INTEGRATION_MS, SPEC_COADD, dark=True)), "Dark")
