"""A rehearsal of the two-Pi install: render a master and a slave with systemd/install.sh --root, check the units
with systemd-analyze (verify, security), then run each rendered ExecStart as an unprivileged user, with the unit's
environment and the directories systemd would make for it, in the unit's working directory (which that user cannot
write), each Pi in its own network namespace joined by a veth pair on the link network, with sim hardware, until
both acquire. The slave boots two hours off (no RTC) and must get its time from the simulated chrony.

What it guards against (issue 10): lgpio's notification pipe written into an unwritable working directory (no
LG_WD), a state directory nobody creates or hands to the service user, a slave that syncs only because the
supervisor stepped its own clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.controller.test_systemd_units import SECURITY_LIMIT, VENV, read_unit, security_exposure

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a throwaway user, network namespaces, mounts)"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed"),
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)"),
]

REPO = Path(__file__).resolve().parents[2]
ADDR = {"master": "169.254.1.1", "slave": "169.254.1.2"}
SLAVE_CLOCK_OFF_S = -7200.0  # the slave has no RTC: it boots two hours behind
ACQUIRE_TIMEOUT_S = 240.0  # safety net only


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, check=check)


def _hhmm(from_now_s: float) -> str:
    return time.strftime("%H:%M", time.gmtime(time.time() + from_now_s))


def _config(role: str, base: Path) -> str:
    data = base / "data" / role
    return f"""
[station]
role = "{role}"
name = "rehearsal"

[network]
master_host = "{ADDR["master"]}"
link_bind = "{ADDR["master"]}"
ext_bind = "{ADDR["master"]}"

[storage]
data_root = "{data}/data"
spool_dir = "{data}/spool"
allow_fallback = true
min_free_mb = 0
resume_free_mb = 0

[schedule]
period_s = 4.0
windows_utc = [["{_hhmm(-3600)}", "{_hhmm(7200)}"]]

[camera]
backend = "sim"
width = 96
height = 72

[spectrometer]
backend = "{"sim" if role == "slave" else "none"}"

[gpio]
backend = "mock"

[clock]
backend = "sim"
sync_samples = 3

[processing]
enabled = false

[logging]
format = "json"
"""


@contextlib.contextmanager
def throwaway_user():
    name = f"pcr{uuid.uuid4().hex[:8]}"
    _run("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name)
    try:
        yield name
    finally:
        _run("userdel", name, check=False)


@contextlib.contextmanager
def link_namespaces():
    tag = uuid.uuid4().hex[:6]
    ns = {"master": f"prm{tag}", "slave": f"prs{tag}"}
    veth = {"master": f"rm{tag}", "slave": f"rs{tag}"}
    try:
        for name in ns.values():
            _run("ip", "netns", "add", name)
        _run("ip", "link", "add", veth["master"], "type", "veth", "peer", "name", veth["slave"])
        for role in ns:
            _run("ip", "link", "set", veth[role], "netns", ns[role])
            _run("ip", "-n", ns[role], "addr", "add", f"{ADDR[role]}/16", "dev", veth[role])
            _run("ip", "-n", ns[role], "link", "set", veth[role], "up")
            _run("ip", "-n", ns[role], "link", "set", "lo", "up")
        yield ns
    finally:
        for name in ns.values():
            _run("ip", "netns", "del", name, check=False)


def hidden_ancestor(path: Path) -> tuple[Path, Path] | None:
    """The first folder above `path` others cannot enter (e.g. /root holding pyenv's interpreter) and its child on
    the way; None when an unprivileged user can reach `path`. On a Pi the venv's interpreter is /usr/bin/python3."""
    parts = path.resolve().parts
    for i in range(2, len(parts)):
        folder = Path(*parts[:i])
        if not folder.stat().st_mode & 0o001:
            return folder, Path(*parts[: i + 1])
    return None


class Pi:
    """One rendered install and the process started from its unit."""

    def __init__(self, role: str, root: Path, user: str, base: Path):
        self.role, self.root, self.user, self.base = role, root, user, base
        self.unit = read_unit(root / f"etc/systemd/system/pycam-{role}.service")
        self.service = self.unit["Service"]
        self.proc: subprocess.Popen | None = None
        self.log = base / f"{role}.log"

    def specifiers(self, text: str) -> str:
        """systemd's %S, %t, %L for a system unit, below this install's root."""
        dirs = {"%S": self.root / "var/lib", "%t": self.root / "run", "%L": self.root / "var/log"}
        for spec, folder in dirs.items():
            text = text.replace(spec, str(folder))
        return text

    def make_directories(self) -> None:
        """StateDirectory=, RuntimeDirectory=, LogsDirectory= as systemd makes them: owned by User=, mode 0750."""
        for key, base in (("StateDirectory", "%S"), ("RuntimeDirectory", "%t"), ("LogsDirectory", "%L")):
            folder = Path(self.specifiers(f"{base}/{self.service[key]}"))
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o750)
            shutil.chown(folder, self.user, self.user)

    def environment(self) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent", "USER": self.user}
        for spec in self.service.all("EnvironmentFile"):
            path = self.root / spec.lstrip("-").lstrip("/")
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.startswith("#"):
                    env[key.strip()] = value.strip().strip('"')
        for spec in self.service.all("Environment"):
            for item in shlex.split(self.specifiers(spec)):
                key, _, value = item.partition("=")
                env[key] = value
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the code under test (a worktree) over the venv's
        return env

    def exec_start(self) -> list[str]:
        argv = shlex.split(self.specifiers(self.service["ExecStart"]))
        i = argv.index("--config")
        argv[i + 1] = str(self.root / argv[i + 1].lstrip("/"))  # /etc/pycam/<role>.toml as rendered below root
        return argv

    def as_user(self, argv: list[str], netns: str | None = None) -> list[str]:
        """argv run as the service user (no capabilities, its own groups) in the unit's working directory."""
        cwd = self.service["WorkingDirectory"]
        drop = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--", "env", "-i",
                *(f"{k}={v}" for k, v in self.environment().items()), *argv]  # fmt: skip
        script = f"cd {shlex.quote(cwd)} && exec {shlex.join(drop)}"
        hidden = hidden_ancestor(Path(VENV / "bin/python").resolve())
        if hidden is not None:
            # This machine keeps the interpreter below a folder others cannot enter (pyenv in /root): in a private
            # mount namespace, cover that folder with an empty one and put back only the interpreter's branch.
            folder, child = hidden
            stage = self.base / f"stage-{self.role}"
            stage.mkdir(exist_ok=True)
            script = (f"mount --bind {shlex.quote(str(child))} {shlex.quote(str(stage))} && "
                      f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(folder))} && "
                      f"mkdir -p {shlex.quote(str(child))} && "
                      f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(child))} && {script}")  # fmt: skip
        wrapped = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        return ["ip", "netns", "exec", netns, *wrapped] if netns else wrapped

    def start(self, netns: str, extra: list[str]) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.as_user(self.exec_start() + extra, netns), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def status(self) -> dict:
        path = Path(self.specifiers(f"%S/{self.service['StateDirectory']}")) / "status.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_until(predicate, timeout_s: float, procs) -> bool:
    """Poll the supervisors' status files (another process writes them: no event to wait on here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if any(p.proc is not None and p.proc.poll() is not None for p in procs):
            return predicate()
        time.sleep(0.5)
    return predicate()


@pytest.fixture
def base():
    # Not pytest's tmp_path: its parents are private to root, and the service user must reach its config and data.
    folder = Path(tempfile.mkdtemp(prefix="pycam-rehearsal-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def install(role: str, base: Path, user: str, *extra: str) -> Path:
    src = base / f"{role}.toml"
    src.write_text(_config(role, base))
    root = base / f"root-{role}"
    out = subprocess.run(
        ["bash", str(REPO / "systemd/install.sh"), "--role", role, "--config", str(src), "--user", user,
         "--venv", str(VENV), "--root", str(root), "--no-systemctl", *extra],
        capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return root


def test_install_rehearsal_both_pis_acquire_as_the_service_user(base):
    with throwaway_user() as user, link_namespaces() as ns:
        roots = {"master": install("master", base, user, "--wittypi-dir", "/home/pi/wittypi")}
        key = roots["master"] / "var/lib/pycam/link.key"
        roots["slave"] = install("slave", base, user, "--link-key", str(key))
        pis = {role: Pi(role, root, user, base) for role, root in roots.items()}

        for role, pi in pis.items():
            path = roots[role] / f"etc/systemd/system/pycam-{role}.service"
            # verify needs no --root: the rendered paths (venv, repository) are real on this machine
            verify = _run("systemd-analyze", "verify", str(path), check=False)
            assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
            assert security_exposure(path) <= SECURITY_LIMIT
            pi.make_directories()
            # The working directory is the repository, owned by root: the service user cannot write there.
            assert subprocess.run(pi.as_user(["test", "-w", pi.service["WorkingDirectory"]])).returncode != 0

        # lgpio (the real GPIO backend) creates its notification pipe when imported: in LG_WD, else the cwd.
        if subprocess.run([str(VENV / "bin/python"), "-c", "import lgpio"], capture_output=True).returncode == 0:
            imported = subprocess.run(pis["slave"].as_user([str(VENV / "bin/python"), "-c", "import lgpio"]),
                                      capture_output=True, text=True, timeout=60)  # fmt: skip
            assert imported.returncode == 0, f"lgpio cannot start as the service user: {imported.stderr[-300:]}"
            assert any(Path(pis["slave"].specifiers("%t/pycam")).glob(".lgd-nfy*"))

        for role in pis:
            for name in ("data", "spool"):
                data = base / "data" / role / name
                data.mkdir(parents=True, exist_ok=True)
                shutil.chown(data, user, user)  # the data disk and spool, the service user's (the installer's job)
        try:
            pis["master"].start(ns["master"], [])
            pis["slave"].start(ns["slave"], ["--clock-offset", str(SLAVE_CLOCK_OFF_S)])
            both = wait_until(lambda: all(p.status().get("state") == "acquire" for p in pis.values()),
                              ACQUIRE_TIMEOUT_S, pis.values())  # fmt: skip
            logs = {r: p.log.read_text(errors="replace")[-3000:] for r, p in pis.items()}
            assert both, f"not both acquiring: { {r: p.status().get('state') for r, p in pis.items()} } logs {logs}"
            slave = pis["slave"].status()
            source = slave["clock"]["source"]
            assert source["source"] == "chrony" and source["synchronised"] and source["selected"] == ADDR["master"]
            assert abs(slave["clock"]["offset_ms"]) <= slave["clock"]["tolerance_ms"]
            slave_log = pis["slave"].log.read_text(errors="replace")
            assert "sim_chrony_step" in slave_log and "sim_clock_stepped" not in slave_log
            assert re.search(r"^<[0-7]>\{", slave_log, re.MULTILINE) is None  # no journal here: plain JSON lines
            for pi in pis.values():
                state = Path(pi.specifiers("%S/pycam"))
                assert state.stat().st_uid == pi_uid(user) and (state / "status.json").stat().st_uid == pi_uid(user)
        finally:
            for pi in pis.values():
                pi.stop()


def pi_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
