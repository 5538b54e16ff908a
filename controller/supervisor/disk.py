"""The disk suspender of one Pi as a service: free space checked after each slot (and while paused), old processed
data deleted first on the master (controller/disk_policy.py), acquisition paused below `min_free_mb` and resumed
above `resume_free_mb` (its `Suspender`)."""

from __future__ import annotations

from typing import Any

from controller.disk_policy import DiskPolicy
from controller.supervisor.services import ServiceContext
from controller.supervisor.suspender import Suspender


class DiskService:
    name = "disk"

    def __init__(self, ctx: ServiceContext, policy: DiskPolicy):
        self.ctx = ctx
        self.policy = policy
        self.free_mb: float | None = None

    @property
    def suspender(self) -> Suspender:
        return self.policy.suspender

    @property
    def paused(self) -> bool:
        return self.policy.suspender.active

    async def start(self) -> None:
        self.check()

    async def stop(self) -> None:
        return None

    def check(self) -> None:
        """One check (one statvfs when there is room); a switch of the suspender wakes the supervisor."""
        try:
            res = self.policy.check()
        except OSError as e:
            self.ctx.log.warning("disk_check_failed", error=str(e))
            return
        self.free_mb = round(res.free_mb, 1)
        if res.changed:
            if res.paused:
                self.ctx.note_fault("disk_full", {"free_mb": self.free_mb})
            self.ctx.kick.set()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "free_mb": self.free_mb,
            "paused": self.paused,
            "deleted_total": self.policy.deleted_total,
        }
        if self.policy.index is not None:  # the master's data store: what it holds, and what is foreign there
            counts = self.policy.index.counts()
            out.update(stored_files=counts["files"], foreign_files=counts["foreign"])
        return out
