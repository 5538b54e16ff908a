"""Clock sources: NTP arithmetic, chrony/timedatectl parsing, RTC via sysfs, GPS NMEA over pyserial loop://."""

from __future__ import annotations

import calendar
import random

import pytest
import serial

from controller.config import config_from_dict
from controller.errors import ProtocolError
from controller.timekeeping.clock import ManualClock
from controller.timekeeping.clocksource import (
    GpsSource,
    NtpSource,
    RtcSource,
    clock_status,
    master_sources,
    nmea_checksum_ok,
    offset_from_exchange,
    parse_chronyc_tracking,
    parse_nmea_time,
    robust_offset,
)


def _nmea(body: str) -> str:
    checksum = 0
    for ch in body.encode():
        checksum ^= ch
    return f"${body}*{checksum:02X}\r\n"


def test_offset_from_exchange_recovers_a_known_offset_with_asymmetric_processing():
    true_offset, one_way = 2.5, 0.010  # server ahead by 2.5 s, 10 ms each way
    t1 = 1000.0
    t2 = t1 + one_way + true_offset
    t3 = t2 + 0.003  # the server took 3 ms to answer
    t4 = t3 - true_offset + one_way
    offset, rtt = offset_from_exchange(t1, t2, t3, t4)
    assert offset == pytest.approx(true_offset)
    assert rtt == pytest.approx(2 * one_way)


def test_robust_offset_ignores_samples_delayed_by_queueing():
    rng = random.Random(3)
    true_offset = -0.120
    samples = []
    for _ in range(20):
        up, down = 0.002 + rng.random() * 0.001, 0.002 + rng.random() * 0.001
        if rng.random() < 0.4:
            up += 0.3  # a queued request: its offset estimate is off by ~150 ms
        t1 = 50.0
        t2 = t1 + up + true_offset
        t3 = t2 + 0.001
        t4 = t3 - true_offset + down
        samples.append(offset_from_exchange(t1, t2, t3, t4))
    offset, rtt = robust_offset(samples)
    assert abs(offset - true_offset) < 0.001
    assert rtt < 0.007
    with pytest.raises(ValueError):
        robust_offset([])


CHRONY_CSV = "A9FEA9FE,ntp.example,3,1700000000.123,0.000250000,-0.000010,0.000023,-12.345,0.001,0.023,0.000456,0.000789,64.2,Normal\n"
CHRONY_HUMAN = """Reference ID    : C0A80101 (192.168.1.1)
Stratum         : 3
Ref time (UTC)  : Thu Nov 14 12:00:00 2024
System time     : 0.000250000 seconds slow of NTP time
Last offset     : -0.000010 seconds
RMS offset      : 0.000023 seconds
Frequency       : 12.345 ppm slow
Residual freq   : +0.001 ppm
Skew            : 0.023 ppm
Root delay      : 0.000456 seconds
Root dispersion : 0.000789 seconds
Update interval : 64.2 seconds
Leap status     : Normal
"""
CHRONY_UNSYNCED = "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n"


def test_parse_chronyc_tracking_both_formats():
    csv = parse_chronyc_tracking(CHRONY_CSV)
    assert csv["stratum"] == 3 and csv["system_offset_s"] == pytest.approx(0.00025)
    assert csv["leap_status"] == "Normal"
    human = parse_chronyc_tracking(CHRONY_HUMAN)
    assert human["reference_name"] == "192.168.1.1"
    assert human["system_offset_s"] == pytest.approx(-0.00025)  # slow of NTP time
    with pytest.raises(ProtocolError):
        parse_chronyc_tracking("1,2,3\n")


def test_ntp_source_uses_chrony_then_timedatectl():
    calls = []

    def runner(outputs):
        def run(cmd):
            calls.append(cmd[0])
            if cmd[0] == "chronyc" and cmd[-1] == "sources":
                return ""  # chronyd answers, no sources configured
            return outputs.get(cmd[0])

        return run

    status = NtpSource(runner({"chronyc": CHRONY_CSV})).status()
    assert status["synchronised"] and status["daemon"] == "chrony"
    assert status["offset_s"] == pytest.approx(-0.00025)  # system fast: NTP time is behind our clock
    assert NtpSource(runner({"chronyc": CHRONY_UNSYNCED})).status()["synchronised"] is False
    td = NtpSource(runner({"timedatectl": "NTP=yes\nNTPSynchronized=yes\nTimezone=UTC\n"})).status()
    assert td["synchronised"] and td["daemon"] == "timedatectl"
    nothing = NtpSource(runner({})).status()
    assert nothing["available"] is False and nothing["synchronised"] is False


def test_rtc_source_reads_sysfs(tmp_path):
    clock = ManualClock(1_700_000_000.4)
    (tmp_path / "since_epoch").write_text("1700000003\n")
    (tmp_path / "name").write_text("rtc-ds1307\n")
    status = RtcSource(sysfs=tmp_path, clock=clock).status()
    assert status["available"] and status["chip"] == "rtc-ds1307"
    assert status["offset_s"] == pytest.approx(2.6) and status["synchronised"] is False
    missing = RtcSource(sysfs=tmp_path / "nope", clock=clock).status()
    assert missing["available"] is False and "since_epoch" in missing["error"]


def test_nmea_checksum_and_time_parsing():
    classic = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
    assert nmea_checksum_ok(classic)
    assert parse_nmea_time(classic) == calendar.timegm((1994, 3, 23, 12, 35, 19, 0, 0, 0))
    assert parse_nmea_time("$GPZDA,201530.00,04,07,2002,00,00*60") == pytest.approx(
        calendar.timegm((2002, 7, 4, 20, 15, 30, 0, 0, 0))
    )
    rmc = _nmea("GNRMC,083015.250,A,3921.000,S,07159.000,W,0.0,0.0,141124,,,A")
    assert parse_nmea_time(rmc) == pytest.approx(calendar.timegm((2024, 11, 14, 8, 30, 15, 0, 0, 0)) + 0.25)
    assert parse_nmea_time(_nmea("GPRMC,083015,V,,,,,,,141124,,,N")) is None  # void fix
    assert parse_nmea_time(_nmea("GPGGA,083015,3921.000,S,07159.000,W,1,08,0.9,1200,M,,M,,")) is None
    with pytest.raises(ProtocolError):
        parse_nmea_time(classic.replace("*6A", "*6B"))


def test_gps_source_over_pyserial_loop_skips_garbage():
    port = serial.serial_for_url("loop://", timeout=0.05)
    gps_time = calendar.timegm((2024, 11, 14, 8, 30, 15, 0, 0, 0))
    clock = ManualClock(gps_time - 0.35)  # our clock is 350 ms behind the GPS
    port.write(b"\x00\xffnoise\r\n")
    port.write(_nmea("GPRMC,083014,A,3921.000,S,07159.000,W,0.0,0.0,141124,,,A").replace("*", "*0").encode())
    port.write(_nmea("GPGSV,1,1,00").encode())
    port.write(_nmea("GNRMC,083015.00,A,3921.000,S,07159.000,W,0.0,0.0,141124,,,A").encode())
    status = GpsSource("loop://", clock=clock, port=port, read_timeout_s=2.0).status()
    port.close()
    assert status["available"] and status["gps_epoch_s"] == gps_time
    assert status["offset_s"] == pytest.approx(0.35) and status["synchronised"]


def test_gps_source_silent_port_reports_no_sentence():
    port = serial.serial_for_url("loop://", timeout=0.05)
    status = GpsSource("loop://", port=port, read_timeout_s=0.2).status()
    port.close()
    assert status["synchronised"] is False and "no valid" in status["error"]


def test_gps_source_bad_url_is_reported_not_raised():
    status = GpsSource("nosuchscheme://x").status()
    assert status["available"] is False and "nosuchscheme" in status["error"]


def test_clock_status_prefers_gps_then_ntp_then_rtc(tmp_path):
    cfg = config_from_dict({"clock": {"gps_serial": ""}})
    sources = master_sources(cfg, runner=lambda cmd: CHRONY_CSV if cmd[-1] == "tracking" else "")
    assert [s.name for s in sources] == ["rtc", "ntp"]
    status = clock_status(sources)
    assert status["best"] == "ntp" and status["synchronised"]

    class Broken:
        name = "gps"

        def status(self):
            raise OSError("port vanished")

    status = clock_status([*sources, Broken()])
    assert status["best"] == "ntp" and "port vanished" in status["sources"]["gps"]["error"]
