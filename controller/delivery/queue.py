"""The delivery queue: which local files still have to reach the observatory, persisted in state_dir.

sqlite (stdlib) in its default rollback-journal mode with `synchronous=FULL`: every enqueue and every "delivered" is
one committed transaction, so a restart or a power cut leaves the queue as it was at the last commit (a file
delivered but not yet marked is simply sent again; rsync skips what is already whole on the server).

A file is identified by (source, relative path) and its (size, mtime_ns) signature: a file that changed after it
was delivered (a growing CSV, status.json) is queued again. The queue never touches the local files.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

QUEUE_NAME = "delivery_queue.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL,
    rel TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    delivered_at REAL,
    delivered_size INTEGER,
    delivered_mtime_ns INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, rel)
)
"""


@dataclass(frozen=True)
class Pending:
    source: str
    rel: str
    size: int
    mtime_ns: int
    queued_at: float


class DeliveryQueue:
    """Persistent set of files to deliver. Not thread-safe: one owner (the delivery service's executor calls)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def offer(self, source: str, rel: str, size: int, mtime_ns: int, now: float | None = None) -> bool:
        """Queue the file unless this very version is already queued or delivered. True when newly queued."""
        row = self._db.execute(
            "SELECT size, mtime_ns, delivered_at, delivered_size, delivered_mtime_ns FROM files "
            "WHERE source=? AND rel=?",
            (source, rel),
        ).fetchone()
        now = time.time() if now is None else now
        if row is None:
            self._db.execute(
                "INSERT INTO files (source, rel, size, mtime_ns, queued_at) VALUES (?, ?, ?, ?, ?)",
                (source, rel, size, mtime_ns, now),
            )
            return True
        q_size, q_mtime, delivered_at, d_size, d_mtime = row
        if delivered_at is not None and (d_size, d_mtime) == (size, mtime_ns):
            return False  # this version is on the server
        if delivered_at is None and (q_size, q_mtime) == (size, mtime_ns):
            return False  # already waiting
        # Changed since delivered (queued anew, lag counted from now) or changed while waiting (keeps its place).
        queued_at = now if delivered_at is not None else None
        self._db.execute(
            "UPDATE files SET size=?, mtime_ns=?, delivered_at=NULL, queued_at=COALESCE(?, queued_at) "
            "WHERE source=? AND rel=?",
            (size, mtime_ns, queued_at, source, rel),
        )
        return delivered_at is not None

    def pending(self, limit: int) -> list[Pending]:
        rows = self._db.execute(
            "SELECT source, rel, size, mtime_ns, queued_at FROM files WHERE delivered_at IS NULL "
            "ORDER BY queued_at, source, rel LIMIT ?",
            (limit,),
        ).fetchall()
        return [Pending(*r) for r in rows]

    def mark_delivered(self, items: list[Pending], now: float | None = None) -> None:
        """The versions of `items` that were sent are on the server (a file changed meanwhile stays queued)."""
        now = time.time() if now is None else now
        self._db.execute("BEGIN")
        try:
            for it in items:
                self._db.execute(
                    "UPDATE files SET delivered_at=?, delivered_size=?, delivered_mtime_ns=?, attempts=0 "
                    "WHERE source=? AND rel=? AND size=? AND mtime_ns=?",
                    (now, it.size, it.mtime_ns, it.source, it.rel, it.size, it.mtime_ns),
                )
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise

    def mark_failed(self, items: list[Pending]) -> None:
        self._db.executemany(
            "UPDATE files SET attempts=attempts+1 WHERE source=? AND rel=?", [(it.source, it.rel) for it in items]
        )

    def backlog(self, now: float | None = None) -> dict:
        """Files and bytes waiting, and the age (s) of the oldest waiting file (0 when none)."""
        now = time.time() if now is None else now
        files, size, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(queued_at) FROM files WHERE delivered_at IS NULL"
        ).fetchone()
        delivered = self._db.execute("SELECT COUNT(*) FROM files WHERE delivered_at IS NOT NULL").fetchone()[0]
        return {
            "backlog_files": files,
            "backlog_bytes": size,
            "oldest_pending_s": round(max(0.0, now - oldest), 1) if oldest is not None else 0.0,
            "delivered_files": delivered,
        }
