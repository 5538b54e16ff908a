"""`pycam status`: what a running supervisor reports in its status file (state_dir/status.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from controller.supervisor.statusfile import read_status
from controller.web.text import format_status


def _state_dir(state_dir: str | None, config: str | None) -> Path:
    if state_dir:
        return Path(state_dir)
    if config:
        from controller.config import load_config

        return load_config(config).storage.state_dir
    return Path("/var/lib/pycam")


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
