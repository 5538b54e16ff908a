"""Result files: CSVs that the observatories' tools read unchanged, with a metadata sidecar.

Every CSV loads with `pandas.read_csv(path)` and its defaults, as the original PyCam's loaders read them: the column
names are the first line (no comment lines), the original's column names, times UTC written `%Y-%m-%d %H:%M:%S`.
Units, constants and provenance go to a sidecar `NAME.meta.json` next to `NAME.csv` (spec/file-formats.md).

CSV files are appended row by row (flushed and fsynced), never rewritten, and a writer never adds a row whose
datetime is already in the file: a worker restarted after a crash cannot duplicate rows. A torn last line left by
a crash is cut off when the file is opened again.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from controller.storage.atomic import atomic_write_text

EMISSION_COLUMNS = (
    "datetime", "flux_(kg/s)", "flux_err", "velo_eff_(m/s)", "velo_eff_err",
    "frac_optflow_ok", "frac_optflow_ok_ica", "ICA_mass_(kg/m)", "calibration", "ext_A_(1/m)", "ext_B_(1/m)",
)  # fmt: skip
# The original's eight columns, then ours: "calibration" is the method whose slope made that row's columns
# (doas, cells or default); ext_A/ext_B the light-dilution extinction coefficients of the pair (nan: not
# corrected, see the sidecar's light_dilution).
CALIBRATION_COLUMNS = (
    "datetime", "aa_fov", "doas_column_(molecules/cm2)", "doas_column_err", "slope_(molecules/cm2)",
    "slope_err", "offset_(molecules/cm2)", "offset_err", "mse", "r2", "method",
)  # fmt: skip
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TIME_NOTE = f"UTC, {TIME_FORMAT}"
# The emission equation's constants (processing.emission uses the same numbers).
EMISSION_CONSTANTS = {"M_SO2_kg_per_mol": 64.066e-3, "N_A_per_mol": 6.022e23}
EMISSION_UNITS = {
    "datetime": TIME_NOTE, "flux_(kg/s)": "kg/s", "flux_err": "kg/s (1 sigma)", "velo_eff_(m/s)": "m/s",
    "velo_eff_err": "m/s (1 sigma)", "frac_optflow_ok": "fraction", "frac_optflow_ok_ica": "fraction",
    "ICA_mass_(kg/m)": "kg/m", "calibration": "method (doas, cells, default)",
    "ext_A_(1/m)": "1/m (light dilution, on-band; nan: not corrected)",
    "ext_B_(1/m)": "1/m (light dilution, off-band; nan: not corrected)",
}  # fmt: skip
CALIBRATION_UNITS = {
    "datetime": TIME_NOTE, "aa_fov": "apparent absorbance", "doas_column_(molecules/cm2)": "molecules/cm2",
    "doas_column_err": "molecules/cm2", "slope_(molecules/cm2)": "molecules/cm2 per AA",
    "slope_err": "molecules/cm2 per AA", "offset_(molecules/cm2)": "molecules/cm2", "offset_err": "molecules/cm2",
    "mse": "(molecules/cm2)^2", "r2": "1", "method": "doas, cells or default",
}  # fmt: skip


def meta_path(csv_path: str | Path) -> Path:
    """The sidecar of `NAME.csv`: `NAME.meta.json`."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".meta.json")


def write_meta(csv_path: str | Path, meta: Mapping) -> Path:
    """Write the sidecar of a CSV (atomically)."""
    return atomic_write_text(
        meta_path(csv_path), json.dumps(dict(meta), indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    )


def read_meta(csv_path: str | Path) -> dict:
    return json.loads(meta_path(csv_path).read_text(encoding="utf-8"))


def csv_meta(
    what: str, ppmm: float, units: Mapping[str, str] | None = None, provenance: Mapping | None = None, **extra
) -> dict:
    """The sidecar's content: what the file is, units per column, the one ppm·m factor, provenance."""
    return {
        "file": what,
        "time": TIME_NOTE,
        "units": dict(units or {}),
        "ppmm_to_molecules_cm2": ppmm,
        "ppmm_note": f"ppm·m conversion: 1 ppm·m = {ppmm:.4g} molecules/cm2",
        "provenance": {"software": "PyCam Permanent", **dict(provenance or {})},
        **extra,
    }


def emission_meta(line_id: str, method: str, ppmm: float, extra: Mapping[str, object] | None = None) -> dict:
    return csv_meta(
        f"emission rates, PCS line {line_id}, velocity method {method}", ppmm, EMISSION_UNITS, extra,
        constants=EMISSION_CONSTANTS, columns_note="SO2 columns in molecules/cm2",
    )  # fmt: skip


# the old name: the header of an emission CSV is now its sidecar
emission_header = emission_meta


def fmt_time(value: datetime) -> str:
    """UTC, '%Y-%m-%d %H:%M:%S' (a naive datetime is taken as UTC already)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime(TIME_FORMAT)


def fmt(value: object) -> str:
    if isinstance(value, datetime):
        return fmt_time(value)
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _as_meta(header: Mapping | Sequence[str] | None) -> dict | None:
    """Old callers pass comment lines ('# ...'): they go to the sidecar as notes."""
    if header is None:
        return None
    if isinstance(header, Mapping):
        return dict(header)
    notes = [h.lstrip("#").strip() for h in header]
    return {"time": TIME_NOTE, "notes": notes} if notes else None


class CsvSeries:
    """An append-only CSV (header line first, nothing before it), unique by its first column (datetime), with its
    sidecar `NAME.meta.json` (`meta`: a dict, or the old comment lines, which become its notes)."""

    def __init__(self, path: str | Path, columns: Sequence[str], meta: Mapping | Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.keys: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load_and_repair()
        else:
            atomic_write_text(self.path, ",".join(self.columns) + "\n")
        meta = _as_meta(meta)
        if meta is not None:
            write_meta(self.path, {**meta, "columns": list(self.columns)})

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


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[object]], meta: Mapping) -> Path:
    """Write a whole CSV atomically (header line first) and its sidecar."""
    buf = io.StringIO()
    buf.write(",".join(columns) + "\n")
    for row in rows:
        buf.write(",".join(fmt(v) for v in row) + "\n")
    out = atomic_write_text(path, buf.getvalue())
    write_meta(out, {**dict(meta), "columns": list(columns)})
    return out


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
