"""Benchmarks of the spectral side: DOAS ms per spectrum on the real 2019-05-29 spectra, the FOV search.

`pycam bench processing --json` (processing/bench.py) folds these figures in.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from controller.config import ProcessingConfig
from controller.errors import ProcessingError
from processing.doas import DoasRetrieval, load_spectrum
from processing.fov import bench_fov
from processing.references import load_references

__all__ = ["bench_doas", "bench_fov", "default_data_dir", "shared_references_config"]


def default_data_dir() -> Path:
    """The shared station data: $PYCAM_SHARED_DATA, else ../shared/data next to the project."""
    env = os.environ.get("PYCAM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_references_config(data_dir: Path, base: ProcessingConfig | None = None) -> ProcessingConfig:
    """Processing config pointing at the shared references and the 302 nm ILS of the 2019-05-29 spectra."""
    ref = data_dir / "references"
    return replace(
        base or ProcessingConfig(),
        solar_reference=str(ref / "sao2010.txt"),
        so2_xsec=str(ref / "SO2_293K.txt"),
        o3_xsec=str(ref / "O3_Voigt_223K.txt"),
        ring_spectrum=str(ref / "Ring.txt"),
        ils=str(data_dir / "spectra-2019-05-29" / "2019-07-03_302nm_ILS.txt"),
    )


def bench_doas(data_dir: str | Path | None = None, repeats: int = 5) -> dict:
    """Fit every Plume spectrum of spectra-2019-05-29 `repeats` times; ms per spectrum and the columns."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    folder = data_dir / "spectra-2019-05-29"
    files = sorted(folder.glob("*_Plume.npy"))
    darks = sorted(folder.glob("*_Dark.npy"))
    if not files:
        raise ProcessingError(f"{folder}: no Plume spectra to benchmark")
    cfg = shared_references_config(data_dir)
    t0 = time.perf_counter()
    retrieval = DoasRetrieval(load_references(cfg), cfg)
    load_s = time.perf_counter() - t0
    spectra = [load_spectrum(p) for p in files]
    dark = load_spectrum(darks[0]) if darks else None
    t1 = time.perf_counter()
    retrieval.fit(spectra[0], dark)  # first call builds the model grid
    first_ms = (time.perf_counter() - t1) * 1e3
    times_ms = []
    results = []
    for _ in range(max(1, repeats)):
        for s in spectra:
            t = time.perf_counter()
            results.append(retrieval.fit(s, dark))
            times_ms.append((time.perf_counter() - t) * 1e3)
    last = results[-len(spectra) :]
    arr = np.array(times_ms)
    return {
        "n_spectra": len(spectra),
        "repeats": repeats,
        "doas_ms_per_spectrum": round(float(arr.mean()), 3),
        "doas_ms_median": round(float(np.median(arr)), 3),
        "doas_ms_max": round(float(arr.max()), 3),
        "doas_first_fit_ms": round(first_ms, 3),
        "references_load_s": round(load_s, 3),
        "mean_nfev": round(float(np.mean([r.nfev for r in last])), 1),
        "so2_molecules_cm2": {
            p.name.split("T")[1][:6]: float(f"{r.so2:.4g}") for p, r in zip(files, last, strict=True)
        },
        "ppmm_to_molecules_cm2": cfg.ppmm_to_molecules_cm2,
    }


if __name__ == "__main__":  # pragma: no cover - manual run
    import json
    import sys

    json.dump({"doas": bench_doas(), "fov": bench_fov()}, sys.stdout, indent=2)
