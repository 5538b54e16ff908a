"""One capture device (camera A, camera B or the spectrometer); machine "acquisition.<key>" in the supervisor.

- opening: the device is being opened at boot. absent: no such device on this Pi (backend "none"); closed: released
  for good (shutdown). Both are terminal.
- idle: open, not capturing on the schedule. continuous: capturing on the slot schedule (the slot loop runs and the
  device is wanted continuous). single: one test/manual capture (also between two slots while continuous).
- dark_series: the daily dark series (the cameras over their shutter list, the spectrometer over its integration
  list). After a single or a dark series the device goes back to continuous when it is still wanted there.
- error: a capture failed or timed out; unplugged: the device is gone (USB/CSI). After a backoff that doubles per
  failure, `recover` tries the device again (recovering: reopened, or probed by the next capture); a backend restart
  asked over the external port also goes through recovering.
"""

from __future__ import annotations

from states.machine import MachineTable

_USABLE = ["idle", "continuous", "single", "dark_series"]
_OPEN = ["opening", *_USABLE, "error", "recovering", "unplugged"]

TABLE = MachineTable(
    name="acquisition",
    doc="Per capture device: opening, idle, continuous, single, dark series, error and unplug recovery.",
    states=(
        "opening",
        "idle",
        "continuous",
        "single",
        "dark_series",
        "error",
        "recovering",
        "unplugged",
        "absent",
        "closed",
    ),  # fmt: skip
    initial="opening",
    terminal=("closed", "absent"),
    transitions=(
        {"trigger": "opened", "source": "opening", "dest": "idle"},
        {"trigger": "no_device", "source": "opening", "dest": "absent", "doc": "backend 'none' on this Pi"},
        {"trigger": "open_failed", "source": "opening", "dest": "error"},
        {"trigger": "start_continuous", "source": "idle", "dest": "continuous"},
        {"trigger": "stop_continuous", "source": "continuous", "dest": "idle"},
        {"trigger": "capture_single", "source": ["idle", "continuous"], "dest": "single"},
        {"trigger": "single_done", "source": "single", "dest": "continuous", "conditions": "continuous_wanted"},
        {"trigger": "single_done", "source": "single", "dest": "idle"},
        {"trigger": "start_darks", "source": ["idle", "continuous"], "dest": "dark_series"},
        {"trigger": "darks_done", "source": "dark_series", "dest": "continuous", "conditions": "continuous_wanted"},
        {"trigger": "darks_done", "source": "dark_series", "dest": "idle"},
        {"trigger": "abort_darks", "source": "dark_series", "dest": "continuous", "conditions": "continuous_wanted"},
        {"trigger": "abort_darks", "source": "dark_series", "dest": "idle"},
        {"trigger": "capture_failed", "source": _USABLE, "dest": "error"},
        {
            "trigger": "recover",
            "source": ["error", "unplugged", "idle", "continuous"],
            "dest": "recovering",
            "doc": "backoff over (or a backend restart): reopen or probe the device",
        },
        {"trigger": "reopened", "source": "recovering", "dest": "continuous", "conditions": "continuous_wanted"},
        {"trigger": "reopened", "source": "recovering", "dest": "idle"},
        {"trigger": "reopen_failed", "source": "recovering", "dest": "error"},
        {"trigger": "unplug", "source": [s for s in _OPEN if s != "unplugged"], "dest": "unplugged"},
        {"trigger": "close", "source": _OPEN, "dest": "closed"},
    ),
)
