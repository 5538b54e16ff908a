"""Boot-loop guard and sd_notify (a datagram socket in a temp dir stands in for systemd)."""

from __future__ import annotations

import os
import socket

import pytest

from controller import bootguard
from controller.bootguard import BootGuard, sd_notify, watchdog_interval_s


class FakeTime:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_repeated_crashes_before_acquire_trip_the_guard(tmp_path):
    now = FakeTime()
    results = []
    for _ in range(5):
        guard = BootGuard(tmp_path, limit=3, now=now)  # each construction is one start-up that then crashes
        results.append(guard.tripped)
        now.t += 30
    assert results == [False, False, False, True, True]


def test_reaching_acquire_clears_the_guard(tmp_path):
    now = FakeTime()
    for _ in range(3):
        BootGuard(tmp_path, limit=3, now=now)
    healthy = BootGuard(tmp_path, limit=3, now=now)
    assert healthy.tripped
    healthy.ok()
    assert BootGuard(tmp_path, limit=3, now=now).tripped is False


def test_old_failures_expire_so_a_new_day_gets_a_fresh_chance(tmp_path):
    now = FakeTime()
    for _ in range(4):
        BootGuard(tmp_path, limit=3, window_s=3600, now=now)
    now.t += 3601
    assert BootGuard(tmp_path, limit=3, window_s=3600, now=now).tripped is False


def test_damaged_guard_file_does_not_prevent_start(tmp_path):
    (tmp_path / bootguard.GUARD_NAME).write_text("{not json")
    assert BootGuard(tmp_path).tripped is False


def test_operator_reset_cli(tmp_path, capsys):
    for _ in range(4):
        BootGuard(tmp_path, limit=3)
    assert bootguard.main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "tripped" in capsys.readouterr().out
    bootguard.main(["reset", "--state-dir", str(tmp_path)])
    assert "0 start-up(s)" in capsys.readouterr().out


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def test_sd_notify_sends_one_datagram_per_message(notify_socket):
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": path}
    assert sd_notify("READY=1\nSTATUS=acquiring", env=env)
    assert sd_notify("WATCHDOG=1", env=env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=acquiring"
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_helpers_use_the_environment(notify_socket, monkeypatch):
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert bootguard.ready("booted") and bootguard.watchdog_ping() and bootguard.stopping()
    assert [sock.recv(4096) for _ in range(3)] == [b"READY=1\nSTATUS=booted", b"WATCHDOG=1", b"STOPPING=1"]


def test_sd_notify_without_systemd_is_a_no_op():
    assert sd_notify("READY=1", env={}) is False


def test_watchdog_interval_is_half_the_timeout_and_only_for_us():
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
