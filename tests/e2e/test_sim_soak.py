"""`pycam sim soak`: a short variant of the long soak (the 20 000-slot run is done by hand; figures in the notes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_short_soak_with_random_faults_loses_nothing(tmp_path):
    cmd = [sys.executable, "-c", "from controller.cli import main; main()", "sim", "soak", "--json"]
    cmd += ["--slots", "1000", "--rate", "25", "--fault-every", "8", "--seed", "3", "--out", str(tmp_path / "soak")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    k = s["soak"]
    print(json.dumps({**k, "processes": s["processes"], "real_seconds": s["real_seconds"]}))
    for f in s["faults_injected"]:
        print(f"fault {f['kind']} {f.get('device', '')} at {f['at_s']} s: back in acquire after {f['recovery_s']} s")
    assert s["finished_cleanly"], s["exit_codes"]
    assert k["lost"] == 0 and k["duplicates"] == 0 and s["corrupt"] == 0
    assert k["overwritten"] == 0  # issue 11: nothing replaced, also with a forged peer on the link
    forged = [f for f in s["faults_injected"] if f["kind"] == "forged_peer"]
    assert len(forged) == 1 and not forged[0]["forged_slave"].get("acked")
    assert forged[0]["fake_master"].get("files_received") == 0
    assert s["stored_captured"] == s["captured"] > 0
    assert k["faults"] >= 2 and all(f["recovery_s"] is not None for f in s["faults_injected"])
    assert k["slots_planned"] >= 1000 and k["slots_captured"] > 0
    for role in ("master", "slave"):
        assert s["processes"][role]["peak_rss_mb"] > 0 and s["processes"][role]["cpu_s"] > 0


def test_soak_plan_is_seeded_and_keeps_faults_inside_the_window():
    import random

    from controller.sim.soak import ALWAYS, SoakRun, soak_faults, soak_station_run

    a = soak_faults(500.0, 40.0, random.Random(1))
    assert set(ALWAYS) <= {f.kind for f in a}  # issue 11: restart behind, singles, control-port abuse
    assert [(f.kind, f.at_s, f.args) for f in a] == [
        (f.kind, f.at_s, f.args) for f in soak_faults(500.0, 40.0, random.Random(1))
    ]
    assert len(a) >= 10 and all(15.0 <= f.at_s <= 475.0 for f in a)
    assert a == sorted(a, key=lambda f: f.at_s)
    run = soak_station_run(SoakRun(slots=20_000, period_s=2.0, rate=40.0))
    assert run.hours * 3600 / run.period_s >= 20_000 and not run.processing and run.image_size == (64, 48)
    with pytest.raises(ValueError):
        soak_station_run(SoakRun(slots=30_000, period_s=2.0))


def test_soak_abuse_client_sees_the_control_port_hold(tmp_path):
    """The soak's control-port abuse against a real ExtServer: idle slots, 500 keys, 1000 unknown keys, guesses."""
    import asyncio

    from controller.sim.abuse import AUTH_GUESSES, run_client
    from tests.controller.extport.harness import build_station, make_config

    async def body():
        st = build_station(tmp_path, cfg=make_config(auth_token="right"))
        port = await st.server.start()
        try:
            return await run_client("abuse_ext", "127.0.0.1", port, "right", None)
        finally:
            await st.server.stop()

    got = asyncio.run(asyncio.wait_for(body(), 120))
    assert got["connection_kept"] and got["served_after_s"] < 10.0
    assert got["echoes_500_keys"] == 2 and got["errs_1000_unknown"] == 26
    assert got["auth_guesses_refused"] == AUTH_GUESSES
