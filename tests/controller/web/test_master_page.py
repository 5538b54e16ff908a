"""The page of a real master (`pycam run`): up before the rest of the boot, so a station that cannot boot still
shows why; read-only status, metrics, access."""

from __future__ import annotations

import json

from tests.controller.web.conftest import get


def test_a_master_that_cannot_boot_still_shows_its_fault_on_the_page(sim_master):
    # data_root off the SSD with no fallback allowed: the storage check fails, the station stays in fault/boot
    master = sim_master(storage={"allow_fallback": False, "mount_point": "/nonexistent-ssd"})
    s = master.wait(lambda s: (s.get("fault_counts") or {}).get("boot_failed"), 120, "boot_failed on the page")
    assert s["state"] in ("fault", "boot")
    assert any(f["kind"] == "boot_failed" and "storage" in str(f) for f in s["faults"])
    code, body = get(master.url + "metrics")
    assert code == 200 and b'pycam_faults_total{kind="boot_failed"}' in body
    code, body = get(master.url + "api/emissions?day=2024-03-01")
    assert code == 200 and json.loads(body)["emissions"] == {}
