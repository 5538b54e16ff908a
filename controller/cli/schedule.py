"""`pycam schedule wittypi --config FILE [--out PATH]` and `pycam schedule show --config FILE`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from controller.config import load_config
from controller.errors import ConfigError


def _load(path: str):
    try:
        return load_config(path)
    except ConfigError as e:
        raise click.ClickException(f"{path}: {e}") from e


@click.group("schedule")
def schedule_group() -> None:
    """Schedules derived from the station config (one source of truth, UTC)."""


@schedule_group.command("wittypi")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out", type=click.Path(dir_okay=False), help="write here (atomically) instead of stdout")
def wittypi_cmd(config_path: str, out: str | None) -> None:
    """Write the WittyPi schedule.wpi for this station (e.g. --out ~/wittypi/schedule.wpi)."""
    from controller.schedule import wittypi_schedule

    cfg = _load(config_path)
    try:
        text = wittypi_schedule(cfg)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    if out is None:
        click.echo(text, nl=False)
        return
    from controller.storage.atomic import atomic_write_text

    atomic_write_text(out, text)
    click.echo(f"wrote {out}")


@schedule_group.command("show")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--at", "at", default="", help="ISO UTC time to evaluate (default: now)")
def show_cmd(config_path: str, at: str) -> None:
    """Say whether the station is in its window now, when that changes, the next dark series, the sun."""
    from controller.schedule import StationSchedule, solar_elevation

    cfg = _load(config_path)
    if at:
        try:
            t = datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()
        except ValueError as e:
            raise click.ClickException(f"--at: {e}") from e
    else:
        t = time.time()
    sched = StationSchedule(cfg)

    def iso(x: float | None) -> str:
        return "never (within 2 days)" if x is None else datetime.fromtimestamp(x, tz=UTC).isoformat()

    k, slot_t = sched.slots.next_slot(t)
    elevation = solar_elevation(t, cfg.station.latitude_deg, cfg.station.longitude_deg)
    click.echo(f"time (UTC):        {iso(t)}")
    click.echo(f"in window:         {sched.in_window(t)}")
    click.echo(f"window changes at: {iso(sched.next_window_change(t))}")
    click.echo(f"next dark series:  {iso(sched.next_dark_time(t))}")
    click.echo(f"next slot:         k={k} at {iso(slot_t)} (period {sched.slots.period_s:g} s)")
    click.echo(f"solar elevation:   {elevation:.2f} deg")
