"""Calibration of apparent absorbance (AA) to SO2 columns: S = slope · AA + offset (molecules/cm²).

- `base`: the `Calibration` a pair is processed with, the configured default slope, the weighted line fit;
- `cells`: gas cells against clear sky (as pyplis's CellCalibEngine), saved in pyplis's CellCalibData format too;
- `doas`: the mean AA in the spectrometer's field of view against DOAS columns over a rolling window.

Nothing here imports processing.pipeline (the pipeline imports this package).
"""

from processing.calibration.base import Calibration, LinearFit, default_calibration, weighted_linear_fit
from processing.calibration.cells import (
    CellCalibration,
    CellMeasurement,
    cell_calibration,
    cell_calibration_from_folder,
    cell_calibration_from_scan,
    save_pyplis_cell_calib,
)
from processing.calibration.doas import (
    DOAS_MIN_R2,
    CalibrationPoint,
    DoasCalibration,
    PlumeFrame,
    save_pyplis_doas_calib,
    usable,
    write_calibration_series,
)

__all__ = [
    "DOAS_MIN_R2",
    "Calibration",
    "CalibrationPoint",
    "CellCalibration",
    "CellMeasurement",
    "DoasCalibration",
    "LinearFit",
    "PlumeFrame",
    "cell_calibration",
    "cell_calibration_from_folder",
    "cell_calibration_from_scan",
    "default_calibration",
    "save_pyplis_cell_calib",
    "save_pyplis_doas_calib",
    "usable",
    "weighted_linear_fit",
    "write_calibration_series",
]
