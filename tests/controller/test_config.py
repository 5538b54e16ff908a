"""Typed config: every error names its key; the examples in conf/ load; dict round trips."""

from __future__ import annotations

import dataclasses
import json
import types
import typing

import pytest
from click.testing import CliRunner

from controller.cli import main
from controller.config import Config, config_from_dict, config_to_dict, load_config
from controller.errors import ConfigError

SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name != "source"]


def error_key(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).startswith(info.value.key + ":")  # the message starts with the key
    return info.value.key


def test_examples_in_conf_load(repo_root):
    files = sorted((repo_root / "conf").glob("*.toml"))
    assert {"master.toml", "slave.toml", "sim.toml"} <= {f.name for f in files}
    for path in files:
        cfg = load_config(path)
        assert cfg.source == path.resolve()
    assert load_config(repo_root / "conf" / "slave.toml").role == "slave"


def test_defaults_are_the_originals():
    cfg = Config()
    assert cfg.schedule.period_s == 4.0  # 0.25 Hz
    assert (cfg.camera.min_saturation, cfg.camera.max_saturation) == (0.7, 0.9)
    assert cfg.camera.shutter_list_us[:3] == (1, 2, 3) and cfg.camera.shutter_list_us[-1] == 6_000_000
    assert cfg.spectrometer.integration_list_ms[-1] == 10_000
    assert (cfg.camera.width, cfg.camera.height) == (648, 486)


def test_unknown_key_and_section():
    assert error_key({"camera": {"shuter_us": 5}}) == "camera.shuter_us"
    assert error_key({"cameras": {}}) == "cameras"
    assert error_key({"camera": 5}) == "camera"
    with pytest.raises(ConfigError, match="allowed keys: .*shutter_us"):
        config_from_dict({"camera": {"shuter_us": 5}})


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("camera", "width", "wide"), ("camera", "width", 64.5), ("camera", "width", True),
        ("camera", "gain", "x"), ("camera", "auto_exposure", 1), ("station", "name", 3),
        ("camera", "backend", "webcam"), ("camera", "shutter_list_us", 5), ("storage", "data_root", 7),
        ("spectrometer", "saturation_window_nm", [300]), ("logging", "level", "loud"),
    ],
)  # fmt: skip
def test_wrong_type_names_the_key(section, key, value):
    assert error_key({section: {key: value}}) == f"{section}.{key}"


def test_wrong_element_type_names_the_index():
    assert error_key({"camera": {"shutter_list_us": [1, 2, "x"]}}) == "camera.shutter_list_us[2]"


def _ranged_fields():
    for section in SECTIONS:
        cls = typing.get_type_hints(Config)[section]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            lo, hi = f.metadata.get("range", (None, None))
            if lo is None and hi is None:
                continue
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            yield section, f.name, tp, lo, hi


@pytest.mark.parametrize("section, name, tp, lo, hi", list(_ranged_fields()))
def test_every_out_of_range_value_names_its_key_and_range(section, name, tp, lo, hi):
    for bad in ([lo - max(1, abs(lo) / 2)] if lo is not None else []) + (
        [hi + max(1, abs(hi) / 2)] if hi is not None else []
    ):
        value = int(bad) if tp is int else float(bad)
        with pytest.raises(ConfigError) as info:
            config_from_dict({section: {name: value}})
        assert info.value.key == f"{section}.{name}"
        assert "out of range" in str(info.value) and str(lo) in str(info.value) and str(hi) in str(info.value)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"camera": {"min_saturation": 0.9, "max_saturation": 0.8}}, "camera.min_saturation"),
        ({"camera": {"saturation_rows": 0}}, "camera.saturation_rows"),
        ({"camera": {"frame_rate_hz": 0.0}}, "camera.frame_rate_hz"),
        ({"spectrometer": {"frame_rate_hz": 0.0}}, "spectrometer.frame_rate_hz"),  # rate 0 crashed the original
        ({"camera": {"shutter_list_us": [10, 5]}}, "camera.shutter_list_us"),
        ({"spectrometer": {"min_saturation": 0.5, "max_saturation": 0.4}}, "spectrometer.min_saturation"),
        ({"spectrometer": {"saturation_window_nm": [340, 300]}}, "spectrometer.saturation_window_nm"),
        ({"spectrometer": {"integration_list_ms": [3, 3]}}, "spectrometer.integration_list_ms"),
        ({"schedule": {"period_s": 7.0}}, "schedule.period_s"),
        ({"schedule": {"windows_utc": []}}, "schedule.windows_utc"),
        ({"schedule": {"windows_utc": [["11:00", "25:00"]]}}, "schedule.windows_utc[0]"),
        ({"schedule": {"dark_time_utc": "noon"}}, "schedule.dark_time_utc"),
        ({"network": {"allowed_networks": ["10.0.0.0/8", "nonsense"]}}, "network.allowed_networks[1]"),
        ({"network": {"heartbeat_s": 5.0, "link_timeout_s": 4.0}}, "network.link_timeout_s"),
        ({"storage": {"min_free_mb": 100, "resume_free_mb": 50}}, "storage.resume_free_mb"),
    ],
)
def test_cross_field_errors_name_their_key(data, key):
    assert error_key(data) == key


def test_round_trip_through_dict(repo_root):
    for cfg in (Config(), load_config(repo_root / "conf" / "sim.toml")):
        again = config_from_dict(config_to_dict(cfg), source=cfg.source)
        assert again == cfg


def test_base_supplies_unset_values():
    base = config_from_dict({"camera": {"shutter_us": 1234}, "sim": {"seed": 9}})
    changed = config_from_dict({"camera": {"gain": 2.0}}, base=base)
    assert (changed.camera.shutter_us, changed.camera.gain, changed.sim.seed) == (1234, 2.0, 9)


def test_config_check_cli_names_the_key(tmp_path, repo_root):
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nmax_saturation = 2.0\n")
    result = CliRunner().invoke(main, ["config", "check", str(bad), str(repo_root / "conf" / "master.toml")])
    assert result.exit_code == 1
    assert "camera.max_saturation" in result.output and "0.1 to 1.0" in result.output
    assert "master.toml: ok" in result.output
    broken = tmp_path / "broken.toml"
    broken.write_text("[camera\n")
    assert error_key_file(broken) == "<file>"


def error_key_file(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.key


@pytest.mark.parametrize("token", ["two words", " lead", "tab\there", "new\nline", "ünïcode"])
def test_token_with_whitespace_is_refused_by_config_check(tmp_path, token):
    path = tmp_path / "master.toml"
    path.write_text(f"[network]\nauth_token = {json.dumps(token)}\n", encoding="utf-8")  # a TOML basic string
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "network.auth_token" in lines[0] and str(path) in lines[0]


def _one_line_error(path, *extra) -> str:
    result = CliRunner().invoke(main, ["config", "check", str(path), *extra])
    assert result.exit_code == 1, result.output  # a clean exit, not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(path) in lines[0]
    return lines[0]


def test_non_utf8_config_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[station]\nname = "Villarrica Süd"\n'.encode("latin-1"))
    assert "not UTF-8" in _one_line_error(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_period_nan_or_inf_is_one_line_naming_the_key(tmp_path, value):
    path = tmp_path / "nan.toml"
    path.write_text(f"[schedule]\nperiod_s = {value}\n")
    line = _one_line_error(path)
    assert "schedule.period_s" in line and "finite" in line


@pytest.mark.parametrize(("section", "key"), [("camera", "shutter_list_us"), ("spectrometer", "integration_list_ms")])
def test_empty_exposure_list_is_one_line_naming_the_key(tmp_path, section, key):
    path = tmp_path / "empty.toml"
    path.write_text(f"[{section}]\n{key} = []\n")
    assert f"{section}.{key}" in _one_line_error(path)


def test_data_root_that_is_a_file_is_refused(tmp_path):
    data_root = tmp_path / "data"
    data_root.write_text("not a folder")
    path = tmp_path / "master.toml"
    path.write_text(f'[storage]\ndata_root = "{data_root}"\nstate_dir = "{tmp_path / "state"}"\n')
    line = _one_line_error(path)
    assert "storage.data_root" in line and "is a file" in line


def test_state_dir_that_cannot_be_created_stops_run_with_one_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be made")
    path = tmp_path / "master.toml"
    path.write_text(f'[storage]\ndata_root = "{tmp_path / "data"}"\nstate_dir = "{blocker / "state"}"\n')
    result = CliRunner().invoke(main, ["run", "--role", "master", "--config", str(path)])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError | NotADirectoryError)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "storage.state_dir" in lines[0] and "cannot be created" in lines[0], result.output
    assert str(path) in lines[0]
