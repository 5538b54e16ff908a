"""Result files: emission-rate CSVs with the original's columns, the calibration series, a summary.

CSV files are appended row by row (flushed and fsynced), never rewritten, and a writer never adds a row whose
datetime is already in the file: a worker restarted after a crash cannot duplicate rows. A torn last line left by
a crash is cut off when the file is opened again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from controller.storage.atomic import atomic_write_text

EMISSION_COLUMNS = (
    "datetime", "flux_(kg/s)", "flux_err", "velo_eff_(m/s)", "velo_eff_err",
    "frac_optflow_ok", "frac_optflow_ok_ica", "ICA_mass_(kg/m)", "calibration",
)  # fmt: skip
# The original's eight columns, then ours: "calibration" is the method whose slope made that row's columns
# (doas, cells or default).
CALIBRATION_COLUMNS = (
    "datetime", "aa_fov", "doas_column_(molecules/cm2)", "doas_column_err", "slope_(molecules/cm2)",
    "slope_err", "offset_(molecules/cm2)", "offset_err", "mse", "r2", "method",
)  # fmt: skip
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def emission_header(line_id: str, method: str, ppmm: float, extra: dict[str, str] | None = None) -> list[str]:
    lines = [
        f"# PyCam Permanent emission rates, PCS line {line_id}, velocity method {method}",
        "# SO2 in kg/s; M_SO2 = 64.066e-3 kg/mol, N_A = 6.022e23 /mol; columns in molecules/cm2",
        f"# ppm·m conversion: 1 ppm·m = {ppmm:.4g} molecules/cm2",
    ]
    lines += [f"# {k}: {v}" for k, v in (extra or {}).items()]
    return lines


def fmt(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime(TIME_FORMAT)
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


class CsvSeries:
    """An append-only CSV with comment header lines, unique by its first column (datetime)."""

    def __init__(self, path: str | Path, columns: Sequence[str], header: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.keys: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load_and_repair()
        else:
            text = "".join(f"{h}\n" for h in header) + ",".join(self.columns) + "\n"
            atomic_write_text(self.path, text)

    def _load_and_repair(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A crash tore the last row: drop it (it is recomputed, the journal never marked it done).
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
            data = data[:cut]
        for raw in data.decode("utf-8").splitlines():
            if raw and not raw.startswith("#") and not raw.startswith(self.columns[0] + ","):
                self.keys.add(raw.split(",", 1)[0])

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def append(self, row: Sequence[object]) -> bool:
        """Append one row; False (and nothing written) when its key is already in the file."""
        cells = [fmt(v) for v in row]
        if cells[0] in self.keys:
            return False
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(",".join(cells) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.keys.add(cells[0])
        return True

    def __len__(self) -> int:
        return len(self.keys)


def emission_csv_name(line_id: str, method: str) -> str:
    return f"emission_rates_line{line_id}_{method}.csv"


def write_summary(path: str | Path, summary: dict) -> Path:
    return atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


def read_series(path: str | Path) -> dict[str, list]:
    """Read one of our CSVs back as columns (datetime parsed, numbers as float)."""
    cols: dict[str, list] = {}
    names: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            raw = raw.rstrip("\n")
            if not raw or raw.startswith("#"):
                continue
            cells = raw.split(",")
            if not names:
                names = cells
                cols = {n: [] for n in names}
                continue
            for n, c in zip(names, cells, strict=False):
                cols[n].append(_parse_cell(n, c))
    return cols


def _parse_cell(name: str, cell: str) -> object:
    if name in ("datetime", "Time"):
        try:
            return datetime.strptime(cell, TIME_FORMAT)
        except ValueError:
            return cell
    try:
        return float(cell)
    except ValueError:
        return cell
