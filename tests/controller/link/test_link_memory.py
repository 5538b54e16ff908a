"""Issue 11 finding 4: link memory was unbounded (8 pre-hello connections with 64 MiB frames: 61 -> 587 MB; a slave
streaming 40 x 60 MiB files: 2153 MB). The master runs in its own process; its peak RSS is what is asserted."""

from __future__ import annotations

import json

from controller.bench.link_memory import run_link_memory_bench


def test_master_stays_under_150_mb_under_pre_hello_flood_and_big_files(tmp_path):
    result = run_link_memory_bench(connections=32, files=3, file_mb=60, work_dir=tmp_path)
    print(json.dumps(result))  # the figures, for the report
    assert result["stream"]["acks"] == 3 and result["master_link"]["stats"]["stored"] == 3
    assert result["flood"]["closed_by_master"] >= 32  # at least every connection that announced 64 MiB
    # 3 x 60 MiB held in memory would be 180 MB on their own; streamed, the master barely moves.
    assert result["master_peak_rss_mb"] < 150
    assert list(tmp_path.iterdir()) == []
