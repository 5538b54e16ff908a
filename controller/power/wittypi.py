"""WittyPi board readers: which board is fitted, and what its micro-controller and RTC report over I2C.

Registers as uugear's own software defines them (Software/wittypi/utilities.sh and the firmware, WittyPi 4 and 3):

- WittyPi 4: one micro-controller at 0x08. Register 0 is the firmware id (0x26 WittyPi 4 / 4 Mini, 0x37 WittyPi 4
  L3V7), 12 the firmware revision; input voltage = reg 1 + reg 2 / 100 V, output voltage = reg 3 + reg 4 / 100 V,
  output current = reg 5 + reg 6 / 100 A; reg 7 the power mode (0: 5 V over USB, 1: VIN); reg 8 is 1 when the
  system was shut down because of low voltage; reg 11 the reason of the last action (at start-up: why it started,
  e.g. 0x05 "input voltage reached the restore voltage"; the firmware writes 0x04 "low voltage" when it cuts power).
  Reg 50 is the LM75B's temperature register (two bytes, read as a word: MSB first, 11 bits two's complement,
  0.125 °C); regs 58-64 the PCF85063 RTC (seconds .. years, BCD).
- WittyPi 3: a DS3231 RTC at 0x68 (time regs 0x00-0x06 BCD, temperature 0x11/0x12 in 0.25 °C) and its own
  micro-controller at 0x69 (firmware id 0x24; regs 1-8 as on the WittyPi 4).

Neither board needs a kernel RTC overlay: uugear's software talks to the chips over I2C itself. Only reads here; the
WittyPi software owns the configuration registers. smbus2 is imported only by `open_bus()`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Protocol

I2C_BUS = 1

# WittyPi 4 micro-controller (utilities.sh)
WP4_ADDRESS = 0x08
I2C_ID = 0
I2C_VOLTAGE_IN_I, I2C_VOLTAGE_IN_D = 1, 2
I2C_VOLTAGE_OUT_I, I2C_VOLTAGE_OUT_D = 3, 4
I2C_CURRENT_OUT_I, I2C_CURRENT_OUT_D = 5, 6
I2C_POWER_MODE = 7
I2C_LV_SHUTDOWN = 8
I2C_ACTION_REASON = 11
I2C_FW_REVISION = 12
I2C_LM75B_TEMPERATURE = 50
I2C_RTC_SECONDS = 58  # .. I2C_RTC_YEARS = 64: seconds, minutes, hours, days, weekdays, months, years
WP4_FIRMWARE_IDS = {0x26: "WittyPi 4", 0x37: "WittyPi 4 L3V7"}

# WittyPi 3
WP3_RTC_ADDRESS = 0x68
WP3_MC_ADDRESS = 0x69
WP3_FIRMWARE_ID = 0x24
DS3231_TEMP_MSB = 0x11

REASONS = {
    0x01: "alarm1", 0x02: "alarm2", 0x03: "button_click", 0x04: "low_voltage", 0x05: "voltage_restore",
    0x06: "over_temperature", 0x07: "below_temperature", 0x08: "alarm1_delayed", 0x09: "usb_5v_connected",
    0x0A: "power_connected", 0x0B: "reboot", 0x0C: "guaranteed_wake",
}  # fmt: skip
LOW_VOLTAGE_REASONS = {0x04, 0x05}  # cut for low voltage / started again when the voltage recovered


class I2CBus(Protocol):
    """The two SMBus reads the readers use (smbus2.SMBus has them)."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...

    def read_word_data(self, i2c_addr: int, register: int) -> int: ...


@dataclass(frozen=True)
class BoardReading:
    """What a WittyPi board reports; None where the board has no such register."""

    board: str
    address: str
    firmware_id: int
    firmware_revision: int | None = None
    temperature_c: float | None = None
    input_voltage_v: float | None = None
    output_voltage_v: float | None = None
    output_current_a: float | None = None
    power_mode: str | None = None  # "usb_5v" or "vin"
    low_voltage_shutdown: bool = False  # the last shutdown was the board cutting power for low voltage
    action_reason: str | None = None  # WittyPi 4: why it last started / stopped
    rtc_time: str | None = None  # ISO 8601, as the board's RTC keeps it (UTC on a station)

    def to_status(self) -> dict:
        return asdict(self)


def _bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def _rtc_iso(regs: list[int], years_index: int, months_index: int) -> str | None:
    """seconds, minutes, hours, day from `regs` (BCD); month/year at the given indexes; None when invalid."""
    try:
        return datetime(
            2000 + _bcd(regs[years_index]), _bcd(regs[months_index] & 0x1F), _bcd(regs[3] & 0x3F),
            _bcd(regs[2] & 0x3F), _bcd(regs[1] & 0x7F), _bcd(regs[0] & 0x7F), tzinfo=UTC,
        ).isoformat()  # fmt: skip
    except ValueError:
        return None


def _fixed(bus: I2CBus, address: int, reg_int: int, reg_dec: int) -> float:
    return round(bus.read_byte_data(address, reg_int) + bus.read_byte_data(address, reg_dec) / 100.0, 2)


def _voltages(bus: I2CBus, address: int) -> dict:
    mode = bus.read_byte_data(address, I2C_POWER_MODE)
    return {
        "power_mode": "vin" if mode == 1 else "usb_5v",
        # in 5 V USB mode the input voltage is not measured (uugear's daemon does not print it either)
        "input_voltage_v": _fixed(bus, address, I2C_VOLTAGE_IN_I, I2C_VOLTAGE_IN_D) if mode == 1 else None,
        "output_voltage_v": _fixed(bus, address, I2C_VOLTAGE_OUT_I, I2C_VOLTAGE_OUT_D),
        "output_current_a": _fixed(bus, address, I2C_CURRENT_OUT_I, I2C_CURRENT_OUT_D),
    }


def lm75b_celsius(word: int) -> float:
    """An SMBus word read of the LM75B temperature register (MSB in the low byte) in °C."""
    raw = (((word & 0xFF) << 8) | (word >> 8)) >> 5
    if raw >= 0x400:
        raw -= 0x800
    return raw * 0.125


def ds3231_celsius(msb: int, lsb: int) -> float:
    whole = msb - 256 if msb & 0x80 else msb
    return whole + (lsb >> 6) * 0.25


def read_wittypi4(bus: I2CBus, firmware_id: int) -> BoardReading:
    a = WP4_ADDRESS
    reason_code = bus.read_byte_data(a, I2C_ACTION_REASON)
    rtc = [bus.read_byte_data(a, I2C_RTC_SECONDS + i) for i in range(7)]
    return BoardReading(
        board=WP4_FIRMWARE_IDS[firmware_id], address=f"0x{a:02x}", firmware_id=firmware_id,
        firmware_revision=bus.read_byte_data(a, I2C_FW_REVISION),
        temperature_c=lm75b_celsius(bus.read_word_data(a, I2C_LM75B_TEMPERATURE)),
        low_voltage_shutdown=bus.read_byte_data(a, I2C_LV_SHUTDOWN) == 1 or reason_code in LOW_VOLTAGE_REASONS,
        action_reason=REASONS.get(reason_code, f"unknown 0x{reason_code:02x}"),
        rtc_time=_rtc_iso(rtc, years_index=6, months_index=5), **_voltages(bus, a),
    )  # fmt: skip


def read_wittypi3(bus: I2CBus, firmware_id: int | None) -> BoardReading:
    rtc = [bus.read_byte_data(WP3_RTC_ADDRESS, i) for i in range(7)]
    reading = {
        "temperature_c": ds3231_celsius(bus.read_byte_data(WP3_RTC_ADDRESS, DS3231_TEMP_MSB),
                                        bus.read_byte_data(WP3_RTC_ADDRESS, DS3231_TEMP_MSB + 1)),
        "rtc_time": _rtc_iso(rtc, years_index=6, months_index=5),
    }  # fmt: skip
    if firmware_id is not None:  # the micro-controller answered: voltages and the low-voltage flag
        reading.update(_voltages(bus, WP3_MC_ADDRESS))
        reading["low_voltage_shutdown"] = bus.read_byte_data(WP3_MC_ADDRESS, I2C_LV_SHUTDOWN) == 1
    return BoardReading(board="WittyPi 3", address=f"0x{WP3_RTC_ADDRESS:02x}",
                        firmware_id=firmware_id if firmware_id is not None else -1, **reading)  # fmt: skip


def _try_byte(bus: I2CBus, address: int, register: int) -> int | None:
    try:
        return bus.read_byte_data(address, register)
    except OSError:  # nothing answers at that address (ENXIO / EREMOTEIO)
        return None


def detect(bus: I2CBus) -> str | None:
    """ "wittypi4", "wittypi3" or None (no WittyPi answers)."""
    if _try_byte(bus, WP4_ADDRESS, I2C_ID) in WP4_FIRMWARE_IDS:
        return "wittypi4"
    if _try_byte(bus, WP3_RTC_ADDRESS, 0) is not None:
        return "wittypi3"
    return None


def read_board(bus: I2CBus) -> BoardReading | None:
    """Detect the board and read it; None when no WittyPi answers. OSError when it stops answering mid-read."""
    kind = detect(bus)
    if kind == "wittypi4":
        return read_wittypi4(bus, bus.read_byte_data(WP4_ADDRESS, I2C_ID))
    if kind == "wittypi3":
        mc = _try_byte(bus, WP3_MC_ADDRESS, I2C_ID)
        return read_wittypi3(bus, mc if mc == WP3_FIRMWARE_ID else None)
    return None


class NoI2C(Exception):
    """There is no I2C bus to read (not a Pi, I2C disabled, or smbus2 missing): one line saying which."""


def open_bus(bus: int = I2C_BUS):
    """smbus2.SMBus on /dev/i2c-`bus`; NoI2C when the device node or smbus2 is missing."""
    path = f"/dev/i2c-{bus}"
    if not os.path.exists(path):
        raise NoI2C(f"no {path} (enable I2C: raspi-config nonint do_i2c 0)")
    try:
        from smbus2 import SMBus
    except ImportError as e:
        raise NoI2C(f"smbus2 is not installed ({e}); pip install '.[pi]'") from e
    return SMBus(bus)


def read_installed_board(bus: int = I2C_BUS) -> BoardReading | None:
    """Open the bus, read the fitted board, close the bus. NoI2C / OSError as `open_bus` and `read_board`."""
    smbus = open_bus(bus)
    try:
        return read_board(smbus)
    finally:
        smbus.close()
