"""Two real chronyd (Debian's chrony) in two network namespaces joined by a veth pair, with the chrony.conf the
installer renders for each role: the slave's chronyd selects the master and the project's reader says synchronised.

Neither daemon ever touches this machine's clock: `-x` (no clock control), its own config, drift file, pidfile and
command socket in a temporary folder, `cmdport 0`. Namespaces and interfaces have names unique to this run and are
removed (and the daemons killed) whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from controller.config import config_from_dict
from controller.timekeeping.chrony import ChronyReader
from controller.timekeeping.chronyconf import render

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, chronyd)"),
    pytest.mark.skipif(shutil.which("chronyd") is None, reason="chrony not installed (scripts/bootstrap.sh)"),
]

MASTER_IP, SLAVE_IP = "169.254.1.1", "169.254.1.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _private(tmp: Path, name: str) -> list[str]:
    return [f"pidfile {tmp}/{name}.pid", f"bindcmdaddress {tmp}/{name}.sock", "cmdport 0"]


@pytest.fixture
def netns_pair(tmp_path):
    tag = uuid.uuid4().hex[:6]
    ns = {"master": f"pcm{tag}", "slave": f"pcs{tag}"}
    veth = (f"vm{tag}", f"vs{tag}")
    try:
        for name in ns.values():
            _ip("netns", "add", name)
        _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for (role, ip), dev in zip(((("master", MASTER_IP)), ("slave", SLAVE_IP)), veth, strict=True):
            _ip("link", "set", dev, "netns", ns[role])
            _ip("-n", ns[role], "addr", "add", f"{ip}/16", "dev", dev)
            _ip("-n", ns[role], "link", "set", dev, "up")
            _ip("-n", ns[role], "link", "set", "lo", "up")
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


def _start_chronyd(ns: str, conf: Path, log: Path) -> None:
    # -x: never touch the clock; -u root: no privilege drop (the private socket folder stays usable).
    subprocess.run(
        ["ip", "netns", "exec", ns, "chronyd", "-x", "-u", "root", "-f", str(conf), "-l", str(log)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def _stop_chronyd(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        return False

    if not _wait(gone, 10):
        os.kill(pid, signal.SIGKILL)


def _wait(predicate, timeout_s: float):
    """Poll chronyd (an external daemon: there is no event to wait on) until predicate() answers or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    return predicate()


def test_slave_chronyd_selects_the_master_and_the_reader_says_synchronised(tmp_path, netns_pair):
    tmp = tmp_path / "chrony"
    tmp.mkdir(mode=0o700)
    master_cfg = config_from_dict({"station": {"role": "master", "name": "netns"}})
    slave_cfg = config_from_dict({"station": {"role": "slave", "name": "netns"}, "network": {"master_host": MASTER_IP}})
    confs = {
        "master": render(master_cfg, "master", chrony_dir=str(tmp), extra=_private(tmp, "master")),
        "slave": render(slave_cfg, "slave", chrony_dir=str(tmp), extra=_private(tmp, "slave")),
    }
    assert "local stratum 10 orphan" in confs["master"] and "allow 169.254.0.0/16" in confs["master"]
    assert f"server {MASTER_IP} iburst" in confs["slave"] and "makestep 1 -1" in confs["slave"]
    try:
        for role, text in confs.items():
            (tmp / f"{role}.conf").write_text(text)
            _start_chronyd(netns_pair[role], tmp / f"{role}.conf", tmp / f"{role}.log")
        slave = ChronyReader(host=str(tmp / "slave.sock"))
        state = _wait(lambda: (s := slave.status())["synchronised"] and s["selected"] and s, 60)
        logs = {r: (tmp / f"{r}.log").read_text() for r in confs if (tmp / f"{r}.log").exists()}
        assert state, f"slave chronyd never synchronised: {slave.status()} logs {logs}"
        assert state["selected"] == MASTER_IP and state["reference"] == MASTER_IP
        assert state["stratum"] == 11 and state["leap_status"] == "Normal"
        assert abs(state["offset_s"]) < 0.05
        raw = subprocess.run(["chronyc", "-h", str(tmp / "slave.sock"), "-c", "-n", "sources"], capture_output=True,
                             text=True, timeout=10, check=True).stdout  # fmt: skip
        assert raw.startswith(f"^,*,{MASTER_IP},10,")  # chrony's own mark: * = the selected source
        master = ChronyReader(host=str(tmp / "master.sock")).status()
        assert master["synchronised"] and master["reference"] == "local" and master["stratum"] == 10
        assert "Disabled control of system clock" in logs["slave"]
    finally:
        for role in confs:
            _stop_chronyd(tmp / f"{role}.pid")
