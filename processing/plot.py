"""Daily plot (PNG): emission rate with error bars, plume speed and the calibration of one day (matplotlib, Agg).

Drawn from the day's CSVs (processing.daily), so the worker's hourly refresh and `pycam process` draw the same plot.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from controller.storage.atomic import atomic_write_with  # noqa: E402

CAL_COLOURS = {"doas": "tab:green", "cells": "tab:blue", "default": "tab:red"}


def daily_plot(path: Path, day: str, series: dict[tuple[str, str], dict], cal: dict, method: str) -> Path:
    """`series`: (line id, velocity method) -> columns of its emission CSV; `cal`: the calibration series columns.

    Three panels sharing the UTC time axis: emission rate (kg/s, error bars), plume speed (m/s), and the calibration
    slope of the DOAS points with the method that calibrated each pair's row."""
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for (line_id, m), rows in sorted(series.items()):
        t = rows.get("datetime", [])
        if not t:
            continue
        style = "-" if m == method else ":"
        label = f"line {line_id} {m}"
        axes[0].errorbar(t, rows["flux_(kg/s)"], yerr=rows["flux_err"], fmt=style, capsize=2, label=label)
        axes[1].errorbar(t, rows["velo_eff_(m/s)"], yerr=rows["velo_eff_err"], fmt=style, capsize=2, label=label)
        if m == method and "calibration" in rows:
            for cm, colour in CAL_COLOURS.items():
                sel = [x for x, c in zip(t, rows["calibration"], strict=False) if c == cm]
                if sel:
                    axes[2].plot(sel, [0] * len(sel), "|", color=colour, markersize=12, label=f"rows: {cm}")
    if cal.get("datetime"):
        ax = axes[2].twinx()
        ax.plot(cal["datetime"], cal["slope_(molecules/cm2)"], "o-", color="tab:green", ms=3,
                label="DOAS slope")  # fmt: skip
        ax.set_ylabel("DOAS slope (molecules/cm² per AA)")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("SO2 emission rate (kg/s)")
    axes[1].set_ylabel("plume speed (m/s)")
    axes[2].set_ylabel("calibration used")
    axes[2].set_yticks([])
    axes[2].set_xlabel("time (UTC)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"PyCam SO2 emission rates {day} (UTC)")
    fig.autofmt_xdate()
    atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=80))
    plt.close(fig)
    return path
