"""The [processing] section: the processing worker's and `pycam process`'s settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controller.config.fields import value_range

XCORR_MIN_WINDOW_DOC = (
    "time span the cross-correlation buffer must hold before it gives a plume speed (the searchable lag is half "
    "the span; shorter series read the lag too short, the speed too high)"
)


@dataclass(frozen=True)
class ProcessingConfig:
    enabled: bool = True
    background_mode: int = field(default=5, metadata=value_range(0, 99, "pyplis PlumeBackgroundModel mode"))
    pair_tolerance_s: float = field(default=0.0, metadata=value_range(0, 60, "A/B pairing tolerance (old archives)"))
    ppmm_to_molecules_cm2: float = field(default=2.504e15, metadata=value_range(1e15, 1e16))
    solar_reference: str = ""
    so2_xsec: str = ""
    o3_xsec: str = ""
    ring_spectrum: str = ""
    ils: str = ""
    # Wavelength media (processing/references.py converts every reference to the spectrometer's medium).
    solar_reference_medium: Literal["vacuum", "air"] = field(default="vacuum", metadata={"doc": "sao2010: vacuum"})
    so2_xsec_medium: Literal["vacuum", "air"] = field(default="vacuum", metadata={"doc": "Bogumil 2000: vacuum"})
    o3_xsec_medium: Literal["vacuum", "air"] = field(default="vacuum", metadata={"doc": "Serdyuchenko: vacuum"})
    ring_spectrum_medium: Literal["vacuum", "air"] = field(
        default="vacuum", metadata={"doc": "the medium of the solar spectrum it was computed from"}
    )
    spectrometer_medium: Literal["vacuum", "air"] = field(
        default="air", metadata={"doc": "wavelength calibration of the spectrometer (lamp lines: standard air)"}
    )
    fit_window_nm: tuple[float, float] = (308.0, 318.0)
    stray_window_nm: tuple[float, float] = (293.0, 296.0)
    registration: str = field(default="", metadata={"doc": "path of a 2x3 .npy matrix B->A; empty: identity"})
    camera_azimuth_deg: float = field(default=0.0, metadata=value_range(-360, 360))
    camera_elevation_deg: float = field(default=10.0, metadata=value_range(-90, 90))
    source_latitude_deg: float = field(default=-39.42, metadata=value_range(-90, 90))
    source_longitude_deg: float = field(default=-71.93, metadata=value_range(-180, 180))
    source_altitude_m: float = field(default=2847.0, metadata=value_range(-500, 9000))
    plume_distance_m: float = field(default=0.0, metadata=value_range(0, 1e6, "0: from geometry"))
    plume_distance_err_m: float = field(
        default=0.0, metadata=value_range(0, 1e6, "uncertainty of plume_distance_m; 0: 10 % assumed")
    )
    pcs_lines: tuple[tuple[int, int, int, int], ...] = ((400, 40, 400, 446),)
    pcs_line_gap_px: int = field(
        default=20, metadata=value_range(1, 1000, "offset of the second line for cross-correlation")
    )
    calibration_window_s: float = field(default=1800.0, metadata=value_range(10, 86_400))
    ring_buffer: int = field(default=64, metadata=value_range(2, 100_000))
    fov_frames: int = field(
        default=0,
        metadata=value_range(
            0, 1000,
            "Plume pairs matched to DOAS spectra the spectrometer's FOV search waits for: more give a surer FOV "
            "with noisy spectra (1.3 MB each at 648x486, held until the search); 0: ring_buffer, within 20-100",
        ),
    )  # fmt: skip
    xcorr_min_window_s: float = field(
        default=20.0,
        metadata=value_range(0, 86_400, XCORR_MIN_WINDOW_DOC),
    )
    velocity_method: Literal["flow", "xcorr", "sim_truth"] = "flow"
    pcs_line_normals: tuple[str, ...] = field(
        default=(), metadata={"doc": "per PCS line: 'left' or 'right' normal (pyplis LineOnImage); missing: right"}
    )
    sky_side: Literal["auto", "left", "right"] = field(
        default="auto", metadata={"doc": "image side with clear sky for background reference areas"}
    )
    wind_direction_deg: float | None = field(
        default=None,
        metadata=value_range(0, 360, "meteorological (from); unset: plume normal to the viewing direction"),
    )
    flow_pyrlevel: int = field(
        default=1,
        metadata=value_range(-2, 4, "Gauss pyramid level for optical flow (negative: upsampled small images)"),
    )
    default_calibration_slope: float = field(
        default=6.8e18, metadata=value_range(0, 1e21, "molecules/cm² per unit AA when neither DOAS nor cells calibrate")
    )
    cell_window: tuple[str, str] = field(
        default=("", ""),
        metadata={
            "doc": "gas cells among the plume images (no <N>ppmm names, e.g. pyplis's ECII data): UTC start and end "
            "(YYYY-mm-ddTHH:MM:SS) of the cell sequence; its frames are cells or clear sky, never plume"
        },
    )
    cell_columns: tuple[tuple[str, float, float], ...] = field(
        default=(), metadata={"doc": "cells of the cell_window: [id, column, column error] (molecules/cm²)"}
    )
    dilution_lines: tuple[tuple[int, int, int, int], ...] = field(
        default=(), metadata={"doc": "light dilution: terrain lines x0, y0, x1, y1 (pixels); empty: no correction"}
    )
    dilution_line_distances_m: tuple[tuple[float, float], ...] = field(
        default=(), metadata={"doc": "per dilution line: terrain distance (m) at its start and end"}
    )
    dilution_dem: str = field(
        default="",
        metadata={
            "doc": "light dilution: DEM (ESRI ASCII grid, lon/lat degrees, m) giving the dilution lines' distances"
        },
    )
    dilution_distance_map: str = field(
        default="", metadata={"doc": "light dilution: .npy terrain distance (m) per pixel, NaN off terrain"}
    )
    flat_field: str = field(
        default="",
        metadata={
            "doc": ".npy relative sensitivity per pixel of both cameras (vignetting, pyplis's vign_mask): each image "
            "is divided by it before its optical depth and the light-dilution fit, as pyplis corrects vignetting; "
            "empty: none"
        },
    )
    dilution_ambient_roi: tuple[int, int, int, int] = field(
        default=(0, 0, 40, 20), metadata={"doc": "light dilution: sky region x0, y0, x1, y1 for the ambient radiance"}
    )
    dilution_plume_aa_min: float = field(
        default=0.03, metadata=value_range(0, 10, "light dilution: pixels with AA above this are corrected")
    )
    calibration_through_origin: bool = field(
        default=True,
        metadata={
            "doc": "DOAS calibration S = slope·AA (True) or slope·AA + offset: an offset fitted over the plume's "
            "AA range would be extrapolated to every plume-free pixel of a PCS line"
        },
    )
