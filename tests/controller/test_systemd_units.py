"""systemd units and install.sh (rendered into a temporary root, without systemctl)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
SECURITY_LIMIT = 5.0


class Unit(dict):
    """A unit file: section -> {key: [values]} (systemd keys repeat); unit[section][key] is the last value."""

    def __init__(self, text: str):
        super().__init__()
        section = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")) or re.fullmatch(r"@PYCAM_\w+@", line):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = self.setdefault(line[1:-1], _Section())
                continue
            key, sep, value = line.partition("=")
            assert sep and section is not None, f"not a unit line: {raw!r}"
            section.setdefault(key.strip(), []).append(value.strip())


class _Section(dict):
    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key)[-1]

    def get(self, key: str, default: str = "") -> str:
        return self[key] if key in self else default

    def all(self, key: str) -> list[str]:
        return list(super().get(key, []))


def read_unit(path: Path) -> Unit:
    return Unit(path.read_text())


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
    for section in unit:
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


def run_install(root: Path, role: str, *extra: str, config: Path | None = None) -> subprocess.CompletedProcess:
    config = config or REPO / "conf" / f"{role}.toml"
    return subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--role", role, "--config", str(config), "--venv", str(VENV),
         *extra, *(["--root", str(root)] if root else []), "--no-systemctl"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A master and a slave rendered under two roots, the slave with the master's link key (rendered once: the
    tests only read them; the one that installs again checks that nothing changed)."""
    tmp_path = tmp_path_factory.mktemp("installed")
    roots = {"master": tmp_path / "master", "slave": tmp_path / "slave"}
    out = run_install(roots["master"], "master", "--user", "pi", "--wittypi-dir", "/home/pi/wittypi")
    assert out.returncode == 0, out.stderr
    key = roots["master"] / "var/lib/pycam/link.key"
    out = run_install(roots["slave"], "slave", "--user", "pi", "--link-key", str(key))
    assert out.returncode == 0, out.stderr
    return roots


def test_install_master_renders_units_defaults_hooks_and_schedule(installed):
    root = installed["master"]
    before = _files(root)
    assert run_install(root, "master", "--user", "pi", "--wittypi-dir", "/home/pi/wittypi").returncode == 0
    assert _files(root) == before  # idempotent: the same files, the same key and token
    unit_text = (root / "etc/systemd/system/pycam-master.service").read_text()
    assert "@PYCAM" not in unit_text  # no unrendered placeholders
    unit = read_unit(root / "etc/systemd/system/pycam-master.service")
    exec_start = unit["Service"]["ExecStart"].split()
    assert Path(exec_start[0]).is_file() and exec_start[0].endswith("/bin/pycam")
    assert exec_start[exec_start.index("--config") + 1] == "/etc/pycam/master.toml"
    assert unit["Service"]["User"] == "pi"
    defaults = (root / "etc/default/pycam").read_text()
    assert f'PYCAM_VENV="{VENV.resolve()}"' in defaults
    wittypi = root / "home/pi/wittypi"
    after = (wittypi / "afterStartup.sh").read_text().splitlines()
    assert after.count(str(REPO / "systemd" / "afterStartup.sh")) == 1
    assert "BEGIN" in (wittypi / "schedule.wpi").read_text()


@pytest.mark.parametrize("role", ["master", "slave"])
def test_rendered_units_get_their_directories_lgpio_dir_devices_and_journal_priority(installed, role):
    unit = read_unit(installed[role] / f"etc/systemd/system/pycam-{role}.service")
    service = unit["Service"]
    assert (service["StateDirectory"], service["RuntimeDirectory"], service["LogsDirectory"]) == ("pycam",) * 3
    assert "--state-dir %S/pycam" in service["ExecStart"]  # the state_dir is the one systemd makes and owns
    assert "LG_WD=%t/pycam" in service.all("Environment")  # lgpio's pipe in the runtime dir, not the cwd
    assert set(service["SupplementaryGroups"].split()) >= {"gpio", "i2c", "plugdev", "video", "dialout"}
    allowed = " ".join(service.all("DeviceAllow"))
    for dev in ("char-gpiochip", "char-i2c", "char-video4linux", "char-media", "char-dma_heap", "/dev/vchiq",
                "char-usb_device", "char-ttyACM", "char-ttyAMA"):  # fmt: skip
        assert dev in allowed
    assert service["DevicePolicy"] == "closed" and service["ProtectSystem"] == "strict"
    assert service["SyslogLevelPrefix"] == "yes"
    if role == "master":
        assert unit["Unit"]["RequiresMountsFor"] == "/mnt/pycam"  # conf/master.toml's storage.mount_point
        assert "ReadWritePaths" in service and "/mnt/pycam/data" in service["ReadWritePaths"]
    else:
        assert "RequiresMountsFor" not in unit["Unit"]


def _token(path: Path) -> str:
    import tomllib

    return tomllib.loads(path.read_text()).get("network", {}).get("auth_token", "")


def test_installed_configs_keys_token_udev_rules_and_chrony(installed):
    master, slave = installed["master"], installed["slave"]
    token = re.search(r'auth_token = "([0-9a-f]{32})"', (master / "etc/pycam/master.toml").read_text())
    assert token, "the master's config copy got a control-port token"
    assert not _token(slave / "etc/pycam/slave.toml") and not _token(REPO / "conf/master.toml")  # source untouched
    mkey, skey = master / "var/lib/pycam/link.key", slave / "var/lib/pycam/link.key"
    assert len(mkey.read_bytes()) == 32 and mkey.read_bytes() == skey.read_bytes()
    assert mkey.stat().st_mode & 0o777 == 0o600 and skey.stat().st_mode & 0o777 == 0o600
    rules = (slave / "etc/udev/rules.d/60-pycam-oceanoptics.rules").read_text()
    assert 'ATTR{idVendor}=="2457"' in rules and 'ATTR{idVendor}=="0999"' in rules and 'GROUP:="plugdev"' in rules
    mconf = (master / "etc/chrony/chrony.conf").read_text()
    assert "local stratum 10 orphan" in mconf and "allow 169.254.0.0/16" in mconf
    sconf = (slave / "etc/chrony/chrony.conf").read_text()
    assert "server 169.254.1.1 iburst" in sconf and "makestep 1 -1" in sconf and "allow" not in sconf
    assert (master / "etc/systemd/system/chrony.service.d/pycam.conf").exists()


def test_install_with_root_touches_nothing_outside_it(tmp_path):
    watched = [Path("/etc/chrony/chrony.conf"), Path("/etc/default/pycam"), Path("/etc/pycam")]
    before = {p: p.stat().st_mtime_ns if p.exists() else None for p in watched}
    out = run_install(tmp_path / "r", "slave", "--user", f"nosuch{uuid.uuid4().hex[:6]}")
    assert out.returncode == 0, out.stderr  # a user that does not exist here is not an error with --root
    assert {p: p.stat().st_mtime_ns if p.exists() else None for p in watched} == before
    assert "no link key yet" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (checks the user on this machine)")
def test_install_names_a_missing_user_in_one_line(tmp_path):
    user = f"nosuch{uuid.uuid4().hex[:6]}"
    out = run_install(None, "slave", "--user", user)
    assert out.returncode != 0
    assert out.stderr.strip() == f'install.sh: user "{user}" does not exist (create it or use --user)'


def test_install_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[schedule]\nperiod_s = 7\n")
    out = run_install(tmp_path, "slave", config=bad)
    assert out.returncode == 1 and "period_s" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "etc/systemd/system/pycam-slave.service").exists()


def test_install_refuses_a_state_dir_the_unit_does_not_give(tmp_path):
    cfg = tmp_path / "slave.toml"
    cfg.write_text('[station]\nrole = "slave"\n[storage]\nstate_dir = "/srv/pycam-state"\n')
    out = run_install(tmp_path / "root", "slave", config=cfg)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "storage.state_dir is /srv/pycam-state" in out.stderr
    assert not (tmp_path / "root").exists()  # refused before anything was written


@pytest.mark.parametrize("args", [["--role", "both"], ["--role", "slave", "--config"], ["--bogus"]])
def test_install_errors_are_one_line_and_non_zero(tmp_path, args):
    out = subprocess.run(["bash", str(REPO / "systemd/install.sh"), *args, "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("install.sh: ")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("role", ["master", "slave"])
def test_rendered_units_verify_and_rate_safe(installed, role):
    path = installed[role] / f"etc/systemd/system/pycam-{role}.service"
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    assert security_exposure(path) <= SECURITY_LIMIT


def security_exposure(path: Path) -> float:
    """`systemd-analyze security --offline=true` overall exposure of a unit file (0 safe ... 10 unsafe)."""
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=path.parent)  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return float(found.group(1))


def _render_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pycam_install_render", REPO / "systemd/render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("home", "protect"), [("/opt/pycam", "yes"), ("/home/pi/pycam", "read-only")])
def test_a_project_in_a_home_folder_stays_readable_under_protecthome(home, protect):
    from controller.config import config_from_dict

    render = _render_module()
    values = {"PYCAM_HOME": home, "PYCAM_VENV": f"{home}/.venv", "PYCAM_CONFIG": "/etc/pycam/slave.toml",
              "PYCAM_USER": "pycam", "PYCAM_GROUP": "pycam"}  # fmt: skip
    text = render.render_unit((REPO / "systemd/pycam-slave.service").read_text(),
                              (REPO / "systemd/sandbox.conf").read_text(), values,
                              config_from_dict({"station": {"role": "slave"}}), "slave")  # fmt: skip
    assert Unit(text)["Service"]["ProtectHome"] == protect


def test_control_port_token_goes_into_the_network_section_once():
    import tomllib

    with_token = _render_module().with_token
    empty = '[station]\nname = "x"\n\n[network]\nauth_token = ""\next_port = 1\n\n[storage]\nmin_free_mb = 0\n'
    assert tomllib.loads(with_token(empty, "ab12"))["network"] == {"auth_token": "ab12", "ext_port": 1}
    missing = "[network]\next_port = 1\n[storage]\nmin_free_mb = 0\n"
    parsed = tomllib.loads(with_token(missing, "cd34"))
    assert parsed["network"] == {"auth_token": "cd34", "ext_port": 1} and parsed["storage"] == {"min_free_mb": 0}
    assert tomllib.loads(with_token('[station]\nname = "x"\n', "ef56"))["network"] == {"auth_token": "ef56"}
