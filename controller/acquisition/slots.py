"""The slot plan and the slot loop: captures on master time.

Both Pis run the same `SlotLoop`. The master's plan is sent to the slave ("schedule" request); each Pi sleeps until
slot k on ITS clock corrected by the measured offset (master - local; 0 on the master), captures in an executor
thread and names the file with the slot's master time, so A and B of one slot carry the same timestamp string.

Slot times never repeat and never collide with a stored file (issue 11):

- The slot timeline: `timeline = max(master clock, anchor + (1 - TIMELINE_SLEW) * monotonic time since the
  anchor)`, where the anchor is the timeline value at the last slot captured in this run. While the clock runs
  normally the clock wins; when the master clock steps back live, the timeline goes on from the monotonic clock,
  so the next slots are the ones after the last captured slot, a little slower than the period - acquisition
  neither stops for the length of the step nor names a slot again, and the timeline rejoins the clock after
  1/TIMELINE_SLEW times the step (status `timeline_lead_s`). Slot names only ever increase.
  Only the master keeps this timeline (`continue_timeline`); it serves its clock to the slave through the link
  as `TimelineClock`, so the slave's measured offset already carries the timeline and a live step back of the
  master clock is no step for the slave.
- Across a restart the monotonic anchor is gone; the newest second each device named is durable
  (`naming.CaptureSeconds`). A master whose clock is behind that second does not capture into slots it already
  holds: it waits, says so (`held`: state detail `clock_behind_data` with both times), and acquires again once
  its clock is past them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from controller.acquisition.naming import whole_second
from controller.acquisition.runner import DeviceRunner
from controller.errors import DeviceUnavailable, PycamError
from controller.logging import get_logger
from controller.storage.names import check_type
from controller.timekeeping.clock import Clock

# The slot loop waits for a slot's captures until this fraction of a period before the next slot.
SLOT_WAIT_MARGIN = 0.25
# After a live step back the slot timeline runs this much slower than real time until it meets the clock again.
TIMELINE_SLEW = 0.1


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


class TimelineClock:
    """The master's clock as the slave should see it: `time()` on the slot timeline (see the module docstring);
    everything else is the underlying clock's. `loop()` returns the running SlotLoop or None."""

    def __init__(self, clock: Clock, loop: Callable[[], SlotLoop | None]):
        self._clock = clock
        self._loop = loop

    def time(self) -> float:
        loop = self._loop()
        now = self._clock.time()
        return now if loop is None else loop.timeline_now(now)

    def monotonic(self) -> float:
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)

    def scale(self) -> float:
        return self._clock.scale()


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

    `period(key)` gives a device its own period (None: the plan's): the spectrometer captures every 1/FRS s on
    its own slots (same epoch and window, still named on master time), the cameras on the plan's.
    """

    def __init__(
        self,
        clock: Clock,
        devices: dict[str, DeviceRunner],
        plan: Callable[[], SlotPlan | None],
        offset: Callable[[], float] = lambda: 0.0,
        blocked: Callable[[], str | None] = lambda: None,
        on_slot: Callable[[int, float], None] | None = None,
        period: Callable[[str], float | None] = lambda key: None,
        continue_timeline: bool = True,
    ):
        self.clock = clock
        self._continue_timeline = continue_timeline
        self._period = period
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
        self.last_slot_time: float | None = None
        self._last_time: dict[str, float] = {}  # device key -> time of its last slot
        self._anchor: tuple[float, float] | None = None  # (timeline time, clock monotonic) at the last slot
        self.held: dict | None = None  # why no slot is captured although the plan wants one (clock_behind_data)
        self._log = get_logger("slot_loop")
        for device in devices.values():
            device.names.reserved = self._reserved

    # ------------------------------------------------------------------------------------------------ timeline

    def timeline_now(self, master_now: float) -> float:
        """Master time on the slot timeline: never behind the last captured slot plus the monotonic time since
        (see the module docstring)."""
        if self._anchor is None or not self._continue_timeline:
            return master_now
        anchor_t, anchor_mono = self._anchor
        return max(master_now, anchor_t + (1.0 - TIMELINE_SLEW) * (self.clock.monotonic() - anchor_mono))

    def wait_until(self, t: float) -> float:
        """Clock seconds until the timeline reaches master time `t`."""
        master_now = self.clock.time() + self._offset()
        now = self.timeline_now(master_now)
        if now <= master_now:
            return t - now
        return min((t - now) / (1.0 - TIMELINE_SLEW), t - master_now)

    def timeline_lead_s(self) -> float:
        """How far the slot timeline runs ahead of the master clock (after a live step back)."""
        master_now = self.clock.time() + self._offset()
        return self.timeline_now(master_now) - master_now

    def info(self) -> dict:
        """For the status: slots captured, the last one, why none is captured now (`held`), the timeline lead."""
        return {
            "slots": self.slots,
            "last_slot_time": self.last_slot_time,
            "held": dict(self.held) if self.held else None,
            "timeline_lead_s": round(self.timeline_lead_s(), 3),
        }

    def _reserved(self, device: str, second: int) -> bool:
        """True when a coming slot of the running plan will name `second` for `device` (singles avoid it)."""
        plan = self._plan()
        runner = self.devices.get(device)
        if plan is None or runner is None or not runner.continuous:
            return False
        now = whole_second(self.timeline_now(self.clock.time() + self._offset()))
        if second < now:
            return False
        plan = self.device_plan(plan, device)
        k, t = plan.next_slot(float(second))
        return whole_second(t) == second and plan.in_window(t)

    def device_plan(self, plan: SlotPlan, key: str) -> SlotPlan:
        """The device's own slots: the plan's, or its own period on the same epoch and window."""
        period = self._period(key)
        if period is None or abs(period - plan.period_s) < 1e-9:
            return plan
        return SlotPlan(period, plan.epoch_s, plan.start_s, plan.end_s)

    def _next_slot(self, plan: SlotPlan, key: str, now: float) -> tuple[int, float]:
        """The device's next slot at or after timeline time `now`, in a later second than its last slot."""
        k, t = plan.next_slot(now)
        last = self._last_time.get(key)
        if last is not None and whole_second(t) <= whole_second(last):
            k, t = plan.next_slot(float(whole_second(last) + 1))
        return k, t

    def _due(self, plan: SlotPlan, devices: list[DeviceRunner], now: float) -> tuple[int, float, list[DeviceRunner]]:
        """The next slot time among the devices' own slots, its index on the plan, and the devices due then."""
        nexts = {d.key: self._next_slot(self.device_plan(plan, d.key), d.key, now) for d in devices}
        t_slot = min(t for _, t in nexts.values())
        due = [d for d in devices if abs(nexts[d.key][1] - t_slot) < 1e-6]
        k = round((t_slot - plan.epoch_s) / plan.period_s)
        return k, t_slot, due

    def _after(self, plan: SlotPlan, devices: list[DeviceRunner], t_slot: float) -> float:
        """The next slot time of any of `devices` after `t_slot`."""
        return min(self.device_plan(plan, d.key).next_slot(t_slot + 1e-6)[1] for d in devices)

    def _held_by_data(self, devices: list[DeviceRunner], t_slot: float, master_now: float) -> float | None:
        """Seconds to wait when the slot at `t_slot` is at or below a second a device named before this run."""
        floors = [f for f in (d.names.floor(d.key) for d in devices) if f is not None]
        newest = max(floors, default=None)
        if newest is None or whole_second(t_slot) > newest:
            if self.held is not None:
                self._log.info("slot_loop_resumed", detail=self.held["detail"], slot_time=t_slot)
                self.held = None
            return None
        if self.held is None:
            self._log.warning(
                "slot_loop_held", detail="clock_behind_data", clock=master_now, newest_data=newest,
                why="the master clock is behind the newest slot already stored; waiting until it is past",
            )  # fmt: skip
        self.held = {"detail": "clock_behind_data", "clock": round(master_now, 3), "newest_data": newest}
        return newest + 1 - master_now

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
        except PycamError as e:  # refused (e.g. no free second): the requester learns why
            if not req.future.done():
                req.future.set_exception(e)
            return
        except Exception as e:  # noqa: BLE001 - a bug in the capture path: logged, the loop and other devices go on
            self._log.error("single_capture_crashed", device=req.device, error=repr(e))
            name = None
        if not req.future.done():
            req.future.set_result(name)

    def busy(self) -> bool:
        """A capture of this loop (slot or single) is still in flight."""
        return any(not t.done() for t in (*self._busy.values(), *self._single_tasks))

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
            now = self.timeline_now(master_now)
            k, t_slot, due = self._due(plan, continuous, now)
            if not plan.in_window(t_slot):
                # Outside the window: wait for a plan change (the supervisor moves on at the window's end).
                await self._sleep_or_wake(None if plan.end_s is not None and t_slot >= plan.end_s else plan.period_s)
                continue
            wait_s = self._held_by_data(due, t_slot, master_now)
            if wait_s is not None:
                await self._sleep_or_wake(min(max(wait_s, 0.0), plan.period_s))
                continue
            await self._sleep_or_wake(self.wait_until(t_slot))
            if self._singles or self._plan() != plan or self._blocked() is not None:
                continue  # woken early: take singles / re-plan / blocked meanwhile (paused), then look again
            offset = self._offset()
            # asyncio may wake a hair early; never capture before the slot on the timeline.
            early = self.wait_until(t_slot)
            if early > 0.0005:
                await self.clock.sleep(early)
            if self._blocked() is not None:
                continue  # blocked (paused) while waiting for the slot: no capture starts while blocked
            due = [d for d in due if d.continuous]  # stopped (SPC) while waiting for the slot: it starts none
            if not due:
                continue
            self._anchor = (self.timeline_now(self.clock.time() + offset), self.clock.monotonic())
            self.last_slot = k
            self.last_slot_time = t_slot
            for d in due:
                self._last_time[d.key] = t_slot
            self.slots += 1
            started = self._start_captures(due, k, t_slot)
            # Stop waiting a little before the next slot, so that slot is not already past when it is planned.
            t_next = self._after(plan, continuous, t_slot)
            await self._wait_captures(started, self.wait_until(t_next - SLOT_WAIT_MARGIN * (t_next - t_slot)))
            self._on_slot(k, t_slot)
