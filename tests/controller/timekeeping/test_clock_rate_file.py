"""The sim station's shared clock rate: master and slave read one rate file and stay one continuous clock."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controller.timekeeping.clock import ScaledClock, write_rate_file


def test_two_clocks_follow_a_rate_change_continuously(tmp_path: Path) -> None:
    path = tmp_path / "rate.json"
    real0 = time.time()
    path.write_text(json.dumps({"real": real0, "sim": 1000.0, "factor": 100.0}))
    master = ScaledClock(1000.0, 100.0, real0, str(path))
    slave = ScaledClock(1000.0, 100.0, real0, str(path))
    before = master.time()
    write_rate_file(str(path), before, 10.0)  # slow down 10x from now on
    after = master.time()
    assert master.scale() == 10.0 and slave.scale() == 10.0
    assert after == pytest.approx(before, abs=1.0)  # continuous: no jump at the change
    assert abs(master.time() - slave.time()) < 0.5
    mono = master.monotonic()
    assert master.monotonic() >= mono


def test_no_rate_file_is_a_plain_scaled_clock(tmp_path: Path) -> None:
    clock = ScaledClock(1000.0, 50.0, time.time(), str(tmp_path / "missing.json"))
    assert clock.scale() == 50.0 and clock.time() >= 1000.0
