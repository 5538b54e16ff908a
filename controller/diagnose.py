"""Station diagnosis (`pycam diagnose`, controller/cli/diagnose.py): look for the station's hardware and say what is missing and what to do.

Each check returns a Finding; the command prints a readable report (or JSON) and exits 1 when something the
config requires is missing. It never shows a traceback: every probe catches the vendor library's errors.
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controller.config import Config
from controller.errors import StorageError

OK, WARN, MISSING = "ok", "warn", "missing"


@dataclass(frozen=True)
class Finding:
    item: str
    status: str  # ok, warn, missing
    detail: str
    action: str = ""
    required: bool = True

    @property
    def fails(self) -> bool:
        return self.status == MISSING and self.required


def check_cameras(cfg: Config) -> list[Finding]:
    if cfg.camera.backend == "sim":
        return [Finding("camera", OK, "simulated camera (camera.backend = sim): no hardware needed")]
    try:
        from picamera2 import Picamera2
    except ImportError as e:
        return [Finding("camera", MISSING, f"picamera2 cannot be imported ({e})",
                        "sudo apt install python3-picamera2, and create the venv with --system-site-packages")]  # fmt: skip
    try:
        cameras = Picamera2.global_camera_info()
    except Exception as e:  # libcamera raises many kinds of errors; report any as "cannot list"
        return [Finding("camera", MISSING, f"picamera2 cannot list cameras: {e}", "check the camera ribbon cable")]
    if not cameras:
        return [Finding("camera", MISSING, "picamera2 finds no camera",
                        "check the ribbon cable (contacts facing the right way), then `rpicam-hello --list-cameras`")]  # fmt: skip
    names = ", ".join(str(c.get("Model", "?")) for c in cameras)
    return [Finding("camera", OK, f"{len(cameras)} camera(s): {names}")]


def check_spectrometer(cfg: Config) -> list[Finding]:
    backend = cfg.spectrometer.backend
    if backend == "none":
        return [Finding("spectrometer", OK, "none configured (spectrometer.backend = none)", required=False)]
    if backend == "sim":
        return [Finding("spectrometer", OK, "simulated spectrometer: no hardware needed")]
    required = cfg.role == "slave" or cfg.source is not None
    try:
        from seabreeze.spectrometers import list_devices
    except ImportError as e:
        return [Finding("spectrometer", MISSING, f"seabreeze cannot be imported ({e})",
                        "pip install seabreeze (the `pi` extra), then `seabreeze_os_setup` for the udev rules",
                        required)]  # fmt: skip
    try:
        devices = list_devices()
    except Exception as e:  # seabreeze/libusb errors
        return [Finding("spectrometer", MISSING, f"seabreeze cannot list devices: {e}",
                        "run `seabreeze_os_setup` (udev rules) and replug the USB cable", required)]  # fmt: skip
    if not devices:
        return [Finding("spectrometer", MISSING, "no Ocean Optics spectrometer on USB",
                        "plug in the spectrometer's USB cable; `lsusb` should list Ocean Optics (2457)", required)]  # fmt: skip
    return [Finding("spectrometer", OK, "found " + ", ".join(str(d) for d in devices))]


def check_gpio(cfg: Config) -> list[Finding]:
    if cfg.gpio.backend == "mock":
        return [Finding("gpio", OK, "mock pins (gpio.backend = mock): no hardware needed")]
    chips = sorted(glob.glob("/dev/gpiochip*"))
    findings = []
    if not chips:
        findings.append(Finding("gpio", MISSING, "no /dev/gpiochip* (not a Raspberry Pi, or the GPIO driver is off)",
                                "run on the Pi; check that the user is in the `gpio` group"))  # fmt: skip
    module = {"lgpio": "lgpio", "native": "gpiozero.pins.native"}[cfg.gpio.backend]
    try:
        __import__(module)
    except ImportError as e:
        findings.append(Finding("gpio", MISSING, f"pin factory {cfg.gpio.backend!r} unavailable ({e})",
                                "pip install lgpio (the `pi` extra)"))  # fmt: skip
    if not findings:
        findings.append(Finding("gpio", OK, f"{', '.join(chips)}; pin factory {cfg.gpio.backend}"))
    return findings


def check_storage(cfg: Config) -> list[Finding]:
    root = Path(cfg.storage.data_root)
    findings = []
    try:
        from controller.storage.mounts import check_storage as check_mount

        mount = check_mount(cfg.storage)
        where = f"on {mount['mount_point']} ({mount['source']}, {mount['fstype']})"
        if mount.get("fallback"):
            findings.append(Finding("storage", WARN, f"{root} is {where}, not the SSD: {mount.get('problem', '')}",
                                    "mount the SSD; fallback is allowed by storage.allow_fallback", False))  # fmt: skip
    except StorageError as e:
        findings.append(Finding("storage", MISSING, str(e), "mount the SSD (check /etc/fstab and the USB cable)"))
        where = ""
    except (OSError, ValueError) as e:
        findings.append(Finding("storage", WARN, f"cannot read the mount table: {e}", required=False))
        where = ""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not root.is_dir():
        writable = os.access(existing, os.W_OK)
        status = WARN if writable else MISSING
        findings.append(Finding("storage", status, f"data root {root} does not exist"
                                + (" (it will be created)" if writable else f" and {existing} is not writable"),
                                f"mkdir -p {root} and give the pycam user write access"))  # fmt: skip
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=root, prefix=".diagnose-"):
                pass
        except OSError as e:
            findings.append(Finding("storage", MISSING, f"cannot write in {root}: {e.strerror}",
                                    f"chown the data root to the pycam user, or remount {root} read-write"))  # fmt: skip
    st = os.statvfs(existing)
    free_mb = st.f_bavail * st.f_frsize / 1e6
    if free_mb < cfg.storage.min_free_mb:
        findings.append(Finding("storage", WARN, f"only {free_mb:.0f} MB free (below storage.min_free_mb "
                                f"{cfg.storage.min_free_mb})", "free space or replace the SSD", False))  # fmt: skip
    if not any(f.status != OK for f in findings):
        findings.append(Finding("storage", OK, f"{root} writable {where}, {free_mb:.0f} MB free".replace("  ", " ")))
    return findings


def check_clock(cfg: Config) -> list[Finding]:
    from controller.timekeeping.clocksource import NtpSource, RtcSource

    findings = []
    rtc = RtcSource().status()
    # No kernel RTC is not a finding: the WittyPi keeps its RTC behind I2C and its own software sets the system
    # time from it at boot (see the power board check); neither board's software uses a kernel overlay.
    if rtc.get("available"):
        findings.append(Finding("clock", OK if rtc.get("synchronised") else WARN,
                                f"kernel RTC {rtc.get('chip', '')}: offset {rtc.get('offset_s', 0):+.1f} s", required=False))  # fmt: skip
    ntp = NtpSource().status()
    if not ntp.get("available"):
        findings.append(Finding("clock", WARN, "neither chronyc nor timedatectl answers",
                                "sudo apt install chrony", required=False))  # fmt: skip
    else:
        text = f"{ntp.get('daemon')}: " + ("synchronised" if ntp.get("synchronised") else "not synchronised")
        findings.append(Finding("clock", OK if ntp.get("synchronised") else WARN, text,
                                "" if ntp.get("synchronised") else "check the network / NTP servers", False))  # fmt: skip
    return findings


I2C_ADVICE = "enable I2C (sudo raspi-config nonint do_i2c 0), then `i2cdetect -y 1`"


def check_power_board(cfg: Config, reader=None) -> list[Finding]:
    """The WittyPi on the master: which board, its voltages and temperature, and why it last shut down."""
    if cfg.role == "slave":
        return [Finding("power", OK, "slave: no power board expected (the master switches it)", required=False)]
    if cfg.gpio.backend == "mock":
        return [Finding("power", OK, "mock pins (gpio.backend = mock): no power board expected", required=False)]
    from controller.power.wittypi import NoI2C, read_installed_board

    try:
        board = (reader or read_installed_board)()
    except NoI2C as e:
        return [Finding("power", WARN, str(e), I2C_ADVICE + " should show 08 (WittyPi 4) or 68 and 69 (WittyPi 3)",
                        required=False)]  # fmt: skip
    except OSError as e:
        return [Finding("power", WARN, f"the WittyPi stopped answering on I2C: {e}",
                        "reseat the WittyPi on the GPIO header; check `i2cdetect -y 1`", required=False)]  # fmt: skip
    if board is None:
        return [Finding("power", WARN, "no WittyPi on I2C bus 1 (nothing at 0x08, nor a DS3231 at 0x68)",
                        "fit the WittyPi HAT and install uugear's software; `i2cdetect -y 1` should show 08 "
                        "(WittyPi 4) or 68 and 69 (WittyPi 3)", required=False)]  # fmt: skip
    volts = (f", Vin {board.input_voltage_v:.2f} V" if board.input_voltage_v is not None else
             f", {board.power_mode or 'no'} supply")  # fmt: skip
    temp = f", {board.temperature_c:.1f} °C" if board.temperature_c is not None else ""
    rtc = f", RTC {board.rtc_time}" if board.rtc_time else ""
    text = f"{board.board} (firmware 0x{board.firmware_id & 0xFF:02x}){volts}{temp}{rtc}"
    findings = [Finding("power", OK, text, required=False)]
    if board.rtc_time is None:
        findings.append(Finding("power", WARN, f"{board.board}: its RTC holds no valid time",
                                "set it with uugear's wittyPi.sh (option 'Write system time to RTC')", required=False))  # fmt: skip
    if board.low_voltage_shutdown:
        findings.append(Finding("power", WARN, f"{board.board} last cut power for low voltage"
                                + (f" (now {board.input_voltage_v:.2f} V)" if board.input_voltage_v else ""),
                                "check the battery and solar panel, and the low-voltage / recovery thresholds in "
                                "uugear's wittyPi.sh", required=False))  # fmt: skip
    if board.board == "WittyPi 3" and board.firmware_id < 0:
        findings.append(Finding("power", WARN, "WittyPi 3: the DS3231 answers but its micro-controller (0x69) does not",
                                "reseat the board; voltages and the low-voltage flag cannot be read", required=False))  # fmt: skip
    return findings


CHECKS = (check_cameras, check_spectrometer, check_gpio, check_storage, check_clock, check_power_board)


def run_checks(cfg: Config) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings.extend(check(cfg))
        except Exception as e:  # a probe that breaks is itself a finding, never a traceback
            findings.append(Finding(check.__name__.removeprefix("check_"), MISSING, f"check failed: {e!r}"))
    return findings


def format_report(findings: list[Finding], title: str) -> str:
    lines = [title]
    for f in findings:
        tag = {OK: "ok", WARN: "warn", MISSING: "MISSING" if f.required else "absent"}[f.status]
        lines.append(f"  [{tag:>7}] {f.item:<12} {f.detail}")
        if f.action and f.status != OK:
            lines.append(f"  {'':>9} {'':<12} -> {f.action}")
    failed = [f.item for f in findings if f.fails]
    lines.append("result: " + (f"required hardware missing: {', '.join(dict.fromkeys(failed))}" if failed else "ok"))
    return "\n".join(lines)
