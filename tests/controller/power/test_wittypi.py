"""WittyPi 4 / 3 readers against a stand-in I2C bus that follows the registers of uugear's utilities.sh and firmware."""

from __future__ import annotations

import asyncio
import errno

import pytest
import structlog

from controller.power import wittypi
from controller.power.board import PowerBoardMonitor
from controller.power.wittypi import NoI2C, lm75b_celsius, read_board


class StandInBus:
    """smbus2.SMBus's read_byte_data / read_word_data on a register map per address.

    A word read returns the register's byte in the low byte and the next one in the high byte (SMBus order), except
    the WittyPi 4's virtual LM75B temperature register 50, which is two bytes of its own (MSB first, as the LM75B).
    """

    def __init__(self, chips: dict[int, dict[int, int]], lm75b: tuple[int, int] | None = None):
        self.chips = chips
        self.lm75b = lm75b
        self.reads: list[tuple[int, int]] = []

    def _chip(self, addr: int) -> dict[int, int]:
        if addr not in self.chips:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")  # what the kernel answers for no ACK
        return self.chips[addr]

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        self.reads.append((i2c_addr, register))
        return self._chip(i2c_addr).get(register, 0)

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        chip = self._chip(i2c_addr)
        if i2c_addr == wittypi.WP4_ADDRESS and register == wittypi.I2C_LM75B_TEMPERATURE:
            msb, lsb = self.lm75b
            return msb | (lsb << 8)
        return chip.get(register, 0) | (chip.get(register + 1, 0) << 8)

    def close(self) -> None:
        pass


def lm75b_bytes(celsius: float) -> tuple[int, int]:
    raw = int(round(celsius / 0.125)) & 0x7FF
    word = raw << 5
    return word >> 8, word & 0xFF


def wp4_bus(vin=(11, 87), reason=0x01, lv=0, mode=1, celsius=25.5) -> StandInBus:
    regs = {
        0: 0x26, 1: vin[0], 2: vin[1], 3: 5, 4: 12, 5: 0, 6: 43, 7: mode, 8: lv, 11: reason, 12: 0x05,
        # PCF85063 through the MCU: 2026-03-14 15:09:26 (BCD)
        58: 0x26, 59: 0x09, 60: 0x15, 61: 0x14, 62: 0x06, 63: 0x03, 64: 0x26,
    }  # fmt: skip
    return StandInBus({wittypi.WP4_ADDRESS: regs}, lm75b=lm75b_bytes(celsius))


def test_wittypi4_detected_and_read():
    r = read_board(wp4_bus())
    assert r.board == "WittyPi 4" and r.firmware_id == 0x26 and r.firmware_revision == 5
    assert r.temperature_c == 25.5
    assert (r.input_voltage_v, r.output_voltage_v, r.output_current_a) == (11.87, 5.12, 0.43)
    assert r.power_mode == "vin"
    assert r.action_reason == "alarm1" and r.low_voltage_shutdown is False
    assert r.rtc_time == "2026-03-14T15:09:26+00:00"


@pytest.mark.parametrize(("reason", "lv"), [(0x05, 0), (0x04, 0), (0x01, 1)])
def test_wittypi4_low_voltage_shutdown_from_reason_or_flag(reason, lv):
    r = read_board(wp4_bus(vin=(10, 95), reason=reason, lv=lv))
    assert r.low_voltage_shutdown is True


def test_wittypi4_on_usb_power_reports_no_input_voltage():
    r = read_board(wp4_bus(mode=0))
    assert r.power_mode == "usb_5v" and r.input_voltage_v is None and r.output_voltage_v == 5.12


@pytest.mark.parametrize("celsius", [25.5, -10.25, 0.0, 84.875, -40.0])
def test_lm75b_temperature_as_utilities_sh_decodes_it(celsius):
    msb, lsb = lm75b_bytes(celsius)
    assert lm75b_celsius(msb | (lsb << 8)) == celsius


def test_wittypi3_detected_by_its_ds3231_and_mcu():
    ds3231 = {0: 0x26, 1: 0x09, 2: 0x15, 3: 0x14, 4: 0x06, 5: 0x03, 6: 0x26, 0x11: 0xFB, 0x12: 0x40}  # -5 + .25
    mcu = {0: 0x24, 1: 12, 2: 5, 3: 5, 4: 1, 5: 0, 6: 80, 7: 1, 8: 1}
    r = read_board(StandInBus({0x68: ds3231, 0x69: mcu}))
    assert r.board == "WittyPi 3" and r.firmware_id == 0x24
    assert r.temperature_c == -4.75  # DS3231: -5 in the MSB, +0.25 in the LSB's top bits
    assert r.input_voltage_v == 12.05 and r.output_current_a == 0.8
    assert r.low_voltage_shutdown is True
    assert r.rtc_time == "2026-03-14T15:09:26+00:00"


def test_wittypi3_without_its_mcu_still_reads_the_rtc():
    r = read_board(StandInBus({0x68: {0x11: 20, 0x12: 0x80, 4: 1, 5: 1}}))
    assert r.board == "WittyPi 3" and r.firmware_id == -1 and r.temperature_c == 20.5
    assert r.input_voltage_v is None and r.low_voltage_shutdown is False


def test_no_board_and_unknown_firmware_at_0x08():
    assert read_board(StandInBus({})) is None
    assert read_board(StandInBus({0x08: {0: 0x99}})) is None  # something else at 0x08, not a WittyPi


def test_open_bus_without_device_node_is_one_clear_line():
    with pytest.raises(NoI2C, match=r"no /dev/i2c-99 \(enable I2C"):
        wittypi.open_bus(99)


def test_open_bus_uses_smbus2(monkeypatch, tmp_path):
    import smbus2

    opened = []
    monkeypatch.setattr(wittypi.os.path, "exists", lambda p: p == "/dev/i2c-1")
    monkeypatch.setattr(smbus2, "SMBus", lambda bus: opened.append(bus) or wp4_bus())
    assert wittypi.read_installed_board().board == "WittyPi 4"
    assert opened == [1]


# ---------------------------------------------------------------------------------------------- the service


def test_monitor_logs_a_low_voltage_shutdown_at_start_and_reports_status():
    async def main():
        mon = PowerBoardMonitor(reader=lambda: read_board(wp4_bus(vin=(11, 2), reason=0x05, lv=1)))
        with structlog.testing.capture_logs() as logs:
            await mon.start()
            await mon.stop()
        return mon, logs

    mon, logs = asyncio.run(main())
    events = {e["event"]: e for e in logs}
    assert events["power_board_found"]["board"] == "WittyPi 4"
    lv = events["last_shutdown_low_voltage"]
    assert lv["log_level"] == "warning" and lv["action_reason"] == "voltage_restore" and lv["input_voltage_v"] == 11.02
    status = mon.status()
    assert status["board"] == "WittyPi 4" and status["input_voltage_v"] == 11.02 and status["temperature_c"] == 25.5
    assert status["low_voltage_shutdown"] is True and status["read_at"] is not None


def test_monitor_without_board_reports_the_problem_once():
    bus = wp4_bus()

    def reader():
        return read_board(bus)

    async def main():
        mon = PowerBoardMonitor(reader=reader, interval_s=3600)
        with structlog.testing.capture_logs() as logs:
            await mon.start()
            del bus.chips[0x08]  # unplugged
            await mon.refresh()
            await mon.refresh()
            await mon.stop()
        return mon, logs

    mon, logs = asyncio.run(main())
    assert [e["event"] for e in logs].count("power_board_unreadable") == 1
    assert "last_shutdown_low_voltage" not in [e["event"] for e in logs]
    assert mon.status() == {"board": None, "problem": mon.problem, "read_at": mon.status()["read_at"]}
    assert "no WittyPi answers" in mon.problem
