"""`pycam capture`: one A image, one B image and one spectrum, with auto exposure applied first.

With `--sim` every device is simulated (seeded); without it the config's backends are used and the Pi's role
decides what it has: the master camera A, the slave camera B and the spectrometer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from controller.acquisition.autoexposure import nearest_index, next_integration, next_shutter
from controller.config import Config, load_config
from controller.errors import ConfigError, PycamError
from controller.hardware.checks import check_frame, check_spectrum
from controller.hardware.interfaces import Camera, Frame, Spectrometer, Spectrum
from controller.storage.atomic import atomic_create_bytes
from controller.storage.datastore import spectrum_bytes
from controller.storage.names import ImageName, SpectrumName, check_type
from controller.storage.png import encode_png16
from controller.timekeeping.clock import Clock, SystemClock

MAX_SETTLE_FRAMES = 12


def settle_exposure(camera: Camera, cfg: Config) -> Frame:
    """Capture until auto exposure keeps the shutter speed (at most MAX_SETTLE_FRAMES); the last frame."""
    shutters = cfg.camera.shutter_list_us
    max_value = (1 << cfg.camera.bit_depth) - 1
    frame = camera.capture()
    for _ in range(MAX_SETTLE_FRAMES):
        if not cfg.camera.auto_exposure:
            break
        new = next_shutter(frame.pixels, frame.exposure_us, shutters, cfg.camera, max_value)
        if new == shutters[nearest_index(shutters, frame.exposure_us)]:
            break
        camera.set_exposure(new)
        frame = camera.capture()
    return check_frame(frame, cfg.camera.width, cfg.camera.height)


def settle_integration(spectrometer: Spectrometer, cfg: Config) -> Spectrum:
    spectrum = spectrometer.capture(cfg.spectrometer.coadd)
    for _ in range(MAX_SETTLE_FRAMES):
        if not cfg.spectrometer.auto_integration:
            break
        new = next_integration(spectrum.counts, spectrum.wavelengths_nm, spectrum.integration_ms, cfg.spectrometer)
        if new == spectrum.integration_ms:
            break
        spectrometer.set_integration_ms(new)
        spectrum = spectrometer.capture(cfg.spectrometer.coadd)
    return check_spectrum(spectrum)


def capture_set(
    cfg: Config, out: Path, clock: Clock, bands: tuple[str, ...], with_spectrum: bool, kind: str = "Test"
) -> list[Path]:
    """Capture and write the files; all carry one timestamp (the first frame's second), like a capture slot."""
    from controller.hardware.factory import make_scene, open_camera, open_spectrometer

    scene = make_scene(cfg) if "sim" in (cfg.camera.backend, cfg.spectrometer.backend) else None
    slot_time = int(clock.time())
    written: list[Path] = []
    for band in bands:
        camera = open_camera(cfg, band, clock, scene)
        try:
            camera.set_exposure(cfg.camera.shutter_us)
            camera.set_gain(cfg.camera.gain)
            frame = settle_exposure(camera, cfg)
        finally:
            camera.close()
        name = ImageName(_utc(slot_time), band, int(round(frame.gain)), int(frame.exposure_us), kind)
        written.append(atomic_create_bytes(out / str(name), encode_png16(frame.pixels)))
    if with_spectrum:
        spectrometer = open_spectrometer(cfg, clock, scene)
        if spectrometer is not None:
            try:
                spectrometer.set_integration_ms(cfg.spectrometer.integration_ms)
                spectrum = settle_integration(spectrometer, cfg)
            finally:
                spectrometer.close()
            name = SpectrumName(_utc(slot_time), int(spectrum.integration_ms), spectrum.coadd, kind)
            written.append(atomic_create_bytes(out / str(name), spectrum_bytes(spectrum.as_array())))
    return written


def _utc(epoch_s: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_s, tz=UTC)


@click.command("capture")
@click.option("--sim", is_flag=True, help="use the simulated camera A, camera B and spectrometer")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="folder for the files")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="station config")
@click.option("--seed", type=int, default=None, help="sim seed (overrides sim.seed)")
@click.option(
    "--type", "kind", default="Test", show_default=True, help="capture type: Plume, Dark, Clear, Test, <N>ppmm"
)
def capture_cmd(sim: bool, out_dir: str, config_file: str | None, seed: int | None, kind: str) -> None:
    """Capture one A image, one B image and one spectrum after auto exposure."""
    try:
        check_type(kind)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--type") from e
    try:
        cfg = load_config(config_file) if config_file else Config()
    except ConfigError as e:
        raise click.ClickException(f"config {config_file}: {e}") from e
    if sim:
        cfg = dataclasses.replace(
            cfg, camera=dataclasses.replace(cfg.camera, backend="sim"),
            spectrometer=dataclasses.replace(cfg.spectrometer, backend="sim"),
            sim=dataclasses.replace(cfg.sim, seed=cfg.sim.seed if seed is None else seed),
        )  # fmt: skip
        bands, with_spectrum = ("A", "B"), True
    elif cfg.role == "master":
        bands, with_spectrum = ("A",), False
    else:
        bands, with_spectrum = ("B",), True
    try:
        paths = capture_set(cfg, Path(out_dir), SystemClock(), bands, with_spectrum, kind)
    except PycamError as e:
        raise click.ClickException(str(e)) from e
    for path in paths:
        click.echo(str(path))
