"""Gas cells among plume images: find the cell sequence's cells and clear-sky frames (as pyplis's CellCalibEngine).

Cameras such as pyplis's ECII do not name cell images: the cells are put in front of the lens during a known time
window (`processing.cell_window`) and the images look like plume images. Within the window, per band, the
whole-image mean intensity (dark corrected, per second of exposure) drops while a cell is in: optical depth against
the brightest frames τ > CELL_TAU_MIN (pyplis's `find_cells` threshold). Consecutive cell frames are one cell (a
jump in τ starts another); the first and last frame of a cell with 3+ frames are the cell moving in and out and are
dropped, as pyplis does. Frames with τ < CLEAR_TAU_MAX are clear sky (I0). The cells are matched to
`processing.cell_columns` by optical depth (the weakest cell has the smallest column); the off-band cells follow
the on-band ones in time order. No frame of the window is ever processed as plume.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from controller.config import ProcessingConfig
from controller.errors import ConfigError, ProcessingError
from controller.logging import get_logger
from processing.darks import DarkLibrary
from processing.images import FolderScan, ImageFile, read_image

log = get_logger("processing.calibration.cellsearch")

__all__ = [
    "CELL_TAU_MIN",
    "CLEAR_TAU_MAX",
    "LiveCellWindow",
    "assign_cell_window",
    "cell_window_bounds",
    "in_cell_window",
]

CELL_TAU_MIN = 0.10
CLEAR_TAU_MAX = 0.05
CELL_TAU_JUMP = 0.03


def cell_window_bounds(proc: ProcessingConfig) -> tuple[datetime, datetime] | None:
    start, stop = proc.cell_window
    if not start and not stop:
        return None
    try:
        t0, t1 = (datetime.fromisoformat(t) for t in (start, stop))
    except ValueError as e:
        raise ConfigError("processing.cell_window", f"{proc.cell_window}: {e}") from e
    t0, t1 = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (t0, t1))
    if t1 <= t0:
        raise ConfigError("processing.cell_window", f"end {stop} is not after start {start}")
    if not proc.cell_columns:
        raise ConfigError("processing.cell_columns", "a cell_window needs the columns of its cells")
    return t0, t1


def in_cell_window(proc: ProcessingConfig, time: datetime) -> bool:
    """Whether an image taken at `time` lies in the configured cell window (never a plume image then)."""
    bounds = cell_window_bounds(proc)
    return bounds is not None and bounds[0] <= time <= bounds[1]


class LiveCellWindow:
    """The live worker's form of `assign_cell_window`, so that it gives `pycam process`'s answer: while the window
    is still being taken (no plume image after its end yet) its frames wait, never processed as plume; once it is
    over they are assigned as `pycam process` assigns them. A window that cannot be assigned is logged, and its
    frames stay out of the plume. The worker rescans every minute: a finished window is read and assigned once
    and the assignment replayed while its frames stay the same."""

    def __init__(self, proc: ProcessingConfig, reader=read_image) -> None:
        self.proc = proc
        self.reader = reader
        self._frames: frozenset[Path] | None = None  # the finished window's frames, as last assigned
        self._added: dict[str, list] = {}  # what that assignment added to the scan's lists

    def apply(self, scan: FolderScan) -> None:
        found = _window_frames(scan, self.proc)
        if found is None or not found[1]:
            return
        (t0, t1), inside = found
        finished = max(f.name.time for f in scan.plume) > t1
        frames = frozenset(f.path for f in inside)
        if finished and frames != self._frames:
            before = {k: set(getattr(scan, k)) for k in ("cells", "clears", "skipped")}
            try:
                assign_cell_window(scan, self.proc, self.reader)
            except ProcessingError as e:
                log.error("cell_window_unusable", error=str(e))
            self._frames = frames
            self._added = {k: [x for x in getattr(scan, k) if x not in v] for k, v in before.items()}
        elif finished:
            for k, items in self._added.items():
                getattr(scan, k).extend(items)
            scan.cells.sort()
            scan.clears.sort()
        scan.plume = [f for f in scan.plume if not t0 <= f.name.time <= t1]


def _window_frames(scan: FolderScan, proc: ProcessingConfig) -> tuple[tuple[datetime, datetime], list] | None:
    bounds = cell_window_bounds(proc)
    if bounds is None:
        return None
    return bounds, [f for f in scan.plume if bounds[0] <= f.name.time <= bounds[1]]


def _groups(files: list[ImageFile], taus: np.ndarray) -> list[list[int]]:
    """Indices of consecutive cell frames, split where τ jumps (another cell)."""
    groups: list[list[int]] = []
    for i, tau in enumerate(taus):
        if tau <= CELL_TAU_MIN:
            continue
        if groups and groups[-1][-1] == i - 1 and abs(tau - taus[i - 1]) < CELL_TAU_JUMP:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [g[1:-1] if len(g) >= 3 else g for g in groups]


def assign_cell_window(scan: FolderScan, proc: ProcessingConfig, reader=read_image) -> dict | None:
    """Move the window's frames out of `scan.plume`: cells into `scan.cells` (kind = the cell id), clear frames into
    `scan.clears`, moving-cell frames into `scan.skipped`. Returns a summary, None without a configured window."""
    found = _window_frames(scan, proc)
    if found is None:
        return None
    (t0, t1), window = found
    if not window:
        raise ProcessingError(f"processing.cell_window {proc.cell_window}: no images in it")
    darks = DarkLibrary.from_files(scan.darks)
    by_band: dict[str, list[tuple[ImageFile, float]]] = {"A": [], "B": []}
    for f in window:
        img, _ = darks.correct(f.name.band, f.name.shutter_us, reader(f.path))
        by_band[f.name.band].append((f, float(np.mean(img)) / f.name.shutter_us))
    columns = sorted(proc.cell_columns, key=lambda c: c[1])
    cells: dict[str, dict[str, list[ImageFile]]] = {}
    summary: dict = {"window": [t0.isoformat(), t1.isoformat()]}
    order: list[int] = []
    for band in ("A", "B"):
        items = sorted(by_band[band], key=lambda x: x[0].name.time)
        files = [f for f, _ in items]
        levels = np.array([v for _, v in items])
        taus = np.log(levels.max() / np.clip(levels, 1e-12, None))
        groups = _groups(files, taus)
        if len(groups) != len(columns):
            raise ProcessingError(
                f"processing.cell_window {proc.cell_window}: {len(groups)} cells found in band {band}, "
                f"processing.cell_columns has {len(columns)}"
            )
        if band == "A":  # weakest cell first: matched to the smallest column
            order = list(np.argsort([np.mean(taus[g]) for g in groups]))
        for rank, gi in enumerate(order):
            cells.setdefault(columns[rank][0], {})[band] = [files[i] for i in groups[gi]]
        in_cell = {i for g in groups for i in g}
        clear = [f for f, tau in zip(files, taus, strict=True) if tau < CLEAR_TAU_MAX]
        moving = [
            f for i, (f, tau) in enumerate(zip(files, taus, strict=True)) if i not in in_cell and tau >= CLEAR_TAU_MAX
        ]
        scan.clears += [_as(f, "Clear") for f in clear]
        scan.skipped += [f.path for f in moving]
        summary[f"clear_{band}"] = len(clear)
    for cell_id, bands in cells.items():
        for files in bands.values():
            scan.cells += [_as(f, cell_id) for f in files]
        summary[cell_id] = {b: len(v) for b, v in bands.items()}
    in_window = {id(f) for f in window}
    scan.plume = [f for f in scan.plume if id(f) not in in_window]
    for lst in (scan.cells, scan.clears):
        lst.sort()
    log.info("cell_window", **{k: str(v) for k, v in summary.items()})
    return summary


def _as(f: ImageFile, kind: str) -> ImageFile:
    return ImageFile(f.path, dataclasses.replace(f.name, kind=kind))
