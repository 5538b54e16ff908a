"""`StationActions` for EXT's DeviceControl: what the external port's action keys do on this Pi.

Every hook returns promptly (work is queued or runs in a background task owned by the supervisor) and refuses by
raising a PycamError with a readable reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from controller.errors import LinkError, PycamError

if TYPE_CHECKING:
    from controller.supervisor.base import Supervisor

IDENTITY_TO_KEY = {"CM1": "A", "CM2": "B", "SPC": "S"}
GROUPS = {"cameras": ("A", "B"), "spectrometer": ("S",)}
# "Dark series finished" replies, by group and Pi. The slave has no external port: it asks the master to send it.
DONE_KEYS = {
    ("master", "cameras"): ("DFC", "CM1"), ("slave", "cameras"): ("DFC", "CM2"),
    ("master", "spectrometer"): ("DFS", "SPC"), ("slave", "spectrometer"): ("DFS", "SPC"),
}  # fmt: skip
ANNOUNCE_KEYS = frozenset({"DFC", "DFS"})
# Real seconds a TPA/TPB/TPS echo waits for the name of the file written (under the master's 5 s for the slave).
SINGLE_ECHO_WAIT_S = 4.0


class SupervisorActions:
    """The hooks, bound to one supervisor (master or slave)."""

    def __init__(self, sup: Supervisor):
        self.sup = sup
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.sup.log.error("action_failed", task=task.get_name(), error=repr(task.exception()))

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait (real seconds) for running actions (a dark series) to finish: their files must reach the spool
        before the final flush."""
        tasks = list(self._tasks)
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return not pending

    def _runners(self, group: str) -> list:
        keys = GROUPS.get(group)
        if keys is None:
            raise PycamError(f"unknown device group {group!r}")
        return [self.sup.devices[k] for k in keys if k in self.sup.devices]

    async def capture_single(self, device: str, kind: str) -> str | None:
        """Take one capture; the name of the file written (None: still running after SINGLE_ECHO_WAIT_S).

        Raises PycamError when it failed or was refused (no free second), so the client gets ERR, not an echo."""
        key = IDENTITY_TO_KEY.get(device)
        runner = self.sup.devices.get(key) if key else None
        if runner is None:
            raise PycamError(f"{device} is not a device of this Pi")
        loop = self.sup.slot_loop
        if loop is not None and self.sup._slot_task is not None and not self.sup._slot_task.done():
            done: asyncio.Future = loop.request_single(key, kind)  # taken at once, named with a free second
        else:
            done = asyncio.ensure_future(runner.capture(None, kind))
            self._tasks.add(done)
            done.add_done_callback(self._done)
        finished, _ = await asyncio.wait({done}, timeout=SINGLE_ECHO_WAIT_S)
        if not finished:
            self.sup.log.info("single_capture_still_running", device=device, kind=kind)
            return None
        if done.cancelled():
            raise PycamError(f"{device} single capture cancelled (shutdown)")
        name = done.result()  # a PycamError (no free second) goes to the client as ERR
        if name is None:
            raise PycamError(f"{device} single capture failed: {runner.last_error or runner.state}")
        return name

    async def start_continuous(self, kind: str) -> None:
        for runner in self._runners(kind):
            runner.continuous = True
        self.sup.kick.set()
        if self.sup.slot_loop is not None:
            self.sup.slot_loop.wake()

    async def stop_continuous(self, kind: str) -> None:
        for runner in self._runners(kind):
            runner.continuous = False
        self.sup.kick.set()

    async def dark_series(self, kind: str) -> None:
        self._runners(kind)  # refuse an unknown group at once
        self._spawn(self.run_dark_series(kind), f"darks-{kind}")

    async def run_dark_series(self, kind: str, announce: bool = True) -> list[str]:
        """Darks on this Pi's devices of `kind`; the master also asks the slave when it starts them itself."""
        names: list[str] = []
        remote = None
        link = self.sup.link
        if not announce and self.sup.role == "master" and link is not None and link.connected:
            key = "DKC" if kind == "cameras" else "DKS"
            remote = asyncio.ensure_future(link.request("ext", {"commands": [[key, "1"]], "sender": "EXN"}, 10.0))
        for runner in self._runners(kind):
            names += await runner.dark_series()
        if remote is not None:
            try:
                await remote
            except (LinkError, TimeoutError) as e:
                self.sup.log.warning("slave_darks_not_started", error=str(e))
        self.sup.log.info("dark_series_done", kind=kind, files=len(names))
        if announce:
            await self._announce_done(kind)
        return names

    async def _announce_done(self, kind: str) -> None:
        done_key, idn = DONE_KEYS[(self.sup.role, kind)]
        reply = {done_key: 1, "IDN": idn}
        server = getattr(self.sup, "ext_server", None)
        if server is not None:
            server.broadcast(reply)
            return
        link = self.sup.link
        if self.sup.role == "slave" and link is not None and link.connected:
            try:
                await link.request("announce", reply, 5.0)
            except (LinkError, TimeoutError) as e:
                self.sup.log.warning("dark_series_done_not_announced", key=done_key, error=str(e))

    async def restart_backend(self, kind: str) -> None:
        runners = self._runners(kind)

        async def reopen() -> None:
            for runner in runners:
                await runner.restart()
            self.sup.kick.set()

        self._spawn(reopen(), f"restart-{kind}")

    async def exit(self) -> None:
        self.sup.request_stop("external EXT command")

    async def restart(self) -> None:
        self.sup.request_stop("external RST command", restart=True)
