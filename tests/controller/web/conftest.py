"""A running sim master (`pycam run --role master`, camera A simulated, no slave) with the status page on."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from controller.sim.station import write_toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def master_config(tmp: Path, web_port: int, **over: dict) -> dict:
    cfg = {
        "station": {"role": "master", "name": "webtest"},
        "network": {
            "master_host": "127.0.0.1", "link_bind": "127.0.0.1", "ext_bind": "127.0.0.1",
            "link_port": free_port(), "ext_port": free_port(), "ext_port_fallbacks": [],
        },
        "storage": {
            "data_root": str(tmp / "data"), "state_dir": str(tmp / "state"), "spool_dir": str(tmp / "spool"),
            "allow_fallback": True, "min_free_mb": 0, "resume_free_mb": 0,
        },
        "schedule": {"period_s": 2.0, "windows_utc": [["00:00", "24:00"]]},
        "camera": {"backend": "sim", "width": 160, "height": 120, "saturation_rows": 10},
        "power": {"hello_timeout_s": 2.0, "wake_retries": 0},
        "processing": {"enabled": False},
        "logging": {"format": "json", "level": "info"},
        "web": {"enabled": True, "bind": "127.0.0.1", "port": web_port},
    }  # fmt: skip
    for section, values in over.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class SimMaster:
    def __init__(self, tmp: Path, **over: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.config = tmp / "master.toml"
        write_toml(self.config, master_config(tmp, self.port, **over))
        self.log = tmp / "master.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from controller.cli import main; main()", "run", "--role", "master",
                 "--config", str(self.config)], stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def status(self) -> dict | None:
        try:
            code, body = get(self.url + "api/status", 5.0)
        except OSError:
            return None
        return json.loads(body) if code == 200 else None

    def wait(self, predicate, timeout_s: float, what: str) -> dict:
        """Poll the master's /api/status (another process: its API is what there is to watch)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the master exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            s = self.status()
            if s is not None and predicate(s):
                return s
            try:
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sim_master(tmp_path):
    masters = []

    def make(**over) -> SimMaster:
        m = SimMaster(tmp_path, **over)
        masters.append(m)
        return m

    yield make
    for m in masters:
        m.stop()
