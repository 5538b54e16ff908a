"""End to end: `pycam sim station` as the user runs it, and the fault suite over the same two-process setup.

Slow (a minute or two each): master and slave are separate `pycam run` processes with simulated hardware.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _sim_station(tmp_path, *args: str, timeout_s: float = 600) -> dict:
    cmd = [sys.executable, "-c", "from controller.cli import main; main()", "sim", "station", "--json"]
    cmd += ["--out", str(tmp_path / "sim-station"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sim_station_day_loses_nothing_and_recovers_the_emission_rate(tmp_path):
    s = _sim_station(tmp_path)
    print(json.dumps({k: s[k] for k in ("captured", "stored", "lost", "duplicates", "pairs_processed",
                                        "flux_truth_kg_s", "flux_recovered_kg_s", "real_seconds")}))  # fmt: skip
    assert s["finished_cleanly"]
    assert s["captured"] > 0 and s["lost"] == 0 and s["corrupt"] == 0 and s["duplicates"] == 0
    assert s["stored_captured"] == s["captured"]
    assert s["pairs_processed"] > 0
    assert abs(s["flux_recovered_kg_s"] / s["flux_truth_kg_s"] - 1) < 0.10
    for role in ("master", "slave"):
        seq = s["state_changes"][role]
        assert "sync->acquire" in seq and seq[-1] == "shutdown->off", (role, seq)


FAULTS = [
    "kill_slave@8:down_s=2",
    "drop_link@28:down_s=6",
    "unplug@48:device=B,down_s=3",
    "unplug@60:device=S,down_s=3",
    "kill_master@72:down_s=2",
    "clock_step@95:seconds=5",
    "garbage_ext@105",
]


def test_fault_suite_nothing_lost_and_back_in_acquire(tmp_path):
    s = _sim_station(tmp_path, "--hours", "3", "--budget", "130", *(f"--fault={f}" for f in FAULTS), "--no-processing")
    for f in s["faults_injected"]:
        print(f"fault {f['kind']} at {f['at_s']} s: back in acquire after {f['recovery_s']} s")
    print(json.dumps({k: s[k] for k in ("captured", "stored", "lost", "duplicates", "faults_seen")}))
    assert s["lost"] == 0 and s["corrupt"] == 0 and s["duplicates"] == 0
    assert s["captured"] > 0 and s["stored_captured"] == s["captured"]
    assert len(s["faults_injected"]) == len(FAULTS)
    for f in s["faults_injected"]:
        assert f["recovery_s"] is not None, f
    seen = set(s["faults_seen"]["master"]) | set(s["faults_seen"]["slave"])
    assert {"link_lost", "device_unplugged"} <= seen, seen
