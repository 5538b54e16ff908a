"""The `pycam` command line. Subcommands live in their own modules and are imported only when used,
so `pycam --help` imports no vendor or processing library."""

from __future__ import annotations

import importlib

import click

# name -> (module:attribute, one-line help). Keep the help here so --help needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("controller.cli.run:run", "Run the station supervisor (master or slave)."),
    "status": ("controller.cli.status:status_cmd", "Show a running supervisor's state, link, clock, disk."),
    "diagnose": ("controller.cli.diagnose:diagnose_cmd", "Look for cameras, spectrometer, GPIO, storage, clock."),
    "config": ("controller.cli.config:config_group", "Check station config files."),
    "capture": ("controller.cli.capture:capture_cmd", "Capture one A image, one B image and one spectrum."),
    "ctl": ("controller.cli.ctl:ctl_cmd", "Send commands to the external control port."),
    "states": ("controller.cli.states:states_cmd", "Print the state machines (tables, mermaid diagrams)."),
    "schedule": ("controller.cli.schedule:schedule_group", "Schedules: write the WittyPi schedule.wpi."),
    "calibrate": ("controller.cli.calibrate:calibrate_group", "Calibrations on site: gas cells."),
    "process": ("controller.cli.process:process_cmd", "Process a folder of images and spectra to emission rates."),
    "sim": ("controller.cli.sim:sim_group", "Simulated station runs."),
    "bench": ("controller.cli.bench:bench_group", "Benchmarks that print figures."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                raise click.ClickException(f"'pycam {name}' is not available in this build ({e.name})") from e
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pycam-permanent")
def main() -> None:
    """PyCam Permanent: an unattended SO2 camera station (master and slave Raspberry Pis)."""
