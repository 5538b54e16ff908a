"""A settings.json the station cannot apply never stops it from starting (issue 11, finding 6): set aside as
`settings.json.corrupt-<time>`, one warning naming the file (and the key), the config file in force; the
temporary files of writes a kill interrupted are removed at start."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from controller.config import Config
from controller.settings import SettingsStore
from controller.storage.atomic import TEMP_PREFIX


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"[]", None),
        (b'{"version": 1, "overrides": {"camera": []}}', None),
        (b"[" * 100_000 + b"]" * 100_000, None),  # valid JSON, nested past the parser's recursion limit
        (b'{"version": 1, "overrides": {"camera": {"shutter_list_us": []}}}', "camera.shutter_list_us"),
        (b'{"version": 1, "overrides": {"schedule": {"period_s": NaN}}}', "schedule.period_s"),
        (b'{"version": 1, "overrides": {"camera": {"shutter_us": "fast"}}}', "camera.shutter_us"),
        (b'{"version": 1, "overrides": {"camera": {"shutter_us": 5000}}, "x": "\xff"}', None),  # not UTF-8
    ],
)
def test_settings_file_that_cannot_be_applied_is_set_aside_and_the_station_starts(tmp_path, content, key):
    (tmp_path / "settings.json").write_bytes(content)
    with capture_logs() as logs:
        store = SettingsStore(tmp_path, Config())
    assert store.config == Config()  # started from the config file
    aside = list(tmp_path.glob("settings.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    warned = [e for e in logs if e["event"] == "settings_corrupt"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert "\n" not in store.load_problem and str(tmp_path / "settings.json") in store.load_problem
    if key:
        assert key in store.load_problem
    assert store.update({"camera": {"shutter_us": 7}}).camera.shutter_us == 7


def test_stale_temporary_settings_files_from_kills_are_removed_at_start(tmp_path):
    SettingsStore(tmp_path, Config()).update({"camera": {"shutter_us": 4321}})
    stale = [tmp_path / f"{TEMP_PREFIX}settings.json.{n}" for n in ("a1b2c3", "zz9")]
    for path in stale:
        path.write_text('{"half": ')  # a write a kill -9 interrupted
    other = tmp_path / f"{TEMP_PREFIX}status.json.keep"
    other.write_text("{}")
    store = SettingsStore(tmp_path, Config())
    assert not any(p.exists() for p in stale) and other.exists()  # only the settings' own temporaries
    assert store.config.camera.shutter_us == 4321 and store.load_problem is None
