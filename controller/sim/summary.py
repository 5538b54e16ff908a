"""The simulated station's summary: captures, files stored, lost, duplicates, emission rate against truth, faults."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from controller.acquisition import CaptureJournal
from controller.sim.procs import read_status
from controller.storage.index import StoreIndex
from controller.storage.names import ImageName


def summarize(out: Path, mcfg: dict, scfg: dict) -> dict:
    """Captured vs stored vs lost, duplicates, pairs processed, flux recovered vs truth, states and faults."""
    data_root = Path(mcfg["storage"]["data_root"])
    journals = {r: CaptureJournal.read(out / r / "state" / "captures.jsonl") for r in ("master", "slave")}
    captured: dict[str, str] = {}
    first: dict[str, str] = {}  # each name's first capture: the content a stored file must keep
    shas: dict[str, set[str]] = {}  # every content captured under each name
    per_device: Counter = Counter()
    recaptured: list[str] = []  # a name captured twice: the second would overwrite (or be refused as) the first
    for recs in journals.values():
        for rec in recs:
            if rec["name"] in captured:
                recaptured.append(rec["name"])
            captured[rec["name"]] = rec["sha256"]
            first.setdefault(rec["name"], rec["sha256"])
            shas.setdefault(rec["name"], set()).add(rec["sha256"])
            per_device[rec["device"]] += 1
    stored = {
        p.name: p
        for p in data_root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(data_root).parts)
    }  # temp files and the kept-aside copies in .conflicts/ are not stored data
    lost = [n for n in captured if n not in stored]
    stored_sha = {n: _sha(stored[n]) for n in captured if n in stored}
    corrupt = [n for n in captured if n in stored_sha and stored_sha[n] not in shas[n]]  # bytes no capture made
    # Files whose content changed under the same name: what is stored is not what was first captured under it.
    changed = [n for n, sha in first.items() if n in stored_sha and stored_sha[n] != sha]
    overwritten = list(dict.fromkeys([*changed, *recaptured]))
    keys = Counter()
    for parsed in StoreIndex(data_root).records():  # the stored station files, as the master's store sees them
        band = parsed.band if isinstance(parsed, ImageName) else "S"
        keys[(parsed.time_key, band, parsed.kind)] += 1
    # A slot captured twice (a restart re-taking it) shows as two Plume files of one device at one time.
    duplicates = sum(n - 1 for (_, _, kind), n in keys.items() if n > 1 and kind == "Plume") + len(recaptured)
    flux = _flux(out / "master" / "processed", mcfg)
    states = _state_changes(out)
    faults = {r: read_status(out / r / "state").get("faults", []) for r in ("master", "slave")}
    return {
        "captured": len(captured),
        "captured_per_device": dict(per_device),
        "stored": len(stored),
        "stored_captured": len(captured) - len(lost),
        "lost": len(lost),
        "lost_files": lost[:20],
        "corrupt": len(corrupt),
        "overwritten": len(overwritten),
        "overwritten_files": overwritten[:20],
        "duplicates": duplicates,
        "recaptured": len(recaptured),
        "pairs_on_master": sum(1 for (t, b, k) in keys if b == "A" and k == "Plume" and (t, "B", "Plume") in keys),
        **flux,
        "state_changes": states,
        "faults_seen": {r: [f.get("kind") for f in fs] for r, fs in faults.items()},
        "fault_counts": {r: read_status(out / r / "state").get("fault_counts", {}) for r in ("master", "slave")},
        "data_folder": str(data_root),
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flux(processed: Path, mcfg: dict) -> dict:
    """The worker's emission rates (mean over the day) and the scene's truth through the same line."""
    result = {
        "pairs_processed": 0, "flux_truth_kg_s": None, "flux_recovered_kg_s": None, "plot": None,
        "calibration": None,
    }  # fmt: skip
    csvs = sorted(processed.glob("emission_rates_line*_xcorr.csv")) or sorted(processed.glob("emission_rates_*.csv"))
    try:
        from processing.worker import JOURNAL_NAME

        done = json.loads((processed / JOURNAL_NAME).read_text())
        result["pairs_processed"] = len(done.get("pairs", []))
    except (OSError, ValueError, ImportError):
        pass
    if not csvs:
        return result
    import numpy as np

    from controller.config import config_from_dict
    from controller.hardware.factory import make_scene
    from processing.outputs import read_series

    rows = read_series(csvs[0])
    times = [t.replace(tzinfo=UTC).timestamp() for t in rows.get("datetime", [])]
    fluxes = np.array(rows.get("flux_(kg/s)", []), dtype=float)
    # The calibration of each row (the CSV's calibration column): with any DOAS-calibrated rows, the figures are
    # theirs alone (the default slope before the FOV is found is the scene's own cross-section: circular).
    methods = [str(m) for m in rows.get("calibration", ["default"] * len(fluxes))]
    ok = np.isfinite(fluxes)
    result["calibration_rows"] = dict(Counter(m for m, good in zip(methods, ok, strict=True) if good))
    method = "doas" if result["calibration_rows"].get("doas") else Counter(methods).most_common(1)[0][0]
    ok &= np.array([m == method for m in methods], dtype=bool)
    if not ok.any():
        return result
    cfg = config_from_dict({k: v for k, v in mcfg.items()})
    scene = make_scene(cfg)
    x = cfg.processing.pcs_lines[0][0]
    truth = np.array([scene.flux_through_column(t, x) for t in times])
    result.update(
        flux_truth_kg_s=round(float(np.mean(truth[ok])), 4),
        flux_recovered_kg_s=round(float(np.mean(fluxes[ok])), 4),
        flux_rows=int(ok.sum()),
        flux_csv=csvs[0].name,
        calibration=method,
        emission_rate_config_kg_s=cfg.sim.emission_rate_kg_s,
        fov=_fov_found(processed, scene),
    )
    result["flux_error_percent"] = round(100.0 * (result["flux_recovered_kg_s"] / result["flux_truth_kg_s"] - 1), 2)
    truth_now = scene.truth(times[0])
    result["flux_factors"] = _flux_factors(processed, rows, ok, truth_now)
    result["scene_truth"] = {k: truth_now[k] for k in (
        "plume_distance_m", "so2_sigma_eff_cm2", "aerosol_optical_depth", "aerosol_optical_depth_b",
        "extinction_per_m", "dilution_transmission")}  # fmt: skip
    fitted = {b: np.asarray(rows.get(f"ext_{b}_(1/m)", []), dtype=float)[ok] for b in "AB"}
    result["light_dilution_fitted_per_m"] = {  # the worker's ε per band (median over the rows), scene's: scene_truth
        b: round(float(np.median(v[np.isfinite(v)])), 9) if np.isfinite(v).any() else None for b, v in fitted.items()
    }
    result["processing_told"] = {"plume_distance_m": cfg.processing.plume_distance_m,
                                 "plume_distance_err_m": cfg.processing.plume_distance_err_m,
                                 "default_calibration_slope": cfg.processing.default_calibration_slope}  # fmt: skip
    result["daily_products"] = _daily(processed)
    result["plot"] = _plot(processed / "sim_station_flux.png", times, fluxes, truth)
    return result


def _flux_factors(processed: Path, rows: dict, ok, truth: dict) -> dict:
    """The factors of the rows' emission rates beside what the scene knows, so that an emission rate that misses
    the truth says whether the speed or the calibration did: median plume speed of the rows against the scene's,
    the median DOAS calibration slope (molecules/cm² per AA) against 1 / the scene's on-band σ, the median ICA."""
    import numpy as np

    from processing.outputs import read_series

    def median(values) -> float | None:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        return round(float(np.median(v)), 4) if v.size else None

    slopes = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        slopes = read_series(processed / "calibration_series.csv").get("slope_(molecules/cm2)", [])
    return {
        "velo_eff_median_m_s": median(np.asarray(rows.get("velo_eff_(m/s)", []), dtype=float)[ok]),
        "scene_plume_speed_m_s": truth["plume_speed_m_s"],
        "calibration_slope_median_e18": median(np.asarray(slopes, dtype=float) / 1e18),
        "scene_inverse_sigma_e18": round(1e-18 / truth["so2_sigma_eff_cm2"], 4),
        "ica_median_kg_m": median(np.asarray(rows.get("ICA_mass_(kg/m)", []), dtype=float)[ok]),
    }


def _daily(processed: Path) -> list[dict]:
    """The worker's daily summaries (processing.daily): per day, line and method the mean in kg/s and t/d."""
    out = []
    for path in sorted(processed.glob("daily/*/summary_*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            s = json.loads(path.read_text())
            for line, methods in s["lines"].items():
                for method, st in methods.items():
                    out.append({
                        "day": s["day"], "line": line, "method": method, "rows": st["rows"],
                        "mean_kg_s": st["emission_rate_kg_s"]["mean"], "mean_t_d": st["emission_rate_t_d"]["mean"],
                        "calibration": st["calibration_method"], "coverage": s["coverage"]["fraction"],
                        "summary": str(path),
                    })  # fmt: skip
    return out


def _fov_found(processed: Path, scene) -> dict:
    """The spectrometer FOV the worker found (its live calibration state) against the scene's."""
    found = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, ImportError):
        from processing.livecal import STATE_NAME

        fov = json.loads((processed / STATE_NAME).read_text())["dcal"]["fov"]
        found = fov[:3] if fov else None
    return {"found_cx_cy_r": found, "scene_cx_cy_r": [*scene.fov_centre_px, scene.fov_radius_px]}


def _plot(path: Path, times: list[float], fluxes, truth) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    when = [datetime.fromtimestamp(t, UTC) for t in times]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(when, fluxes, ".-", label="recovered (worker, xcorr)")
    ax.plot(when, truth, "-", label="scene truth through the line")
    ax.set_ylabel("SO2 emission rate (kg/s)")
    ax.set_title(f"Simulated station day {when[0]:%Y-%m-%d}" if when else "Simulated station day")
    ax.legend()
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _state_changes(out: Path) -> dict:
    """Station state changes of each supervisor, from its JSON log."""
    result = {}
    for role in ("master", "slave"):
        seq = []
        try:
            lines = (out / "logs" / f"{role}.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            if '"state_change"' not in line or '"station"' not in line:
                continue
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if ev.get("machine") == "station":
                    seq.append(f"{ev.get('old')}->{ev.get('new')}")
        result[role] = seq
    return result


# Which status fault kinds (of which supervisor) show each injected fault.
EXPECTED_FAULTS = {
    "kill_slave": {"master": ("link_lost",), "slave": ("restarted_after_crash",)},
    "kill_master": {"master": ("restarted_after_crash",), "slave": ("link_lost",)},
    "kill_worker": {"master": ("worker_crashed",)},
    "drop_link": {"master": ("link_lost",), "slave": ("link_lost",)},
    "unplug": {"slave": ("device_unplugged", "device_error")},
    "clock_step": {"slave": ("clock_offset", "offset_bad", "clock_lost")},
    "garbage_ext": {"master": ("ext_bad_input",)},
    "abuse_ext": {"master": ("ext_bad_input",)},
    "restart_master_behind": {"master": ("restarted_after_crash",), "slave": ("link_lost",)},
    "fill_disk": {"master": ("disk_full",)},
}


def check_fault_visibility(out: Path, fault_log: list[dict]) -> None:
    """For each injected fault: the matching faults in each supervisor's status (`pycam status`) and log, recorded
    at or after the injection (`seen_in_status`, `seen_in_log` per role)."""
    status = {r: read_status(out / r / "state").get("faults", []) for r in ("master", "slave")}
    logged = {r: _logged_faults(out / "logs" / f"{r}.log") for r in ("master", "slave")}
    for entry in fault_log:
        t0 = float(entry.get("real_time", 0.0)) - 0.5
        expected = dict(EXPECTED_FAULTS.get(entry["kind"], {}))
        if entry["kind"] == "unplug" and entry.get("device") == "A":
            expected = {"master": expected["slave"]}
        entry["seen_in_status"] = {
            role: sorted({f["kind"] for f in status[role] if f.get("kind") in kinds and f.get("real_time", 0) >= t0})
            for role, kinds in expected.items()
        }  # fmt: skip
        entry["seen_in_log"] = {
            role: sorted({k for k, t in logged[role] if k in kinds and t >= t0}) for role, kinds in expected.items()
        }


def _logged_faults(path: Path) -> list[tuple[str, float]]:
    """(fault kind, real time) of every `fault` event in a supervisor's JSON log."""
    found = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        if '"fault"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ev = json.loads(line)
            if ev.get("event") == "fault":
                when = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()
                found.append((str(ev.get("fault")), when))
    return found
