"""The processing worker (a child process of the master supervisor; it never blocks acquisition); machine "worker".

- starting: the child is being spawned; running: it processes files as they land.
- backlog: more unprocessed files than the backlog threshold (after a night, an outage, or a slow step);
  `caught_up` when the queue is short again.
- crashed: the child exited unexpectedly (or could not be spawned); the supervisor `restart`s it after a backoff
  that grows with the crashes in a row, or after too many crashes in a row gives up (`give_up` to disabled), from
  which only an explicit `start` (operator, next day) leaves.
- stopping: asked to finish (shutdown); `exited` once the child is gone.
"""

from __future__ import annotations

from states.machine import MachineTable

_ALIVE = ["starting", "running", "backlog", "restarting"]

TABLE = MachineTable(
    name="worker",
    doc="Processing worker child process: start, backlog, crash and restart.",
    states=("stopped", "starting", "running", "backlog", "crashed", "restarting", "disabled", "stopping"),
    initial="stopped",
    terminal=(),
    transitions=(
        {"trigger": "start", "source": ["stopped", "disabled"], "dest": "starting"},
        {"trigger": "started", "source": ["starting", "restarting"], "dest": "running"},
        {"trigger": "behind", "source": "running", "dest": "backlog"},
        {"trigger": "caught_up", "source": "backlog", "dest": "running"},
        {"trigger": "crash", "source": _ALIVE, "dest": "crashed"},
        {"trigger": "restart", "source": "crashed", "dest": "restarting"},
        {"trigger": "give_up", "source": "crashed", "dest": "disabled", "doc": "too many crashes in a row"},
        {"trigger": "stop", "source": _ALIVE, "dest": "stopping"},
        {"trigger": "stop", "source": ["crashed", "disabled"], "dest": "stopped", "doc": "no child to stop"},
        {"trigger": "exited", "source": "stopping", "dest": "stopped"},
    ),
)
