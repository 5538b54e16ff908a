"""Output files keep the original PyCam's column names and load unchanged in the observatories' tools.

Every CSV loads with `pandas.read_csv` defaults (no lines before the header) and with the original PyCam's own
loaders; units, constants and the one ppm·m factor are in the sidecar NAME.meta.json (spec/file-formats.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from processing.doas import DOAS_CSV_COLUMNS, DoasResult, write_doas_results
from processing.outputs import EMISSION_COLUMNS, CsvSeries, emission_header, meta_path, read_meta

ORIGINAL_EMISSION_COLUMNS = [
    "datetime", "flux_(kg/s)", "flux_err", "velo_eff_(m/s)", "velo_eff_err",
    "frac_optflow_ok", "frac_optflow_ok_ica", "ICA_mass_(kg/m)",
]  # fmt: skip
ORIGINAL_DOAS_COLUMNS = ["Time", "Column density", "CD error", "LDF"]


def original_doas_loader(path: Path) -> pd.DataFrame:
    """The original PyCam's DOAS loader: read_csv with defaults, then these columns, Time in this format."""
    df = pd.read_csv(path)
    df = df[["Time", "Column density", "CD error", "LDF"]]
    df["Time"] = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in df["Time"]]
    return df


def _doas_result(time: datetime) -> DoasResult:
    return DoasResult(
        time=time, so2=5.2e18, so2_err=1.9e17, o3=0.0, ring=0.0,
        shift_nm=0.0, stretch=0.0, offset=0.0, rms_residual=0.02, chi2_reduced=1.0, n_points=100, nfev=14,
        success=True, ppmm_factor=2.504e15, stray_light=0.0,
    )  # fmt: skip


def test_emission_csv_starts_with_the_originals_eight_columns_and_states_the_factor(tmp_path: Path):
    assert list(EMISSION_COLUMNS[:8]) == ORIGINAL_EMISSION_COLUMNS
    path = tmp_path / "emission_rates_line1_flow.csv"
    series = CsvSeries(path, EMISSION_COLUMNS, emission_header("1", "flow", 2.504e15))
    series.append([datetime(2024, 1, 1, 12, tzinfo=UTC), 3.5, 0.4, 8.0, 0.5, 0.9, 0.8, 120.0, "doas"])
    text = meta_path(path).read_text()
    assert "1 ppm·m = 2.504e+15 molecules/cm2" in text
    frame = pd.read_csv(path, comment="#")
    assert list(frame.columns[:8]) == ORIGINAL_EMISSION_COLUMNS
    assert frame["flux_(kg/s)"].iloc[0] == 3.5
    # pandas defaults, no comment handling: the header is the first line
    plain = pd.read_csv(path)
    assert list(plain.columns[:8]) == ORIGINAL_EMISSION_COLUMNS and len(plain) == 1
    assert plain["datetime"].iloc[0] == "2024-01-01 12:00:00"
    meta = read_meta(path)
    assert meta["units"]["flux_(kg/s)"] == "kg/s" and "UTC" in meta["time"]
    assert meta["constants"]["M_SO2_kg_per_mol"] == 64.066e-3


def test_doas_csv_has_the_originals_columns_and_states_the_factor(tmp_path: Path):
    assert list(DOAS_CSV_COLUMNS) == ORIGINAL_DOAS_COLUMNS
    result = _doas_result(datetime(2019, 5, 29, 12, 44, 7, tzinfo=UTC))
    path = write_doas_results(tmp_path / "doas_results.csv", [result], 2.504e15)
    assert "1 ppm·m = 2.504e+15 molecules/cm2" in meta_path(path).read_text()
    frame = pd.read_csv(path, comment="#")
    assert list(frame.columns) == ORIGINAL_DOAS_COLUMNS
    assert frame["Column density"].iloc[0] == 5.2e18


def test_doas_csv_loads_with_the_originals_loader_times_in_utc(tmp_path: Path):
    """Known incompatibility (issue 13): comment lines before the header and ISO times with an offset."""
    local = timezone(timedelta(hours=-4))
    t = datetime(2019, 5, 29, 8, 44, 7, tzinfo=local)  # 12:44:07 UTC
    path = write_doas_results(tmp_path / "doas_results.csv", [_doas_result(t)], 2.504e15)
    assert path.read_text().splitlines()[0] == "Time,Column density,CD error,LDF"
    df = original_doas_loader(path)
    assert df["Time"].iloc[0] == datetime(2019, 5, 29, 12, 44, 7)
    assert df["Column density"].iloc[0] == 5.2e18 and df["LDF"].iloc[0] == 0
    # a CsvSeries (the worker's DOAS file) with old-style comment lines puts them in the sidecar, not the CSV
    series_path = tmp_path / "worker" / "doas_results.csv"
    series = CsvSeries(series_path, DOAS_CSV_COLUMNS, ["# SO2 column density in molecules/cm2"])
    series.append((t, 5.2e18, 1.9e17, 0.0))
    assert original_doas_loader(series_path)["Time"].iloc[0] == datetime(2019, 5, 29, 12, 44, 7)
    assert read_meta(series_path)["notes"] == ["SO2 column density in molecules/cm2"]


def test_every_csv_of_a_processing_run_loads_with_pandas_defaults(repo_root: Path, shared_data: Path, tmp_path):
    from controller.config import load_config
    from processing.folder import process_folder

    cfg = load_config(repo_root / "conf" / "villarrica.toml")
    out = tmp_path / "out"
    process_folder(shared_data / "villarrica-2018-03-26", cfg, out)
    csvs = sorted(out.glob("*.csv"))
    assert any(p.name.startswith("emission_rates_") for p in csvs)
    for path in csvs:
        frame = pd.read_csv(path)
        first = frame.columns[0]
        assert first in ("datetime", "Time"), path.name
        for value in frame[first]:
            datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        meta = read_meta(path)
        assert meta["columns"] == list(frame.columns) and "UTC" in meta["time"], path.name


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
