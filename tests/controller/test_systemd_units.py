"""systemd units and install.sh (rendered into a temporary root, without systemctl)."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("role", ["master", "slave"])
def test_units_are_notify_services_with_watchdog_restart_and_start_limit(role):
    unit = read_unit(REPO / "systemd" / f"pycam-{role}.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert int(unit["Unit"]["StartLimitBurst"]) > 3  # above the boot guard's default limit
    assert int(unit["Unit"]["StartLimitIntervalSec"]) > 0
    assert f"run --role {role} --config @PYCAM_CONFIG@" in service["ExecStart"]
    assert service["ExecStart"].startswith("@PYCAM_VENV@/bin/pycam")


# Actions that reboot or power off a Pi; WatchdogSignal stays SIGABRT (a SIGTERM would run the clean stop, which
# also stops the slave).
_FORBIDDEN_KEYS = ("FailureAction", "SuccessAction", "StartLimitAction", "JobTimeoutAction", "WatchdogSignal")


@pytest.mark.parametrize("role", ["master", "slave"])
def test_watchdog_restarts_only_this_service_and_never_reboots_either_pi(role):
    # The original's watchdog rebooted both Pis even after a successful restart. Here a hung loop restarts this
    # supervisor only: no reboot/poweroff action, no tie to the other Pi's unit, and the hooks reboot nothing.
    unit = read_unit(REPO / "systemd" / f"pycam-{role}.service")
    for section in unit.sections():
        for key in _FORBIDDEN_KEYS:
            assert key not in unit[section], f"[{section}] {key}"
        for key in ("BindsTo", "PartOf", "Requires", "Requisite", "OnFailure"):
            assert "pycam" not in unit[section].get(key, ""), f"[{section}] {key}"
    assert unit["Service"]["Restart"] == "on-failure"
    for script in (REPO / "systemd").glob("*.sh"):
        text = script.read_text()
        for word in ("reboot", "shutdown -r", "systemctl restart", "poweroff"):
            assert word not in text, f"{script.name}: {word}"


def test_boot_guard_trips_before_systemd_gives_up():
    from controller.bootguard import DEFAULT_LIMIT

    unit = read_unit(REPO / "systemd" / "pycam-master.service")
    assert DEFAULT_LIMIT < int(unit["Unit"]["StartLimitBurst"])


def run_install(tmp_path: Path, role: str) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent.parent
    return subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--role", role, "--config", str(REPO / "conf" / f"{role}.toml"),
         "--user", "pi", "--venv", str(venv), "--root", str(tmp_path), "--wittypi-dir", "/home/pi/wittypi",
         "--no-systemctl"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_install_master_renders_units_defaults_hooks_and_schedule(tmp_path):
    first = run_install(tmp_path, "master")
    assert first.returncode == 0, first.stderr
    assert run_install(tmp_path, "master").returncode == 0  # idempotent
    unit_text = (tmp_path / "etc/systemd/system/pycam-master.service").read_text()
    assert "@PYCAM" not in unit_text  # no unrendered placeholders
    unit = read_unit(tmp_path / "etc/systemd/system/pycam-master.service")
    exec_start = unit["Service"]["ExecStart"].split()
    assert Path(exec_start[0]).is_file() and exec_start[0].endswith("/bin/pycam")
    assert unit["Service"]["User"] == "pi"
    defaults = (tmp_path / "etc/default/pycam").read_text()
    assert f'PYCAM_VENV="{Path(sys.executable).parent.parent.resolve()}"' in defaults
    wittypi = tmp_path / "home/pi/wittypi"
    after = (wittypi / "afterStartup.sh").read_text().splitlines()
    assert after.count(str(REPO / "systemd" / "afterStartup.sh")) == 1
    assert "BEGIN" in (wittypi / "schedule.wpi").read_text()


def test_install_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[schedule]\nperiod_s = 7\n")
    venv = Path(sys.executable).parent.parent
    out = subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--role", "slave", "--config", str(bad), "--venv", str(venv),
         "--root", str(tmp_path), "--no-systemctl"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "period_s" in (out.stdout + out.stderr)
    assert not (tmp_path / "etc/systemd/system/pycam-slave.service").exists()
