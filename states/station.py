"""The station's day (both Pis; role-specific work lives in the supervisor's callbacks).

    boot -> sync -> acquire -> process -> sleep ... -> shutdown -> off

- boot: config, hardware, storage check; the master wakes the slave (power machine).
- sync: the master establishes its clock source; the slave measures its offset to the master. Captures start only
  with a known offset within tolerance; a bad offset keeps the station in sync until the retries run out (fault).
- acquire: both cameras on the slot schedule. `degrade` when the slave is missing or the link is lost (the master
  goes on with camera A alone; the slave spools on its own), `recover` when it is back.
- paused: a suspender (bluesky-style) while storage is full; resumes by itself once space is back above the
  hysteresis level, to acquire or degraded depending on whether the slave is ready.
- process: after the window: darks, processing backlog, daily products, housekeeping.
- sleep: powered but outside the window; `window_start` goes back through sync.
- fault: something needed failed; `retry` boots again. diagnose: the safe mode the boot-loop guard selects after
  repeated start-up crashes; it leaves only by an operator's `reset` or a `stop`.
- shutdown -> off: captures stopped, slave flushed and stopped, the WittyPi may cut power.
"""

from __future__ import annotations

from states.machine import MachineTable

_RUNNING = ["acquire", "degraded", "paused"]

TABLE = MachineTable(
    name="station",
    doc="One station day: boot, sync, acquire, process, sleep, shutdown, with fault/degraded recovery.",
    states=(
        "boot",
        "sync",
        "acquire",
        "degraded",
        "paused",
        "process",
        "sleep",
        "fault",
        "diagnose",
        "shutdown",
        "off",
    ),
    initial="boot",
    terminal=("off",),
    state_docs={
        "degraded": "acquiring without the slave (camera A alone) or without a device",
        "paused": "storage full: captures suspended until free space is back",
        "diagnose": "safe mode after a boot loop: status and control port only",
    },
    transitions=(
        # boot
        {"trigger": "booted", "source": "boot", "dest": "sync", "doc": "hardware open, storage checked"},
        {"trigger": "boot_failed", "source": "boot", "dest": "fault", "doc": "storage or camera A missing"},
        {"trigger": "boot_loop", "source": "boot", "dest": "diagnose", "doc": "boot guard tripped"},
        # sync
        {
            "trigger": "synced",
            "source": "sync",
            "dest": "acquire",
            "conditions": ["in_window", "slave_ready"],
            "doc": "clock offset known and within tolerance",
        },
        {"trigger": "synced", "source": "sync", "dest": "degraded", "conditions": "in_window", "unless": "slave_ready"},
        {"trigger": "synced", "source": "sync", "dest": "sleep", "unless": "in_window"},
        {
            "trigger": "offset_bad",
            "source": "sync",
            "dest": None,
            "unless": "sync_retries_exhausted",
            "doc": "offset unknown or too large: measure again",
        },
        {"trigger": "offset_bad", "source": "sync", "dest": "fault", "conditions": "sync_retries_exhausted"},
        # acquire and its degraded/paused variants
        {"trigger": "degrade", "source": "acquire", "dest": "degraded", "doc": "slave missing, link lost, device lost"},
        {"trigger": "recover", "source": "degraded", "dest": "acquire", "doc": "slave/link/device back"},
        {"trigger": "disk_full", "source": ["acquire", "degraded"], "dest": "paused"},
        {"trigger": "disk_ok", "source": "paused", "dest": "acquire", "conditions": "slave_ready"},
        {"trigger": "disk_ok", "source": "paused", "dest": "degraded", "unless": "slave_ready"},
        {"trigger": "clock_lost", "source": ["acquire", "degraded"], "dest": "sync", "doc": "offset drifted: resync"},
        {"trigger": "window_end", "source": _RUNNING, "dest": "process"},
        {"trigger": "error", "source": [*_RUNNING, "sync", "process", "sleep"], "dest": "fault"},
        # process and sleep
        {"trigger": "processed", "source": "process", "dest": "shutdown", "conditions": "shutdown_after_process"},
        {"trigger": "processed", "source": "process", "dest": "sleep", "unless": "shutdown_after_process"},
        {"trigger": "window_start", "source": "sleep", "dest": "sync"},
        # recovery
        {"trigger": "retry", "source": "fault", "dest": "boot"},
        {"trigger": "give_up", "source": "fault", "dest": "diagnose", "doc": "too many failed boots"},
        {"trigger": "reset", "source": "diagnose", "dest": "boot", "doc": "operator cleared the boot guard"},
        # the end of the day, from anywhere still running
        {
            "trigger": "stop",
            "source": ["boot", "sync", *_RUNNING, "process", "sleep", "fault", "diagnose"],
            "dest": "shutdown",
            "doc": "WittyPi shutdown, operator exit, or the end of the process phase",
        },
        {"trigger": "halted", "source": "shutdown", "dest": "off", "doc": "slave stopped, files flushed"},
    ),
)
