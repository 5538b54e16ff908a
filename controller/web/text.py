"""The status as readable text (`pycam status`): one fact per line, no raw Python dicts."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from controller.timekeeping import describe_source

VERDICT_TEXT = {
    "running": "supervisor running",
    "stale": "supervisor NOT answering: status file is stale (hung, or killed without cleaning up)",
    "stopped": "supervisor NOT running (it exited; the last status it wrote follows)",
    "missing": "supervisor NOT running: no status file",
}
FAULT_META = ("time", "real_time", "kind")


def when(t: object) -> str:
    if isinstance(t, int | float) and not isinstance(t, bool):
        return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "?" if t is None else str(t)


def value(v: object) -> str:
    """A value in words: dicts as `key=value, ...`, lists comma-separated, floats rounded."""
    if isinstance(v, dict):
        return ", ".join(f"{k}={value(x)}" for k, x in v.items() if x not in (None, "", [], {})) or "-"
    if isinstance(v, list | tuple):
        return ", ".join(value(x) for x in v) or "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def size(n: object) -> str:
    if not isinstance(n, int | float):
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def clock_line(clock: dict) -> str:
    """The master's clock_status (best of rtc/ntp/gps) or the slave's chrony status (source, selected server)."""
    src = clock.get("source") if isinstance(clock.get("source"), dict) else {}
    if src.get("source") == "chrony":  # the slave: chrony's state (controller.timekeeping)
        head = describe_source(src)
    elif src.get("best"):
        head = f"source {src['best']} (synchronised)"
    elif src:
        head = "no synchronised source"
    else:
        head = "source not known yet"
    ok = {True: "within", False: "OUTSIDE"}.get(clock.get("offset_ok"), "?")
    line = f"clock: {head}; offset {value(clock.get('offset_ms'))} ms, {ok} tolerance {value(clock.get('tolerance_ms'))} ms"
    return line


def clock_sources(clock: dict) -> list[str]:
    src = clock.get("source") if isinstance(clock.get("source"), dict) else {}
    sources = src.get("sources") or {}
    if isinstance(sources, list):  # chrony's servers (the slave)
        return [
            f"  server {s.get('name')}: {s.get('state')}" + (f", stratum {s['stratum']}" if s.get("stratum") else "")
            for s in sources
            if isinstance(s, dict)
        ]
    out = []
    for name, s in sorted(sources.items()):
        if not isinstance(s, dict):
            continue
        if s.get("synchronised"):
            state = "synchronised"
        elif s.get("available"):
            state = "available, not synchronised"
        else:
            state = "not available"
        detail = f" ({s['error']})" if s.get("error") else ""
        out.append(f"  {name}: {state}{detail}")
    return out


def fault_line(f: dict) -> str:
    details = value({k: v for k, v in f.items() if k not in FAULT_META})
    return f"{when(f.get('real_time'))}  {f.get('kind')}" + ("" if details == "-" else f": {details}")


def delivery_line(d: dict) -> str:
    line = (
        f"delivery to {d.get('target')}: {d.get('state')}, {d.get('delivered_files')} files delivered, "
        f"backlog {d.get('backlog_files')} files ({size(d.get('backlog_bytes'))}), lag {value(d.get('lag_s'))} s"
    )
    if isinstance(d.get("bytes_sent"), int):
        line += f", {size(d['bytes_sent'])} sent ({size(d.get('bytes_matched'))} not resent)"
    if d.get("last_error"):
        line += f"; failing ({d.get('failures_in_a_row')} in a row, next try in {value(d.get('next_retry_in_s'))} s)"
        line += f": {d['last_error']}"
    return line


def voltages_of(data: dict) -> dict[str, float]:
    """Supply voltages (V) by line: the power board's input and output (status `power_board`), plus `voltages`."""
    board = data.get("power_board") if isinstance(data.get("power_board"), dict) else {}
    out = {line: board.get(f"{line}_voltage_v") for line in ("input", "output")}
    out.update(data.get("voltages") or {})
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def temperatures_of(data: dict) -> dict[str, float]:
    """Temperatures (°C) by sensor: the kernel's thermal zones and RTC (status `temperatures`), the power board's."""
    out = dict(data.get("temperatures") or {})
    board = data.get("power_board") if isinstance(data.get("power_board"), dict) else {}
    if board.get("board"):
        out[f"{board['board']}_board"] = board.get("temperature_c")
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def format_status(data: dict | None, verdict: str, state_dir: Path) -> str:
    """Human-readable status, one fact per line."""
    lines = [f"{VERDICT_TEXT[verdict]} ({state_dir})"]
    if data is None:
        return "\n".join(lines)
    age = time.time() - float(data.get("updated_at", 0))
    lines.append(f"{data.get('role')} supervisor, pid {data.get('pid')}, status written {age:.0f} s ago")
    lines.append(f"station: {data.get('state')} since {when(data.get('state_since'))} (station clock)")
    machines = data.get("machines") or {}
    if machines:
        lines.append("machines: " + ", ".join(f"{k} {v}" for k, v in sorted(machines.items())))
    held = (data.get("slot_loop") or {}).get("held")
    if held:  # e.g. clock_behind_data: the clock is behind the newest slot stored; no slot is captured twice
        lines.append(
            f"acquisition held: {held.get('detail')} (clock {held.get('clock')}, newest data {held.get('newest_data')})"
        )
    link = data.get("link") or {}
    peer = value(link.get("peer")) if link.get("peer") else "no peer"
    lines.append(f"link: {link.get('state')}, {'connected' if link.get('connected') else 'NOT connected'} ({peer})")
    clock = data.get("clock") or {}
    lines.append(clock_line(clock))
    lines.extend(clock_sources(clock))
    st = data.get("storage") or {}
    check = "ok" if st.get("ok") else f"NOT ok: {st.get('reason')}" if "ok" in st else "not checked"
    paused = ", acquisition PAUSED (disk full)" if st.get("paused") else ""
    free = st.get("free_mb")
    free = f"{free:.0f}" if isinstance(free, int | float) else "?"
    lines.append(f"storage: {check}, {free} MB free{paused}")
    if data.get("spool") is not None:
        lines.append(f"spool: {value(data.get('spool'))} files waiting")
    if "ext_port" in data:
        lines.append(f"control port: {value(data.get('ext_port'))}")
    if "worker" in data:
        lines.append(f"worker: {data.get('worker')}, {value(data.get('worker_pairs'))} pairs processed")
    web = data.get("web")
    if isinstance(web, dict):
        lines.append(f"status page: {web.get('url')} ({sum((web.get('requests') or {}).values())} requests)")
    if isinstance(data.get("delivery"), dict):
        lines.append(delivery_line(data["delivery"]))
    temps = temperatures_of(data)
    if temps:
        lines.append("temperatures: " + ", ".join(f"{k} {v:.1f} °C" for k, v in temps.items()))
    volts = voltages_of(data)
    if volts:
        lines.append("voltages: " + ", ".join(f"{k} {v:.2f} V" for k, v in volts.items()))
    board = data.get("power_board")
    if isinstance(board, dict) and not board.get("board"):
        lines.append(f"power board: not readable ({board.get('problem')})")
    for dev, info in sorted((data.get("devices") or {}).items()):
        err = f", last error: {info['last_error']}" if info.get("last_error") else ""
        lines.append(
            f"device {dev}: {info.get('state')}, {info.get('captures')} captures, last {info.get('last')}{err}"
        )
    last = data.get("last_fault")
    if last:
        lines.append(f"last fault: {last.get('kind')} at {when(last.get('real_time'))} (real time)")
    counts = data.get("fault_counts") or {}
    if counts:
        lines.append("fault counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    faults = data.get("faults") or []
    if faults:
        lines.append("recent faults:")
        lines.extend(f"  {fault_line(f)}" for f in faults[-5:] if isinstance(f, dict))
    return "\n".join(lines)
