"""End to end: `pycam sim station` runs a simulated observatory (a real sshd) the master delivers to, serves the
status page, reports progress on stderr while it runs, and its summary says what was delivered."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from controller.delivery.observatory import sshd_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sshd_available(), reason="needs openssh-server and rsync")]


def test_sim_station_delivers_to_the_observatory_and_reports_progress(tmp_path):
    out = tmp_path / "sim-station"
    cmd = [sys.executable, "-c", "from controller.cli import main; main()", "sim", "station", "--json",
           "--out", str(out), "--hours", "0.5", "--budget", "25", "--size", "160x120", "--no-processing"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["lost"] == 0 and s["finished_cleanly"]
    progress = [line for line in proc.stderr.splitlines() if line.startswith("sim ") and "captures" in line]
    assert len(progress) >= 2, proc.stderr[-3000:]
    assert any("acquire" in line for line in progress)
    assert s["web_url"] and s["web_url"].startswith("http://")
    remote = out / "observatory" / "inbox" / "sim"
    assert s["delivered_files"] == len(
        [p for p in remote.rglob("*") if p.is_file() and ".rsync-partial" not in p.parts]
    )
    assert s["delivered_by_kind"].get("status") == 1 and s["delivered_by_kind"].get("logs", 0) >= 1
    final = json.loads((remote / "status" / "status.json").read_text())
    assert final["role"] == "master"  # the master's status reached the observatory (its last push at stop)
    assert s["delivery"]["failures_in_a_row"] == 0  # what the last seconds wrote stays queued for the next boot
    assert (out / "master" / "state" / "status.json").exists()  # delivered, and kept locally
