"""The data store's index on a full disk: start-up scan time and memory for N station files (`pycam bench
store-index`). The files are empty (a scan reads names, not contents), in one date folder per station day, as the
master writes them: per 4 s slot an A and a B image and a spectrum."""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.storage.index import StoreIndex
from controller.storage.names import ImageName, SpectrumName

SLOT_S = 4
SLOTS_PER_DAY = 8 * 3600 // SLOT_S  # an eight-hour station day


def _names(n: int) -> list[ImageName | SpectrumName]:
    t0 = datetime(2024, 1, 1, 8, tzinfo=UTC)
    out: list[ImageName | SpectrumName] = []
    slot = 0
    while len(out) < n:
        t = t0 + timedelta(days=slot // SLOTS_PER_DAY, seconds=(slot % SLOTS_PER_DAY) * SLOT_S)
        out += [ImageName(t, "A", 1, 10_000 + slot % 97, "Plume"), ImageName(t, "B", 1, 20_000 + slot % 89, "Plume")]
        out.append(SpectrumName(t, 100, 1, "Plume"))
        slot += 1
    return out[:n]


def _populate(root: Path, n: int) -> None:
    for name in _names(n):
        folder = root / name.date_folder
        folder.mkdir(exist_ok=True)
        (folder / str(name)).touch()


def run_store_index_bench(files: int = 100_000, work_dir: str | None = None) -> dict:
    """Seconds (warm directory cache) and bytes (tracemalloc: the index's Python objects) of one start-up scan of
    `files` names, and the time of the queries the disk policy and the status page make."""
    with tempfile.TemporaryDirectory(prefix="pycam-bench-index-", dir=work_dir) as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        _populate(root, files)
        (root / "2024-01-01" / "notes.txt").write_text("a foreign file")
        StoreIndex(root).scan()  # once to warm the directory cache: a booted Pi's first scan reads the SD/SSD
        gc.collect()
        t0 = time.perf_counter()
        index = StoreIndex(root)
        figures = index.scan()
        scan_s = time.perf_counter() - t0
        del index
        gc.collect()
        tracemalloc.start()  # a second scan for the memory (tracemalloc slows it down several times)
        index = StoreIndex(root)
        index.scan()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t0 = time.perf_counter()
        oldest = index.day(index.days()[0])
        day_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        latest = index.latest_plume()
        latest_s = time.perf_counter() - t0
        return {
            "files": figures["files"],
            "days": figures["days"],
            "foreign": figures["foreign"],
            "scan_s": round(scan_s, 3),
            "scan_us_per_file": round(scan_s / max(1, files) * 1e6, 1),
            "index_mb": round(held / 2**20, 1),
            "index_bytes_per_file": round(held / max(1, files)),
            "scan_peak_mb": round(peak / 2**20, 1),
            "one_day_records": len(oldest),
            "one_day_sorted_s": round(day_s, 4),
            "latest_plume_s": round(latest_s, 4),
            "latest_found": sorted(latest),
        }
