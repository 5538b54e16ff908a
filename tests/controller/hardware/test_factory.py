"""The hardware factory loads the simulator only when a backend is "sim"."""

from __future__ import annotations

import subprocess
import sys

from controller.config import config_from_dict
from controller.timekeeping.clock import ManualClock


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return set(out.stdout.split())


def test_factory_import_does_not_load_the_simulator():
    loaded = _modules_after("import controller.hardware.factory")
    assert not {m for m in loaded if m.startswith("controller.sim")}


def test_sim_backend_loads_the_sim_devices():
    from controller.hardware.factory import open_camera
    from controller.sim.devices import SimCamera

    cam = open_camera(config_from_dict({"camera": {"backend": "sim"}}), "A", ManualClock(1000.0))
    assert isinstance(cam, SimCamera)
    cam.close()
