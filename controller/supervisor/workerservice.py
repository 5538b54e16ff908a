"""The processing worker supervised from one place: the worker machine (states/worker.py) IS its phase, and the
one restart policy (backoff per crash in a row, give up after too many) lives here.

The child's crash callback (its watcher thread) and its typed events (its pump thread, processing/events.py) hop to
the event loop, where they fire the machine: crash -> backoff -> restart, behind/caught_up, and an Idle answering a
drain's rescan token ends that drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.config import Config
from controller.errors import PycamError
from controller.supervisor.services import ServiceContext
from states.runtime import MachineRuntime
from states.worker import TABLE

if TYPE_CHECKING:
    from processing.events import WorkerEvent
    from processing.worker import Journal, ProcessingWorker

WORKER_DRAIN_S = 600.0  # clock seconds the process phase waits for the worker's backlog
WORKER_BACKOFF_S = (0.5, 2.0, 10.0, 30.0)  # real seconds before restarting a crashed worker (n-th crash in a row)
WORKER_MAX_CRASHES = 5  # crashes in a row before the worker is disabled until the next start
WORKER_STABLE_S = 300.0  # real seconds of running after which a crash no longer counts as "in a row"


def processing_out_dir(cfg: Config) -> Path:
    return Path(cfg.storage.data_root).parent / "processed"


class WorkerService:
    """Start, restart, drain and stop the processing worker child (processing/worker.py)."""

    name = "worker"

    def __init__(self, ctx: ServiceContext, cfg: Config):
        self.ctx = ctx
        self.cfg = cfg
        self.machine = MachineRuntime(TABLE, "worker", ctx.clock, logger=ctx.log)
        self.worker: ProcessingWorker | None = None
        self.pairs = 0  # pairs the worker reported processed (its PairDone events)
        self.on_pair: list[Callable[[], None]] = []  # worker -> its results' consumers (the delivery)
        self.crashes = 0  # in a row
        self.restart_handle: asyncio.TimerHandle | None = None
        self._up_at = 0.0
        self.drain_waiters: dict[int, asyncio.Future] = {}  # rescan token -> future set by the Idle answering it
        self._drain_tokens = 0
        self._journal_cache: tuple[float, Journal] | None = None

    @property
    def out_dir(self) -> Path:
        return processing_out_dir(self.cfg)

    # ----------------------------------------------------------------------------------------------- service

    async def start(self) -> None:
        from processing.worker import ProcessingWorker

        loop = asyncio.get_running_loop()
        self.worker = ProcessingWorker(
            self.cfg, self.cfg.storage.data_root, self.out_dir,
            crashed=lambda code: loop.call_soon_threadsafe(self._crashed, code),
        )  # fmt: skip
        # The child's events are consumed as they come (its pump thread hops here), not only by the drain step.
        self.worker.on_event = lambda event: loop.call_soon_threadsafe(self._event, event)
        self.machine.fire("start", reason="boot")
        self._spawn()

    async def stop(self) -> None:
        if self.worker is None:
            return
        if self.restart_handle is not None:
            self.restart_handle.cancel()
            self.restart_handle = None
        self.machine.fire_if("stop", reason="shutdown")
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)
        self.machine.fire_if("exited")

    def status(self) -> dict[str, Any]:
        return {"state": self.machine.state, "history": self.machine.recent(), "pairs": self.pairs}

    # ------------------------------------------------------------------------------------------------ life

    def _spawn(self) -> None:
        """In starting/restarting: spawn the child (started) or count it as a crash."""
        try:
            self.worker.start()
        except (PycamError, OSError) as e:
            self.ctx.log.error("worker_start_failed", error=str(e))
            self._crashed(None, str(e))
            return
        self._up_at = time.monotonic()
        # The child may already have died (its crash callback is queued behind us): then this does nothing.
        self.machine.fire_if("started", reason=f"pid {self.worker.pid}")
        for token in self.drain_waiters:  # a drain's rescan died with the previous child: ask the new one
            self.worker.rescan(token)

    def _event(self, event: WorkerEvent) -> None:
        """An event of the worker child (on the loop): Backlog/Idle drive the machine, an Idle ends a drain."""
        from processing.events import Backlog, Idle, PairDone

        if isinstance(event, PairDone):
            self.pairs += 1
            for consumer in self.on_pair:
                consumer()
        elif isinstance(event, Backlog):
            self.machine.fire_if("behind", reason=f"{event.pairs} pairs to process")
        elif isinstance(event, Idle):
            self.machine.fire_if("caught_up", reason=f"idle after {event.pairs} pairs")
            fut = self.drain_waiters.pop(event.token, None) if event.token is not None else None
            if fut is not None and not fut.done():
                fut.set_result(event.pairs)

    def _crashed(self, exitcode: int | None, error: str | None = None) -> None:
        """The child died unasked (on the loop: the worker's watcher thread hops here)."""
        if not self.machine.fire_if("crash", reason=error or f"exit code {exitcode}"):
            return  # stopping or already crashed: not a crash to act on
        if time.monotonic() - self._up_at >= WORKER_STABLE_S:
            self.crashes = 0  # it had been running fine: a fresh crash, not one of a series
        self.crashes += 1
        self.ctx.note_fault("worker_crashed", {"exitcode": exitcode, "crashes_in_a_row": self.crashes})
        if self.crashes > WORKER_MAX_CRASHES:
            self.machine.fire("give_up", reason=f"{self.crashes} crashes in a row")
            self.ctx.note_fault("worker_disabled", {"crashes_in_a_row": self.crashes})
            return
        delay = WORKER_BACKOFF_S[min(self.crashes - 1, len(WORKER_BACKOFF_S) - 1)]
        self.restart_handle = asyncio.get_running_loop().call_later(delay, self._restart)

    def _restart(self) -> None:
        self.restart_handle = None
        if self.machine.fire_if("restart", reason=f"crash {self.crashes} in a row"):
            self._spawn()

    # ------------------------------------------------------------------------------------------------- data

    def notify(self, name: str) -> None:
        """A file was stored under the data root (its name): the worker's sink."""
        if self.worker is not None and name:
            with contextlib.suppress(OSError, ValueError):
                self.worker.notify(name)

    async def drain(self) -> None:
        """Wait (bounded) until the worker has processed the backlog of the day."""
        worker = self.worker
        if worker is None or self.machine.state not in ("running", "backlog"):
            return
        self._drain_tokens += 1
        token = self._drain_tokens
        fut = asyncio.get_running_loop().create_future()
        self.drain_waiters[token] = fut
        worker.rescan(token)
        real_timeout = WORKER_DRAIN_S / max(self.ctx.clock.scale(), 1e-9)
        try:
            await asyncio.wait_for(fut, real_timeout)
            idle = True
        except TimeoutError:
            idle = False
        finally:
            self.drain_waiters.pop(token, None)
        self.ctx.log.info("worker_drained" if idle else "worker_drain_timeout", timeout_s=round(real_timeout, 1))

    def journal(self) -> Journal | None:
        """The worker's journal (re-read when it changed), or None: then nothing counts as processed."""
        if self.worker is None:
            return None
        from processing.worker import JOURNAL_NAME, Journal

        journal_path = self.out_dir / JOURNAL_NAME
        try:
            mtime = journal_path.stat().st_mtime
            if self._journal_cache is None or self._journal_cache[0] != mtime:
                self._journal_cache = (mtime, Journal(journal_path))
        except OSError:
            return None
        return self._journal_cache[1]
