"""`pycam run --role master|slave --config FILE`: one supervisor process, one asyncio loop."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from controller.config import Config, check_paths, load_config
from controller.errors import ConfigError, PycamError
from controller.logging import configure_logging, get_logger
from controller.supervisor.base import RunOptions, Supervisor
from controller.timekeeping.clock import Clock, ScaledClock, SystemClock


def make_clock(
    cfg: Config, sim_epoch: float | None, real_start: float | None, offset_s: float, rate_file: str | None = None
) -> Clock:
    """The station clock: compressed sim time when the config asks for it, the system clock otherwise."""
    scale = cfg.sim.time_scale
    if sim_epoch is None and cfg.sim.start_utc:
        sim_epoch = datetime.fromisoformat(cfg.sim.start_utc).replace(tzinfo=UTC).timestamp()
    if scale != 1.0 or sim_epoch is not None:
        epoch = sim_epoch if sim_epoch is not None else datetime.now(UTC).timestamp()
        clock = ScaledClock(epoch, scale, real_start, rate_file)
        clock.offset_s = offset_s
        return clock
    return SystemClock(offset_s=offset_s)


def make_supervisor(cfg: Config, clock: Clock, options: RunOptions) -> Supervisor:
    if cfg.role == "master":
        from controller.supervisor.master import MasterSupervisor

        return MasterSupervisor(cfg, clock, options)
    from controller.supervisor.slave import SlaveSupervisor

    return SlaveSupervisor(cfg, clock, options)


def prepare_config(config: str, role: str, state_dir: str | None) -> Config:
    cfg = load_config(config)
    storage = cfg.storage
    if state_dir:
        storage = dataclasses.replace(storage, state_dir=Path(state_dir).resolve())
    return dataclasses.replace(cfg, station=dataclasses.replace(cfg.station, role=role), storage=storage)


def _boot_guard(cfg: Config, state_dir: Path):
    """S1's boot-loop guard (None when its state cannot be written: the station still starts)."""
    try:
        from controller import bootguard
    except ImportError:
        return None
    try:
        return bootguard.BootGuard(state_dir)  # constructing it records this start-up
    except (OSError, PycamError):
        return None


@click.command("run")
@click.option("--role", type=click.Choice(["master", "slave"]), required=True)
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--state-dir", type=click.Path(file_okay=False), help="runtime state (status.json, settings)")
@click.option("--sim-epoch", type=float, help="sim: clock epoch at --sim-real-start (shared by master and slave)")
@click.option("--sim-real-start", type=float, help="sim: real wall time the sim clock started")
@click.option("--sim-rate-file", type=click.Path(dir_okay=False), help="sim: file that changes the clock's rate")
@click.option("--clock-offset", type=float, default=0.0, help="sim/tests: start with this clock error (s)")
@click.option("--log-format", type=click.Choice(["json", "console"]), help="override logging.format")
def run(
    role: str,
    config: str,
    state_dir: str | None,
    sim_epoch: float | None,
    sim_real_start: float | None,
    sim_rate_file: str | None,
    clock_offset: float,
    log_format: str | None,
) -> None:
    """Run the station supervisor for ROLE until the station is off (or SIGTERM)."""
    try:
        cfg = prepare_config(config, role, state_dir)
        check_paths(cfg, create=True)  # a data_root that is a file, a state folder that cannot be made: one line
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    configure_logging(log_format or cfg.logging.format, cfg.logging.level)
    log = get_logger("run", role=role)
    clock = make_clock(cfg, sim_epoch, sim_real_start, clock_offset, sim_rate_file)
    guard = _boot_guard(cfg, cfg.storage.state_dir)
    if guard is not None and guard.tripped:
        log.error("boot_guard_tripped", state_dir=str(cfg.storage.state_dir))
    options = RunOptions(state_dir=cfg.storage.state_dir, boot_guard=guard)
    sup = make_supervisor(cfg, clock, options)
    from controller.sim import faulthook

    if faulthook.wanted(cfg):
        sup.start_hooks.append(faulthook.install)
    log.info("supervisor_start", config=str(config), scale=clock.scale())
    code = asyncio.run(sup.run())
    log.info("supervisor_exit", code=code)
    sys.exit(code)
