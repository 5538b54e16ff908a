"""`run_processing_bench()`: figures for `pycam bench processing --json`.

- ms per pair for the whole chain (read PNGs, dark, optical depth, registration, light dilution, flow, lines, CSV
  rows) on the Villarrica pairs (target < 150 ms, so a Raspberry Pi 4 keeps up at 1 Hz), CPU and wall, mean and p95;
  side by side in the same run, pair by pair, the same chain from pyplis primitives (controller/bench/pyplis_chain.py:
  the same steps, the same flow region and plume pixels, pyplis's DilutionCorr, its multi-Gauss histogram fit and
  its cross-correlation), the speed ratio (also without pyplis's cross-correlation, ours kept in: the conservative
  figure) and both chains' emission rates compared pair by pair;
- the field-of-view search for 100 full-size frames (P1's bench_fov; target < 2 s);
- ms per spectrum of the DOAS fit (P1's bench_doas);
- peak memory of a worker-like child process over N pairs (replays of the Villarrica pairs at 1 s spacing;
  target < 500 MB), measured in the child: RSS after each pair (psutil) and the kernel's high-water mark (VmHWM).
  Each pair also goes through the worker's live DOAS calibration (processing.livecal) as in the worker; with no
  spectra its FOV is never found, so its pre-FOV ring buffer of AA frames stays full all along (the worst case).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from controller.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]


def _villarrica(data_dir: Path) -> tuple[Config, Path]:
    return load_config(REPO / "conf" / "villarrica.toml"), data_dir / "villarrica-2018-03-26"


def _processor(cfg: Config, folder: Path):  # noqa: ANN202
    from processing.images import scan_folder
    from processing.pairing import pair_images
    from processing.pipeline import PairProcessor, build_setup, quiet_pyplis

    quiet_pyplis()
    scan = scan_folder(folder)
    pairs, _ = pair_images(scan.plume, cfg.processing.pair_tolerance_s)
    return PairProcessor(cfg, build_setup(cfg, scan)), pairs


def _replay(pairs: list, n: int) -> list:
    """n pairs cycling through the real ones, with times 1 s apart (the worker at 1 Hz)."""
    from dataclasses import replace

    from processing.images import ImageFile
    from processing.pairing import ImagePair

    t0 = pairs[0].time
    out = []
    for k in range(n):
        p = pairs[k % len(pairs)]
        t = t0 + timedelta(seconds=k)
        a = ImageFile(p.a.path, replace(p.a.name, time=t))
        b = ImageFile(p.b.path, replace(p.b.name, time=t))
        out.append(ImagePair(a, b))
    return out


def _stats(wall: list[float], cpu: list[float]) -> dict:
    return {
        "pairs": len(wall),
        "ms_per_pair_mean": round(float(np.mean(wall)), 1),
        "ms_per_pair_p95": round(float(np.percentile(wall, 95)), 1),
        "ms_per_pair_max": round(float(np.max(wall)), 1),
        "cpu_ms_per_pair_mean": round(float(np.mean(cpu)), 1),
        "cpu_ms_per_pair_p95": round(float(np.percentile(cpu, 95)), 1),
    }


def _flux_comparison(rows: list[tuple[str, str, float, float]]) -> dict:
    """Our emission rates against the pyplis chain's (kg/s), pair by pair (one line per pair: "<time>
    <line>_<method> ours/pyplis ..."), and per method the median and largest relative difference."""
    by_pair: dict[str, list[str]] = {}
    for t, key, a, b in rows:
        by_pair.setdefault(t, []).append(f"{key} {a:.4g}/{b:.4g}")
    out: dict = {"per_pair": [f"{t} " + " ".join(v) for t, v in by_pair.items()]}
    for method in ("flow", "xcorr"):
        rel = [abs(a / b - 1.0) for _, key, a, b in rows if key.endswith(method) and b != 0]
        out[method] = {
            "pairs_compared": len(rel),
            "median_rel_diff": round(float(np.median(rel)), 4) if rel else None,
            "max_rel_diff": round(float(np.max(rel)), 4) if rel else None,
        }
    return out


def bench_chain(data_dir: Path, repeats: int = 6, pyplis_chain: bool = True) -> dict:
    """The whole chain per pair (light dilution included when configured): wall time, and CPU time (less sensitive
    to other load on a shared machine); side by side, pair by pair, the same chain from pyplis primitives
    (controller/bench/pyplis_chain.py) on the same pairs, the ratio, and the two chains' emission rates compared
    pair by pair. `repeats` passes over the 10 Villarrica pairs: 59 timed pairs by default, so the p95 is not just
    the second-slowest pair."""
    from controller.bench.pyplis_chain import PyplisChain
    from processing.images import read_image, scan_folder
    from processing.pipeline import ResultWriter

    cfg, folder = _villarrica(data_dir)
    proc, pairs = _processor(cfg, folder)
    replay = _replay(pairs, len(pairs) * repeats)
    theirs = PyplisChain(cfg, scan_folder(folder), proc.setup.calibration, read_image(replay[0].a.path).shape)
    times: dict[str, tuple[list[float], list[float]]] = {"ours": ([], []), "pyplis": ([], [])}
    fluxes: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = ResultWriter(Path(tmp), cfg, proc, {})
        writer.write(proc.process(replay[0]))  # warm-up: geometry, reference areas, imports
        if pyplis_chain:
            theirs.process(replay[0])
            theirs.xcorr_cpu_ms.clear()
        for pair in replay[1:]:
            results: dict = {}
            runs = [("ours", lambda p=pair, r=results: writer.write(r.setdefault("ours", proc.process(p))))]
            if pyplis_chain:
                runs.append(("pyplis", lambda p=pair, r=results: r.setdefault("pyplis", theirs.process(p))))
            for name, run in runs:
                gc.collect()  # neither chain pays for collecting the other's garbage
                t, c = time.perf_counter(), time.process_time()
                run()
                times[name][0].append((time.perf_counter() - t) * 1e3)
                times[name][1].append((time.process_time() - c) * 1e3)
            for r in results["ours"].lines:
                key = f"{r.line_id}_{r.method}"
                if key in results.get("pyplis", {}):
                    fluxes.append((pair.time.strftime("%H:%M:%S"), key, r.flux, float(results["pyplis"][key])))
    out = {**_stats(*times["ours"]), "target_ms": 150, "light_dilution": proc.dilution_state()["corrected"]}
    out["p95_over_mean"] = round(out["ms_per_pair_p95"] / out["ms_per_pair_mean"], 2)
    out["cpu_p95_over_mean"] = round(out["cpu_ms_per_pair_p95"] / out["cpu_ms_per_pair_mean"], 2)
    if pyplis_chain:
        out["pyplis_chain"] = _stats(*times["pyplis"])
        xcorr = float(np.mean(theirs.xcorr_cpu_ms))
        out["pyplis_chain"]["xcorr_cpu_ms_per_pair_mean"] = round(xcorr, 1)
        out["speed_ratio_cpu"] = round(out["pyplis_chain"]["cpu_ms_per_pair_mean"] / out["cpu_ms_per_pair_mean"], 2)
        out["speed_ratio_wall"] = round(out["pyplis_chain"]["ms_per_pair_mean"] / out["ms_per_pair_mean"], 2)
        # conservative: pyplis's cross-correlation (a Python loop of pearsonr over every shift) left out of its time,
        # ours kept in
        out["speed_ratio_cpu_pyplis_without_xcorr"] = round(
            (out["pyplis_chain"]["cpu_ms_per_pair_mean"] - xcorr) / out["cpu_ms_per_pair_mean"], 2
        )
        out["flux_vs_pyplis"] = _flux_comparison(fluxes)
    return out


def _memory_child(data_dir: str, n_pairs: int, result: mp.Queue) -> None:
    # a spawned child: configure logging (stderr) before the processing modules bind their loggers, so stdout
    # stays the bench's JSON
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    import resource

    import psutil

    from processing.livecal import LiveCalibration
    from processing.memory import fix_mmap_threshold, trim_heap
    from processing.pipeline import ResultWriter

    fix_mmap_threshold()  # as the worker child does
    cfg, folder = _villarrica(Path(data_dir))
    proc, pairs = _processor(cfg, folder)
    me = psutil.Process()
    peak = 0
    cpu: list[float] = []  # CPU per pair under the worker's malloc settings (every full frame a fresh mmap)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        writer = ResultWriter(Path(tmp), cfg, proc, {})
        livecal = LiveCalibration(cfg, proc.setup.calibration, Path(tmp))
        for pair in _replay(pairs, n_pairs):
            # the worker's path with a live calibration (processing.worker._ChildState._process_pair)
            c = time.process_time()
            aa, dark_desc = proc.aa_image(pair)
            livecal.add_pair(pair, aa)
            result_ = proc.process_aa(pair.key, pair.time, aa, dark_desc, livecal.current(pair.time))
            writer.write(result_)
            result_.aa = aa = None
            trim_heap()  # as the worker child does after each pair
            cpu.append((time.process_time() - c) * 1e3)
            peak = max(peak, me.memory_info().rss)
        buffered = len(livecal.dcal._frames)
        frame_mb = sum(f.aa.nbytes for f in livecal.dcal._frames) / 2**20
    result.put({
        "pairs": n_pairs,
        "livecal_frames_buffered": buffered,
        "livecal_buffer_mb": round(frame_mb, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        # the kernel's high-water mark of this process's own memory (VmHWM). ru_maxrss is not that: Linux carries
        # it over fork and exec, so it reports the parent's RSS at spawn time when the parent was larger
        "vm_hwm_mb": _vm_hwm_mb(),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - t, 1),
        # includes the live calibration's buffering, which the chain's figures do not
        "cpu_ms_per_pair_mean": round(float(np.mean(cpu[1:])), 1) if len(cpu) > 1 else None,
        "target_mb": 500,
    })  # fmt: skip


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def bench_memory(data_dir: Path, n_pairs: int = 1000, timeout_s: float = 1800.0) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(str(data_dir), n_pairs, q), daemon=True)
    p.start()
    try:
        return q.get(timeout=timeout_s)
    finally:
        p.join(10)
        if p.is_alive():
            p.terminate()


def run_processing_bench(data_dir: str | Path | None = None, memory_pairs: int = 1000) -> dict:
    """All processing figures as one dict."""
    data_dir = Path(data_dir) if data_dir else REPO.parent / "shared" / "data"
    # the worker run first, spawned from a small parent (see _memory_child on ru_maxrss)
    memory = bench_memory(data_dir, memory_pairs)
    out: dict = {"chain": bench_chain(data_dir)}
    from processing.fov import bench_fov

    out["fov_search"] = bench_fov(100)
    try:
        from controller.bench.spectral import bench_doas

        out["doas"] = bench_doas(data_dir)
    except ImportError as e:
        out["doas"] = {"error": str(e)}
    out["worker_memory"] = memory
    out["figures"] = {
        "ms_per_pair": out["chain"]["ms_per_pair_mean"],
        "ms_per_pair_p95": out["chain"]["ms_per_pair_p95"],
        "cpu_ms_per_pair": out["chain"]["cpu_ms_per_pair_mean"],
        "pyplis_chain_ms_per_pair": out["chain"].get("pyplis_chain", {}).get("ms_per_pair_mean"),
        "speed_ratio_vs_pyplis_cpu": out["chain"].get("speed_ratio_cpu"),
        "speed_ratio_vs_pyplis_wall": out["chain"].get("speed_ratio_wall"),
        "speed_ratio_vs_pyplis_cpu_without_its_xcorr": out["chain"].get("speed_ratio_cpu_pyplis_without_xcorr"),
        "p95_over_mean": out["chain"].get("p95_over_mean"),
        "cpu_p95_over_mean": out["chain"].get("cpu_p95_over_mean"),
        "flow_rate_vs_pyplis_median_rel_diff": out["chain"]
        .get("flux_vs_pyplis", {})
        .get("flow", {})
        .get("median_rel_diff"),
        "fov_search_100_frames_s": out["fov_search"]["fov_search_s"],
        "doas_ms_per_spectrum": out["doas"].get("doas_ms_per_spectrum"),
        "worker_peak_rss_mb": memory.get("vm_hwm_mb") or memory.get("ru_maxrss_mb"),
        "worker_cpu_ms_per_pair": memory.get("cpu_ms_per_pair_mean"),
        "worker_pairs": out["worker_memory"].get("pairs"),
    }
    return out
