"""Boot-loop guard and a tiny sd_notify, for running under systemd (standard library only).

Boot-loop guard: every start-up is recorded in state_dir/bootguard.json before anything can crash; reaching a
healthy state (acquire, or a clean sleep/stop) clears the record with `ok()`. When more than `limit` start-ups
within `window_s` never got that far, the guard is `tripped`: the supervisor starts in its safe "diagnose" state
(status and control port only, no hardware start-up) instead of crashing again, so systemd does not restart it
into a storm and the station stays reachable. Old failures expire after `window_s`, so a new day (WittyPi power
cycle) gets a fresh chance; `reset()` clears the guard at once.

sd_notify: one datagram to $NOTIFY_SOCKET ("READY=1", "WATCHDOG=1", "STATUS=...", "STOPPING=1"); a no-op when
not started by systemd.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

GUARD_NAME = "bootguard.json"
DEFAULT_LIMIT = 3  # below systemd's StartLimitBurst (5), so the guard trips before systemd gives up
DEFAULT_WINDOW_S = 6 * 3600.0


class BootGuard:
    """Counts start-ups that did not reach a healthy state. Constructing it records this start-up."""

    def __init__(
        self,
        state_dir: str | Path,
        limit: int = DEFAULT_LIMIT,
        window_s: float = DEFAULT_WINDOW_S,
        now: Callable[[], float] = time.time,
        record: bool = True,
    ):
        self.path = Path(state_dir) / GUARD_NAME
        self.limit = limit
        self.window_s = window_s
        self._now = now
        self.tripped = False
        if record:
            self.record_start()

    def _read(self) -> list[float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [float(t) for t in data.get("failed_starts", [])]
        except (OSError, ValueError, TypeError, AttributeError):
            # Missing or damaged: start counting afresh rather than refuse to start.
            return []

    def _write(self, starts: list[float]) -> None:
        from controller.storage.atomic import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"failed_starts": starts, "limit": self.limit}) + "\n")

    def pending(self) -> list[float]:
        """Start-ups within the window that have not (yet) reached a healthy state, this one included."""
        cutoff = self._now() - self.window_s
        return [t for t in self._read() if t >= cutoff]

    def record_start(self) -> bool:
        """Record this start-up; returns (and sets) `tripped`: too many recent start-ups never got healthy."""
        earlier = self.pending()
        self.tripped = len(earlier) >= self.limit
        self._write([*earlier, self._now()])
        return self.tripped

    def ok(self) -> None:
        """The supervisor reached a healthy state: forget the failed start-ups."""
        self._write([])
        self.tripped = False

    reset = ok

    def status(self) -> dict:
        return {"tripped": self.tripped, "pending_starts": len(self.pending()), "limit": self.limit}


# ------------------------------------------------------------------------------------------------------ sd_notify


def sd_notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send `message` (e.g. "READY=1\\nSTATUS=acquiring") to systemd; False when there is no notify socket."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    elif not address.startswith("/"):
        return False  # vsock and other forms are not used on a Pi
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode("utf-8"))
    return True


def ready(status: str = "") -> bool:
    return sd_notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def watchdog_ping() -> bool:
    return sd_notify("WATCHDOG=1")


def stopping(status: str = "") -> bool:
    return sd_notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of systemd's watchdog timeout (the recommended ping interval), or None when there is no watchdog or
    it is meant for another process (WATCHDOG_PID)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return usec / 2e6


def main(argv: list[str] | None = None) -> int:
    """`python -m controller.bootguard status|reset --state-dir DIR` (operator tool)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m controller.bootguard")
    parser.add_argument("action", choices=["status", "reset"])
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    guard = BootGuard(args.state_dir, record=False)
    if args.action == "reset":
        guard.reset()
    pending = len(guard.pending())
    tripped = pending > guard.limit
    text = f"boot guard: {pending} start-up(s) without reaching acquire; limit {guard.limit}"
    sys.stdout.write(text + (" (tripped: safe mode)" if tripped else "") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
