"""The real picamera2 / seabreeze / gpiozero backend code, run against small stand-ins of the vendor APIs."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import numpy as np
import pytest

from controller.config import Config, config_from_dict
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError
from controller.hardware.factory import open_camera, open_power_lines, open_spectrometer
from controller.hardware.gpio import GpioPowerLines, mock_station_factory
from controller.hardware.picamera2_backend import area_bin, unpacked_format
from controller.timekeeping.clock import ManualClock

FULL_W, FULL_H = 2592, 1944


class FakeRequest:
    def __init__(self, cam: FakePicamera2):
        self.cam = cam

    def make_array(self, name: str) -> np.ndarray:
        assert name == "raw"
        # unpacked 10-bit raw: 2 bytes per pixel, rows padded to a stride (as the Pi's ISP delivers them)
        stride = FULL_W * 2 + 64
        buf = np.zeros((FULL_H, stride), dtype=np.uint8)
        pixels = self.cam.scene_pixels()
        buf[:, : FULL_W * 2] = pixels.astype("<u2").view(np.uint8).reshape(FULL_H, FULL_W * 2)
        return buf

    def get_metadata(self) -> dict:
        return dict(self.cam.metadata())


class FakePicamera2:
    """The documented picamera2 calls the backend uses."""

    instances: list[FakePicamera2] = []
    fail_capture: Exception | None = None

    def __init__(self, camera_num: int = 0):
        self.camera_num = camera_num
        self.sensor_format = "SGBRG10_CSI2P"
        self.sensor_resolution = (FULL_W, FULL_H)
        self.controls: dict = {}
        self.applied_exposure = 1000
        self.calls: list[str] = []
        self.started = False
        FakePicamera2.instances.append(self)

    def create_still_configuration(self, raw=None, buffer_count=1, **kw):
        self.calls.append("create_still_configuration")
        return {"raw": raw, "buffer_count": buffer_count}

    def configure(self, config):
        self.calls.append("configure")
        self.config = config

    def set_controls(self, controls: dict):
        self.controls.update(controls)

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def close(self):
        self.calls.append("close")

    def scene_pixels(self) -> np.ndarray:
        yy, xx = np.mgrid[0:FULL_H, 0:FULL_W]
        return ((xx // 4 + yy // 4) % 1024).astype(np.uint16)

    def metadata(self) -> dict:
        # the sensor applies a new exposure one frame late and reports it line-quantised
        reported = int(self.applied_exposure * 0.99983)
        self.applied_exposure = self.controls.get("ExposureTime", self.applied_exposure)
        return {"ExposureTime": reported, "AnalogueGain": self.controls.get("AnalogueGain", 1.0),
                "SensorTemperature": 41.5}  # fmt: skip

    @contextmanager
    def captured_request(self):
        assert self.started
        if FakePicamera2.fail_capture is not None:
            raise FakePicamera2.fail_capture
        yield FakeRequest(self)


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    FakePicamera2.fail_capture = None
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_picamera2_backend_captures_binned_unpacked_raw(fake_picamera2):
    cfg = config_from_dict({"camera": {"backend": "picamera2", "shutter_us": 200_000, "gain": 2.0}})
    cam = open_camera(cfg, "A", ManualClock(1000.0))
    fake = fake_picamera2.instances[0]
    assert fake.config["raw"] == {"format": "SGBRG10", "size": (FULL_W, FULL_H)}
    assert fake.controls["AeEnable"] is False
    assert fake.controls["ExposureTime"] == 200_000 and fake.controls["AnalogueGain"] == 2.0
    assert cam.set_exposure(150_000) == 150_000
    frame = cam.capture()
    assert frame.pixels.shape == (486, 648) and frame.pixels.dtype == np.uint16
    assert frame.exposure_us == int(150_000 * 0.99983)  # what the sensor reported, not what was asked
    assert frame.sensor_temperature_c == 41.5 and frame.gain == 2.0
    expected = area_bin(fake.scene_pixels(), 648, 486)
    np.testing.assert_array_equal(frame.pixels, expected)
    assert frame.pixels[10, 20] == (20 + 10) % 1024  # 4x4 blocks of a constant value bin to that value
    cam.close()
    cam.close()
    assert fake.calls.count("close") == 1
    with pytest.raises(DeviceUnavailable):
        cam.capture()


def test_picamera2_errors_carry_the_device(fake_picamera2):
    cfg = config_from_dict({"camera": {"backend": "picamera2"}})
    cam = open_camera(cfg, "B", ManualClock())
    fake_picamera2.fail_capture = TimeoutError("frame wait timed out")
    with pytest.raises(DeviceTimeout, match="camera B"):
        cam.capture()
    fake_picamera2.fail_capture = RuntimeError("dma buffer")
    with pytest.raises(HardwareError, match="camera B: capture failed"):
        cam.capture()


def test_picamera2_missing_is_device_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(DeviceUnavailable, match="picamera2 is not installed"):
        open_camera(config_from_dict({"camera": {"backend": "picamera2"}}), "A", ManualClock())


def test_unpacked_format_and_binning():
    assert unpacked_format("SRGGB12_CSI2P") == "SRGGB12"
    assert unpacked_format("SBGGR10") == "SBGGR10"
    x = np.arange(16, dtype=np.uint16).reshape(4, 4)
    assert area_bin(x, 2, 2).tolist() == [[2, 4], [10, 12]]  # block means, rounded half to even


# ----------------------------------------------------------------------------------------------- seabreeze


class FakeSeabreezeSpectrometer:
    def __init__(self, device):
        self.device = device
        self.serial_number = device.serial_number
        self.model = "FLAMES"
        self.integration_time_micros_limits = (1000, 65_000_000)
        self.set_times: list[int] = []
        self.scans = 0
        self.closed = False

    def integration_time_micros(self, us: int) -> None:
        self.set_times.append(us)

    def wavelengths(self):
        return np.linspace(242.0, 404.0, 2048)

    def intensities(self, correct_dark_counts=False, correct_nonlinearity=False):
        self.scans += 1
        return np.full(2048, 1000.0 + 10.0 * self.scans)

    def close(self):
        self.closed = True


@pytest.fixture
def fake_seabreeze(monkeypatch):
    package = types.ModuleType("seabreeze")
    module = types.ModuleType("seabreeze.spectrometers")
    devices = [types.SimpleNamespace(serial_number="FLMS12345", model="FLAMES")]
    opened: list[FakeSeabreezeSpectrometer] = []

    def spectrometer(device):
        s = FakeSeabreezeSpectrometer(device)
        opened.append(s)
        return s

    module.list_devices = lambda: list(devices)
    module.Spectrometer = spectrometer
    package.spectrometers = module
    monkeypatch.setitem(sys.modules, "seabreeze", package)
    monkeypatch.setitem(sys.modules, "seabreeze.spectrometers", module)
    return types.SimpleNamespace(devices=devices, opened=opened)


def test_seabreeze_backend(fake_seabreeze):
    cfg = config_from_dict({"spectrometer": {"backend": "seabreeze", "integration_ms": 250}})
    spec = open_spectrometer(cfg, ManualClock(5.0))
    fake = fake_seabreeze.opened[0]
    assert fake.set_times == [250_000]
    assert (spec.serial, spec.model) == ("FLMS12345", "FLAMES")
    assert (spec.min_integration_ms, spec.max_integration_ms) == (1.0, 65_000.0)
    assert spec.set_integration_ms(0) == 1  # clamped to the device's limits
    assert spec.set_integration_ms(100_000) == 65_000
    spec.set_integration_ms(1000)
    s = spec.capture(coadd=3)
    assert fake.scans == 3
    np.testing.assert_allclose(s.counts, 1020.0)  # mean of 1010, 1020, 1030
    assert s.as_array().shape == (2, 2048) and s.integration_ms == 1000 and s.coadd == 3
    spec.close()
    spec.close()
    assert fake.closed


def test_seabreeze_no_device(fake_seabreeze):
    fake_seabreeze.devices.clear()
    with pytest.raises(DeviceUnavailable, match="no Ocean Optics"):
        open_spectrometer(config_from_dict({"spectrometer": {"backend": "seabreeze"}}), ManualClock())


# ---------------------------------------------------------------------------------------------------- gpio


def test_wake_pulse_reaches_slave_gpio3():
    cfg = Config()
    lines = open_power_lines(cfg)
    lines.pulse_wake(0.02)
    states = [s.state for s in lines.slave_pin.states]
    assert states == [True, False, True]  # idle high, pulled low, released
    low = lines.slave_pin.states[1].timestamp
    high = lines.slave_pin.states[2].timestamp
    assert high - low >= 0.015
    lines.close()
    lines.close()


def test_halt_line_and_given_factory():
    factory, slave_pin = mock_station_factory(Config().gpio)
    lines = GpioPowerLines(Config().gpio, factory=factory)
    lines.pulse_halt(0.01)
    halt_pin = factory.pin(Config().gpio.halt_pin)
    assert [s.state for s in halt_pin.states][-2:] == [False, True]
    assert [s.state for s in slave_pin.states] == [True]  # the wake line did not move
    lines.close()


def test_unknown_and_unavailable_pin_factories():
    from controller.hardware.gpio import make_pin_factory

    with pytest.raises(DeviceUnavailable, match="unknown gpio backend"):
        make_pin_factory("wiringpi")
