"""Typed station config (TOML), one file per Pi.

Every section is a frozen dataclass. Loading refuses unknown keys, wrong types and out-of-range values with an
error naming the dotted key and what is allowed. Defaults are the original PyCam's.
Cross-field rules (min < max) live in each section's `check()`.
"""

from controller.config.loading import (
    MAX_CONFIG_BYTES,
    Config,
    build_section,
    check_paths,
    config_from_dict,
    config_to_dict,
    load_config,
    resolve_paths,
)
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

__all__ = [
    "CameraConfig",
    "ClockConfig",
    "Config",
    "DeliveryConfig",
    "GpioConfig",
    "LoggingConfig",
    "MAX_CONFIG_BYTES",
    "NetworkConfig",
    "PowerConfig",
    "ProcessingConfig",
    "ScheduleConfig",
    "SimConfig",
    "SpectrometerConfig",
    "StationConfig",
    "StorageConfig",
    "WebConfig",
    "build_section",
    "check_paths",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "resolve_paths",
]
