"""Light-dilution terrain distances from a DEM file (ESRI ASCII grid), against geometry and pyplis's directions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from controller.config import Config, ProcessingConfig
from controller.errors import ConfigError
from processing.dilution import DilutionCorrection
from processing.terrain import EARTH_RADIUS_M, read_esri_ascii, terrain_distances, viewing_directions

LAT, LON, ALT = -39.38, -71.95, 1000.0
WALL_M = 3000.0  # a ridge 3 km north of the camera
CELL = 0.0002  # degrees (~22 m north-south)


def _write_dem(path: Path) -> None:
    n = 400
    lat0, lon0 = LAT - 0.04, LON - 0.04
    lats = lat0 + (np.arange(n) + 0.5) * CELL  # south to north
    wall_lat = LAT + np.rad2deg(WALL_M / EARTH_RADIUS_M)
    heights = np.where(lats[:, None] >= wall_lat, 4000.0, 900.0) * np.ones((1, n))
    heights[:, :5] = -9999  # a strip of no-data
    with open(path, "w", encoding="ascii") as fh:
        fh.write(f"ncols {n}\nnrows {n}\nxllcorner {lon0}\nyllcorner {lat0}\ncellsize {CELL}\nNODATA_value -9999\n")
        np.savetxt(fh, heights[::-1], fmt="%.1f")  # the file's first row is the northernmost


def _cfg(dem: Path) -> Config:
    cfg = Config()
    proc = dataclasses.replace(
        ProcessingConfig(), camera_azimuth_deg=0.0, camera_elevation_deg=5.0, dilution_lines=((300, 100, 320, 400),),
        dilution_dem=str(dem), dilution_ambient_roi=(0, 0, 40, 20),
    )  # fmt: skip
    station = dataclasses.replace(cfg.station, latitude_deg=LAT, longitude_deg=LON, altitude_m=ALT)
    return dataclasses.replace(cfg, processing=proc, station=station)


def test_rays_meet_the_ridge_at_its_distance(tmp_path):
    _write_dem(tmp_path / "dem.asc")
    dem = read_esri_ascii(tmp_path / "dem.asc")
    elev = np.array([-5.0, 0.0, 5.0, 20.0])
    dist = terrain_distances(dem, LAT, LON, ALT, np.zeros(4), elev)
    # the downward ray meets the plain (100 m below) first; the others the ridge at 3 km horizontally
    assert dist[0] == pytest.approx(100.0 / np.sin(np.deg2rad(5.0)), abs=15.0)
    np.testing.assert_allclose(dist[1:], WALL_M / np.cos(np.deg2rad(elev[1:])), atol=40.0)
    # looking up over the ridge top (3000 m above the camera at 3 km is 45°): never meets it; off the grid: NaN
    assert np.isnan(terrain_distances(dem, LAT, LON, ALT, np.array([0.0, 270.0]), np.array([60.0, 1.0]))).all()


def test_viewing_directions_are_pyplis_s():
    from pyplis import LineOnImage, MeasGeometry

    cfg = _cfg(Path("unused.asc"))
    cam, proc = cfg.camera, cfg.processing
    geom = MeasGeometry(
        cam_info={
            "lat": LAT, "lon": LON, "altitude": ALT, "elev": proc.camera_elevation_deg, "azim": proc.camera_azimuth_deg,
            "focal_length": cam.focal_length_mm * 1e-3, "pix_width": cam.pixel_pitch_um * 1e-6,
            "pix_height": cam.pixel_pitch_um * 1e-6, "pixnum_x": cam.width, "pixnum_y": cam.height,
        },
        auto_topo_access=False,
    )  # fmt: skip
    az, el, x, y = geom.get_viewing_directions_line(LineOnImage(100, 50, 500, 400))
    ours_az, ours_el = viewing_directions(cfg, (cam.height, cam.width), x, y)
    np.testing.assert_allclose(ours_az, az, atol=1e-9)
    np.testing.assert_allclose(ours_el, el, atol=1e-9)


def test_dilution_configured_with_a_dem(tmp_path):
    _write_dem(tmp_path / "dem.asc")
    cfg = _cfg(tmp_path / "dem.asc")
    corr = DilutionCorrection.from_config(cfg, (cfg.camera.height, cfg.camera.width))
    assert corr is not None and "DEM dem.asc" in corr.samples.source
    # rows above the image centre look up at the ridge (3 km and a bit), those below down at the plain
    _, elev = viewing_directions(cfg, (cfg.camera.height, cfg.camera.width), corr.samples.x, corr.samples.y)
    ridge = elev > 0.5
    np.testing.assert_allclose(corr.samples.dist_m[ridge], WALL_M / np.cos(np.deg2rad(elev[ridge])), atol=40.0)
    (tmp_path / "bad.asc").write_text("ncols 2\nnrows 2\n1 2\n3 4\n")
    with pytest.raises(ConfigError, match="dilution_dem"):
        DilutionCorrection.from_config(
            dataclasses.replace(
                cfg, processing=dataclasses.replace(cfg.processing, dilution_dem=str(tmp_path / "bad.asc"))
            ),
            (cfg.camera.height, cfg.camera.width),
        )
