"""`pycam diagnose`: the station's hardware checks as a readable report (or JSON); exit 1 when required hardware
is missing. Never a traceback."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import click

from controller.config import Config, load_config
from controller.diagnose import format_report, run_checks
from controller.errors import ConfigError


@click.command("diagnose")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="station config (default: built-in)")
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
def diagnose_cmd(config_file: str | None, as_json: bool) -> None:
    """Look for cameras, spectrometer, GPIO, storage and clock; exit 1 when something required is missing."""
    if config_file:
        try:
            cfg = load_config(config_file)
        except ConfigError as e:
            click.echo(f"config {config_file}: {e}", err=True)
            raise SystemExit(1) from None
        # a site config names its hardware: its real backends are required
        title = f"pycam diagnose: {config_file} (role {cfg.role})"
    else:
        # no config: assume a real station Pi and look for all of its hardware
        base = Config()
        cfg = replace(base, camera=replace(base.camera, backend="picamera2"),
                      spectrometer=replace(base.spectrometer, backend="seabreeze"),
                      gpio=replace(base.gpio, backend="lgpio"))  # fmt: skip
        title = "pycam diagnose: no --config, looking for real station hardware (spectrometer: slave only)"
    findings = run_checks(cfg)
    if as_json:
        click.echo(json.dumps([asdict(f) | {"fails": f.fails} for f in findings], indent=2))
    else:
        click.echo(format_report(findings, title))
    raise SystemExit(1 if any(f.fails for f in findings) else 0)
