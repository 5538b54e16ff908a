"""The sim station's fault driver, installed in a supervisor only when one of its backends is `sim`.

SIGUSR1 makes the supervisor read state_dir/sim-fault.json and inject that fault: a device fault ("unplug",
"replug", "stall", "garbage": into the device's plug in the sim scene), "clock_step" (the sim clock jumps) or
"drop_link". Production code has no trace of it: `pycam run` adds `install` to the supervisor's start hooks.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import TYPE_CHECKING, Any

from controller.sim.devices import plug_of

if TYPE_CHECKING:
    from controller.config import Config
    from controller.supervisor.base import Supervisor

FAULT_FILE = "sim-fault.json"
DEVICE_FAULTS = ("unplug", "replug", "stall", "garbage")


def wanted(cfg: Config) -> bool:
    """A backend of this Pi is simulated: the sim station may drive faults into it."""
    return "sim" in (cfg.camera.backend, cfg.spectrometer.backend)


def install(sup: Supervisor) -> None:
    """Handle SIGUSR1 on the supervisor's running loop (no-op where signals cannot be handled)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGUSR1, _on_signal, sup)
    except (NotImplementedError, RuntimeError):
        return


def _on_signal(sup: Supervisor) -> None:
    path = sup.state_dir / FAULT_FILE
    try:
        fault = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        sup.log.warning("sim_fault_unreadable", error=str(e))
        return
    sup._tasks.append(asyncio.get_running_loop().create_task(inject(sup, fault)))


async def inject(sup: Supervisor, fault: dict[str, Any]) -> None:
    """Inject `fault` ({"kind": ..., "device": ..., "seconds": ...}) into the supervisor's sim parts."""
    kind = fault.get("kind")
    sup.log.warning("sim_fault_injected", **{k: v for k, v in fault.items() if isinstance(v, str | int | float)})
    sup.note_fault("injected_" + str(kind), dict(fault))
    if kind in DEVICE_FAULTS:
        runner = sup.devices.get(str(fault.get("device", "")))
        scene = getattr(sup, "scene", None)
        if runner is not None and scene is not None:  # the device's plug: its fault survives a reopen
            plug_of(scene, runner.name).inject(kind)
    elif kind == "clock_step" and hasattr(sup.clock, "offset_s"):
        sup.clock.offset_s += float(fault.get("seconds", 0.0))
        sup.kick.set()
    elif kind == "drop_link" and sup.link is not None:
        await sup.link.stop()
        await asyncio.sleep(float(fault.get("seconds", 5.0)))
        await sup.link.start()
