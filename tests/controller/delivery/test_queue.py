"""The delivery queue: persisted across restarts, re-queues changed files, never loses a waiting file."""

from __future__ import annotations

from pathlib import Path

from controller.delivery.queue import DeliveryQueue
from controller.delivery.service import Source, backoff_s, scan_source


def test_queue_survives_a_restart_and_requeues_a_changed_file(tmp_path):
    q = DeliveryQueue(tmp_path / "q.sqlite")
    assert q.offer("processed", "a.csv", 10, 1, now=100.0)
    assert q.offer("processed", "b.csv", 20, 1, now=101.0)
    assert not q.offer("processed", "a.csv", 10, 1, now=102.0)  # same version: queued once
    q.close()

    q = DeliveryQueue(tmp_path / "q.sqlite")  # a restart (or a power cut after the commits)
    pending = q.pending(10)
    assert [p.rel for p in pending] == ["a.csv", "b.csv"]
    q.mark_delivered(pending[:1], now=110.0)
    assert q.backlog(now=111.0) == {
        "backlog_files": 1, "backlog_bytes": 20, "oldest_pending_s": 10.0, "delivered_files": 1,
    }  # fmt: skip
    assert not q.offer("processed", "a.csv", 10, 1, now=112.0)  # delivered version: not again
    assert q.offer("processed", "a.csv", 15, 2, now=113.0)  # the CSV grew: sent again
    assert {p.rel for p in q.pending(10)} == {"a.csv", "b.csv"}
    q.close()


def test_a_file_changed_while_being_sent_stays_queued(tmp_path):
    q = DeliveryQueue(tmp_path / "q.sqlite")
    q.offer("status", "status.json", 5, 1, now=1.0)
    sent = q.pending(10)
    q.offer("status", "status.json", 6, 2, now=2.0)  # rewritten during the rsync run
    q.mark_delivered(sent, now=3.0)
    assert [(p.rel, p.size) for p in q.pending(10)] == [("status.json", 6)]


def test_scan_skips_temp_hidden_and_unlisted_files(tmp_path):
    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "plot.png").write_bytes(b"x")
    (tmp_path / ".tmp-status.json.abc").write_text("half")
    (tmp_path / ".rsync-partial").mkdir()
    (tmp_path / ".rsync-partial" / "x").write_text("p")
    (tmp_path / "status.json").write_text("{}")
    assert [r[0] for r in scan_source(Source("p", tmp_path))] == ["status.json", "day/plot.png"]
    assert [r[0] for r in scan_source(Source("s", tmp_path, ("status.json",)))] == ["status.json"]
    assert scan_source(Source("none", Path(tmp_path / "missing"))) == []


def test_backoff_doubles_up_to_the_maximum():
    assert [backoff_s(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
