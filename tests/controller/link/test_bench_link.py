"""The link benchmark runs and reports its figures (no timing asserts: figures go into the report)."""

from __future__ import annotations

from controller.bench.link import run_link_bench


def test_run_link_bench_small(tmp_path):
    result = run_link_bench(files=4, file_bytes=50_000, restarts=1, requests=20, backoff_max_s=0.05, work_dir=tmp_path)
    tp, rc = result["link_throughput"], result["link_reconnect"]
    assert tp["drained"] and tp["files"] == 4 and tp["mb_per_s"] > 0
    assert rc["backoff_max_s"] == 0.05 and rc["after_master_restart_median_s"] > 0
    assert result["link_request_round_trip"]["requests"] == 20
    assert list(tmp_path.iterdir()) == []  # cleans up after itself
