"""chrony's own view of this Pi's time, read with `chronyc -c tracking` and `chronyc -c sources`.

chrony is the station's time system (systemd/chrony-*.conf.in): the master serves time on the link network, the
slave follows it. The project never sets the clock; it reads what chrony says and, on the slave, checks it against
the offset it measures over the link. `ChronyReader.status()` is the `TimeSource` interface (blocking: call it from
an executor thread); the simulated chrony (controller/sim/chrony.py) answers the same dict.

Formats (chrony 4.x, client.c): `-c tracking` is one CSV line of 14 fields (reference id in hex, reference name,
stratum, ref time, system time offset (positive: the clock is fast), last offset, RMS offset, frequency, residual
frequency, skew, root delay, root dispersion, update interval, leap status); `-c sources` is one CSV line per source:
mode (^ server, = peer, # refclock), state (* selected, + combined, - not combined, ? unusable, x falseticker,
~ too variable), name, stratum, poll (log2 s), reach (octal), last rx (s), adjusted offset, measured offset, error
(s; offsets positive when the local clock is ahead of the source).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from controller.errors import ProtocolError
from controller.timekeeping.commands import run_command

Runner = Callable[[Sequence[str]], str | None]

LOCAL_REFERENCE_ID = "7F7F0101"  # 127.127.1.1: chrony's `local` directive (no upstream: orphan/local stratum)

TRACKING_FIELDS = (
    "reference_id", "reference_name", "stratum", "ref_time_s", "system_offset_s", "last_offset_s",
    "rms_offset_s", "frequency_ppm", "residual_freq_ppm", "skew_ppm", "root_delay_s", "root_dispersion_s",
    "update_interval_s", "leap_status",
)  # fmt: skip
SOURCE_FIELDS = (
    "mode", "state", "name", "stratum", "poll", "reach", "last_rx_s", "adjusted_offset_s", "measured_offset_s",
    "error_s",
)  # fmt: skip
SOURCE_MODES = {"^": "server", "=": "peer", "#": "refclock"}
SOURCE_STATES = {"*": "selected", "+": "combined", "-": "not_combined", "?": "unusable", "x": "falseticker",
                 "~": "too_variable"}  # fmt: skip


def _number(key: str, value: str) -> float | int:
    try:
        return int(value) if key == "stratum" else float(value)
    except ValueError as e:
        raise ProtocolError(f"chronyc: field {key} is not a number: {value!r}") from e


def parse_tracking_csv(text: str) -> dict:
    """`chronyc -c tracking` as a dict; `system_offset_s` keeps chrony's sign (positive: the clock is fast)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    parts = line.split(",")
    if len(parts) < len(TRACKING_FIELDS):
        raise ProtocolError(f"chronyc -c tracking: {len(parts)} fields, expected {len(TRACKING_FIELDS)}: {line!r}")
    out: dict[str, Any] = {}
    for key, value in zip(TRACKING_FIELDS, parts, strict=False):
        out[key] = value if key in ("reference_id", "reference_name", "leap_status") else _number(key, value)
    return out


def parse_sources_csv(text: str) -> list[dict]:
    """`chronyc -c sources`: one dict per source (`mode`, `state` spelled out, `reach` as an int, offsets in s)."""
    sources = []
    for line in text.strip().splitlines():
        parts = line.split(",")
        if len(parts) < len(SOURCE_FIELDS):
            raise ProtocolError(f"chronyc -c sources: {len(parts)} fields, expected {len(SOURCE_FIELDS)}: {line!r}")
        raw = dict(zip(SOURCE_FIELDS, parts, strict=False))
        try:
            sources.append({
                "mode": SOURCE_MODES.get(raw["mode"], raw["mode"]),
                "state": SOURCE_STATES.get(raw["state"], raw["state"]),
                "name": raw["name"],
                "stratum": int(raw["stratum"]),
                "poll": int(raw["poll"]),
                "reach": int(raw["reach"], 8),
                "last_rx_s": float(raw["last_rx_s"]),
                "adjusted_offset_s": float(raw["adjusted_offset_s"]),
                "measured_offset_s": float(raw["measured_offset_s"]),
                "error_s": float(raw["error_s"]),
            })  # fmt: skip
        except ValueError as e:
            raise ProtocolError(f"chronyc -c sources: cannot parse {line!r} ({e})") from e
    return sources


def tracking_synchronised(tracking: dict) -> bool:
    """chrony's own verdict: a reference, a stratum below 16 and a leap status other than "Not synchronised"."""
    return (
        tracking["leap_status"].strip().lower() != "not synchronised"
        and 0 < int(tracking["stratum"]) < 16
        and tracking["reference_id"].strip("0") != ""
    )


def chrony_state(tracking: dict, sources: list[dict]) -> dict:
    """The time-source dict from chrony's tracking and sources (see `ChronyReader.status`)."""
    selected = next((s for s in sources if s["state"] == "selected"), None)
    local = tracking["reference_id"].upper() == LOCAL_REFERENCE_ID
    return {
        "source": "chrony",
        "available": True,
        "synchronised": tracking_synchronised(tracking),
        # Our convention everywhere: source time - this clock, so chrony's "fast" offset flips sign.
        "offset_s": -float(tracking["system_offset_s"]),
        "last_offset_s": -float(tracking["last_offset_s"]),  # the correction at the last clock update
        "ref_time_s": float(tracking["ref_time_s"]),  # when that update was
        "stratum": tracking["stratum"],
        "leap_status": tracking["leap_status"],
        "reference_id": tracking["reference_id"],
        "reference": "local" if local else tracking["reference_name"],
        "selected": None if selected is None else selected["name"],
        "sources": sources,
    }


def unavailable(error: str) -> dict:
    return {"source": "chrony", "available": False, "synchronised": False, "offset_s": None, "error": error}


class ChronyReader:
    """This Pi's chronyd, through chronyc (`host`: chronyc's -h, an address or a command socket path)."""

    name = "chrony"

    def __init__(self, runner: Runner | None = None, host: str = ""):
        self.runner = runner if runner is not None else run_command
        self.host = host

    def _chronyc(self, *args: str) -> str | None:
        cmd = ["chronyc", *(["-h", self.host] if self.host else []), "-n", "-c", *args]
        return self.runner(cmd)

    def status(self) -> dict:
        """{source, available, synchronised, offset_s (source - this clock), last_offset_s, ref_time_s, stratum,
        leap_status, reference, selected (the source chrony follows, or None), sources}; `available` False when chronyd does not answer."""
        text = self._chronyc("tracking")
        if not text:
            return unavailable("chronyc tracking: no answer from chronyd (is chrony installed and running?)")
        try:
            tracking = parse_tracking_csv(text)
            sources = parse_sources_csv(self._chronyc("sources") or "")
        except ProtocolError as e:
            return unavailable(str(e))
        return chrony_state(tracking, sources)
