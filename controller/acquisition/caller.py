"""Each device's blocking calls in the device's own thread, each with a time limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from controller.errors import DeviceTimeout

# A capture may wait for up to this many frame (scan) times: a fresh frame after a setting change.
CAPTURE_FRAMES = 3

# Opening (firmware, configuration, stream start) gets this many times the device's call limit.
OPEN_FACTOR = 3

# Calls of one device still hung in a vendor call after their time limit: beyond this many, further calls fail at
# once instead of tying up one more thread each.
MAX_HUNG_CALLS = 2


class DeviceCaller:
    """Runs one device's blocking calls, one at a time, in the device's own daemon thread, each with a time limit.

    A call over its limit raises DeviceTimeout at once; its thread is abandoned (it is stuck in the vendor call and
    never reused) and the next call gets a fresh thread, so one hung device never holds another device, the slot
    loop or start-up. Abandoned threads are daemons: a hung vendor call cannot keep the process from exiting.
    """

    def __init__(self, name: str):
        self.name = name
        self._queue: Any = None  # queue.SimpleQueue of the current worker thread
        self._hung: list[concurrent.futures.Future] = []  # timed-out calls still running in abandoned threads
        self.timeouts = 0

    def _thread(self) -> Any:
        if self._queue is None:
            import queue

            self._queue = queue.SimpleQueue()
            name = f"device-{self.name}"
            threading.Thread(target=_device_worker, args=(self._queue,), name=name, daemon=True).start()
        return self._queue

    @property
    def hung(self) -> int:
        """Abandoned calls still stuck in the vendor library."""
        self._hung = [f for f in self._hung if not f.done()]
        return len(self._hung)

    async def _wait_for_hung(self, timeout_s: float) -> None:
        """Too many calls stuck: wait (within this call's limit) for one to return, else DeviceTimeout."""
        if self.hung < MAX_HUNG_CALLS:
            return
        waiters = [asyncio.wrap_future(f) for f in self._hung]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self.hung >= MAX_HUNG_CALLS:
            raise DeviceTimeout(self.name, f"{self.hung} earlier calls still hung in the device library")

    async def call(
        self, timeout_s: float, fn: Callable[..., Any], *args: Any, late: Callable[[Any], None] | None = None
    ) -> Any:
        """`fn(*args)` in the device thread, limited to `timeout_s` real seconds (DeviceTimeout beyond it).
        `late(result)` gets the result of a timed-out call that returns after all (e.g. to close a late device)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._wait_for_hung(timeout_s)
        timeout_s = max(0.0, timeout_s - (loop.time() - start))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._thread().put((fut, fn, args))
        wrapped = asyncio.wrap_future(fut)
        done, _ = await asyncio.wait({wrapped}, timeout=timeout_s)
        if done:
            return wrapped.result()
        wrapped.cancel()  # also cancels `fut` when it has not started (and detaches it from this loop)
        # The thread is stuck in this call (or in an earlier one): never give it another call.
        self._abandon()
        if not fut.done():
            self._hung.append(fut)
        if late is not None and not fut.cancelled():
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() is not None or late(f.result()))
        self.timeouts += 1
        raise DeviceTimeout(self.name, f"{getattr(fn, '__name__', 'call')}: no answer within {timeout_s:.3g} s")

    def _abandon(self) -> None:
        if self._queue is not None:
            self._queue.put(None)  # the worker ends once its call returns, if it ever does
        self._queue = None

    def shutdown(self) -> None:
        """End the worker thread after its queued calls (shutdown)."""
        if self._queue is not None:
            self._queue.put(None)
        self._queue = None


def _device_worker(q: Any) -> None:
    while True:
        item = q.get()
        if item is None:
            return
        fut, fn, args = item
        if not fut.set_running_or_notify_cancel():
            continue  # timed out while queued: never started
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine, which decides
            fut.set_exception(e)
        else:
            fut.set_result(result)
