"""One capture device (camera A, camera B or the spectrometer).

- idle: open, not capturing. continuous: capturing on the slot schedule. single: one test/manual capture.
- dark_series: the daily dark series (the cameras over their shutter list, the spectrometer over its integration
  list).
- error: a capture failed or timed out; the supervisor counts failures and escalates (OctoPrint-style) from
  `recover` (reopen the device) to giving up until it is replugged.
- unplugged: the device is gone (USB/CSI); `replug` when it is seen again. recovering: the device is being
  reopened. closed: released for good (shutdown); it cannot be left.
"""

from __future__ import annotations

from states.machine import MachineTable

_OPEN = ["idle", "continuous", "single", "dark_series", "error", "recovering", "unplugged"]

TABLE = MachineTable(
    name="acquisition",
    doc="Per capture device: idle, continuous, single, dark series, error and unplug recovery.",
    states=("idle", "continuous", "single", "dark_series", "error", "recovering", "unplugged", "closed"),
    initial="idle",
    terminal=("closed",),
    transitions=(
        {"trigger": "start_continuous", "source": "idle", "dest": "continuous"},
        {"trigger": "stop_continuous", "source": "continuous", "dest": "idle"},
        {"trigger": "capture_single", "source": "idle", "dest": "single"},
        {"trigger": "single_done", "source": "single", "dest": "idle"},
        {"trigger": "start_darks", "source": "idle", "dest": "dark_series"},
        {"trigger": "darks_done", "source": "dark_series", "dest": "idle"},
        {"trigger": "abort_darks", "source": "dark_series", "dest": "idle"},
        {"trigger": "capture_failed", "source": ["continuous", "single", "dark_series"], "dest": "error"},
        {"trigger": "recover", "source": "error", "dest": "recovering", "doc": "close and reopen the device"},
        {"trigger": "reopened", "source": "recovering", "dest": "idle"},
        {"trigger": "reopen_failed", "source": "recovering", "dest": "error"},
        {"trigger": "unplug", "source": [s for s in _OPEN if s != "unplugged"], "dest": "unplugged"},
        {"trigger": "replug", "source": "unplugged", "dest": "recovering", "doc": "the device is seen again"},
        {"trigger": "close", "source": _OPEN, "dest": "closed"},
    ),
)
