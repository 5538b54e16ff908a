"""`pycam config check FILE`."""

from __future__ import annotations

import sys

import click

from controller.config import check_paths, load_config
from controller.errors import ConfigError


@click.group("config")
def config_group() -> None:
    """Check station config files."""


@config_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check_cmd(files: tuple[str, ...]) -> None:
    """Validate FILES; print "ok" or the key that is wrong and what is allowed."""
    failed = False
    for path in files:
        try:
            cfg = load_config(path)
            check_paths(cfg)
        except ConfigError as e:
            click.echo(f"{path}: error: {e}")
            failed = True
        else:
            click.echo(f"{path}: ok ({cfg.station.role})")
    sys.exit(1 if failed else 0)
