"""systemd notify: a fake NOTIFY_SOCKET gets READY=1, then WATCHDOG=1 while the loop is healthy, and no WATCHDOG
while the loop is blocked."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import structlog

from tests.controller.supervisor.conftest import run_async, wait_for


class FakeSystemd:
    """A datagram socket like systemd's notify socket; a thread records (monotonic time, message)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def kinds(self) -> list[str]:
        return [m.split("=")[0] for _, m in self.messages]


@run_async
async def test_ready_then_watchdog_pings_only_while_the_loop_is_healthy(station, tmp_path, monkeypatch):
    systemd = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pings every 0.1 s
    pair = station(factor=20.0, power={"hello_timeout_s": 60.0})  # the master alone: no slave in this test
    master = pair.master()
    task = asyncio.create_task(master.run())
    try:
        await wait_for(lambda: systemd.kinds().count("WATCHDOG") >= 3, 30, "watchdog pings")
        kinds = systemd.kinds()
        assert kinds[0] == "READY" or kinds.index("READY") < kinds.index("WATCHDOG"), kinds
        assert all(m == "WATCHDOG=1" for _, m in systemd.messages if m.startswith("WATCHDOG"))
        with structlog.testing.capture_logs() as logs:
            # The fault under test: a call that blocks the event loop for 0.8 s (a hung disk, a busy handler).
            blocked_from = time.monotonic()
            time.sleep(0.8)
            blocked_to = time.monotonic()
            # the watchdog task's next tick runs now and sees the lag
            await wait_for(lambda: any(e["event"] == "watchdog_withheld" for e in logs), 30, "a ping withheld")
        during = [t for t, m in systemd.messages if m == "WATCHDOG=1" and blocked_from <= t <= blocked_to + 0.05]
        assert during == []
        assert any(e["event"] == "watchdog_withheld" for e in logs), logs
        # Healthy again: the pings come back.
        n = systemd.kinds().count("WATCHDOG")
        await wait_for(lambda: systemd.kinds().count("WATCHDOG") >= n + 2, 30, "pings after the block")
    finally:
        master.request_stop("test over")
        await asyncio.wait_for(task, 60)
        systemd.close()
    assert "STOPPING" in systemd.kinds()
