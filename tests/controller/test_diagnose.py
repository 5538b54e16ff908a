"""`pycam diagnose`: a readable report, non-zero without hardware, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from controller.cli import main


def test_diagnose_without_hardware_exits_nonzero_with_readable_report():
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("pycam")), "diagnose"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert "camera" in out and "spectrometer" in out and "gpio" in out and "storage" in out and "clock" in out
    assert "MISSING" in out and "->" in out  # says what is missing and what to do
    assert out.strip().splitlines()[-1].startswith("result: required hardware missing")


def test_diagnose_sim_config_passes(tmp_path):
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        '[camera]\nbackend = "sim"\n[spectrometer]\nbackend = "sim"\n[gpio]\nbackend = "mock"\n'
        f'[storage]\ndata_root = "{tmp_path / "data"}"\nallow_fallback = true\nmin_free_mb = 0\nresume_free_mb = 0\n'
    )
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(main, ["diagnose", "--config", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    findings = json.loads(result.output)
    assert not any(f["fails"] for f in findings)
    assert {f["item"] for f in findings} >= {"camera", "spectrometer", "gpio", "storage", "clock"}


def test_diagnose_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[camera]\nwidth = -3\n")
    result = CliRunner().invoke(main, ["diagnose", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "camera.width" in result.output
    assert "Traceback" not in result.output


def test_unwritable_data_root_is_missing(tmp_path, monkeypatch):
    from dataclasses import replace

    from controller import diagnose
    from controller.config import Config

    def refuse(**kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(diagnose.tempfile, "NamedTemporaryFile", refuse)
    cfg = Config()
    cfg = replace(cfg, storage=replace(cfg.storage, data_root=tmp_path, allow_fallback=True))
    findings = diagnose.check_storage(cfg)
    assert any(f.fails and "cannot write" in f.detail and f.action for f in findings)
