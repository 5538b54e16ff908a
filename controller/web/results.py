"""What the status page shows from disk: the newest A/B images (and a quick-look AA; which ones, the data store's
index says: no listing or parsing of the date folders here), the day's products written by the processing worker
(plot PNG, summary JSON, emission-rate CSVs) and the DOAS column series.

Everything here reads files and runs OpenCV: the web service calls it in an executor, never on the event loop.
"""

from __future__ import annotations

import csv
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from controller.storage.atomic import TEMP_PREFIX
from controller.storage.index import StoreIndex

DAY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_ROWS = 5000  # rows of one day's series returned by the API (a 1 s station day thinned to this)


def latest_images(index: StoreIndex | None) -> dict[str, Path]:
    """The newest Plume image of each band, and the newest slot with both (keys A, B, pair_A, pair_B), from the
    data store's records (no listing of the date folders; none before the store is open)."""
    if index is None:
        return {}
    return {key: index.path(name) for key, name in index.latest_plume().items()}


def _read16(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"{path}: not a readable image")
    return img.astype(np.float32)


def _to_png(img: np.ndarray, size_px: int, colormap: int | None = None) -> bytes:
    """Stretch to 8 bit (1st-99th percentile), scale so the longest side is size_px, encode PNG (OpenCV)."""
    import cv2

    lo, hi = np.nanpercentile(img, (1, 99)) if np.isfinite(img).any() else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(img, nan=lo) - lo) / max(hi - lo, 1e-9) * 255.0, 0, 255).astype(np.uint8)
    h, w = scaled.shape[:2]
    f = size_px / max(h, w)
    if f < 1:
        scaled = cv2.resize(scaled, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    if colormap is not None:
        scaled = cv2.applyColorMap(scaled, colormap)
    ok, buf = cv2.imencode(".png", scaled)
    if not ok:
        raise OSError("OpenCV could not encode the thumbnail")
    return buf.tobytes()


def quicklook_aa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quick-look apparent absorbance log10(B/A), each band normalised by its median (no dark or background model:
    the worker's AA feeds the emission rates; this one only shows where the plume is)."""
    a = np.maximum(a, 1.0) / max(float(np.median(a)), 1.0)
    b = np.maximum(b, 1.0) / max(float(np.median(b)), 1.0)
    if a.shape != b.shape:
        import cv2

        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return np.log10(b / a)


class Thumbnails:
    """Thumbnail PNGs of the newest images, cached by their source files (re-made only when a new slot lands)."""

    def __init__(self, files: Callable[[], StoreIndex | None], size_px: int):
        self._files = files  # the data store's index, once the store is open
        self.size_px = size_px
        self._cache: dict[str, tuple[tuple, bytes, str]] = {}
        self._lock = threading.Lock()

    def available(self) -> dict[str, str | None]:
        """The source file of each thumbnail (A, B, AA: the A of the newest pair), None when there is none yet."""
        latest = latest_images(self._files())
        return {
            k: (latest[src].name if src in latest else None) for k, src in (("A", "A"), ("B", "B"), ("AA", "pair_A"))
        }

    def get(self, which: str) -> tuple[bytes, str] | None:
        """(PNG bytes, source file name) of the A, B or AA thumbnail, or None when there is no image yet."""
        import cv2

        latest = latest_images(self._files())
        sources = [latest.get("pair_A"), latest.get("pair_B")] if which == "AA" else [latest.get(which)]
        if not all(sources):
            return None
        key = tuple((str(p), p.stat().st_mtime_ns) for p in sources)
        with self._lock:
            hit = self._cache.get(which)
            if hit is not None and hit[0] == key:
                return hit[1], hit[2]
        if which == "AA":
            png = _to_png(quicklook_aa(_read16(sources[0]), _read16(sources[1])), self.size_px, cv2.COLORMAP_VIRIDIS)
        else:
            png = _to_png(_read16(sources[0]), self.size_px)
        with self._lock:
            self._cache[which] = (key, png, sources[0].name)
        return png, sources[0].name


# ------------------------------------------------------------------------------------------- daily products


def _files(processed: Path, pattern: str) -> list[Path]:
    if not processed.is_dir():
        return []
    return sorted(p for p in processed.rglob(pattern) if not p.name.startswith((".", TEMP_PREFIX)))


def daily_plot(processed: Path, day: str) -> Path | None:
    """The worker's emission-rate plot of `day` (a PNG whose name carries the date), newest first."""
    plots = [p for p in _files(Path(processed), "*.png") if day in p.name and "plot" in p.name]
    return max(plots, key=lambda p: p.stat().st_mtime) if plots else None


def daily_summary(processed: Path, day: str) -> dict | None:
    """The worker's daily summary JSON of `day` (a `*summary*.json` with the date in its name or folder)."""
    hits = [p for p in _files(Path(processed), "*summary*.json") if day in p.as_posix()]
    for p in sorted(hits, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return {"file": p.name, **data}
    return None


def _rows(path: Path, day: str, columns: tuple[str, ...], time_col: str) -> list[dict]:
    """Rows of a results CSV (comment lines skipped) whose time column is on `day`, with the chosen columns."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(line for line in fh if not line.startswith("#"))
            rows = [r for r in reader if str(r.get(time_col, "")).startswith(day)]
    except (OSError, csv.Error):
        return []
    step = max(1, len(rows) // MAX_ROWS)
    return [{c: _num(r.get(c)) for c in columns if c in r} for r in rows[::step]]


def _num(text: str | None) -> float | str | None:
    if text is None or text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return text
    return v if np.isfinite(v) else None


# The emission CSVs keep the original's (pyplis's) column names; the DOAS CSV the original's DOAS loader's.
EMISSION_FIELDS = ("datetime", "flux_(kg/s)", "flux_err", "velo_eff_(m/s)", "calibration")
DOAS_FIELDS = ("Time", "Column density", "CD error", "LDF")


def _day_files(processed: Path, pattern: str, day: str) -> list[Path]:
    """The CSVs of `day`: its own folder's (the worker's daily products, `daily/YYYY-MM-DD/`) when there are any,
    else the running CSVs outside any day folder (rows filtered by time)."""
    files = _files(Path(processed), pattern)
    own = [p for p in files if p.parent.name == day]
    return own or [p for p in files if not DAY_NAME.match(p.parent.name)]


def emissions(processed: Path, day: str) -> dict:
    """Per emission-rate CSV (PCS line and velocity method): the day's rows (time, kg/s, error, speed)."""
    out = {}
    for path in _day_files(processed, "emission_rates*.csv", day):
        rows = _rows(path, day, EMISSION_FIELDS, "datetime")
        if rows:
            out[path.stem] = rows
    return out


def doas_series(processed: Path, day: str) -> list[dict]:
    rows: list[dict] = []
    for path in _day_files(processed, "doas_results*.csv", day):
        rows += _rows(path, day, DOAS_FIELDS, "Time")
    return sorted(rows, key=lambda r: str(r.get("Time")))


def results(processed: Path, day: str) -> dict:
    """The API's view of one day: emission series, DOAS series, daily summary, whether the plot exists."""
    plot = daily_plot(processed, day)
    return {
        "day": day,
        "emissions": emissions(processed, day),
        "doas": doas_series(processed, day),
        "summary": daily_summary(processed, day),
        "plot": plot.name if plot else None,
    }


def latest_emissions(processed: Path, day: str) -> dict[str, float]:
    """The newest emission rate (kg/s) of each series of `day` (for the metrics and the page's headline)."""
    out = {}
    for series, rows in emissions(processed, day).items():
        last = next((r for r in reversed(rows) if isinstance(r.get("flux_(kg/s)"), float)), None)
        if last is not None:
            out[series] = last["flux_(kg/s)"]
    return out
