"""Power handoff: the master wakes the slave Pi and stops it again, driving the `power` state machine.

Wake: a low pulse on master GPIO 23 (wired to the slave's GPIO 3, which wakes a halted Pi), then wait for the
slave's hello on the link; a bounded number of pulses, then `failed` — `wake_slave()` returns False instead of
blocking, and the station acquires with camera A alone meanwhile.
Stop: ask the slave over the link to stop; it answers once its spool is flushed and acknowledged. When the link is
down, or the request fails, pulse the halt line (GPIO 16, the slave's `gpio-shutdown` pin) instead.

This module imports only the standard library at import time, so the WittyPi hooks can use it with root's minimal
environment. The GPIO lines themselves are `controller.hardware.gpio.GpioPowerLines`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

# How long the slave needs to halt after a halt pulse before the supply may be cut (a Pi halts in ~10 s).
HALT_GRACE_S = 20.0


class LinkLike(Protocol):
    connected: bool

    async def wait_connected(self, timeout_s: float) -> bool: ...

    async def request(self, kind: str, body: dict, timeout_s: float) -> dict: ...


class PowerHandoff:
    """Wake and stop the slave; `state` is the power machine's state (states/power.py)."""

    def __init__(
        self, lines: Any, cfg: Any, clock: Any, link: LinkLike, logger: Any = None, halt_grace_s: float = HALT_GRACE_S
    ):
        from controller.logging import get_logger
        from states.machine import build_machine
        from states.power import TABLE

        self.lines = lines
        self.cfg = cfg
        self.clock = clock
        self.link = link
        self.log = logger or get_logger("power")
        self.halt_grace_s = halt_grace_s
        self.pulses = 0  # wake pulses of the current attempt
        self._lock = asyncio.Lock()
        self.machine = build_machine(
            None,
            TABLE,
            logger=self.log,
            conditions={"wake_retries_exhausted": lambda: self.pulses > self.cfg.power.wake_retries},
        )
        self.model = self.machine.models[0]

    @property
    def state(self) -> str:
        return self.model.state

    async def _fire(self, trigger: str, **kw: Any) -> None:
        await self.model.trigger(trigger, **kw)

    def _allowed(self, trigger: str) -> bool:
        from states.power import TABLE

        return trigger in TABLE.allowed(self.state)

    async def _pulse(self, which: str) -> None:
        func = self.lines.pulse_wake if which == "wake" else self.lines.pulse_halt
        # The pulse holds the line for pulse_s: keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, func, self.cfg.gpio.pulse_s)

    async def link_changed(self, connected: bool) -> None:
        """Tell the machine the link came up (a hello) or went down; call it from the link's listener.

        Idempotent: the same hello may also be seen by `wake_slave()` waiting on the link; the second report of it
        changes nothing."""
        if connected:
            await self._hello("hello on the link")
        elif self._allowed("link_lost"):
            await self._fire("link_lost")

    async def _hello(self, reason: str) -> None:
        """The slave said hello: `up`, once, whoever heard it first (listener or wake_slave)."""
        if self.state != "up" and self._allowed("hello"):
            await self._fire("hello", reason=reason)

    async def wake_slave(self) -> bool:
        """Pulse until the slave says hello; True when up, False when it never came (state `failed`)."""
        async with self._lock:
            if self.state == "up":
                return True
            if self.link.connected:
                await self._hello("already connected")
                return self.state == "up"
            if not self._allowed("wake"):
                self.log.warning("wake_refused", state=self.state)
                return False
            self.pulses = 0
            await self._fire("wake")
            timeout_s = self.cfg.power.hello_timeout_s
            while self.state == "waking":
                self.pulses += 1
                self.log.info("wake_pulse", pulse=self.pulses, seconds=self.cfg.gpio.pulse_s)
                await self._pulse("wake")
                if await self.link.wait_connected(timeout_s):
                    await self._hello(f"hello after pulse {self.pulses}")
                    return self.state == "up"
                if self.state != "waking":
                    # The link listener reported a hello (or a loss) meanwhile: nothing left to time out.
                    return self.state == "up"
                await self._fire("hello_timeout", reason=f"no hello within {timeout_s} s")
            self.log.error("slave_never_woke", pulses=self.pulses, timeout_s=timeout_s)
            return False

    async def stop_slave(self) -> bool:
        """Stop the slave. True when it confirmed its spool was flushed; False when it did not (or the halt line
        had to be used)."""
        async with self._lock:
            if self.state == "slave_off":
                return True
            if self.state == "up" and not self.link.connected:
                await self._fire("link_lost")
            if self.state == "up":
                return await self._stop_over_link()
            await self._halt(reason=f"link down ({self.state})")
            return False

    async def _stop_over_link(self) -> bool:
        from controller.errors import LinkError

        await self._fire("stop")
        timeout_s = self.cfg.power.stop_timeout_s
        try:
            reply = await self.link.request("stop", {"timeout_s": timeout_s}, timeout_s)
        except (LinkError, TimeoutError) as e:
            # Whatever the cause, the slave must still be halted before the supply goes.
            trigger = "link_lost" if not self.link.connected else "stop_timeout"
            await self._fire(trigger, reason=str(e) or type(e).__name__)
            await self._halt(reason=trigger)
            return False
        flushed = bool(reply.get("flushed"))
        await self._fire("stopped", reason="flushed" if flushed else f"not flushed: {reply.get('pending')} pending")
        return flushed

    async def _halt(self, reason: str) -> None:
        if self._allowed("halt"):
            await self._fire("halt", reason=reason)
        self.log.warning("halt_pulse", reason=reason, seconds=self.cfg.gpio.pulse_s)
        await self._pulse("halt")
        await self.clock.sleep(self.halt_grace_s)
        await self._fire("halted")


def slave_stop_handler(flush: Any, on_stopped: Any) -> Any:
    """The slave's handler for the master's "stop" request (`link.on_request("stop", handler)`).

    `flush(timeout_s) -> bool` waits until the spool is empty and acknowledged; `on_stopped()` (sync or async) is
    scheduled after the reply is sent, so the master hears "flushed" before the slave goes down.
    """

    pending: set[asyncio.Task] = set()  # keep the task referenced until it ran

    async def handler(body: dict) -> dict:
        timeout_s = float(body.get("timeout_s", 60.0))
        # Reply a little before the master gives up waiting for the answer.
        flushed = bool(await flush(max(0.1, timeout_s * 0.8)))

        async def later() -> None:
            await asyncio.sleep(0)
            result = on_stopped()
            if asyncio.iscoroutine(result):
                await result

        task = asyncio.get_running_loop().create_task(later())
        pending.add(task)
        task.add_done_callback(pending.discard)
        return {"flushed": flushed, "stopping": True}

    return handler
