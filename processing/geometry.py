"""Measurement geometry: pixel size at the plume (m), from pyplis MeasGeometry or a fixed plume distance.

MeasGeometry takes the station position (config `station`), the camera's viewing direction and the source position
(config `processing`), and the wind direction; it gives the plume distance for every pixel column and so the
integration step Δx = d · pixel pitch / focal length. Without a configured wind direction the plume is taken to
drift normal to the viewing direction. `processing.plume_distance_m` > 0 overrides all of that (the simulator's
case). Topography is never downloaded (auto_topo_access=False): the station may be offline.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from controller.config import Config
from controller.errors import ConfigError
from controller.logging import get_logger

log = get_logger("processing.geometry")

# Uncertainty of the pixel size when the geometry gives none (pyplis's own default assumption is 10 %).
DEFAULT_PIXEL_SIZE_REL_ERR = 0.10


@dataclass(frozen=True)
class PlumeGeometry:
    """Pixel size at the plume for each pixel (m), its uncertainty, and how it was obtained."""

    col_dist_m: np.ndarray  # (h, w) horizontal pixel-to-pixel distance at the plume
    plume_distance_m: float  # at the image centre
    rel_err: float
    method: str
    plume_dist_img_m: np.ndarray | None = None  # (h, w) plume distance per pixel (light dilution); None: centre's

    def plume_distances(self) -> np.ndarray | float:
        """Plume distance per pixel (m), or the centre's for every pixel."""
        return self.plume_distance_m if self.plume_dist_img_m is None else self.plume_dist_img_m

    @property
    def shape(self) -> tuple[int, int]:
        return self.col_dist_m.shape

    def pixel_size_m(self, x: float | None = None, y: float | None = None) -> float:
        h, w = self.shape
        xi = int(round(w / 2 if x is None else x))
        yi = int(round(h / 2 if y is None else y))
        return float(self.col_dist_m[min(max(yi, 0), h - 1), min(max(xi, 0), w - 1)])

    def at_pyrlevel(self, level: int) -> np.ndarray:
        """Pixel sizes on the image reduced `level` times by 2 (as cv2.pyrDown shapes it)."""
        import cv2

        arr = self.col_dist_m
        for _ in range(level):
            arr = cv2.pyrDown(arr) * 2.0
        return arr


def fixed_geometry(distance_m: float, pitch_um: float, focal_mm: float, shape: tuple[int, int]) -> PlumeGeometry:
    size = distance_m * pitch_um * 1e-6 / (focal_mm * 1e-3)
    return PlumeGeometry(np.full(shape, size), distance_m, DEFAULT_PIXEL_SIZE_REL_ERR, "plume_distance_m", None)


def geometry_from_config(cfg: Config, shape: tuple[int, int]) -> PlumeGeometry:
    """The plume geometry for images of `shape` (h, w)."""
    proc, cam, st = cfg.processing, cfg.camera, cfg.station
    if proc.plume_distance_m > 0:
        geom = fixed_geometry(proc.plume_distance_m, cam.pixel_pitch_um, cam.focal_length_mm, shape)
        if proc.plume_distance_err_m > 0:
            geom = dataclasses.replace(geom, rel_err=proc.plume_distance_err_m / proc.plume_distance_m)
        return geom
    from pyplis import MeasGeometry

    wind_from = proc.wind_direction_deg
    if wind_from is None:
        # Plume normal to the camera's view: the wind blows across the line of sight.
        wind_from = (proc.camera_azimuth_deg + 90.0) % 360.0
    h, w = shape
    pitch = cam.pixel_pitch_um * 1e-6
    geom = MeasGeometry(
        source_info={
            "name": "source", "lat": proc.source_latitude_deg, "lon": proc.source_longitude_deg,
            "altitude": proc.source_altitude_m,
        },
        cam_info={
            "lat": st.latitude_deg, "lon": st.longitude_deg, "altitude": st.altitude_m,
            "elev": proc.camera_elevation_deg, "elev_err": 1.0, "azim": proc.camera_azimuth_deg % 360.0,
            "azim_err": 1.0, "focal_length": cam.focal_length_mm * 1e-3, "pix_width": pitch, "pix_height": pitch,
            "pixnum_x": w, "pixnum_y": h,
        },
        wind_info={"dir": wind_from, "dir_err": 10.0},
        auto_topo_access=False,
    )  # fmt: skip
    col, _, dist = geom.compute_all_integration_step_lengths()
    col_m = np.asarray(col.img, dtype=np.float64)
    if col_m.shape != shape or not np.all(np.isfinite(col_m)) or np.any(col_m <= 0):
        raise ConfigError(
            "processing.camera_azimuth_deg",
            "the viewing direction does not cross the plume (check station/source positions, azimuth, wind "
            "direction) — or set processing.plume_distance_m",
        )
    d_centre = float(np.asarray(dist.img)[h // 2, w // 2])
    err = geom.plume_dist_err()
    rel = float(np.ravel(err)[0]) / d_centre if err is not None and np.all(np.isfinite(err)) else math.nan
    if not (0 < rel < 1):
        rel = DEFAULT_PIXEL_SIZE_REL_ERR
    log.info("geometry", plume_distance_m=round(d_centre, 1), pixel_size_m=round(float(col_m[h // 2, w // 2]), 3))
    return PlumeGeometry(col_m, d_centre, rel, "pyplis MeasGeometry", np.asarray(dist.img, dtype=np.float64))
