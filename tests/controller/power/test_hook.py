"""WittyPi hooks: stdlib + gpiozero only, the project's interpreter, with and without a running supervisor."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from controller.config import config_from_dict
from controller.power import hook as wittypi_hook

REPO = Path(__file__).resolve().parents[3]
ALLOWED_THIRD_PARTY = {"gpiozero", "colorzero", "controller"}  # colorzero is a gpiozero dependency


def write_config(tmp_path: Path) -> Path:
    conf = tmp_path / "master.toml"
    conf.write_text(
        textwrap.dedent(f"""\
            [storage]
            data_root = "{tmp_path / "data"}"
            state_dir = "{tmp_path / "state"}"
            allow_fallback = true
            [gpio]
            backend = "mock"
            pulse_s = 0.05
            """)
    )
    return conf


def make_cfg(tmp_path: Path):
    return config_from_dict(
        {"storage": {"state_dir": str(tmp_path / "state")}, "gpio": {"backend": "mock", "pulse_s": 0.05}}
    )


@pytest.mark.parametrize("action", ["after-startup", "before-shutdown"])
def test_hook_imports_only_the_standard_library_and_gpiozero(tmp_path, action):
    conf = write_config(tmp_path)
    script = textwrap.dedent(f"""\
        import json, sys
        from controller.power import hook as wittypi_hook
        code = wittypi_hook.main([{action!r}, "--config", {str(conf)!r}, "--halt-grace", "0"])
        names = {{m.split(".")[0] for m in sys.modules}}
        third = sorted(n for n in names if n not in sys.stdlib_module_names and not n.startswith("_"))
        print(json.dumps({{"code": code, "third_party": third}}))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert set(result["third_party"]) <= ALLOWED_THIRD_PARTY, result["third_party"]
    assert "gpiozero" in result["third_party"]  # it did drive the (mock) lines


def test_after_startup_without_supervisor_pulses_the_slave_awake(tmp_path):
    factory = MockFactory()
    slave = factory.pin(3)
    factory.pin(23, pin_class=MockConnectedPin, input_pin=slave)
    assert wittypi_hook.after_startup(make_cfg(tmp_path), factory) == "pulsed"
    states = slave.states
    assert [s.state for s in states] == [True, False, True]
    assert states[2].timestamp >= 0.049  # held low at least the configured pulse (a busy machine only lengthens it)


def test_before_shutdown_without_supervisor_pulses_the_halt_line(tmp_path):
    factory = MockFactory()
    # A stale status file from before the reboot: pid 1 is alive but is not a pycam supervisor.
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "status.json").write_text(json.dumps({"pid": 1}))
    assert wittypi_hook.before_shutdown(make_cfg(tmp_path), factory, halt_grace_s=0) == "halted"
    halt = [s.state for s in factory.pin(16).states]
    assert halt[-3:] == [True, False, True]


@pytest.fixture
def fake_supervisor(tmp_path):
    """A stand-in process whose command line names pycam; SIGTERM ends it, as it ends the real supervisor."""
    code = "import signal; print('ready', flush=True); signal.pause()  # pycam run --role master"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # exec'd: its command line is in /proc now
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "status.json").write_text(json.dumps({"pid": proc.pid, "station": "acquire"}))
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def test_before_shutdown_with_a_running_supervisor_stops_it_and_leaves_the_lines(tmp_path, fake_supervisor):
    assert wittypi_hook.supervisor_pid(tmp_path / "state") == fake_supervisor.pid
    factory = MockFactory()
    assert wittypi_hook.before_shutdown(make_cfg(tmp_path), factory, halt_grace_s=0) == "supervisor_stopped"
    assert fake_supervisor.wait(timeout=10) == -15  # SIGTERM: the supervisor's clean stop path
    assert not factory.pins  # the supervisor owns the lines; the hook did not touch them


def test_after_startup_with_a_running_supervisor_does_nothing(tmp_path, fake_supervisor):
    factory = MockFactory()
    assert wittypi_hook.after_startup(make_cfg(tmp_path), factory) == "supervisor"
    assert not factory.pins


def test_wait_for_exit_times_out_on_a_live_process(fake_supervisor):
    assert wittypi_hook.wait_for_exit(fake_supervisor.pid, 0.1) is False


def _hook_env(tmp_path: Path, venv: str) -> dict:
    defaults = tmp_path / "defaults"
    conf = write_config(tmp_path)
    defaults.write_text(f'PYCAM_VENV="{venv}"\nPYCAM_CONFIG="{conf}"\nPYCAM_HOOK_ARGS="--halt-grace 0"\n')
    # Root's minimal environment: no venv on PATH. PYTHONPATH only names the repository under test (a git worktree
    # may differ from the one the venv's editable install points at).
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCAM_DEFAULTS": str(defaults), "HOME": str(tmp_path),
            "PYTHONPATH": str(REPO)}  # fmt: skip


@pytest.mark.parametrize("script", ["afterStartup.sh", "beforeShutdown.sh"])
def test_hook_scripts_use_the_project_interpreter(tmp_path, script):
    venv = str(Path(sys.executable).parent.parent)
    out = subprocess.run(
        ["bash", str(REPO / "systemd" / script)], env=_hook_env(tmp_path, venv), capture_output=True, text=True,
        timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "pycam-hook INFO" in out.stderr


def test_hook_script_refuses_to_fall_back_to_root_python(tmp_path):
    out = subprocess.run(
        ["bash", str(REPO / "systemd" / "afterStartup.sh")], env=_hook_env(tmp_path, str(tmp_path / "novenv")),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1 and "no project interpreter" in out.stderr
