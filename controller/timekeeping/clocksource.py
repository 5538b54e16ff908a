"""Where the master's time comes from: the RTC (WittyPi), chrony/NTP, and optionally a GPS NMEA stream.

Each source implements the `ClockSource` protocol: `.name` and a blocking `status()` returning
`{"source", "available", "synchronised", "offset_s", ...}` where `offset_s` is source time minus this Pi's clock.
Call `status()` from an executor thread (it runs `chronyc`/`timedatectl` or reads a serial port).

Also the pure NTP arithmetic the slave uses to measure its offset to the master over the link:
`offset_from_exchange` for one request/response and `robust_offset` over several (minimum round-trip filter).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from controller.errors import ProtocolError
from controller.timekeeping.chrony import ChronyReader, parse_tracking_csv
from controller.timekeeping.commands import run_command

Runner = Callable[[Sequence[str]], str | None]

# ------------------------------------------------------------------------------------------------- NTP arithmetic


def offset_from_exchange(t1: float, t2: float, t3: float, t4: float) -> tuple[float, float]:
    """NTP offset and round-trip delay from one exchange.

    t1: client sends (client clock), t2: server receives, t3: server replies (server clock), t4: client receives.
    Returns (offset_s, rtt_s): offset = server - client, assuming symmetric paths; rtt excludes server time.
    """
    offset = ((t2 - t1) + (t3 - t4)) / 2.0
    rtt = (t4 - t1) - (t3 - t2)
    return offset, rtt


def robust_offset(samples: Iterable[tuple[float, float]], keep: float = 0.5) -> tuple[float, float]:
    """Combine (offset_s, rtt_s) samples: keep the `keep` fraction with the smallest round trips (the least
    disturbed by queueing), return the median of their offsets and the minimum rtt.

    The error of one sample is bounded by rtt/2, so short round trips are the trustworthy ones.
    """
    ordered = sorted((rtt, off) for off, rtt in samples if rtt >= 0)
    if not ordered:
        raise ValueError("no usable offset samples (all missing or negative round trips)")
    n = max(1, int(round(len(ordered) * keep)))
    best = sorted(off for _, off in ordered[:n])
    mid = len(best) // 2
    median = best[mid] if len(best) % 2 else (best[mid - 1] + best[mid]) / 2.0
    return median, ordered[0][0]


# ------------------------------------------------------------------------------------------------------- commands


# ----------------------------------------------------------------------------------------------------------- RTC


class RtcSource:
    """The hardware RTC (the WittyPi's on the master), read through sysfs; no root needed."""

    name = "rtc"

    def __init__(self, device: str = "/dev/rtc0", sysfs: Path | None = None, clock: Any = None):
        self.device = device
        self.sysfs = sysfs or Path("/sys/class/rtc") / Path(device).name
        self.clock = clock

    def status(self) -> dict:
        now = self.clock.time() if self.clock is not None else time.time()
        result: dict[str, Any] = {"source": self.name, "device": self.device, "available": False}
        result.update(synchronised=False, offset_s=None)
        try:
            epoch = int((self.sysfs / "since_epoch").read_text().strip())
        except (OSError, ValueError) as e:
            result["error"] = f"{self.sysfs}/since_epoch: {e}"
            return result
        try:
            result["chip"] = (self.sysfs / "name").read_text().strip()
        except OSError:
            result["chip"] = ""
        # The RTC counts whole seconds: an offset within ±1 s is as good as it can say.
        offset = epoch - now
        result.update(available=True, rtc_epoch_s=epoch, offset_s=offset, synchronised=abs(offset) <= 1.0)
        return result


# ---------------------------------------------------------------------------------------------------- chrony/NTP


def parse_chronyc_tracking(text: str) -> dict:
    """Parse `chronyc -c tracking` (CSV, see controller.timekeeping.chrony) or `chronyc tracking` (human) output.

    `system_offset_s` follows chrony's sign: positive when the system clock is fast of NTP time.
    """
    text = text.strip()
    if not text:
        raise ProtocolError("chronyc tracking: empty output")
    if ":" not in text.splitlines()[0] and "," in text:
        return parse_tracking_csv(text)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    out: dict[str, Any] = {}
    try:
        ref = fields["reference id"]
        out["reference_id"], _, name = ref.partition(" ")
        out["reference_name"] = name.strip("()")
        out["stratum"] = int(fields["stratum"])
        words = fields["system time"].split()
        value = float(words[0])
        out["system_offset_s"] = -value if "slow" in words else value
        out["last_offset_s"] = float(fields["last offset"].split()[0])
        out["rms_offset_s"] = float(fields["rms offset"].split()[0])
        out["leap_status"] = fields["leap status"]
    except (KeyError, ValueError, IndexError) as e:
        raise ProtocolError(f"chronyc tracking: cannot parse ({e})") from e
    return out


def parse_timedatectl(text: str) -> dict:
    """Parse `timedatectl show` (key=value lines)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return {
        "ntp_enabled": values.get("NTP") == "yes",
        "ntp_synchronised": values.get("NTPSynchronized") == "yes",
        "timezone": values.get("Timezone", ""),
    }


class NtpSource:
    """chrony's view (controller.timekeeping.chrony), falling back to systemd's (`timedatectl show`)."""

    name = "ntp"

    def __init__(self, runner: Runner = run_command):
        self.runner = runner

    def status(self) -> dict:
        result: dict[str, Any] = {"source": self.name, "available": False, "synchronised": False, "offset_s": None}
        chrony = ChronyReader(self.runner).status()
        if chrony["available"]:
            return {**chrony, "source": self.name, "daemon": "chrony"}
        result["error"] = chrony["error"]
        text = self.runner(["timedatectl", "show"])
        if text:
            info = parse_timedatectl(text)
            result.update(available=True, daemon="timedatectl", synchronised=info["ntp_synchronised"], **info)
        return result


# ----------------------------------------------------------------------------------------------------------- GPS


def nmea_checksum_ok(sentence: str) -> bool:
    """True when a `$...*hh` sentence carries a correct XOR checksum."""
    sentence = sentence.strip()
    if not sentence.startswith("$") or "*" not in sentence:
        return False
    body, _, given = sentence[1:].rpartition("*")
    calc = 0
    for ch in body.encode("ascii", errors="replace"):
        calc ^= ch
    try:
        return int(given[:2], 16) == calc
    except ValueError:
        return False


def _hms(text: str) -> tuple[int, int, float]:
    return int(text[0:2]), int(text[2:4]), float(text[4:])


def parse_nmea_time(sentence: str) -> float | None:
    """UTC epoch seconds from a valid $--RMC or $--ZDA sentence; None for other, void or malformed sentences.

    Raises ProtocolError when the checksum is wrong (garbage on the line is worth reporting).
    """
    sentence = sentence.strip()
    if not sentence.startswith("$"):
        return None
    if not nmea_checksum_ok(sentence):
        raise ProtocolError(f"NMEA checksum mismatch: {sentence[:82]!r}")
    fields = sentence[1:].rpartition("*")[0].split(",")
    kind = fields[0][2:]
    try:
        if kind == "RMC":
            if len(fields) < 10 or fields[2] != "A" or not fields[1] or not fields[9]:
                return None
            h, m, s = _hms(fields[1])
            day, month, yy = int(fields[9][0:2]), int(fields[9][2:4]), int(fields[9][4:6])
            year = 2000 + yy if yy < 80 else 1900 + yy
        elif kind == "ZDA":
            if len(fields) < 5 or not fields[1] or not fields[4]:
                return None
            h, m, s = _hms(fields[1])
            day, month, year = int(fields[2]), int(fields[3]), int(fields[4])
        else:
            return None
        whole = calendar.timegm((year, month, day, h, m, 0, 0, 0, 0))
    except (ValueError, IndexError, OverflowError):
        return None
    return whole + s


class GpsSource:
    """GPS time from an NMEA stream through pyserial (any URL pyserial accepts: /dev/ttyS0, loop://, socket://).

    Without PPS, NMEA time arrives a few hundred ms after the second: good to tell a wrong clock from a right one,
    not for sub-second sync (that stays with chrony, which may itself use the GPS).
    """

    name = "gps"

    def __init__(self, url: str, baud: int = 9600, read_timeout_s: float = 3.0, clock: Any = None, port: Any = None):
        self.url = url
        self.baud = baud
        self.read_timeout_s = read_timeout_s
        self.clock = clock
        self._port = port  # an open serial port (tests); otherwise opened per status()

    def _now(self) -> float:
        return self.clock.time() if self.clock is not None else time.time()

    def read_time(self, port: Any) -> tuple[float, float] | None:
        """Read lines until a valid time sentence or the timeout: (gps_epoch_s, local_epoch_s at reception)."""
        deadline = time.monotonic() + self.read_timeout_s
        while time.monotonic() < deadline:
            line = port.readline()  # blocks up to the port's timeout
            if not line:
                continue
            try:
                t = parse_nmea_time(line.decode("ascii", errors="replace"))
            except ProtocolError:
                continue
            if t is not None:
                return t, self._now()
        return None

    def status(self) -> dict:
        result: dict[str, Any] = {"source": self.name, "url": self.url, "available": False}
        result.update(synchronised=False, offset_s=None)
        try:
            if self._port is not None:
                reading = self.read_time(self._port)
            else:
                import serial

                with serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.5) as port:
                    reading = self.read_time(port)
        except (OSError, ValueError) as e:  # serial.SerialException is an OSError
            result["error"] = f"{self.url}: {e}"
            return result
        if reading is None:
            result["error"] = f"no valid RMC/ZDA sentence within {self.read_timeout_s} s"
            result["available"] = True
            return result
        gps_t, local_t = reading
        offset = gps_t - local_t
        result.update(available=True, gps_epoch_s=gps_t, offset_s=offset, synchronised=abs(offset) <= 1.0)
        return result


# -------------------------------------------------------------------------------------------------------- master


def master_sources(cfg: Any, clock: Any = None, runner: Runner = run_command) -> list[Any]:
    """The configured clock sources of the master: RTC, NTP, and GPS when `clock.gps_serial` is set."""
    sources: list[Any] = [RtcSource(clock=clock), NtpSource(runner)]
    if cfg.clock.gps_serial:
        sources.append(GpsSource(cfg.clock.gps_serial, cfg.clock.gps_baud, clock=clock))
    return sources


def clock_status(sources: Iterable[Any]) -> dict:
    """Status of each source and which one the station relies on (GPS, then NTP, then RTC, when synchronised)."""
    per_source = {}
    for source in sources:
        try:
            per_source[source.name] = source.status()
        except Exception as e:  # one broken source must not hide the others
            per_source[source.name] = {"source": source.name, "available": False, "error": repr(e)}
    best = next((n for n in ("gps", "ntp", "rtc") if per_source.get(n, {}).get("synchronised")), None)
    return {"best": best, "synchronised": best is not None, "sources": per_source}
