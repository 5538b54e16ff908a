"""Nothing at import time touches hardware or heavy libraries: `import controller` and `pycam --help` in a fresh
interpreter import none of picamera2, seabreeze, pyplis, cv2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("picamera2", "seabreeze", "pyplis", "cv2")

PROBE = """
import json, sys
{body}
print("@@" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def imported_heavy(body: str) -> list[str]:
    code = PROBE.format(body=body, heavy=set(HEAVY))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    return json.loads(line[2:])


@pytest.mark.parametrize(
    "body",
    [
        "import controller",
        "import controller.config, controller.hardware.factory, controller.storage.datastore, controller.acquisition.autoexposure",
        "import controller.diagnose, controller.cli.capture, controller.sim.scene",
        "from controller.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
)
def test_no_vendor_or_processing_library_at_import(body):
    assert imported_heavy(body) == []


def test_probe_detects_an_import():
    """The check can fail: importing seabreeze directly shows up."""
    pytest.importorskip("seabreeze")
    assert "seabreeze" in imported_heavy("import seabreeze")


def test_opening_sim_devices_imports_no_vendor_library():
    body = (
        "from controller.config import Config\nfrom controller.timekeeping.clock import ManualClock\n"
        "from controller.hardware.factory import open_camera, open_spectrometer, open_power_lines\n"
        "c = Config(); open_camera(c, 'A', ManualClock()).capture(); open_spectrometer(c, ManualClock()).capture()\n"
        "open_power_lines(c).close()"
    )
    assert imported_heavy(body) == []
