"""The master<->slave link, as a table. No I/O: controller/link/ drives it.

One table serves both ends; each end takes its own path through it:

- master: disconnected -listen-> listening -accepted-> handshake -hello_ok-> connected -lost-> listening.
  A hello on a second connection while connected replaces the stale session (`replace`).
- slave:  disconnected -dial-> connecting -tcp_up-> handshake -hello_ok-> connected -fail-> backoff -dial-> ...

`close` ends the link for good from any state; `closed` is terminal.
"""

from __future__ import annotations

from states.machine import MachineTable

STATES = ("disconnected", "listening", "connecting", "handshake", "connected", "backoff", "closed")
_OPEN = [s for s in STATES if s != "closed"]

TABLE = MachineTable(
    name="link",
    doc="The master<->slave link (both ends); reconnects by itself, either side may restart at any moment.",
    states=STATES,
    initial="disconnected",
    terminal=("closed",),
    state_docs={
        "listening": "master: server bound, no slave session",
        "backoff": "slave: waiting (capped exponential) before dialling again",
    },
    transitions=(
        {"trigger": "listen", "source": "disconnected", "dest": "listening", "doc": "master: server bound"},
        {"trigger": "accepted", "source": "listening", "dest": "handshake", "doc": "master: a connection came in"},
        {"trigger": "dial", "source": ["disconnected", "backoff"], "dest": "connecting", "doc": "slave: connect"},
        {"trigger": "tcp_up", "source": "connecting", "dest": "handshake", "doc": "slave: TCP up, send hello"},
        {
            "trigger": "hello_ok",
            "source": ["handshake", "listening"],
            "dest": "connected",
            "doc": "hellos exchanged (master: also from listening when a second connection's hello wins)",
        },
        {"trigger": "replace", "source": "connected", "dest": "connected", "doc": "master: new hello, stale session"},
        {"trigger": "lost", "source": ["handshake", "connected"], "dest": "listening", "doc": "master: session gone"},
        {
            "trigger": "fail",
            "source": ["connecting", "handshake", "connected"],
            "dest": "backoff",
            "doc": "slave: refused, timed out, broken pipe, silent peer, protocol error",
        },
        {"trigger": "close", "source": _OPEN, "dest": "closed", "doc": "stop() on either end"},
    ),
)
