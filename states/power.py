"""The slave's power, as the master sees it (the master owns the wake and halt lines).

- slave_off -> waking: a wake pulse on master GPIO 23 (-> slave GPIO 3); wait for the slave's hello on the link.
  No hello within the timeout: pulse again, a bounded number of times, then `failed` (the station goes on with
  camera A alone; start-up never blocks).
- up -> stopping: the master asks the slave to stop over the link and waits for "flushed and acknowledged".
- halting: the link is down (or the stop request timed out), so the master pulses the halt line (GPIO 16) instead.
- unreachable: the slave was up but the link dropped; it may come back by itself (hello) or be halted.
"""

from __future__ import annotations

from states.machine import MachineTable

TABLE = MachineTable(
    name="power",
    doc="Master-side power handoff of the slave Pi.",
    states=("slave_off", "waking", "up", "unreachable", "stopping", "halting", "failed"),
    initial="slave_off",
    terminal=(),
    state_docs={"failed": "the slave never said hello: master acquires camera A alone"},
    transitions=(
        {"trigger": "wake", "source": ["slave_off", "failed"], "dest": "waking", "doc": "pulse the wake line"},
        {"trigger": "hello", "source": ["slave_off", "waking", "failed", "unreachable"], "dest": "up"},
        {
            "trigger": "hello_timeout",
            "source": "waking",
            "dest": None,
            "unless": "wake_retries_exhausted",
            "doc": "pulse again",
        },
        {"trigger": "hello_timeout", "source": "waking", "dest": "failed", "conditions": "wake_retries_exhausted"},
        {"trigger": "link_lost", "source": "up", "dest": "unreachable"},
        {"trigger": "link_lost", "source": "stopping", "dest": "halting", "doc": "cannot confirm: use the halt line"},
        {"trigger": "stop", "source": "up", "dest": "stopping", "doc": "stop request over the link"},
        {"trigger": "stopped", "source": "stopping", "dest": "slave_off", "doc": "slave confirmed: spool flushed"},
        {"trigger": "stop_timeout", "source": "stopping", "dest": "halting"},
        {"trigger": "halt", "source": ["unreachable", "failed", "waking"], "dest": "halting", "doc": "link down"},
        {"trigger": "halted", "source": "halting", "dest": "slave_off", "doc": "halt pulse sent, grace elapsed"},
    ),
)
