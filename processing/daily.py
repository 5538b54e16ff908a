"""Daily products, the same for the worker and `pycam process`: per day (UTC), under `OUT/daily/YYYY-MM-DD/`,

- per PCS line and velocity method an emission-rate CSV (`emission_rates_line<ID>_<method>.csv`, the columns of
  processing.outputs, one row per pair with a speed),
- `pairs.csv`: every pair processed that day with the calibration that made its columns,
- `calibration_series.csv`: the day's DOAS calibration points,
- `plot_YYYY-MM-DD.png`: emission rate with error bars, plume speed, the calibration used (processing.plot),
- `summary_YYYY-MM-DD.json`: per line and method mean, standard deviation, min and max in kg/s and t/d, rows,
  the fraction of pairs with a valid plume speed, the calibration method(s), the light-dilution state, and the
  data coverage of the day's acquisition windows.

The CSVs grow row by row (append-only, unique by time, so a restarted worker neither loses nor doubles rows); the
plot and the summary are rewritten from them (atomically) when the data has moved on PRODUCTS_EVERY_S (hourly)
and when the input ends (`write_all`: the worker's drain in the process phase, the end of `pycam process`).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from controller.config import Config
from controller.logging import get_logger
from processing.outputs import CALIBRATION_COLUMNS, CsvSeries, read_series, write_summary

log = get_logger("processing.daily")

PRODUCTS_EVERY_S = 3600.0
KG_S_TO_T_D = 86400.0 / 1000.0
PAIR_COLUMNS = ("datetime", "calibration", "slope_(molecules/cm2)", "offset_(molecules/cm2)", "rows")
DAYS_KEPT = 2  # days with open writers (a window never spans more than midnight once)


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


class DailyProducts:
    def __init__(self, cfg: Config, out: Path, extra: dict[str, str], processor) -> None:  # noqa: ANN001
        self.cfg = cfg
        self.processor = processor  # processing.pipeline.PairProcessor (its light-dilution state)
        self.root = Path(out) / "daily"
        self.extra = extra
        self._writers: dict[str, object] = {}
        self._pairs: dict[str, CsvSeries] = {}
        self._cal: dict[str, CsvSeries] = {}
        self._last: dict[str, datetime] = {}
        self.seen: list[str] = []

    def folder(self, day: str) -> Path:
        return self.root / day

    def _open(self, day: str) -> None:
        from processing.pipeline import ResultWriter

        if day in self._writers:
            return
        folder = self.folder(day)
        self._writers[day] = ResultWriter(folder, self.cfg, self.processor, self.extra)
        self._pairs[day] = CsvSeries(folder / "pairs.csv", PAIR_COLUMNS)
        self._cal[day] = CsvSeries(folder / "calibration_series.csv", CALIBRATION_COLUMNS)
        self.seen.append(day)
        for old in sorted(self._writers)[:-DAYS_KEPT]:
            for d in (self._writers, self._pairs, self._cal):
                d.pop(old, None)

    def add(self, result, calibration) -> None:  # noqa: ANN001 - PairResult, Calibration
        """One processed pair (its rows and the calibration that made its columns)."""
        t = _naive(result.time)
        day = t.date().isoformat()
        self._open(day)
        rows = self._writers[day].write(result)
        c = calibration
        self._pairs[day].append((t, c.method, c.slope, c.offset, rows))
        last = self._last.setdefault(day, t)
        if (t - last).total_seconds() >= PRODUCTS_EVERY_S:
            self.write(day)

    def calibration_row(self, row: tuple) -> None:
        day = _naive(row[0]).date().isoformat()
        self._open(day)
        self._cal[day].append((_naive(row[0]), *row[1:]))

    def write_all(self) -> list[Path]:
        """The products of the days seen, and of the newest days on disk (a worker restarted after its last pair
        still writes them at the drain)."""
        on_disk = sorted(p.name for p in self.root.glob("????-??-??") if p.is_dir())[-DAYS_KEPT:]
        files = []
        for day in sorted(set(self.seen) | set(on_disk)):
            files += self.write(day)
        return files

    def write(self, day: str) -> list[Path]:
        """The plot and summary of `day` from its CSVs (atomic); returns them."""
        folder = self.folder(day)
        if not folder.is_dir():
            return []
        extra = {**self.extra, "light_dilution": self.processor.dilution_state()}
        summary, series, cal = day_summary(self.cfg, folder, day, extra)
        from processing.plot import daily_plot

        plot = daily_plot(folder / f"plot_{day}.png", day, series, cal, self.cfg.processing.velocity_method)
        summary["plot"] = plot.name
        path = write_summary(folder / f"summary_{day}.json", summary)
        self._last[day] = datetime.fromisoformat(summary["last_pair_utc"]) if summary["last_pair_utc"] else None
        if self._last[day] is None:
            self._last.pop(day)
        log.info("daily_products", day=day, pairs=summary["pairs_processed"], folder=str(folder))
        return [path, plot]


def _stats(values: np.ndarray) -> dict[str, float | None]:
    def r(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    if values.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": r(values.mean()), "std": r(values.std(ddof=1) if values.size > 1 else 0.0),
            "min": r(values.min()), "max": r(values.max())}  # fmt: skip


def expected_slots(cfg: Config, day: str) -> int:
    """Capture slots in the day's acquisition windows (`schedule.windows_utc`, `schedule.period_s`)."""
    total = 0.0
    for start, end in cfg.schedule.windows_utc:
        h0, m0 = (int(x) for x in start.split(":"))
        h1, m1 = (int(x) for x in end.split(":"))
        total += max(0.0, (h1 * 60 + m1) - (h0 * 60 + m0)) * 60.0
    return int(total // cfg.schedule.period_s)


def day_summary(cfg: Config, folder: Path, day: str, extra: dict[str, str]) -> tuple[dict, dict, dict]:
    """(summary, emission series per (line, method), calibration series) of one day's folder."""
    pairs = read_series(folder / "pairs.csv") if (folder / "pairs.csv").exists() else {}
    n_pairs = len(pairs.get("datetime", []))
    times = pairs.get("datetime", [])
    series: dict[tuple[str, str], dict] = {}
    lines: dict[str, dict] = {}
    for path in sorted(folder.glob("emission_rates_line*_*.csv")):
        line_id, method = path.stem.removeprefix("emission_rates_line").rsplit("_", 1)
        rows = read_series(path)
        series[(line_id, method)] = rows
        flux = np.asarray(rows.get("flux_(kg/s)", []), dtype=np.float64)
        flux = flux[np.isfinite(flux)]
        kg = _stats(flux)
        methods = Counter(str(m) for m in rows.get("calibration", []))
        lines.setdefault(f"line{line_id}", {})[method] = {
            "rows": int(flux.size),
            "emission_rate_kg_s": kg,
            "emission_rate_t_d": {k: (None if v is None else v * KG_S_TO_T_D) for k, v in kg.items()},
            "plume_speed_m_s_mean": _stats(np.asarray(rows.get("velo_eff_(m/s)", []), dtype=np.float64))["mean"],
            "fraction_valid_flow": round(flux.size / n_pairs, 4) if n_pairs else None,
            "calibration_rows": dict(methods),
            "calibration_method": methods.most_common(1)[0][0] if methods else None,
        }
    cal = read_series(folder / "calibration_series.csv") if (folder / "calibration_series.csv").exists() else {}
    slots = expected_slots(cfg, day)
    pair_methods = Counter(str(m) for m in pairs.get("calibration", []))
    summary = {
        "day": day,
        "generated_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "pairs_processed": n_pairs,
        "first_pair_utc": min(times).isoformat() if times else None,
        "last_pair_utc": max(times).isoformat() if times else None,
        "coverage": {
            "slots_in_windows": slots,
            "pairs_processed": n_pairs,
            "fraction": round(n_pairs / slots, 4) if slots else None,
            "windows_utc": [list(w) for w in cfg.schedule.windows_utc],
            "period_s": cfg.schedule.period_s,
        },  # fmt: skip
        "lines": lines,
        "calibration_method": pair_methods.most_common(1)[0][0] if pair_methods else None,
        "calibration_pairs": dict(pair_methods),
        "calibration": extra.get("calibration", ""),
        "calibration_points": len(cal.get("datetime", [])),
        "light_dilution": extra.get("light_dilution", "not corrected"),
        "background": extra.get("background", ""),
        "units": {
            "emission_rate": "kg/s and t/d (1 kg/s = 86.4 t/d)",
            "plume_speed": "m/s",
            "columns": "molecules/cm2",
            "time": "UTC",
        },  # fmt: skip
        "ppmm_to_molecules_cm2": cfg.processing.ppmm_to_molecules_cm2,
        "velocity_method": cfg.processing.velocity_method,
    }
    return summary, series, cal
