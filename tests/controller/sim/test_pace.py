"""The sim station's pace: slower while the worker is behind, back to the nominal rate when it catches up."""

from __future__ import annotations

import json
from pathlib import Path

from controller.sim.pace import MIN_FRACTION, Pace


def _pair(root: Path, stamp: str) -> None:
    day = root / "2024-03-01"
    day.mkdir(parents=True, exist_ok=True)
    for band in ("A", "B"):
        (day / f"{stamp}_fltr{band}_1ag_6000ss_Plume.png").write_bytes(b"")


def test_pace_slows_for_a_backlog_counts_held_pairs_as_taken_and_recovers(tmp_path: Path) -> None:
    data, processed = tmp_path / "data", tmp_path / "processed"
    processed.mkdir()
    pace = Pace(tmp_path / "rate.json", 100.0, 1.7e9, 1.8e9, data, processed)
    stamps = [f"2024-03-01T1100{i:02d}" for i in range(6)]
    for s in stamps:
        _pair(data, s)
    journal = processed / "worker_journal.json"
    journal.write_text(json.dumps({"pairs": stamps[:1], "spectra": [], "held": stamps[1:3]}))
    assert pace.backlog() == 3  # held pairs wait for their calibration, not for the worker
    pace.set_factor(pace.factor * 0.7)
    assert pace.factor == 70.0 and json.loads((tmp_path / "rate.json").read_text())["factor"] == 70.0
    pace.set_factor(1.0)
    assert pace.factor == 100.0 * MIN_FRACTION  # never slower than the floor
    pace.set_factor(1e6)
    assert pace.factor == 100.0  # never faster than nominal


def test_pace_reads_capture_lateness_from_both_journals(tmp_path: Path) -> None:
    out = tmp_path / "run"
    processed = out / "master" / "processed"
    processed.mkdir(parents=True)
    pace = Pace(tmp_path / "rate.json", 100.0, 1.7e9, 1.8e9, out / "master" / "data", processed)
    assert pace.lateness() == 0.0
    for role, device, late in (("master", "A", 0.5), ("slave", "S", 12.0)):
        state = out / role / "state"
        state.mkdir(parents=True)
        recs = [{"name": f"n{i}", "device": device, "slot_time": 60.0 * i, "capture_time": 60.0 * i + late}
                for i in range(8)]  # fmt: skip
        (state / "captures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert pace.lateness() == 12.0  # the worst device's median over its recent captures
