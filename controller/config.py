"""Typed station config (TOML), one file per Pi.

Every section is a frozen dataclass. Loading refuses unknown keys, wrong types and out-of-range values with an
error naming the dotted key and what is allowed. Defaults are the original PyCam's.
Cross-field rules (min < max) live in each section's `check()`.
"""

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

from controller.errors import ConfigError


def _range(lo: float | None = None, hi: float | None = None, doc: str = "", **extra: Any) -> dict:
    return {"range": (lo, hi), "doc": doc, **extra}


def _original_shutter_list_us() -> tuple[int, ...]:
    """The original PyCam camera shutter-speed list (µs), ascending."""
    steps = [
        (1, 10, 1), (10, 50, 5), (50, 100, 10), (100, 500, 50), (500, 1000, 100), (1000, 10_000, 500),
        (10_000, 50_000, 2500), (50_000, 100_000, 5000), (100_000, 200_000, 10_000),
        (200_000, 1_000_000, 50_000), (1_000_000, 6_000_000, 100_000),
    ]  # fmt: skip
    values = [v for lo, hi, step in steps for v in range(lo, hi, step)]
    return (*values, 6_000_000)


def _original_integration_list_ms() -> tuple[int, ...]:
    """The original PyCam spectrometer integration-time list (ms), ascending."""
    steps = [(1, 10, 1), (10, 50, 5), (50, 100, 10), (100, 500, 50), (500, 1000, 100), (1000, 10_000, 500)]
    values = [v for lo, hi, step in steps for v in range(lo, hi, step)]
    return (*values, 10_000)


# ----------------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class StationConfig:
    role: Literal["master", "slave"] = field(default="master", metadata={"doc": "which Pi this file is for"})
    name: str = "pycam"
    latitude_deg: float = field(default=-39.42, metadata=_range(-90, 90))
    longitude_deg: float = field(default=-71.93, metadata=_range(-180, 180))
    altitude_m: float = field(default=1000.0, metadata=_range(-500, 9000))


@dataclass(frozen=True)
class NetworkConfig:
    master_host: str = field(default="169.254.1.1", metadata={"doc": "address of the master, as the slave sees it"})
    link_port: int = field(default=12345, metadata=_range(1, 65535))
    link_bind: str = field(default="0.0.0.0", metadata={"doc": "address the master's link server binds"})
    ext_bind: str = field(default="0.0.0.0", metadata={"doc": "address the external control port binds"})
    ext_port: int = field(default=12347, metadata=_range(1, 65535))
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
    max_clients: int = field(default=4, metadata=_range(1, 64))
    handshake_timeout_s: float = field(
        default=10.0, metadata=_range(0.5, 120, "one deadline for a new client's first message (AUTH with a token)")
    )
    idle_timeout_s: float = field(
        default=600.0, metadata=_range(5, 86_400, "an external client with no complete message this long is dropped")
    )
    max_message_bytes: int = field(default=4096, metadata=_range(64, 1_048_576))
    heartbeat_s: float = field(default=2.0, metadata=_range(0.05, 60))
    link_timeout_s: float = field(default=6.0, metadata=_range(0.2, 600))
    backoff_max_s: float = field(default=1.0, metadata=_range(0.05, 600))
    link_key_file: str = field(
        default="", metadata={"doc": "the link's shared key (0600, same on both Pis); empty: <state_dir>/link.key"}
    )
    link_max_file_mb: int = field(
        default=64, metadata=_range(1, 4096, "largest file the master accepts over the link; larger is refused")
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
    min_free_mb: int = field(default=2048, metadata=_range(0, 10_000_000, "start deleting processed data below"))
    resume_free_mb: int = field(default=4096, metadata=_range(0, 10_000_000, "resume acquisition above"))
    flat_copy_dir: str = field(default="", metadata={"doc": "optional flat folder of hard links for the FTP client"})

    def check(self, prefix: str) -> None:
        if self.resume_free_mb < self.min_free_mb:
            raise ConfigError(f"{prefix}.resume_free_mb", "must be >= min_free_mb (hysteresis)")


@dataclass(frozen=True)
class ScheduleConfig:
    period_s: float = field(default=4.0, metadata=_range(1, 60, "capture slot period; must divide 60 s"))
    windows_utc: tuple[tuple[str, str], ...] = (("11:00", "23:00"),)
    min_solar_elevation_deg: float | None = field(default=None, metadata=_range(-10, 60))
    dark_time_utc: str = field(default="23:10", metadata={"doc": "daily dark series, HH:MM UTC"})
    shutdown_after_process: bool = False
    wittypi_margin_min: int = field(default=10, metadata=_range(0, 120))
    process_min: int = field(
        default=30, metadata=_range(0, 720, "minutes after a window (and the dark series) for the process phase")
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
    width: int = field(default=648, metadata=_range(1, 4056, "saved image width (after binning)"))
    height: int = field(default=486, metadata=_range(1, 3040, "saved image height (after binning)"))
    bit_depth: int = field(default=10, metadata=_range(8, 16))
    shutter_us: int = field(default=10_000, metadata=_range(1, 6_000_001, "SSA/SSB"))
    gain: float = field(default=1.0, metadata=_range(1, 16))
    auto_exposure: bool = field(default=True, metadata={"doc": "ATA/ATB"})
    min_saturation: float = field(default=0.7, metadata=_range(0, 0.9, "SMN"))
    max_saturation: float = field(default=0.9, metadata=_range(0.1, 1.0, "SMX"))
    saturation_pixels: int = field(default=100, metadata=_range(1, 10_000, "PXC"))
    saturation_rows: int = field(default=-1, metadata=_range(-486, 486, "RWC: + from top, - from bottom, not 0"))
    shutter_list_us: tuple[int, ...] = field(default_factory=_original_shutter_list_us)
    frame_rate_hz: float = field(default=0.25, metadata=_range(0.0, 1.0, "FRC, in (0, 1] Hz"))
    focal_length_mm: float = field(default=12.0, metadata=_range(0.1, 1000))
    pixel_pitch_um: float = field(default=5.6, metadata=_range(0.1, 100, "after binning (OV5647 1.4 µm x 4)"))
    call_timeout_s: float = field(default=10.0, metadata=_range(0.01, 600, CALL_TIMEOUT_DOC))

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
    integration_ms: int = field(default=100, metadata=_range(1, 10_001, "SSS"))
    auto_integration: bool = field(default=True, metadata={"doc": "ATS"})
    coadd: int = field(default=1, metadata=_range(1, 100, "CAD"))
    frame_rate_hz: float = field(
        default=0.25, metadata=_range(0.0, 10.0, "FRS: spectra per second on their own slots, in (0, 1] Hz")
    )
    min_saturation: float = field(default=0.7, metadata=_range(0, 0.9, "SNS"))
    max_saturation: float = field(default=0.9, metadata=_range(0.1, 1.0, "SXS"))
    saturation_pixels: int = field(default=100, metadata=_range(1, 2048, "PXS"))
    saturation_window_nm: tuple[int, int] = (300, 340)
    integration_list_ms: tuple[int, ...] = field(default_factory=_original_integration_list_ms)
    max_counts: int = field(default=65535, metadata=_range(1, 1 << 20, "saturation level of the detector"))
    call_timeout_s: float = field(default=10.0, metadata=_range(0.01, 600, CALL_TIMEOUT_DOC))

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
    wake_pin: int = field(default=23, metadata=_range(0, 27, "master: pulses the slave's GPIO 3 to wake it"))
    halt_pin: int = field(default=16, metadata=_range(0, 27, "master: asks the slave to halt (gpio-shutdown)"))
    slave_wake_pin: int = field(default=3, metadata=_range(0, 27))
    pulse_s: float = field(default=0.2, metadata=_range(0.01, 5))


@dataclass(frozen=True)
class PowerConfig:
    hello_timeout_s: float = field(default=90.0, metadata=_range(0.1, 3600, "wait for the slave after a wake pulse"))
    wake_retries: int = field(default=3, metadata=_range(0, 100))
    stop_timeout_s: float = field(default=60.0, metadata=_range(0.1, 3600))


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
    tolerance_ms: float = field(default=50.0, metadata=_range(0.1, 60_000))
    gps_serial: str = field(default="", metadata={"doc": "pyserial URL of a GPS NMEA stream, e.g. /dev/ttyS0"})
    gps_baud: int = field(default=9600, metadata=_range(300, 921_600))
    sync_samples: int = field(default=8, metadata=_range(1, 100))
    resync_s: float = field(default=60.0, metadata=_range(1, 86_400))


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    time_scale: float = field(default=1.0, metadata=_range(0.001, 10_000, "clock seconds per real second"))
    start_utc: str = field(default="", metadata={"doc": "ISO time the sim clock starts at (empty: now)"})
    emission_rate_kg_s: float = field(default=10.0, metadata=_range(0.0, 10_000))
    wind_speed_m_s: float = field(default=8.0, metadata=_range(0.1, 60))
    wind_direction_deg: float = field(default=0.0, metadata=_range(-180, 180, "in the image plane, 0 = +x"))
    plume_distance_m: float = field(default=5000.0, metadata=_range(100, 100_000))
    plume_width_px: float = field(default=40.0, metadata=_range(2, 400))
    aerosol_optical_depth: float = field(default=0.05, metadata=_range(0, 3, "plume aerosol at the on-band, peak"))
    aerosol_angstrom: float = field(
        default=1.3, metadata=_range(-1, 4, "Angstrom exponent: off-band aerosol = on-band x (330/310)^-a")
    )
    extinction_a_per_m: float = field(
        default=0.0, metadata=_range(0, 1e-3, "light dilution: atmospheric extinction at the on-band (1/m)")
    )
    extinction_b_per_m: float = field(default=0.0, metadata=_range(0, 1e-3, "the same at the off-band (1/m)"))
    sky_counts: float = field(default=400.0, metadata=_range(1, 1e6, "counts per ms exposure at image centre"))
    references_dir: str = field(
        default="", metadata={"doc": "folder with SO2/O3/Ring/solar references; empty: built-in"}
    )
    faults: tuple[str, ...] = ()


XCORR_MIN_WINDOW_DOC = (
    "time span the cross-correlation buffer must hold before it gives a plume speed (the searchable lag is half "
    "the span; shorter series read the lag too short, the speed too high)"
)


@dataclass(frozen=True)
class ProcessingConfig:
    enabled: bool = True
    background_mode: int = field(default=5, metadata=_range(0, 99, "pyplis PlumeBackgroundModel mode"))
    pair_tolerance_s: float = field(default=0.0, metadata=_range(0, 60, "A/B pairing tolerance (old archives)"))
    ppmm_to_molecules_cm2: float = field(default=2.504e15, metadata=_range(1e15, 1e16))
    solar_reference: str = ""
    so2_xsec: str = ""
    o3_xsec: str = ""
    ring_spectrum: str = ""
    ils: str = ""
    # Wavelength media (processing/references.py converts every reference to the spectrometer's medium).
    solar_reference_medium: Literal["vacuum", "air"] = field(default="vacuum", metadata={"doc": "sao2010: vacuum"})
    so2_xsec_medium: Literal["vacuum", "air"] = field(default="vacuum", metadata={"doc": "Bogumil 2000: vacuum"})
    o3_xsec_medium: Literal["vacuum", "air"] = field(default="vacuum", metadata={"doc": "Serdyuchenko: vacuum"})
    ring_spectrum_medium: Literal["vacuum", "air"] = field(
        default="vacuum", metadata={"doc": "the medium of the solar spectrum it was computed from"}
    )
    spectrometer_medium: Literal["vacuum", "air"] = field(
        default="air", metadata={"doc": "wavelength calibration of the spectrometer (lamp lines: standard air)"}
    )
    fit_window_nm: tuple[float, float] = (308.0, 318.0)
    stray_window_nm: tuple[float, float] = (293.0, 296.0)
    registration: str = field(default="", metadata={"doc": "path of a 2x3 .npy matrix B->A; empty: identity"})
    camera_azimuth_deg: float = field(default=0.0, metadata=_range(-360, 360))
    camera_elevation_deg: float = field(default=10.0, metadata=_range(-90, 90))
    source_latitude_deg: float = field(default=-39.42, metadata=_range(-90, 90))
    source_longitude_deg: float = field(default=-71.93, metadata=_range(-180, 180))
    source_altitude_m: float = field(default=2847.0, metadata=_range(-500, 9000))
    plume_distance_m: float = field(default=0.0, metadata=_range(0, 1e6, "0: from geometry"))
    plume_distance_err_m: float = field(
        default=0.0, metadata=_range(0, 1e6, "uncertainty of plume_distance_m; 0: 10 % assumed")
    )
    pcs_lines: tuple[tuple[int, int, int, int], ...] = ((400, 40, 400, 446),)
    pcs_line_gap_px: int = field(
        default=20, metadata=_range(1, 1000, "offset of the second line for cross-correlation")
    )
    calibration_window_s: float = field(default=1800.0, metadata=_range(10, 86_400))
    ring_buffer: int = field(default=64, metadata=_range(2, 100_000))
    xcorr_min_window_s: float = field(
        default=20.0,
        metadata=_range(0, 86_400, XCORR_MIN_WINDOW_DOC),
    )
    velocity_method: Literal["flow", "xcorr", "sim_truth"] = "flow"
    pcs_line_normals: tuple[str, ...] = field(
        default=(), metadata={"doc": "per PCS line: 'left' or 'right' normal (pyplis LineOnImage); missing: right"}
    )
    sky_side: Literal["auto", "left", "right"] = field(
        default="auto", metadata={"doc": "image side with clear sky for background reference areas"}
    )
    wind_direction_deg: float | None = field(
        default=None, metadata=_range(0, 360, "meteorological (from); unset: plume normal to the viewing direction")
    )
    flow_pyrlevel: int = field(
        default=1, metadata=_range(-2, 4, "Gauss pyramid level for optical flow (negative: upsampled small images)")
    )
    default_calibration_slope: float = field(
        default=6.8e18, metadata=_range(0, 1e21, "molecules/cm² per unit AA when neither DOAS nor cells calibrate")
    )
    cell_window: tuple[str, str] = field(
        default=("", ""),
        metadata={
            "doc": "gas cells among the plume images (no <N>ppmm names, e.g. pyplis's ECII data): UTC start and end "
            "(YYYY-mm-ddTHH:MM:SS) of the cell sequence; its frames are cells or clear sky, never plume"
        },
    )
    cell_columns: tuple[tuple[str, float, float], ...] = field(
        default=(), metadata={"doc": "cells of the cell_window: [id, column, column error] (molecules/cm²)"}
    )
    dilution_lines: tuple[tuple[int, int, int, int], ...] = field(
        default=(), metadata={"doc": "light dilution: terrain lines x0, y0, x1, y1 (pixels); empty: no correction"}
    )
    dilution_line_distances_m: tuple[tuple[float, float], ...] = field(
        default=(), metadata={"doc": "per dilution line: terrain distance (m) at its start and end"}
    )
    dilution_dem: str = field(
        default="",
        metadata={
            "doc": "light dilution: DEM (ESRI ASCII grid, lon/lat degrees, m) giving the dilution lines' distances"
        },
    )
    dilution_distance_map: str = field(
        default="", metadata={"doc": "light dilution: .npy terrain distance (m) per pixel, NaN off terrain"}
    )
    dilution_ambient_roi: tuple[int, int, int, int] = field(
        default=(0, 0, 40, 20), metadata={"doc": "light dilution: sky region x0, y0, x1, y1 for the ambient radiance"}
    )
    dilution_plume_aa_min: float = field(
        default=0.03, metadata=_range(0, 10, "light dilution: pixels with AA above this are corrected")
    )
    calibration_through_origin: bool = field(
        default=True,
        metadata={
            "doc": "DOAS calibration S = slope·AA (True) or slope·AA + offset: an offset fitted over the plume's "
            "AA range would be extrapolated to every plume-free pixel of a PCS line"
        },
    )


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = field(default=False, metadata={"doc": "master: serve the read-only status and results page"})
    bind: str = field(default="0.0.0.0", metadata={"doc": "address the page binds (access: network.allowed_networks)"})
    port: int = field(default=8080, metadata=_range(0, 65535, "0: any free port (tests)"))
    thumbnail_px: int = field(default=320, metadata=_range(32, 2048, "longest side of the image thumbnails"))


@dataclass(frozen=True)
class DeliveryConfig:
    enabled: bool = field(default=False, metadata={"doc": "master: push results to the observatory over SSH (rsync)"})
    host: str = field(default="", metadata={"doc": "the observatory's SSH server"})
    port: int = field(default=22, metadata=_range(1, 65535))
    user: str = field(default="pycam", metadata={"doc": "SSH user on the observatory server"})
    key_file: str = field(default="", metadata={"doc": "private SSH key (no passphrase) for that user"})
    known_hosts: str = field(default="", metadata={"doc": "known_hosts file; empty: state_dir/known_hosts (pinned)"})
    remote_dir: str = field(default="pycam", metadata={"doc": "folder on the server; the station's name is added"})
    bwlimit_kbps: int = field(default=0, metadata=_range(0, 1_000_000, "upload limit in kB/s (0: none)"))
    include_raw: bool = field(default=False, metadata={"doc": "also push raw images and spectra"})
    log_dir: str = field(default="", metadata={"doc": "folder of log files to push too (empty: none)"})
    scan_interval_s: float = field(default=30.0, metadata=_range(0.1, 86_400, "real seconds between scans"))
    batch_files: int = field(default=200, metadata=_range(1, 100_000, "files per rsync run"))
    timeout_s: float = field(default=30.0, metadata=_range(1, 3600, "rsync/ssh I/O timeout (uplink cut)"))
    retry_initial_s: float = field(default=5.0, metadata=_range(0.1, 86_400, "first retry delay"))
    retry_max_s: float = field(default=600.0, metadata=_range(0.1, 86_400, "longest retry delay"))

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
                  "dilution_distance_map", "dilution_dem")}
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
