"""`pycam process DIR --config FILE --out OUT`: the processing pipeline on a folder, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path

import click

from controller.config import Config, load_config
from controller.errors import PycamError


@click.command("process")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="station config (TOML) with the [processing] section; default: built-in defaults",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="folder for emission_rates*.csv, doas_results.csv, calibration_series.csv, plots, summary.json",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def process_cmd(folder: Path, config_path: Path | None, out: Path, as_json: bool) -> None:
    """Process a folder of images and spectra (original layout or flat) to SO2 emission rates."""
    from controller.logging import configure_logging
    from processing.folder import process_folder

    try:
        cfg = load_config(config_path) if config_path else Config()
        configure_logging(cfg.logging.format, "warning")

        def progress(pairs):  # noqa: ANN001, ANN202
            with click.progressbar(pairs, label="processing pairs", file=click.get_text_stream("stderr")) as bar:
                yield from bar

        summary = process_folder(folder, cfg, out, progress=progress)
    except PycamError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"{summary['pairs']} pairs, {summary['emission_rows']} emission rows -> {out}")
    click.echo(f"background: {summary['background']}")
    click.echo(f"calibration: {summary['calibration']}")
    for k, v in sorted(summary["mean_flux_kg_s"].items()):
        click.echo(f"mean emission rate {k}: {v:.3g} kg/s")
