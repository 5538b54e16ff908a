"""What the WittyPi hooks run (as root, with the project's own interpreter):

    python -m controller.power.hook after-startup   --config /etc/pycam/master.toml
    python -m controller.power.hook before-shutdown --config /etc/pycam/master.toml

Imports only the standard library and gpiozero (plus this project's stdlib-only config/power modules): root's
environment at shutdown is minimal, and the original's hooks failed exactly there.

It works whether or not the supervisor runs:
- after-startup: a running supervisor wakes the slave itself, so nothing to do; otherwise pulse the wake line
  (master GPIO 23 -> slave GPIO 3) so the slave boots while the supervisor starts.
- before-shutdown: a running supervisor is asked to stop cleanly (SIGTERM: it stops captures, asks the slave to
  flush and stop over the link, or pulses the halt line itself) and the hook waits until it has exited; otherwise
  the hook pulses the halt line (GPIO 16) and gives the slave time to halt before the WittyPi cuts power.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("pycam.power.hook")

STATUS_NAME = "status.json"  # the supervisor's status file in state_dir (controller/supervisor/statusfile.py)
EXIT_MARGIN_S = 30.0  # beyond the supervisor's own stop timeouts


# ---------------------------------------------------------------------------------------------- the supervisor


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of a running supervisor, from its status file; None when it is not running.

    The pid must be alive *and* be a pycam process: status.json survives a reboot and pids get reused.
    """
    try:
        data = json.loads((Path(state_dir) / STATUS_NAME).read_text(encoding="utf-8"))
        pid = int(data.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    if b"pycam" not in cmdline and b"controller.supervisor" not in cmdline:
        return None
    return pid


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Block until process `pid` has exited (True) or the timeout passed (False), without polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        # Kernels without pidfd (< 5.3): check once a second, bounded.
        stop = threading.Event()
        for _ in range(max(1, int(timeout_s))):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            stop.wait(1.0)
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000.0))
    finally:
        os.close(fd)


def stop_supervisor(pid: int, timeout_s: float) -> bool:
    """SIGTERM the supervisor (its clean stop path) and wait for it to exit."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if wait_for_exit(pid, timeout_s):
        return True
    log.error("supervisor %d did not stop within %.0f s; killing it", pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    wait_for_exit(pid, 10.0)
    return False


# ----------------------------------------------------------------------------------------------------- the lines


def open_lines(cfg: Any, factory: Any = None) -> Any:
    from controller.hardware.gpio import GpioPowerLines

    return GpioPowerLines(cfg.gpio, factory=factory)


# --------------------------------------------------------------------------------------------------- the actions


def after_startup(cfg: Any, factory: Any = None) -> str:
    pid = supervisor_pid(cfg.storage.state_dir)
    if pid is not None:
        log.info("supervisor %d is running: it wakes the slave itself", pid)
        return "supervisor"
    with open_lines(cfg, factory) as lines:
        log.info("no supervisor running: wake pulse on GPIO %d (%.2f s)", cfg.gpio.wake_pin, cfg.gpio.pulse_s)
        lines.pulse_wake(cfg.gpio.pulse_s)
    return "pulsed"


def before_shutdown(cfg: Any, factory: Any = None, halt_grace_s: float | None = None) -> str:
    from controller.power.handoff import HALT_GRACE_S

    grace = HALT_GRACE_S if halt_grace_s is None else halt_grace_s
    pid = supervisor_pid(cfg.storage.state_dir)
    if pid is not None:
        timeout = cfg.power.stop_timeout_s + grace + EXIT_MARGIN_S
        log.info("asking supervisor %d to stop (up to %.0f s)", pid, timeout)
        if stop_supervisor(pid, timeout):
            return "supervisor_stopped"
        # It hung: it may not have stopped the slave, so fall through to the halt line.
    with open_lines(cfg, factory) as lines:
        log.info("halt pulse on GPIO %d; waiting %.0f s for the slave to halt", cfg.gpio.halt_pin, grace)
        lines.pulse_halt(cfg.gpio.pulse_s)
    threading.Event().wait(grace)
    return "halted" if pid is None else "supervisor_killed_halted"


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.power.hook", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["after-startup", "before-shutdown"])
    parser.add_argument("--config", required=True, help="the master's station config (TOML)")
    parser.add_argument("--halt-grace", type=float, default=None, help="seconds the slave gets to halt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="pycam-hook %(levelname)s %(message)s")
    from controller.config import load_config
    from controller.errors import ConfigError

    try:
        cfg = load_config(args.config)
    except (ConfigError, OSError) as e:
        log.error("cannot load %s: %s", args.config, e)
        return 2
    try:
        if args.action == "after-startup":
            outcome = after_startup(cfg)
        else:
            outcome = before_shutdown(cfg, halt_grace_s=args.halt_grace)
    except Exception as e:  # a hook must report, never leave the WittyPi script hanging on a traceback
        log.exception("%s failed: %s", args.action, e)
        return 1
    log.info("%s: %s", args.action, outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
