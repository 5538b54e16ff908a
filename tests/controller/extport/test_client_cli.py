"""`pycam ctl` against a live server running in a background thread."""

from __future__ import annotations

import asyncio
import io
import socket
import threading

import pytest
import structlog
from click.testing import CliRunner

from controller.cli.ctl import ctl_cmd
from controller.logging import configure_logging

from .harness import build_station, make_config


@pytest.fixture
def live_station(tmp_path):
    # The server thread logs while CliRunner captures stdout: keep its log out of the command's output.
    configure_logging("console", "info", stream=io.StringIO())
    loop = asyncio.new_event_loop()
    station = build_station(tmp_path, cfg=make_config(auth_token="tok"))
    station.port = loop.run_until_complete(station.server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield station
    asyncio.run_coroutine_threadsafe(station.server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    structlog.reset_defaults()


def _ctl(station, *args, token="tok"):
    return CliRunner().invoke(ctl_cmd, ["--port", str(station.port), "--token", token, *args])


def test_ctl_sets_values_and_prints_the_echoes(live_station):
    result = _ctl(live_station, "ata", "0", "SSA", "5000")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["ATA 0 IDN CM1 END", "SSA 5000 IDN CM1 END"]
    assert live_station.master_store.config.camera.shutter_us == 5000


def test_ctl_refused_setting_exits_1_with_a_reason(live_station):
    result = _ctl(live_station, "SSA", "5000")
    assert result.exit_code == 1
    assert "ERR SSA from CM1" in result.stderr and "ATA" in result.stderr


def test_ctl_checks_values_before_sending(live_station):
    result = _ctl(live_station, "FRC", "0")
    assert result.exit_code == 1 and "out of range" in result.stderr and "not sent" in result.stderr
    assert _ctl(live_station, "FRC").exit_code == 2  # odd number of words: usage error


def test_ctl_settings_prints_a_table(live_station):
    result = _ctl(live_station, "settings")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["key", "value", "device", "meaning"]
    rows = {(ln.split()[0], ln.split()[2]): ln.split()[1] for ln in lines[1:]}
    assert rows[("SSA", "CM1")] == "10000" and rows[("SSB", "CM2")] == "10000" and rows[("CAD", "SPC")] == "1"
    assert any("integration time" in ln for ln in lines)


def test_ctl_wrong_token_and_no_server_exit_1_readably(live_station):
    result = _ctl(live_station, "LOG", "0", token="nope")
    assert result.exit_code == 1 and "ERR AUTH" in result.stderr and "token" in result.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    result = CliRunner().invoke(ctl_cmd, ["--port", str(closed_port), "LOG", "0"])
    assert result.exit_code == 1 and "cannot talk to the external port" in result.stderr
