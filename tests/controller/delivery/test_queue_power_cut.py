"""The delivery queue after a power cut: a process killed -9 while queueing leaves every committed entry and a
sound database (sqlite, synchronous=FULL)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from controller.delivery.queue import DeliveryQueue

WRITER = """
import sys
from controller.delivery.queue import DeliveryQueue
q = DeliveryQueue(sys.argv[1])
for i in range(100000):
    q.offer("processed", f"f{i:06d}.csv", i, i)
    if i == 200:
        print("committed", flush=True)
"""


def test_killed_while_queueing_keeps_every_committed_entry(tmp_path):
    path = tmp_path / "q.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"  # 201 entries are committed by now
    finally:
        proc.kill()
        proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    q = DeliveryQueue(path)
    pending = q.pending(1_000_000)
    assert len(pending) >= 201
    assert [p.rel for p in pending[:201]] == [f"f{i:06d}.csv" for i in range(201)]
    q.close()
