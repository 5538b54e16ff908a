"""SettingsStore: validated, persisted atomically at once, reloaded at start; a corrupt file is kept aside."""

from __future__ import annotations

import json
import threading

import pytest

from controller import settings as settings_mod
from controller.config import Config
from controller.errors import ConfigError, StorageError
from controller.settings import SettingsStore


def test_update_is_in_force_and_survives_a_new_store(tmp_path):
    store = SettingsStore(tmp_path, Config())
    cfg = store.update({"camera": {"shutter_us": 5000, "auto_exposure": False}, "schedule": {"period_s": 2.0}})
    assert cfg.camera.shutter_us == 5000 and store.config.camera.auto_exposure is False
    again = SettingsStore(tmp_path, Config())
    assert again.config.camera.shutter_us == 5000
    assert again.config.schedule.period_s == 2.0
    assert again.config.camera.gain == Config().camera.gain
    assert again.load_problem is None


def test_tuple_fields_round_trip(tmp_path):
    SettingsStore(tmp_path, Config()).update({"spectrometer": {"saturation_window_nm": (310, 330)}})
    assert SettingsStore(tmp_path, Config()).config.spectrometer.saturation_window_nm == (310, 330)


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"camera": {"shutter_us": 0}}, "camera.shutter_us"),
        ({"camera": {"min_saturation": 0.95}}, "camera.min_saturation"),  # >= max_saturation 0.9
        ({"camera": {"no_such": 1}}, "camera.no_such"),
        ({"network": {"ext_port": 1}}, "network"),
        ({"schedule": {"period_s": 7.0}}, "schedule.period_s"),
    ],
)
def test_refused_changes_name_the_key_and_change_nothing(tmp_path, changes, key):
    store = SettingsStore(tmp_path, Config())
    store.update({"camera": {"gain": 2.0}})
    before = store.path.read_bytes()
    with pytest.raises(ConfigError) as err:
        store.update(changes)
    assert err.value.key == key
    assert store.path.read_bytes() == before
    assert store.config.camera.gain == 2.0 and store.config.camera.shutter_us == Config().camera.shutter_us


def test_a_setting_is_not_in_force_when_it_cannot_be_persisted(tmp_path, monkeypatch):
    store = SettingsStore(tmp_path, Config())

    def fail(path, text):
        raise StorageError(28, f"cannot write {path}: No space left on device")

    monkeypatch.setattr(settings_mod, "atomic_write_text", fail)
    with pytest.raises(StorageError):
        store.update({"camera": {"shutter_us": 5000}})
    assert store.config.camera.shutter_us == Config().camera.shutter_us


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"version": 1, "overrides": []}',
        '{"version": 1, "overrides": {"camera": {"shutter_us": -5}}}',
        '{"version": 99, "overrides": {}}',
    ],
)
def test_a_corrupt_file_is_kept_aside_and_reported(tmp_path, content):
    (tmp_path / "settings.json").write_text(content)
    store = SettingsStore(tmp_path, Config())
    assert store.config == Config()
    aside = list(tmp_path.glob("settings.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == content
    assert store.load_problem and aside[0].name in store.load_problem
    assert not (tmp_path / "settings.json").exists()
    store.update({"camera": {"shutter_us": 7}})  # and the store works from the config file on
    assert json.loads((tmp_path / "settings.json").read_text())["overrides"] == {"camera": {"shutter_us": 7}}


def test_concurrent_updates_from_threads_all_persist(tmp_path):
    store = SettingsStore(tmp_path, Config())
    fields = ["shutter_us", "saturation_pixels"]

    def work(i: int) -> None:
        store.update({"camera": {fields[i % 2]: 100 + i}} if i < 2 else {"spectrometer": {"coadd": 1 + i}})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = SettingsStore(tmp_path, Config()).config
    assert (again.camera.shutter_us, again.camera.saturation_pixels, again.spectrometer.coadd) == (100, 101, 3)


def test_listeners_see_each_update_and_reset_goes_back_to_the_file(tmp_path):
    store = SettingsStore(tmp_path, Config())
    seen = []
    store.add_listener(lambda cfg, changes: seen.append((cfg.camera.shutter_us, changes)))
    store.update({"camera": {"shutter_us": 42}})
    store.reset()
    assert seen == [(42, {"camera": {"shutter_us": 42}}), (Config().camera.shutter_us, {})]
    assert SettingsStore(tmp_path, Config()).config == Config()
