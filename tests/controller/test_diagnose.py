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


def _master_cfg():
    from dataclasses import replace

    from controller.config import Config

    cfg = Config()
    return replace(cfg, gpio=replace(cfg.gpio, backend="lgpio"))


def test_power_board_advice_names_the_wittypi4_and_a_low_voltage_shutdown():
    from controller import diagnose
    from controller.power.wittypi import read_board
    from tests.controller.power.test_wittypi import wp4_bus

    findings = diagnose.check_power_board(_master_cfg(), reader=lambda: read_board(wp4_bus(vin=(11, 2), reason=0x05)))
    assert findings[0].status == "ok" and "WittyPi 4 (firmware 0x26), Vin 11.02 V, 25.5 °C" in findings[0].detail
    low = [f for f in findings if "low voltage" in f.detail]
    assert low and "battery" in low[0].action and not any(f.fails for f in findings)
    assert not any("overlay" in (f.detail + f.action) for f in findings)


def test_power_board_advice_for_wittypi3_and_for_no_board():
    from controller import diagnose
    from controller.power.wittypi import NoI2C, read_board
    from tests.controller.power.test_wittypi import StandInBus

    wp3 = StandInBus({0x68: {0x11: 20, 4: 1, 5: 1, 6: 0x26}, 0x69: {0: 0x24, 7: 1, 1: 12}})
    findings = diagnose.check_power_board(_master_cfg(), reader=lambda: read_board(wp3))
    assert findings[0].detail.startswith("WittyPi 3 (firmware 0x24), Vin 12.00 V")
    none = diagnose.check_power_board(_master_cfg(), reader=lambda: read_board(StandInBus({})))
    assert none[0].status == "warn" and "i2cdetect -y 1" in none[0].action and "08 (WittyPi 4)" in none[0].action

    def no_bus():
        raise NoI2C("no /dev/i2c-1 (enable I2C: raspi-config nonint do_i2c 0)")

    nobus = diagnose.check_power_board(_master_cfg(), reader=no_bus)
    assert "no /dev/i2c-1" in nobus[0].detail and "raspi-config" in nobus[0].action


def test_no_kernel_rtc_overlay_advice():
    from controller import diagnose

    findings = diagnose.check_clock(_master_cfg())
    assert not any("overlay" in (f.detail + f.action) or "/dev/rtc0" in f.detail for f in findings)
