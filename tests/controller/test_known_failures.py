"""Regression tests for failures of the original PyCam (spec/known-failures.md) not covered next to their module.

The others live with their code: bugs 1/3/4/7 in tests/controller/extport/test_server.py, bugs 2/3/4 in
tests/controller/link/test_link.py, bug 6 in tests/processing/test_calibration.py, the WittyPi hooks in
power/test_hook.py, the watchdog in test_systemd_units.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from controller.config import Config
from controller.settings import SettingsStore

REPO = Path(__file__).resolve().parents[2]

# Libraries the acquisition path must never load: processing and plotting belong to the worker child process.
# cv2 is not among them: it is the image file codec on both Pis (controller/storage/png.py)
_PROCESSING_LIBS = ("processing", "matplotlib", "pyplis", "scipy", "pandas")


def _run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_bug5_manual_spectrum_capture_runs_no_processing_or_plotting(tmp_path):
    # The original plotted and processed on the acquisition path, so a manual spectrum threw errors there.
    out = tmp_path / "out"
    proc = _run_python(
        f"""
        import sys
        import controller.acquisition, controller.supervisor.slave, controller.extport.control
        from click.testing import CliRunner
        from controller.cli import main
        result = CliRunner().invoke(main, ["capture", "--sim", "--out", {str(out)!r}, "--type", "Test"])
        assert result.exit_code == 0, result.output
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {_PROCESSING_LIBS!r})
        print("LOADED", loaded)
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout
    spectra = list(out.glob("*coadd_Test.npy"))
    assert len(spectra) == 1, sorted(p.name for p in out.iterdir())


def test_settings_survive_a_kill_right_after_they_are_accepted(tmp_path):
    # The original saved settings only on a clean exit; a kill lost them. Here the process is SIGKILLed the moment
    # update() returns (no atexit, no finally), and a new store must read the accepted values back.
    proc = _run_python(
        f"""
        import os, signal
        from controller.config import Config
        from controller.settings import SettingsStore
        store = SettingsStore({str(tmp_path)!r}, Config())
        store.update({{"camera": {{"shutter_us": 4321, "auto_exposure": False}}, "spectrometer": {{"coadd": 7}}}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert proc.returncode == -9, proc.stderr
    cfg = SettingsStore(tmp_path, Config()).config
    assert (cfg.camera.shutter_us, cfg.camera.auto_exposure, cfg.spectrometer.coadd) == (4321, False, 7)


_SECRET_PATTERNS = [
    re.compile(r"""(?i)(password|passwd|pwd|secret)\w*\s*[:=]\s*["'][^"'\s]+["']"""),
    re.compile(r"(?i)\bsshpass\b"),
    re.compile(r"""(?i)\.login\(\s*["'][^"']*["']\s*,\s*["'][^"']+["']"""),  # ftplib-style login("user", "pw")
    re.compile(r"""(?i)\bauth_token\s*=\s*["'][^"']+["']"""),
]


def test_no_hard_coded_passwords_or_tokens_in_code_config_or_units():
    # The original had SSH/FTP passwords in its source. Code, example configs, units and hooks carry none; the
    # external port's token is configured per station (empty in the examples).
    listed = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    checked = [
        REPO / f
        for f in listed
        if f.split("/")[0] in {"controller", "states", "processing", "conf", "systemd"}
        and Path(f).suffix in {".py", ".toml", ".sh", ".service", ".cfg", ".ini", ""}
        and (REPO / f).is_file()
    ]
    assert len(checked) > 50  # the scan really read the tree
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in checked
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(p.search(line) for p in _SECRET_PATTERNS)
    ]
    assert found == []
    assert Config().network.auth_token == ""


def test_the_secret_scan_sees_a_planted_password(tmp_path):
    # The scan above can fail: each pattern catches the kind of line the original had.
    lines = ['FTP_PASSWORD = "raspberry"', "sshpass -p raspberry ssh pi@169.254.10.180", 'ftp.login("pi", "x")']
    assert all(any(p.search(line) for p in _SECRET_PATTERNS) for line in lines)
    assert not any(p.search('password = os.environ["X"]') for p in _SECRET_PATTERNS)
