"""`pycam status`: says clearly whether the supervisor runs, and what its status file holds."""

from __future__ import annotations

import json
import os
import time

from click.testing import CliRunner

from controller.cli.status import status_cmd
from controller.supervisor.statusfile import read_status


def _write(folder, **fields):
    data = {"role": "master", "state": "acquire", "pid": os.getpid(), "updated_at": time.time(), **fields}
    (folder / "status.json").write_text(json.dumps(data))


def test_missing_file_means_not_running(tmp_path):
    result = CliRunner().invoke(status_cmd, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "NOT running" in result.output


def test_live_status_is_running(tmp_path):
    _write(tmp_path, storage={"ok": True, "kind": "ssd", "reason": "on /mnt/pycam"}, ext_port=12347)
    result = CliRunner().invoke(status_cmd, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "supervisor running" in result.output and "acquire" in result.output and "12347" in result.output


def test_old_status_is_stale_and_dead_pid_is_stopped(tmp_path):
    _write(tmp_path, updated_at=time.time() - 600)
    assert read_status(tmp_path)[1] == "stale"
    _write(tmp_path, pid=2**22 + 12345)
    assert read_status(tmp_path)[1] == "stopped"


def test_json_output(tmp_path):
    _write(tmp_path)
    result = CliRunner().invoke(status_cmd, ["--state-dir", str(tmp_path), "--json"])
    out = json.loads(result.output)
    assert out["verdict"] == "running" and out["status"]["state"] == "acquire"
