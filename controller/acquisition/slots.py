"""The slot plan and the slot loop: captures on master time.

Both Pis run the same `SlotLoop`. The master's plan is sent to the slave ("schedule" request); each Pi sleeps until
slot k on ITS clock corrected by the measured offset (master - local; 0 on the master), captures in an executor
thread and names the file with the slot's master time, so A and B of one slot carry the same timestamp string.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from controller.acquisition.runner import DeviceRunner
from controller.clock import Clock
from controller.errors import DeviceUnavailable
from controller.logging import get_logger
from controller.storage.names import check_type

# The slot loop waits for a slot's captures until this fraction of a period before the next slot.
SLOT_WAIT_MARGIN = 0.25


@dataclass(frozen=True)
class SlotPlan:
    """Slots on master time: slot k is at `epoch_s + k * period_s`; captures only inside [start_s, end_s)."""

    period_s: float
    epoch_s: float
    start_s: float | None = None
    end_s: float | None = None

    def slot_time(self, k: int) -> float:
        return self.epoch_s + k * self.period_s

    def next_slot(self, t: float) -> tuple[int, float]:
        """The first slot at or after master time `t` (and not before the window start)."""
        if self.start_s is not None:
            t = max(t, self.start_s)
        k = math.ceil((t - self.epoch_s) / self.period_s - 1e-9)
        return k, self.slot_time(k)

    def in_window(self, t: float) -> bool:
        return (self.start_s is None or t >= self.start_s) and (self.end_s is None or t < self.end_s)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SlotPlan:
        def num(key: str) -> float | None:
            v = data.get(key)
            return None if v is None else float(v)

        period = float(data["period_s"])
        if not (0 < period <= 3600):
            raise ValueError(f"period_s {period!r} out of range")
        return cls(period, float(data["epoch_s"]), num("start_s"), num("end_s"))


async def wait_event_or_sleep(event: asyncio.Event, clock: Clock, seconds: float | None) -> None:
    """Wait until `event` is set or `seconds` of clock time pass (None: no limit); clears the event."""
    if not event.is_set():
        tasks = {asyncio.ensure_future(event.wait())}
        if seconds is not None:
            tasks.add(asyncio.ensure_future(clock.sleep(max(0.0, seconds))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
    event.clear()


@dataclass
class SingleRequest:
    device: str
    kind: str
    future: asyncio.Future


class SlotLoop:
    """Sleeps until each slot (master time mapped to the local clock) and captures on every continuous device.

    `plan()` returns the current SlotPlan or None; `offset()` is master - local in seconds; `blocked()` returns a
    reason string while captures must not run (disk full, clock unsynchronised). Single captures requested from
    outside are taken right after the next slot's continuous captures (or at once when nothing is continuous).
    Each capture runs as its own task: the loop waits for a slot's captures at most until the next slot, and a
    device still busy with an earlier capture (a slow or hung device, until its time limit) skips its slots
    while the others capture on theirs.
    """

    def __init__(
        self,
        clock: Clock,
        devices: dict[str, DeviceRunner],
        plan: Callable[[], SlotPlan | None],
        offset: Callable[[], float] = lambda: 0.0,
        blocked: Callable[[], str | None] = lambda: None,
        on_slot: Callable[[int, float], None] | None = None,
    ):
        self.clock = clock
        self.devices = devices
        self._plan = plan
        self._offset = offset
        self._blocked = blocked
        self._on_slot = on_slot or (lambda k, t: None)
        self._wake = asyncio.Event()
        self._singles: deque[SingleRequest] = deque()
        self._busy: dict[str, asyncio.Task] = {}  # device key -> its slot capture still running
        self._single_tasks: set[asyncio.Task] = set()
        self.skipped: dict[str, int] = {}  # device key -> slots skipped because it was still busy
        self.slots = 0
        self.last_slot: int | None = None
        self._log = get_logger("slot_loop")

    def wake(self) -> None:
        """Re-read the plan / singles now (plan changed, single capture queued, unblocked)."""
        self._wake.set()

    def request_single(self, device: str, kind: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._singles.append(SingleRequest(device, check_type(kind), fut))
        self.wake()
        return fut

    async def _sleep_or_wake(self, seconds: float | None) -> None:
        await wait_event_or_sleep(self._wake, self.clock, seconds)

    async def _take_singles(self) -> None:
        """Start the queued single captures; each waits for its device (never for the slot loop)."""
        while self._singles:
            req = self._singles.popleft()
            runner = self.devices.get(req.device)
            if runner is None:
                if not req.future.done():
                    req.future.set_exception(DeviceUnavailable(req.device, "no such device on this Pi"))
                continue
            task = asyncio.ensure_future(self._single(runner, req))
            self._single_tasks.add(task)
            task.add_done_callback(self._single_tasks.discard)
        await asyncio.sleep(0)  # let them take their device's lock before the next slot's capture queues on it

    async def _single(self, runner: DeviceRunner, req: SingleRequest) -> None:
        try:
            name = await runner.capture(None, req.kind)
        except asyncio.CancelledError:
            req.future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the capture path: logged, the loop and other devices go on
            self._log.error("single_capture_crashed", device=req.device, error=repr(e))
            name = None
        if not req.future.done():
            req.future.set_result(name)

    def _start_captures(self, devices: list[DeviceRunner], k: int, t_slot: float) -> list[asyncio.Task]:
        started = []
        for d in devices:
            busy = self._busy.get(d.key)
            if busy is not None and not busy.done():
                self.skipped[d.key] = self.skipped.get(d.key, 0) + 1
                self._log.warning("slot_skipped_device_busy", device=d.key, slot=k)
                continue
            if busy is not None and busy.exception() is not None:
                raise busy.exception()  # a bug in the capture path: the supervisor notes slot_loop_crashed
            task = asyncio.ensure_future(d.capture(t_slot))
            self._busy[d.key] = task
            started.append(task)
        return started

    async def _wait_captures(self, tasks: list[asyncio.Task], until_s: float) -> None:
        """Wait for this slot's captures, but not past `until_s` clock seconds (the next slot)."""
        if not tasks:
            return
        timer = asyncio.ensure_future(self.clock.sleep(max(0.0, until_s)))
        waiter = asyncio.ensure_future(asyncio.wait(tasks))
        try:
            await asyncio.wait({timer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _cancel_captures(self) -> None:
        tasks = [t for t in (*self._busy.values(), *self._single_tasks) if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._busy.clear()

    async def run(self) -> None:
        """Capture on the plan until cancelled; the devices are scheduled (continuous when wanted) meanwhile."""
        for device in self.devices.values():
            device.set_scheduled(True)
        try:
            await self._run()
        finally:
            await self._cancel_captures()
            for device in self.devices.values():
                device.set_scheduled(False)

    async def _run(self) -> None:
        last_k: int | None = None
        while True:
            await self._take_singles()
            plan = self._plan()
            reason = self._blocked()
            continuous = [d for d in self.devices.values() if d.continuous]
            if plan is None or reason is not None or not continuous:
                await self._sleep_or_wake(None if plan is None or reason is None else plan.period_s)
                continue
            offset = self._offset()
            master_now = self.clock.time() + offset
            k, t_slot = plan.next_slot(master_now)
            if last_k is not None and k <= last_k:
                k, t_slot = last_k + 1, plan.slot_time(last_k + 1)
            if not plan.in_window(t_slot):
                # Outside the window: wait for a plan change (the supervisor moves on at the window's end).
                await self._sleep_or_wake(None if plan.end_s is not None and t_slot >= plan.end_s else plan.period_s)
                continue
            await self._sleep_or_wake(t_slot - master_now)
            if self._singles or self._plan() != plan:
                continue  # woken early: take singles / re-plan, then come back to this slot
            offset = self._offset()
            # asyncio may wake a hair early; never capture before the slot on master time.
            early = t_slot - (self.clock.time() + offset)
            if early > 0.0005:
                await self.clock.sleep(early)
            last_k = k
            self.last_slot = k
            self.slots += 1
            started = self._start_captures(continuous, k, t_slot)
            # Stop waiting a little before the next slot, so that slot is not already past when it is planned.
            until_next = plan.slot_time(k + 1) - SLOT_WAIT_MARGIN * plan.period_s - (self.clock.time() + offset)
            await self._wait_captures(started, until_next)
            self._on_slot(k, t_slot)
