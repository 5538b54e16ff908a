"""`pycam status` text: readable lines, no raw Python dicts or lists (issue 13: it printed the clock source and
the recent faults as dicts)."""

from __future__ import annotations

import json
import os
import time

from click.testing import CliRunner

from controller.cli.status import status_cmd

STATUS = {
    "role": "master", "state": "acquire", "state_since": 1709290800.0, "machines": {"station": "acquire"},
    "link": {"state": "connected", "connected": True, "peer": {"host": "169.254.0.2", "port": 41000}},
    "clock": {"offset_ms": 0.4, "offset_ok": True, "tolerance_ms": 50.0, "source": {
        "best": "ntp", "synchronised": True,
        "sources": {"ntp": {"available": True, "synchronised": True}, "rtc": {"available": False, "error": "no rtc"}},
    }},
    "storage": {"ok": True, "free_mb": 81234.56, "paused": False}, "ext_port": 12347, "worker": "running",
    "worker_pairs": 120, "web": {"url": "http://0.0.0.0:8080/", "requests": {"page": 3, "metrics": 2}},
    "delivery": {"target": "pycam@obs:22", "state": "backoff", "delivered_files": 40, "backlog_files": 3,
                 "backlog_bytes": 2_500_000, "lag_s": 95.0, "failures_in_a_row": 2, "next_retry_in_s": 8.0,
                 "last_error": "rsync exit 255: Connection timed out"},
    "temperatures": {"cpu-thermal": 47.25, "wittypi_rtc": None},
    "power_board": {"board": "wittypi4", "input_voltage_v": 12.31, "output_voltage_v": 5.12, "temperature_c": 21.5},
    "devices": {"A": {"state": "continuous", "captures": 300, "last": "x.png", "last_error": None}},
    "faults": [{"time": 1.0, "real_time": 1709290900.0, "kind": "link_lost", "reason": "timeout",
                "peer": {"host": "169.254.0.2"}}],
    "last_fault": {"time": 1.0, "real_time": 1709290900.0, "kind": "link_lost"}, "fault_counts": {"link_lost": 1},
}  # fmt: skip


def test_status_text_is_readable_without_raw_dicts(tmp_path):
    data = {**STATUS, "pid": os.getpid(), "updated_at": time.time()}
    (tmp_path / "status.json").write_text(json.dumps(data))
    out = CliRunner().invoke(status_cmd, ["--state-dir", str(tmp_path)]).output
    assert not any(c in out for c in "{}[]'"), out
    for fact in (
        "station: acquire since 2024-03-01 11:00:00 UTC", "clock: source ntp (synchronised); offset 0.4 ms",
        "rtc: not available (no rtc)", "storage: ok, 81235 MB free", "120 pairs processed",
        "status page: http://0.0.0.0:8080/ (5 requests)",
        "delivery to pycam@obs:22: backoff, 40 files delivered, backlog 3 files (2.4 MB), lag 95 s",
        "rsync exit 255", "cpu-thermal 47.2 °C", "wittypi4_board 21.5 °C", "voltages: input 12.31 V, output 5.12 V", "device A: continuous, 300 captures",
        "2024-03-01 11:01:40 UTC  link_lost: reason=timeout, peer=host=169.254.0.2", "fault counts: link_lost 1",
    ):  # fmt: skip
        assert fact in out, (fact, out)


def test_status_text_of_a_slave_with_chrony_servers_as_a_list_does_not_crash(tmp_path):
    """The slave's clock source is chrony's status, whose `sources` is a list of servers (pycam status crashed
    on it with AttributeError and printed nothing)."""
    chrony = {"source": "chrony", "available": True, "synchronised": True, "selected": "169.254.231.1",
              "sources": [{"name": "169.254.231.1", "state": "selected", "stratum": 10}]}  # fmt: skip
    data = {"role": "slave", "state": "acquire", "pid": os.getpid(), "updated_at": time.time(),
            "clock": {"offset_ms": -1.1, "offset_ok": True, "tolerance_ms": 50.0, "source": chrony}}  # fmt: skip
    (tmp_path / "status.json").write_text(json.dumps(data))
    result = CliRunner().invoke(status_cmd, ["--state-dir", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "clock: chrony synchronised to 169.254.231.1; offset -1.1 ms" in result.output
    assert "server 169.254.231.1: selected, stratum 10" in result.output
