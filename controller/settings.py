"""Settings changed at run time (external port, supervisor), persisted atomically at once.

`SettingsStore(state_dir, base)` keeps runtime overrides of config fields on top of the station's config file.
Every `update()` is validated with the config's own `build_section` (same types, ranges and cross-field rules as
the file), written to `state_dir/settings.json` atomically *before* it takes effect, and reloaded at start — so a
setting that was accepted survives a kill or a power cut (bug 7 and "settings saved only on a clean exit").

A settings file that cannot be read back (not JSON, wrong shape, or values the current config refuses) is never
dropped silently: it is renamed to `settings.json.corrupt-<UTC time>`, the problem is logged (a warning, one line
naming the file and the key) and kept in `load_problem`, and the store starts from the config file. Temporary
files of writes that a kill interrupted are removed at start.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.config import Config, build_section
from controller.errors import ConfigError
from controller.logging import get_logger
from controller.storage.atomic import TEMP_PREFIX, atomic_write_text

SETTINGS_NAME = "settings.json"
FORMAT_VERSION = 1
# Sections that may change while the station runs. Network, storage and station identity need a restart.
RUNTIME_SECTIONS = ("camera", "spectrometer", "schedule", "processing")

Listener = Callable[[Config, dict[str, dict[str, Any]]], None]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def remove_stale_temps(path: Path) -> list[str]:
    """Remove the temporary files an interrupted atomic write of `path` left next to it; their names."""
    removed = []
    for tmp in Path(path).parent.glob(f"{TEMP_PREFIX}{Path(path).name}.*"):
        try:
            tmp.unlink()
        except OSError as e:
            get_logger("settings").warning("stale_temp_not_removed", path=str(tmp), error=e.strerror or str(e))
            continue
        removed.append(tmp.name)
    if removed:
        get_logger("settings").info("stale_temps_removed", folder=str(Path(path).parent), files=removed)
    return removed


class SettingsStore:
    """Runtime overrides of config fields; `.config` is the effective config. Safe from threads and tasks."""

    def __init__(self, state_dir: str | Path, base: Config):
        self.path = Path(state_dir) / SETTINGS_NAME
        self._base = base
        self._lock = threading.RLock()
        self._overrides: dict[str, dict[str, Any]] = {}
        self._config = base
        self._listeners: list[Listener] = []
        self._log = get_logger("settings")
        self.load_problem: str | None = None
        remove_stale_temps(self.path)
        self._load()

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def config(self) -> Config:
        return self._config

    @property
    def base(self) -> Config:
        return self._base

    def overrides(self) -> dict[str, dict[str, Any]]:
        """A copy of the persisted overrides (section -> field -> value)."""
        with self._lock:
            return {s: dict(f) for s, f in self._overrides.items()}

    def add_listener(self, callback: Listener) -> None:
        """`callback(config, changes)` after every successful update (called in the updating thread)."""
        self._listeners.append(callback)

    # ------------------------------------------------------------------------------------------------ writing

    def _merged(self, changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        merged = {s: dict(f) for s, f in self._overrides.items()}
        for section, fields in changes.items():
            if section not in RUNTIME_SECTIONS:
                raise ConfigError(section, f"cannot be changed at run time; allowed: {', '.join(RUNTIME_SECTIONS)}")
            if not isinstance(fields, dict):
                raise ConfigError(section, f"expected a table, got {type(fields).__name__}")
            merged.setdefault(section, {}).update({k: _jsonable(v) for k, v in fields.items()})
        return merged

    def check(self, changes: dict[str, dict[str, Any]]) -> Config:
        """The config `changes` would give, validated like `update`, without persisting or applying anything."""
        with self._lock:
            return self._apply(self._merged(changes))

    def update(self, changes: dict[str, dict[str, Any]]) -> Config:
        """Validate, persist, then apply `changes` (section -> {field: value}) as one unit; returns the new config.

        Raises ConfigError (naming the key) when a value is refused — nothing is changed then — and StorageError
        when the file cannot be written (nothing is changed either: a setting is only in force once it is safe).
        """
        with self._lock:
            merged = self._merged(changes)
            config = self._apply(merged)
            self._write(merged)
            self._overrides = merged
            self._config = config
            self._log.info("settings_updated", changes={s: dict(f) for s, f in changes.items()})
        for listener in list(self._listeners):
            listener(config, changes)
        return config

    def reset(self) -> Config:
        """Forget every runtime override (back to the config file), persisted at once."""
        with self._lock:
            self._write({})
            self._overrides = {}
            self._config = self._base
            self._log.info("settings_reset")
        for listener in list(self._listeners):
            listener(self._base, {})
        return self._base

    # ------------------------------------------------------------------------------------------------ internals

    def _apply(self, overrides: dict[str, dict[str, Any]]) -> Config:
        hints = typing.get_type_hints(Config)
        sections = {}
        for section, fields in overrides.items():
            if section not in RUNTIME_SECTIONS:
                raise ConfigError(section, "cannot be changed at run time")
            sections[section] = build_section(hints[section], fields, section, getattr(self._base, section))
        return dataclasses.replace(self._base, **sections)

    def _write(self, overrides: dict[str, dict[str, Any]]) -> None:
        doc = {"version": FORMAT_VERSION, "saved_at": time.time(), "overrides": overrides}
        atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as e:
            self.load_problem = f"cannot read {self.path}: {e.strerror or e}"
            self._log.error("settings_unreadable", path=str(self.path), error=self.load_problem)
            return
        except UnicodeDecodeError as e:
            self._set_aside(f"not UTF-8 text (byte {e.start})")
            return
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} settings document")
            overrides = doc.get("overrides")
            if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
                raise ValueError("'overrides' is not a table of tables")
            config = self._apply(overrides)
        except RecursionError:
            self._set_aside("nested too deeply")
            return
        except Exception as e:  # noqa: BLE001 - whatever cannot be applied is set aside; the station must start
            self._set_aside(f"{type(e).__name__}: {e}")
            return
        self._overrides = overrides
        self._config = config
        self._log.info("settings_loaded", path=str(self.path), overrides=overrides)

    def _set_aside(self, problem: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            self.path.rename(aside)
        except OSError as e:
            problem += f"; could not move it aside: {e.strerror or e}"
            aside = self.path
        self.load_problem = f"{self.path} refused ({problem}); kept as {aside.name}; starting from the config file"
        self._log.warning("settings_corrupt", path=str(self.path), kept_as=str(aside), problem=problem)
