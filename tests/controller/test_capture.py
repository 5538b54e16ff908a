"""`pycam capture --sim`: one A image, one B image, one spectrum, original names and formats, auto exposure on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from controller.cli import main
from controller.storage.names import ImageName, SpectrumName, parse_name
from controller.storage.png import decode_png16


def test_capture_sim_writes_three_files(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["capture", "--sim", "--out", str(out), "--seed", "4"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 3, files
    parsed = [parse_name(f) for f in files]
    images = sorted((p for p in parsed if isinstance(p, ImageName)), key=lambda p: p.band)
    spectra = [p for p in parsed if isinstance(p, SpectrumName)]
    assert [i.band for i in images] == ["A", "B"] and len(spectra) == 1
    assert images[0].time_key == images[1].time_key == spectra[0].time_key  # one slot time
    for img in images:
        pixels = decode_png16((out / str(img)).read_bytes())
        assert pixels.shape == (486, 648) and pixels.dtype == np.uint16
        # auto exposure ran: the brightest pixels sit in the 0.7-0.9 band, not the 10 ms default's saturation
        level = np.sort(pixels[-1:].ravel())[-100]
        assert 0.7 * 1023 <= level <= 0.9 * 1023, (img, level)
    assert images[0].shutter_us != 10_000 or images[1].shutter_us != 10_000
    spectrum = np.load(out / str(spectra[0]))
    assert spectrum.shape == (2, 2048) and spectrum.dtype == np.float64
    assert 242 < spectrum[0, 0] < spectrum[0, -1] < 405


def test_capture_type_is_validated(tmp_path):
    result = CliRunner().invoke(main, ["capture", "--sim", "--out", str(tmp_path), "--type", "Cloud"])
    assert result.exit_code != 0 and "Cloud" in result.output
    assert list(tmp_path.iterdir()) == []


def test_capture_without_hardware_reports_error(tmp_path):
    cfg = tmp_path / "master.toml"
    cfg.write_text('[camera]\nbackend = "picamera2"\n')
    result = CliRunner().invoke(main, ["capture", "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert result.exit_code == 1
    assert "camera A" in result.output and "Traceback" not in result.output


def test_capture_into_a_folder_never_overwrites_a_file_of_the_same_second(tmp_path):
    from controller.cli.capture import capture_set
    from controller.config import Config
    from controller.timekeeping.clock import ManualClock

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        camera=dataclasses.replace(cfg.camera, backend="sim"),
        spectrometer=dataclasses.replace(cfg.spectrometer, backend="sim"),
    )
    out = tmp_path / "out"
    out.mkdir()
    clock = ManualClock(1_700_000_000.0)
    first = capture_set(cfg, out, clock, ("A",), with_spectrum=False)
    before = first[0].read_bytes()
    from controller.storage.atomic import NameTaken

    with pytest.raises(NameTaken, match="never overwritten"):
        capture_set(cfg, out, clock, ("A",), with_spectrum=False, kind="Test")
    assert first[0].read_bytes() == before
