"""The whole config (`Config`) and loading it: TOML -> typed sections, refusing unknown keys, wrong types and
out-of-range values with the dotted key; paths resolved against the config file's folder."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from controller.config.processing import ProcessingConfig
from controller.config.sections import (
    CameraConfig,
    ClockConfig,
    DeliveryConfig,
    GpioConfig,
    LoggingConfig,
    NetworkConfig,
    PowerConfig,
    ScheduleConfig,
    SimConfig,
    SpectrometerConfig,
    StationConfig,
    StorageConfig,
    WebConfig,
)
from controller.errors import ConfigError


@dataclass(frozen=True)
class Config:
    station: StationConfig = StationConfig()
    network: NetworkConfig = NetworkConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    camera: CameraConfig = CameraConfig()
    spectrometer: SpectrometerConfig = SpectrometerConfig()
    gpio: GpioConfig = GpioConfig()
    power: PowerConfig = PowerConfig()
    clock: ClockConfig = ClockConfig()
    sim: SimConfig = SimConfig()
    processing: ProcessingConfig = ProcessingConfig()
    logging: LoggingConfig = LoggingConfig()
    web: WebConfig = WebConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def role(self) -> str:
        return self.station.role


# ------------------------------------------------------------------------------------------------------ loading

MAX_CONFIG_BYTES = 1 << 20  # a station config is a few kB


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple,):
        return "a list"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(key, f"{value!r} is not {_type_name(tp)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(key, f"expected a path string, got {value!r}")
        return Path(value)
    raise ConfigError(key, f"unsupported config type {tp!r}")


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    lo, hi = f.metadata.get("range", (None, None))
    if value is None or (lo is None and hi is None):
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(key, f"{value!r} is out of range; allowed {lo} to {hi}")


def build_section(cls: type, data: dict, prefix: str, base: Any = None) -> Any:
    """Build a section dataclass from a TOML table, refusing unknown keys. `base` supplies unset values."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name in data:
            tp = hints[name]
            if dataclasses.is_dataclass(tp):
                values[name] = build_section(tp, data[name], key, getattr(base, name, None) if base else None)
                continue
            value = _convert(tp, data[name], key)
            _check_range(f, value, key)
            values[name] = value
        elif base is not None:
            values[name] = getattr(base, name)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(prefix)
    return obj


def config_from_dict(data: dict, source: Path | None = None, base: Config | None = None) -> Config:
    hints = typing.get_type_hints(Config)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(Config) if f.name != "source"})
    if unknown:
        allowed = ", ".join(f.name for f in dataclasses.fields(Config) if f.name != "source")
        raise ConfigError(unknown[0], f"unknown section; allowed sections: {allowed}")
    sections = {}
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        base_section = getattr(base, f.name) if base is not None else hints[f.name]()
        sections[f.name] = build_section(hints[f.name], data.get(f.name, {}), f.name, base_section)
    return Config(**sections, source=source)


def load_config(path: str | Path) -> Config:
    """Load and validate a station config file. Relative paths inside it are resolved against its folder."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError("<file>", f"{path} is larger than {MAX_CONFIG_BYTES} bytes: not a station config")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("<file>", f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            "<file>", f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r})"
        ) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("<file>", f"{path} is not valid TOML: {e}") from e
    except RecursionError as e:  # absurdly nested arrays or tables
        raise ConfigError("<file>", f"{path} is nested too deeply to be a station config") from e
    try:
        cfg = config_from_dict(data, source=path.resolve())
    except ConfigError as e:
        raise ConfigError(e.key, f"{e.args[0].split(': ', 1)[-1]} (in {path})") from e
    return resolve_paths(cfg, path.resolve().parent)


def check_paths(cfg: Config, create: bool = False) -> None:
    """Start-up: the folders the station writes must be folders (and, with `create`, exist or be creatable).
    Raises ConfigError naming the key, the path and the config file."""
    where = f" (in {cfg.source})" if cfg.source else ""
    storage = cfg.storage
    folders = {"storage.data_root": storage.data_root, "storage.state_dir": storage.state_dir}
    if cfg.role == "slave":
        folders["storage.spool_dir"] = storage.spool_dir
    for key, folder in folders.items():
        if folder.exists() and not folder.is_dir():
            raise ConfigError(key, f"{folder} is a file, not a directory{where}")
        if create and key != "storage.data_root":  # the data root is checked against the SSD mount at boot
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(key, f"{folder} cannot be created: {e.strerror or e}{where}") from e
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError(key, f"{folder} is not writable by this user{where}")


def resolve_paths(cfg: Config, folder: Path) -> Config:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (folder / p)

    def fix_str(s: str) -> str:
        return s if not s or Path(s).is_absolute() else str(folder / s)

    storage = dataclasses.replace(
        cfg.storage, data_root=fix(cfg.storage.data_root), state_dir=fix(cfg.storage.state_dir),
        spool_dir=fix(cfg.storage.spool_dir),
    )  # fmt: skip
    proc = cfg.processing
    proc = dataclasses.replace(
        proc, **{k: fix_str(getattr(proc, k)) for k in
                 ("solar_reference", "so2_xsec", "o3_xsec", "ring_spectrum", "ils", "registration",
                  "dilution_distance_map", "dilution_dem", "flat_field")}
    )  # fmt: skip
    sim = dataclasses.replace(cfg.sim, references_dir=fix_str(cfg.sim.references_dir))
    delivery = dataclasses.replace(
        cfg.delivery, **{k: fix_str(getattr(cfg.delivery, k)) for k in ("key_file", "known_hosts", "log_dir")}
    )
    return dataclasses.replace(cfg, storage=storage, processing=proc, sim=sim, delivery=delivery)


def config_to_dict(cfg: Config) -> dict:
    """Plain dict of the config (for status output and for writing a config back)."""
    out: dict = {}
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        section = getattr(cfg, f.name)
        out[f.name] = {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(section).items() if v is not None
        }
    return out
