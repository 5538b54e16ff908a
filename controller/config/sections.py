"""The station's config sections (frozen dataclasses): defaults, ranges and cross-field checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from controller.config.fields import original_integration_list_ms, original_shutter_list_us, value_range
from controller.errors import ConfigError


@dataclass(frozen=True)
class StationConfig:
    role: Literal["master", "slave"] = field(default="master", metadata={"doc": "which Pi this file is for"})
    name: str = "pycam"
    latitude_deg: float = field(default=-39.42, metadata=value_range(-90, 90))
    longitude_deg: float = field(default=-71.93, metadata=value_range(-180, 180))
    altitude_m: float = field(default=1000.0, metadata=value_range(-500, 9000))


@dataclass(frozen=True)
class NetworkConfig:
    master_host: str = field(default="169.254.1.1", metadata={"doc": "address of the master, as the slave sees it"})
    link_port: int = field(default=12345, metadata=value_range(1, 65535))
    link_bind: str = field(default="0.0.0.0", metadata={"doc": "address the master's link server binds"})
    ext_bind: str = field(default="0.0.0.0", metadata={"doc": "address the external control port binds"})
    ext_port: int = field(default=12347, metadata=value_range(1, 65535))
    ext_port_fallbacks: tuple[int, ...] = (12352, 12353)
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128", "169.254.0.0/16")
    link_allowed_networks: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128", "169.254.0.0/16"),
        metadata={"doc": "networks the slave may connect to the master's link port from"},
    )
    auth_token: str = field(
        default="",
        metadata={"doc": "when set, external clients must send AUTH <token> first (one token, no spaces)"},
    )
    max_clients: int = field(default=4, metadata=value_range(1, 64))
    handshake_timeout_s: float = field(
        default=10.0,
        metadata=value_range(0.5, 120, "one deadline for a new client's first message (AUTH with a token)"),
    )
    idle_timeout_s: float = field(
        default=600.0,
        metadata=value_range(5, 86_400, "an external client with no complete message this long is dropped"),
    )
    max_message_bytes: int = field(default=4096, metadata=value_range(64, 1_048_576))
    heartbeat_s: float = field(default=2.0, metadata=value_range(0.05, 60))
    link_timeout_s: float = field(default=6.0, metadata=value_range(0.2, 600))
    backoff_max_s: float = field(default=1.0, metadata=value_range(0.05, 600))
    link_key_file: str = field(
        default="", metadata={"doc": "the link's shared key (0600, same on both Pis); empty: <state_dir>/link.key"}
    )
    link_max_file_mb: int = field(
        default=64, metadata=value_range(1, 4096, "largest file the master accepts over the link; larger is refused")
    )

    def check(self, prefix: str) -> None:
        import ipaddress

        for key in ("allowed_networks", "link_allowed_networks"):
            for i, net in enumerate(getattr(self, key)):
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError as e:
                    raise ConfigError(f"{prefix}.{key}[{i}]", f"{net!r} is not a network ({e})") from e
        if self.link_timeout_s <= self.heartbeat_s:
            raise ConfigError(f"{prefix}.link_timeout_s", "must be greater than heartbeat_s")
        token = self.auth_token
        if token and not (
            token.isascii() and token.isprintable() and len(token.split()) == 1 and token.strip() == token
        ):
            raise ConfigError(
                f"{prefix}.auth_token", "must be one token of printable ASCII without spaces (a client sends it as one)"
            )


@dataclass(frozen=True)
class StorageConfig:
    data_root: Path = field(default=Path("/mnt/pycam/data"), metadata={"doc": "date folders go here (the SSD)"})
    state_dir: Path = field(default=Path("/var/lib/pycam"), metadata={"doc": "runtime settings, status, boot guard"})
    spool_dir: Path = field(default=Path("/var/lib/pycam/spool"), metadata={"doc": "slave: files not yet on master"})
    mount_point: str = field(default="", metadata={"doc": "the SSD's mount point; data_root must lie on it"})
    fs_uuid: str = field(default="", metadata={"doc": "the SSD's filesystem UUID, instead of mount_point"})
    allow_fallback: bool = field(default=False, metadata={"doc": "accept data_root on a disk that is not the SSD"})
    min_free_mb: int = field(default=2048, metadata=value_range(0, 10_000_000, "start deleting processed data below"))
    resume_free_mb: int = field(default=4096, metadata=value_range(0, 10_000_000, "resume acquisition above"))
    flat_copy_dir: str = field(default="", metadata={"doc": "optional flat folder of hard links for the FTP client"})

    def check(self, prefix: str) -> None:
        if self.resume_free_mb < self.min_free_mb:
            raise ConfigError(f"{prefix}.resume_free_mb", "must be >= min_free_mb (hysteresis)")


@dataclass(frozen=True)
class ScheduleConfig:
    period_s: float = field(default=4.0, metadata=value_range(1, 60, "capture slot period; must divide 60 s"))
    windows_utc: tuple[tuple[str, str], ...] = (("11:00", "23:00"),)
    min_solar_elevation_deg: float | None = field(default=None, metadata=value_range(-10, 60))
    dark_time_utc: str = field(default="23:10", metadata={"doc": "daily dark series, HH:MM UTC"})
    shutdown_after_process: bool = False
    wittypi_margin_min: int = field(default=10, metadata=value_range(0, 120))
    process_min: int = field(
        default=30, metadata=value_range(0, 720, "minutes after a window (and the dark series) for the process phase")
    )

    def check(self, prefix: str) -> None:
        if abs(60.0 / self.period_s - round(60.0 / self.period_s)) > 1e-9:
            raise ConfigError(
                f"{prefix}.period_s", f"{self.period_s} does not divide 60 s (use 1, 2, 3, 4, 5, 6, 10...)"
            )
        if not 1 <= len(self.windows_utc) <= 2:
            raise ConfigError(f"{prefix}.windows_utc", "one or two [start, end] windows")
        for i, win in enumerate(self.windows_utc):
            if len(win) != 2:
                raise ConfigError(f"{prefix}.windows_utc[{i}]", 'must be ["HH:MM", "HH:MM"]')
            for t in win:
                _parse_hhmm(t, f"{prefix}.windows_utc[{i}]")
        _parse_hhmm(self.dark_time_utc, f"{prefix}.dark_time_utc")


def _parse_hhmm(text: str, key: str) -> tuple[int, int]:
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError as e:
        raise ConfigError(key, f"{text!r} is not HH:MM") from e
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m != 0):
        raise ConfigError(key, f"{text!r} is not a time of day (00:00 - 24:00)")
    return h, m


# A vendor call that hangs (rather than raising) must not block start-up or the slot loop.
CALL_TIMEOUT_DOC = (
    "time limit (s) of one device call; a capture gets three frame/scan times more, opening three times this; "
    "over it the device is in error and reopened after its backoff"
)


@dataclass(frozen=True)
class CameraConfig:
    backend: Literal["sim", "picamera2"] = "sim"
    width: int = field(default=648, metadata=value_range(1, 4056, "saved image width (after binning)"))
    height: int = field(default=486, metadata=value_range(1, 3040, "saved image height (after binning)"))
    bit_depth: int = field(default=10, metadata=value_range(8, 16))
    shutter_us: int = field(default=10_000, metadata=value_range(1, 6_000_001, "SSA/SSB"))
    gain: float = field(default=1.0, metadata=value_range(1, 16))
    auto_exposure: bool = field(default=True, metadata={"doc": "ATA/ATB"})
    min_saturation: float = field(default=0.7, metadata=value_range(0, 0.9, "SMN"))
    max_saturation: float = field(default=0.9, metadata=value_range(0.1, 1.0, "SMX"))
    saturation_pixels: int = field(default=100, metadata=value_range(1, 10_000, "PXC"))
    saturation_rows: int = field(default=-1, metadata=value_range(-486, 486, "RWC: + from top, - from bottom, not 0"))
    shutter_list_us: tuple[int, ...] = field(default_factory=original_shutter_list_us)
    frame_rate_hz: float = field(default=0.25, metadata=value_range(0.0, 1.0, "FRC, in (0, 1] Hz"))
    focal_length_mm: float = field(default=12.0, metadata=value_range(0.1, 1000))
    pixel_pitch_um: float = field(default=5.6, metadata=value_range(0.1, 100, "after binning (OV5647 1.4 µm x 4)"))
    call_timeout_s: float = field(default=10.0, metadata=value_range(0.01, 600, CALL_TIMEOUT_DOC))

    def check(self, prefix: str) -> None:
        if self.min_saturation >= self.max_saturation:
            raise ConfigError(f"{prefix}.min_saturation", "must be less than max_saturation")
        if self.saturation_rows == 0:
            raise ConfigError(f"{prefix}.saturation_rows", "must not be 0")
        if self.frame_rate_hz <= 0:
            raise ConfigError(f"{prefix}.frame_rate_hz", "must be in (0, 1.0] Hz")
        shutters = list(self.shutter_list_us)
        if not shutters or shutters != sorted(set(shutters)) or shutters[0] < 1:
            raise ConfigError(f"{prefix}.shutter_list_us", "must be a non-empty, strictly ascending list of µs values")


# FRS drives the spectrometer's own slots (every 1/FRS s, a whole number per minute); a file name is to the second.
MAX_SPECTRUM_RATE_HZ = 1.0


@dataclass(frozen=True)
class SpectrometerConfig:
    backend: Literal["sim", "seabreeze", "none"] = "sim"
    integration_ms: int = field(default=100, metadata=value_range(1, 10_001, "SSS"))
    auto_integration: bool = field(default=True, metadata={"doc": "ATS"})
    coadd: int = field(default=1, metadata=value_range(1, 100, "CAD"))
    frame_rate_hz: float = field(
        default=0.25, metadata=value_range(0.0, 10.0, "FRS: spectra per second on their own slots, in (0, 1] Hz")
    )
    min_saturation: float = field(default=0.7, metadata=value_range(0, 0.9, "SNS"))
    max_saturation: float = field(default=0.9, metadata=value_range(0.1, 1.0, "SXS"))
    saturation_pixels: int = field(default=100, metadata=value_range(1, 2048, "PXS"))
    saturation_window_nm: tuple[int, int] = (300, 340)
    integration_list_ms: tuple[int, ...] = field(default_factory=original_integration_list_ms)
    max_counts: int = field(default=65535, metadata=value_range(1, 1 << 20, "saturation level of the detector"))
    call_timeout_s: float = field(default=10.0, metadata=value_range(0.01, 600, CALL_TIMEOUT_DOC))

    def check(self, prefix: str) -> None:
        if self.min_saturation >= self.max_saturation:
            raise ConfigError(f"{prefix}.min_saturation", "must be less than max_saturation")
        lo, hi = self.saturation_window_nm
        if not (300 <= lo < hi <= 400):
            raise ConfigError(f"{prefix}.saturation_window_nm", "WMN < WMX, both within 300 - 400 nm")
        if not 0 < self.frame_rate_hz <= MAX_SPECTRUM_RATE_HZ:
            raise ConfigError(
                f"{prefix}.frame_rate_hz",
                f"must be in (0, {MAX_SPECTRUM_RATE_HZ}] Hz here: spectrum file names are to the second",
            )
        times = list(self.integration_list_ms)
        if not times or times != sorted(set(times)) or times[0] < 1:
            raise ConfigError(f"{prefix}.integration_list_ms", "must be a non-empty, strictly ascending list of ms")


@dataclass(frozen=True)
class GpioConfig:
    backend: Literal["mock", "lgpio", "native"] = "mock"
    wake_pin: int = field(default=23, metadata=value_range(0, 27, "master: pulses the slave's GPIO 3 to wake it"))
    halt_pin: int = field(default=16, metadata=value_range(0, 27, "master: asks the slave to halt (gpio-shutdown)"))
    slave_wake_pin: int = field(default=3, metadata=value_range(0, 27))
    pulse_s: float = field(default=0.2, metadata=value_range(0.01, 5))


@dataclass(frozen=True)
class PowerConfig:
    hello_timeout_s: float = field(
        default=90.0, metadata=value_range(0.1, 3600, "wait for the slave after a wake pulse")
    )
    wake_retries: int = field(default=3, metadata=value_range(0, 100))
    stop_timeout_s: float = field(default=60.0, metadata=value_range(0.1, 3600))


@dataclass(frozen=True)
class ClockConfig:
    backend: Literal["chrony", "sim"] = field(
        default="chrony", metadata={"doc": "time source: this Pi's chronyd, or the simulated chrony (sim)"}
    )
    chronyc_host: str = field(default="", metadata={"doc": "chronyc -h: chronyd's command socket or address"})
    ntp_servers: tuple[str, ...] = field(
        default=(), metadata={"doc": "master: upstream NTP servers/pools for chrony (none: RTC + local stratum)"}
    )
    gps_refclock: Literal["shm", "sock"] = field(
        default="shm", metadata={"doc": "master with gps_serial: gpsd hands NMEA time to chrony by SHM or SOCK"}
    )
    tolerance_ms: float = field(default=50.0, metadata=value_range(0.1, 60_000))
    gps_serial: str = field(default="", metadata={"doc": "pyserial URL of a GPS NMEA stream, e.g. /dev/ttyS0"})
    gps_baud: int = field(default=9600, metadata=value_range(300, 921_600))
    sync_samples: int = field(default=8, metadata=value_range(1, 100))
    resync_s: float = field(default=60.0, metadata=value_range(1, 86_400))


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    time_scale: float = field(default=1.0, metadata=value_range(0.001, 10_000, "clock seconds per real second"))
    start_utc: str = field(default="", metadata={"doc": "ISO time the sim clock starts at (empty: now)"})
    emission_rate_kg_s: float = field(default=10.0, metadata=value_range(0.0, 10_000))
    wind_speed_m_s: float = field(default=8.0, metadata=value_range(0.1, 60))
    wind_direction_deg: float = field(default=0.0, metadata=value_range(-180, 180, "in the image plane, 0 = +x"))
    plume_distance_m: float = field(default=5000.0, metadata=value_range(100, 100_000))
    plume_width_px: float = field(default=40.0, metadata=value_range(2, 400))
    aerosol_optical_depth: float = field(default=0.05, metadata=value_range(0, 3, "plume aerosol at the on-band, peak"))
    aerosol_angstrom: float = field(
        default=1.3, metadata=value_range(-1, 4, "Angstrom exponent: off-band aerosol = on-band x (330/310)^-a")
    )
    extinction_a_per_m: float = field(
        default=0.0, metadata=value_range(0, 1e-3, "light dilution: atmospheric extinction at the on-band (1/m)")
    )
    extinction_b_per_m: float = field(default=0.0, metadata=value_range(0, 1e-3, "the same at the off-band (1/m)"))
    sky_counts: float = field(default=400.0, metadata=value_range(1, 1e6, "counts per ms exposure at image centre"))
    references_dir: str = field(
        default="", metadata={"doc": "folder with SO2/O3/Ring/solar references; empty: built-in"}
    )
    faults: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = field(default=False, metadata={"doc": "master: serve the read-only status and results page"})
    bind: str = field(default="0.0.0.0", metadata={"doc": "address the page binds (access: network.allowed_networks)"})
    port: int = field(default=8080, metadata=value_range(0, 65535, "0: any free port (tests)"))
    thumbnail_px: int = field(default=320, metadata=value_range(32, 2048, "longest side of the image thumbnails"))


@dataclass(frozen=True)
class DeliveryConfig:
    enabled: bool = field(default=False, metadata={"doc": "master: push results to the observatory over SSH (rsync)"})
    host: str = field(default="", metadata={"doc": "the observatory's SSH server"})
    port: int = field(default=22, metadata=value_range(1, 65535))
    user: str = field(default="pycam", metadata={"doc": "SSH user on the observatory server"})
    key_file: str = field(default="", metadata={"doc": "private SSH key (no passphrase) for that user"})
    known_hosts: str = field(default="", metadata={"doc": "known_hosts file; empty: state_dir/known_hosts (pinned)"})
    remote_dir: str = field(default="pycam", metadata={"doc": "folder on the server; the station's name is added"})
    bwlimit_kbps: int = field(default=0, metadata=value_range(0, 1_000_000, "upload limit in kB/s (0: none)"))
    include_raw: bool = field(default=False, metadata={"doc": "also push raw images and spectra"})
    log_dir: str = field(default="", metadata={"doc": "folder of log files to push too (empty: none)"})
    scan_interval_s: float = field(default=30.0, metadata=value_range(0.1, 86_400, "real seconds between scans"))
    batch_files: int = field(default=200, metadata=value_range(1, 100_000, "files per rsync run"))
    timeout_s: float = field(default=30.0, metadata=value_range(1, 3600, "rsync/ssh I/O timeout (uplink cut)"))
    retry_initial_s: float = field(default=5.0, metadata=value_range(0.1, 86_400, "first retry delay"))
    retry_max_s: float = field(default=600.0, metadata=value_range(0.1, 86_400, "longest retry delay"))

    def check(self, prefix: str) -> None:
        if self.enabled and not self.host:
            raise ConfigError(f"{prefix}.host", "must be set when delivery is enabled")
        if self.enabled and not self.key_file:
            raise ConfigError(f"{prefix}.key_file", "must be set when delivery is enabled")
        if self.retry_max_s < self.retry_initial_s:
            raise ConfigError(f"{prefix}.retry_max_s", "must be >= retry_initial_s")


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"
