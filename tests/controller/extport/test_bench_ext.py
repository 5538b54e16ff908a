"""The ext bench runs and reports its figures (the figures themselves are not asserted: they are measurements)."""

from controller.bench.ext import run_ext_bench


def test_run_ext_bench_reports_round_trips():
    figures = run_ext_bench(n=20)
    assert figures["n"] == 20 and figures["target_p99_ms"] == 20.0
    for name in ("ping", "setting", "forwarded"):
        f = figures[name]
        assert 0 < f["median_ms"] <= f["p99_ms"] <= f["max_ms"]
        assert isinstance(f["meets_target"], bool)
