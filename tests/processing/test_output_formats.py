"""Output files keep the original PyCam's column names (existing tools read them) and state the one ppm·m factor."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from processing.doas import DOAS_CSV_COLUMNS, DoasResult, write_doas_results
from processing.outputs import EMISSION_COLUMNS, CsvSeries, emission_header

ORIGINAL_EMISSION_COLUMNS = [
    "datetime", "flux_(kg/s)", "flux_err", "velo_eff_(m/s)", "velo_eff_err",
    "frac_optflow_ok", "frac_optflow_ok_ica", "ICA_mass_(kg/m)",
]  # fmt: skip
ORIGINAL_DOAS_COLUMNS = ["Time", "Column density", "CD error", "LDF"]


def test_emission_csv_starts_with_the_originals_eight_columns_and_states_the_factor(tmp_path: Path):
    assert list(EMISSION_COLUMNS[:8]) == ORIGINAL_EMISSION_COLUMNS
    path = tmp_path / "emission_rates_line1_flow.csv"
    series = CsvSeries(path, EMISSION_COLUMNS, emission_header("1", "flow", 2.504e15))
    series.append([datetime(2024, 1, 1, 12, tzinfo=UTC), 3.5, 0.4, 8.0, 0.5, 0.9, 0.8, 120.0, "doas"])
    text = path.read_text()
    assert "1 ppm·m = 2.504e+15 molecules/cm2" in text
    frame = pd.read_csv(path, comment="#")
    assert list(frame.columns[:8]) == ORIGINAL_EMISSION_COLUMNS
    assert frame["flux_(kg/s)"].iloc[0] == 3.5


def test_doas_csv_has_the_originals_columns_and_states_the_factor(tmp_path: Path):
    assert list(DOAS_CSV_COLUMNS) == ORIGINAL_DOAS_COLUMNS
    result = DoasResult(
        time=datetime(2019, 5, 29, 12, 44, 7, tzinfo=UTC), so2=5.2e18, so2_err=1.9e17, o3=0.0, ring=0.0,
        shift_nm=0.0, stretch=0.0, offset=0.0, rms_residual=0.02, chi2_reduced=1.0, n_points=100, nfev=14,
        success=True, ppmm_factor=2.504e15, stray_light=0.0,
    )  # fmt: skip
    path = write_doas_results(tmp_path / "doas_results.csv", [result], 2.504e15)
    assert "1 ppm.m = 2.504e+15 molecules/cm2" in path.read_text()
    frame = pd.read_csv(path, comment="#")
    assert list(frame.columns) == ORIGINAL_DOAS_COLUMNS
    assert frame["Column density"].iloc[0] == 5.2e18


def test_one_ppmm_factor_in_the_processing_code(repo_root: Path):
    """Known failure: three different ppm·m factors were used. The config's 2.504e15 is the one; no other appears."""
    literal = re.compile(r"\b2\.(?:5|50|687|69|7|68)e\+?15\b", re.IGNORECASE)
    found = [
        f"{p.relative_to(repo_root)}:{n}"
        for folder in ("processing", "controller")
        for p in sorted((repo_root / folder).rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert found == [], f"other ppm·m factors than cfg.processing.ppmm_to_molecules_cm2: {found}"
