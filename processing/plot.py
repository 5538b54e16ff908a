"""Daily plot (PNG): emission rate, plume speed and calibration of one day (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from controller.storage.atomic import atomic_write_with  # noqa: E402


def daily_plots(out: Path, results: Sequence, cal_rows: Sequence[tuple], method: str) -> list[Path]:
    """One `plot_YYYY-MM-DD.png` per day in `results` (PairResult list); returns the files written."""
    days = sorted({r.time.date() for r in results})
    return [_plot_day(out, day, [r for r in results if r.time.date() == day], cal_rows, method) for day in days]


def _plot_day(out: Path, day, results: Sequence, cal_rows: Sequence[tuple], method: str) -> Path:
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    series: dict[tuple[str, str], list] = {}
    for res in results:
        for r in res.lines:
            series.setdefault((r.line_id, r.method), []).append((res.time, r.flux, r.flux_err, r.velocity.v_eff))
    for (line_id, m), pts in sorted(series.items()):
        t = [p[0] for p in pts]
        style = "-" if m == method else ":"
        axes[0].errorbar(t, [p[1] for p in pts], yerr=[p[2] for p in pts], fmt=style, label=f"line {line_id} {m}")
        axes[1].plot(t, [p[3] for p in pts], style, label=f"line {line_id} {m}")
    day_cal = [r for r in cal_rows if r[0].date() == day]
    if day_cal:
        axes[2].plot([r[0] for r in day_cal], [r[4] for r in day_cal], "o-", label="slope (molecules/cm² per AA)")
    axes[0].set_ylabel("SO2 emission rate (kg/s)")
    axes[1].set_ylabel("plume speed (m/s)")
    axes[2].set_ylabel("calibration slope")
    axes[2].set_xlabel("time (UTC)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"PyCam SO2 emission rates {day.isoformat()}")
    fig.autofmt_xdate()
    path = out / f"plot_{day.isoformat()}.png"
    atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=80))
    plt.close(fig)
    return path
