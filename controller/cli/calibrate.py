"""`pycam calibrate cells DIR --config FILE [--json]`: the gas-cell calibration of a folder, for the field."""

from __future__ import annotations

import json
from pathlib import Path

import click

from controller.config import Config, load_config
from controller.errors import PycamError


@click.group("calibrate")
def calibrate_group() -> None:
    """Calibrations from measurements on site."""


@calibrate_group.command("cells")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="station config (TOML); its processing.ppmm_to_molecules_cm2 converts the cells' ppm·m",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (slope, offset, errors, cells)")
@click.option(
    "--pyplis-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also save the cell data in pyplis's CellCalibData FITS format",
)
def cells_cmd(folder: Path, config_path: Path | None, as_json: bool, pyplis_out: Path | None) -> None:
    """AA per gas cell (Clear images as I0, darks subtracted), the line S = slope·AA + offset and its r²."""
    from controller.logging import configure_logging
    from processing.calibration import cell_calibration_from_folder, save_pyplis_cell_calib

    try:
        cfg = load_config(config_path) if config_path else Config()
        configure_logging(cfg.logging.format, "warning")
        cal = cell_calibration_from_folder(folder, cfg.processing.ppmm_to_molecules_cm2)
        if pyplis_out is not None:
            save_pyplis_cell_calib(cal, pyplis_out)
    except PycamError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(cal.as_dict()))
        return
    click.echo(f"I0: {cal.i0}; region: {cal.region}")
    for c in cal.cells:
        click.echo(
            f"{c.ppmm:>6d} ppm·m  column {c.column:.4g} ± {c.column_err:.2g}  AA {c.aa:.4f} ± {c.aa_err:.4f}"
            f"  (tau A {c.tau_a:.4f}, B {c.tau_b:.4f}; {c.n_a}+{c.n_b} images)"
        )
    f = cal.fit
    click.echo(f"slope  {f.slope:.4g} ± {f.slope_err:.2g} molecules/cm2 per AA")
    click.echo(f"offset {f.offset:.4g} ± {f.offset_err:.2g} molecules/cm2")
    click.echo(f"r2     {f.r2:.4f} (linearity r2 {cal.linearity_r2:.4f}, {f.n} cells)")
