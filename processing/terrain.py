"""Terrain distances for the light-dilution fit from a DEM file: each terrain pixel's viewing ray, marched over it.

The DEM is an ESRI ASCII grid (`.asc`: ncols, nrows, xllcorner, yllcorner, cellsize, NODATA_value header, then
rows north to south; x = longitude, y = latitude in degrees, heights in metres) — a format every GIS exports, read
with numpy alone. A pixel's viewing direction is pyplis's (`MeasGeometry.get_viewing_directions_line`):
azimuth = camera azimuth + atan(pitch·(x - w/2) / f), elevation = camera elevation - atan(pitch·(y - h/2) / f).
Each ray is sampled every `step_m` metres (local flat-earth east/north offsets from the camera); its distance is the
slant range of the first sample at or below the terrain (bilinear height). Rays that leave the DEM or never meet
the ground within `max_m` get NaN (no terrain there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from controller.config import Config
from controller.errors import ConfigError

EARTH_RADIUS_M = 6_371_000.0
HEADER_KEYS = ("ncols", "nrows", "xllcorner", "yllcorner", "cellsize")

__all__ = ["Dem", "read_esri_ascii", "terrain_distances", "viewing_directions"]


class Dem:
    """Heights (m) on a regular lon/lat grid; row 0 is the southernmost row here."""

    def __init__(self, heights: np.ndarray, lon0: float, lat0: float, cell_deg: float) -> None:
        self.heights = heights
        self.lon0, self.lat0, self.cell = lon0, lat0, cell_deg

    def height(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Bilinear height at (lon, lat); NaN outside the grid or on no-data cells."""
        col = (lon - self.lon0) / self.cell - 0.5
        row = (lat - self.lat0) / self.cell - 0.5
        return map_coordinates(self.heights, [row, col], order=1, mode="constant", cval=np.nan)


def read_esri_ascii(path: str | Path) -> Dem:
    key = "processing.dilution_dem"
    try:
        with open(path, encoding="ascii") as fh:
            header = {}
            for _ in range(6):
                pos = fh.tell()
                parts = fh.readline().split()
                if len(parts) != 2 or parts[0][0].isdigit() or parts[0][0] == "-":
                    fh.seek(pos)
                    break
                header[parts[0].lower()] = float(parts[1])
            data = np.loadtxt(fh, dtype=np.float64, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(key, f"{path}: not an ESRI ASCII grid ({e})") from e
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ConfigError(key, f"{path}: header lacks {', '.join(missing)}")
    if data.shape != (int(header["nrows"]), int(header["ncols"])):
        raise ConfigError(
            key, f"{path}: {data.shape} values, header says {int(header['nrows'])} x {int(header['ncols'])}"
        )
    if "nodata_value" in header:
        data[data == header["nodata_value"]] = np.nan
    return Dem(data[::-1].copy(), header["xllcorner"], header["yllcorner"], header["cellsize"])


def viewing_directions(cfg: Config, shape: tuple[int, int], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Azimuth and elevation (degrees) of image pixels (x, y), as pyplis's MeasGeometry computes them."""
    h, w = shape
    cam, proc = cfg.camera, cfg.processing
    f = cam.focal_length_mm * 1e-3
    pitch = cam.pixel_pitch_um * 1e-6
    azim = np.rad2deg(np.arctan(pitch * (np.asarray(x) - w / 2) / f)) + proc.camera_azimuth_deg
    elev = -np.rad2deg(np.arctan(pitch * (np.asarray(y) - h / 2) / f)) + proc.camera_elevation_deg
    return azim, elev


def terrain_distances(
    dem: Dem, lat: float, lon: float, alt_m: float, azim_deg: np.ndarray, elev_deg: np.ndarray,
    step_m: float = 10.0, max_m: float = 30_000.0,
) -> np.ndarray:  # fmt: skip
    """Slant distance (m) from the camera to where each ray meets the DEM (module doc); NaN where it does not."""
    r = np.arange(step_m, max_m + step_m, step_m)
    az, el = np.deg2rad(np.asarray(azim_deg, float))[:, None], np.deg2rad(np.asarray(elev_deg, float))[:, None]
    horiz = r[None, :] * np.cos(el)
    east, north = horiz * np.sin(az), horiz * np.cos(az)
    lat_s = lat + np.rad2deg(north / EARTH_RADIUS_M)
    lon_s = lon + np.rad2deg(east / (EARTH_RADIUS_M * np.cos(np.deg2rad(lat))))
    ray_alt = alt_m + r[None, :] * np.sin(el) - horiz**2 / (2 * EARTH_RADIUS_M)  # the ground falls away
    ground = dem.height(lon_s.ravel(), lat_s.ravel()).reshape(lon_s.shape)
    hit = ray_alt <= ground  # NaN ground (off the grid) never hits
    first = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), r[first], np.nan)
