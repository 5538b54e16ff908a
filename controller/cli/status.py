"""`pycam status`: what a running supervisor reports in its status file (state_dir/status.json)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from controller.supervisor.statusfile import read_status

_VERDICT_TEXT = {
    "running": "supervisor running",
    "stale": "supervisor NOT answering: status file is stale (hung, or killed without cleaning up)",
    "stopped": "supervisor NOT running (it exited; the last status it wrote follows)",
    "missing": "supervisor NOT running: no status file",
}


def _state_dir(state_dir: str | None, config: str | None) -> Path:
    if state_dir:
        return Path(state_dir)
    if config:
        from controller.config import load_config

        return load_config(config).storage.state_dir
    return Path("/var/lib/pycam")


def format_status(data: dict, verdict: str, state_dir: Path) -> str:
    """Human-readable status, one fact per line."""
    lines = [f"{_VERDICT_TEXT[verdict]} ({state_dir})"]
    if data is None:
        return "\n".join(lines)
    age = time.time() - float(data.get("updated_at", 0))
    lines.append(f"role: {data.get('role')}   pid: {data.get('pid')}   updated {age:.0f} s ago")
    since = data.get("state_since")
    if isinstance(since, int | float):
        since = datetime.fromtimestamp(since, tz=UTC).isoformat(timespec="seconds")
    lines.append(f"station: {data.get('state')}   since {since} (station clock)")
    for name, st in sorted((data.get("machines") or {}).items()):
        lines.append(f"  {name}: {st}")
    link = data.get("link") or {}
    lines.append(f"link: {link.get('state')} connected={link.get('connected')} peer={link.get('peer')}")
    clock = data.get("clock") or {}
    lines.append(f"clock: offset_ms={clock.get('offset_ms')} source={clock.get('source')}")
    storage = data.get("storage") or {}
    lines.append(f"storage: {storage.get('check')}  free={storage.get('free_mb')} MB  paused={storage.get('paused')}")
    if data.get("spool") is not None:
        lines.append(f"spool: {data.get('spool')} files waiting")
    lines.append(f"ext port: {data.get('ext_port')}")
    lines.append(f"worker: {data.get('worker')}")
    temps = data.get("temperatures") or {}
    if temps:
        lines.append("temperatures: " + ", ".join(f"{k}={v:.1f}°C" for k, v in temps.items() if v is not None))
    for dev, info in sorted((data.get("devices") or {}).items()):
        lines.append(f"device {dev}: {info.get('state')} captures={info.get('captures')} last={info.get('last')}")
    faults = data.get("faults") or []
    last = data.get("last_fault")
    if last:
        when = last.get("real_time")
        when = datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="seconds") if isinstance(when, float) else "?"
        lines.append(f"last fault: {last.get('kind')} at {when} (real time)")
    counts = data.get("fault_counts") or {}
    if counts:
        lines.append("fault counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if faults:
        lines.append("recent faults:")
        lines.extend(f"  {f}" for f in faults[-5:])
    return "\n".join(lines)


@click.command("status")
@click.option("--state-dir", type=click.Path(file_okay=False), help="the supervisor's state folder")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="take the state folder from this config")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def status_cmd(state_dir: str | None, config: str | None, as_json: bool) -> None:
    """Show a running supervisor's state, link, clock offset, disk, temperatures and worker."""
    folder = _state_dir(state_dir, config)
    data, verdict = read_status(folder)
    if as_json:
        click.echo(json.dumps({"verdict": verdict, "state_dir": str(folder), "status": data}, default=str))
    else:
        click.echo(format_status(data, verdict, folder))
    sys.exit(0 if verdict == "running" else 1)
