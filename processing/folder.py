"""`pycam process FOLDER`: a folder of images and spectra to emission rates, through the worker's own stream
(processing.stream), and the run's summary."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from controller.config import Config
from controller.logging import get_logger
from processing.calibration.cellsearch import assign_cell_window
from processing.images import scan_folder
from processing.outputs import write_summary
from processing.pairing import ImagePair, pair_images
from processing.pipeline import quiet_pyplis

log = get_logger("processing.folder")


def process_folder(
    folder: str | Path,
    cfg: Config,
    out: str | Path,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict:
    """Process every pair and spectrum in `folder` through processing.stream (the worker's path, fed in time
    order); write CSVs, calibration series, daily products, plot and summary to `out`."""
    from processing.stream import Stream, item_order

    quiet_pyplis()
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_folder(folder)
    cell_window = assign_cell_window(scan, cfg.processing)  # cells among plume images (processing.cell_window)
    pairs, unpaired = pair_images(scan.plume, cfg.processing.pair_tolerance_s)
    log.info("scan", folder=str(folder), pairs=len(pairs), unpaired=len(unpaired), **scan.counts())
    stream = Stream(cfg, out)
    stream.setup(scan)
    items = [item for _, _, item in item_order(pairs, scan.spectra)]
    for item in progress(items) if progress is not None else items:
        if isinstance(item, ImagePair):
            stream.add_pair(item)
        else:
            stream.add_spectrum(item.path, item.name)
    products = stream.flush()
    setup = stream.processor.setup
    processor = stream.processor
    days = stream.days.seen if stream.days is not None else []
    from processing.daily import day_summary
    from processing.plot import daily_plot

    plots, mean_flux, methods = [], {}, Counter()
    for day in days:  # the day's plot also at the top of OUT, where `pycam process` always put it
        summary_day, series, cal = day_summary(cfg, stream.days.folder(day), day, stream.extra)
        plots.append(daily_plot(out / f"plot_{day}.png", day, series, cal, cfg.processing.velocity_method).name)
        methods.update(summary_day["calibration_pairs"])
        for line, per_method in summary_day["lines"].items():
            for m, st in per_method.items():
                mean_flux.setdefault(f"{line}_{m}", []).append((st["rows"], st["emission_rate_kg_s"]["mean"]))
    status = stream.status()
    cal_method = methods.most_common(1)[0][0] if methods else stream.fallback.method
    summary = {
        "folder": str(folder),
        "out": str(out),
        "pairs": len(pairs),
        "unpaired_images": len(unpaired),
        "not_plume_images": {
            "dark": len(scan.darks), "clear": len(scan.clears), "cell": len(scan.cells), "test": len(scan.tests),
        },
        "darks": [f"{b}:{s}us" for b, s in setup.darks.keys()],
        "dark_spectra": len(scan.dark_spectra),
        "background": setup.background.description,
        "background_mode": setup.background.mode,
        "registration": setup.registration.source,
        "calibration": _calibration_description(stream, cal_method),
        "calibration_method": cal_method,
        "calibration_pairs": dict(methods),
        "geometry": processor.geometry.method if processor.geometry else None,
        "pixel_size_m": processor.geometry.pixel_size_m() if processor.geometry else None,
        "plume_distance_m": processor.geometry.plume_distance_m if processor.geometry else None,
        "emission_rows": stream.writer.rows,
        "emission_files": sorted(str(s.path.name) for s in stream.writer.files.values()),
        "light_dilution": processor.dilution_state(),
        "cell_window": cell_window,
        "spectra": len(scan.spectra),
        "doas_spectra": stream.doas_count,
        "daily_products": sorted(str(p.relative_to(out)) for p in products),
        "plots": plots,
    }  # fmt: skip
    if "fov" in status:
        summary["fov"] = status["fov"]
    if stream.livecal is not None:
        summary["calibration_points_usable"] = len(stream.livecal.points)
    summary["mean_flux_kg_s"] = {
        k: float(np.average([m for _, m in v], weights=[n for n, _ in v])) for k, v in mean_flux.items()
        if sum(n for n, _ in v) > 0
    }  # fmt: skip
    write_summary(out / "summary.json", summary)
    return summary


def _calibration_description(stream, method: str) -> str:  # noqa: ANN001 - processing.stream.Stream
    """The calibration of the run: the DOAS one (FOV, points) when it calibrated most pairs, else the fallback."""
    from processing.livecal import point_calibration

    cal = stream.livecal
    if method != "doas" or cal is None or cal.newest is None:
        return stream.fallback.description
    fov = cal.dcal.fov
    slopes = [p.fit.slope for p in cal.points]
    where = f"FOV x {fov.cx} y {fov.cy} r {fov.radius} px (r {fov.disk_corr:.2f}); " if fov is not None else ""
    window = stream.cfg.processing.calibration_window_s
    last = point_calibration(cal.newest)
    return dataclasses.replace(
        last, detail=f"{where}rolling {window:g} s window, point at or before each pair, median slope "
        f"{np.median(slopes):.4g}",
    ).description  # fmt: skip
