"""The real picamera2 / seabreeze / gpiozero backend code, run against small stand-ins of the vendor APIs."""

from __future__ import annotations

import functools
import sys
import time
import types
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pytest
import structlog

from controller.config import Config, config_from_dict
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError
from controller.hardware.checks import check_frame
from controller.hardware.factory import open_camera, open_power_lines, open_spectrometer
from controller.hardware.gpio import GpioPowerLines, mock_station_factory
from controller.hardware.picamera2_backend import area_bin, unpacked_format
from controller.storage.names import ImageName
from controller.timekeeping.clock import ManualClock

FULL_W, FULL_H = 2592, 1944


class FakeRequest:
    def __init__(self, cam: FakePicamera2, frame: dict):
        self.cam = cam
        self.frame = frame

    def make_array(self, name: str) -> np.ndarray:
        assert name == "raw"
        return self.cam.raw_buffer(self.frame)

    def get_metadata(self) -> dict:
        return dict(self.frame["metadata"])


class FakePicamera2:
    """The documented picamera2 calls the backend uses (picamera2.py, request.py, sensor_format.py).

    `platform` "vc4" (Pi 3/4) delivers the raw format asked for (unpacked right-aligned uint16, or `_CSI2P` packed when
    `packed`); "pisp" (Pi 5) always delivers 16 bits per pixel, left-aligned, as `S<order>16`, and
    "pisp_compressed" as `<order>_PISP_COMP1`, which only `helpers.decompress` turns into 16-bit values. Frames stream
    continuously: one is always queued from before the caller asked (all zeros, exposed 50 ms ago), and
    `captured_request(flush=t)` drops frames whose exposure started before t, as picamera2's `wait_for_timestamp_`.
    """

    instances: list[FakePicamera2] = []
    fail_capture: Exception | None = None
    platform = "vc4"
    packed = False
    bits = 10
    exposure_limits = (26, 3_066_985)  # OV5647-like, µs

    def __init__(self, camera_num: int = 0):
        self.camera_num = camera_num
        order = "SGBRG" if FakePicamera2.bits == 10 else "SRGGB"
        self.sensor_format = f"{order}{FakePicamera2.bits}_CSI2P"
        self.sensor_resolution = (FULL_W, FULL_H)
        self.sensor_modes = [
            {"format": self.sensor_format, "unpacked": f"{order}{FakePicamera2.bits}", "bit_depth": FakePicamera2.bits,
             "size": (FULL_W // 4, FULL_H // 4)},
            {"format": self.sensor_format, "unpacked": f"{order}{FakePicamera2.bits}", "bit_depth": FakePicamera2.bits,
             "size": (FULL_W, FULL_H)},
        ]  # fmt: skip
        lo, hi = FakePicamera2.exposure_limits
        self.camera_controls = {"ExposureTime": (lo, hi, 20000), "FrameDurationLimits": (33333, hi + 100_000, 33333)}
        self.controls: dict = {}
        self.applied_exposure = 1000
        self.calls: list[str] = []
        self.flushes: list[int | None] = []
        self.queue: list[dict] = []
        self.started = False
        FakePicamera2.instances.append(self)

    def create_still_configuration(self, raw=None, sensor=None, buffer_count=1, **kw):
        self.calls.append("create_still_configuration")
        return {"raw": dict(raw), "sensor": dict(sensor or {}), "buffer_count": buffer_count}

    def configure(self, config):
        assert not self.started, "Camera must be stopped before configuring"
        self.calls.append("configure")
        self.config = config
        fmt = config["raw"]["format"]
        order, bits = fmt.rstrip("0123456789"), int(fmt[len(fmt.rstrip("0123456789")) :])
        if FakePicamera2.platform == "pisp":
            accepted = f"{order}16"
        elif FakePicamera2.platform == "pisp_compressed":  # picamera2's name: no "S", packing PISP_COMP1
            accepted = f"{order.removeprefix('S')}_PISP_COMP1"
        else:
            accepted = f"{fmt}_CSI2P" if FakePicamera2.packed else fmt
        self.accepted = {"raw": {"format": accepted, "size": config["raw"]["size"], "stride": 0},
                         "sensor": {"bit_depth": config["sensor"].get("bit_depth", bits),
                                    "output_size": config["raw"]["size"]}}  # fmt: skip

    @property
    def helpers(self):
        """picamera2's Helpers.decompress: PiSP-compressed raw to 16-bit values, left-aligned."""
        bits = FakePicamera2.bits
        return types.SimpleNamespace(decompress=lambda buf: buf["compressed"] << np.uint16(16 - bits))

    def camera_configuration(self) -> dict:
        return self.accepted

    def set_controls(self, controls: dict):
        self.controls.update(controls)

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def close(self):
        self.calls.append("close")

    def scene_pixels(self) -> np.ndarray:
        return _scene_pixels(FakePicamera2.bits)

    def raw_buffer(self, frame: dict) -> np.ndarray:
        from controller.hardware.raw import pack_csi2p

        pixels = np.zeros((FULL_H, FULL_W), np.uint16) if frame["stale"] else self.scene_pixels()
        fmt = self.accepted["raw"]["format"]
        if fmt.endswith("_PISP_COMP1"):
            return {"compressed": pixels}  # opaque to the backend: only helpers.decompress reads it
        if fmt.endswith("_CSI2P"):
            return pack_csi2p(pixels, FakePicamera2.bits, stride=FULL_W * 2)
        if fmt.endswith("16"):
            pixels = pixels << np.uint16(16 - FakePicamera2.bits)  # PiSP: left-aligned in 16 bits
        # unpacked: 2 bytes per pixel, rows padded to a stride (as the Pi's ISP delivers them)
        stride = FULL_W * 2 + 64
        buf = np.zeros((FULL_H, stride), dtype=np.uint8)
        buf[:, : FULL_W * 2] = pixels.astype("<u2").view(np.uint8).reshape(FULL_H, FULL_W * 2)
        return buf

    def _frame(self, start_ns: int, stale: bool) -> dict:
        # the sensor applies a new exposure one frame late and reports it line-quantised
        exposure = self.applied_exposure
        self.applied_exposure = self.controls.get("ExposureTime", self.applied_exposure)
        reported = int(exposure * 0.99983)
        md = {"ExposureTime": reported, "AnalogueGain": self.controls.get("AnalogueGain", 1.0),
              "SensorTemperature": 41.5, "SensorTimestamp": start_ns + 1000 * reported}  # fmt: skip
        return {"metadata": md, "stale": stale}

    @contextmanager
    def captured_request(self, wait=None, flush=None):
        assert self.started
        if FakePicamera2.fail_capture is not None:
            raise FakePicamera2.fail_capture
        self.flushes.append(flush)
        if not self.queue:  # a frame the pipeline finished before the caller asked
            self.queue.append(self._frame(time.monotonic_ns() - 50_000_000, stale=True))
        if flush is not None:
            self.queue = [f for f in self.queue
                          if f["metadata"]["SensorTimestamp"] - 1000 * f["metadata"]["ExposureTime"] >= flush]  # fmt: skip
        if not self.queue:
            self.queue.append(self._frame(max(time.monotonic_ns(), flush or 0), stale=False))
        yield FakeRequest(self, self.queue.pop(0))


@functools.cache
def _scene_pixels(bits: int) -> np.ndarray:
    """The full-size sensor's test pattern (made once per bit depth, read-only)."""
    yy, xx = np.ogrid[0:FULL_H, 0:FULL_W]
    pixels = ((3 * (xx // 4) + 5 * (yy // 4)) % (1 << bits)).astype(np.uint16)
    pixels.setflags(write=False)
    return pixels


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    FakePicamera2.fail_capture = None
    for attr, value in (("platform", "vc4"), ("packed", False), ("bits", 10), ("exposure_limits", (26, 3_066_985))):
        monkeypatch.setattr(FakePicamera2, attr, value)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_picamera2_backend_captures_binned_unpacked_raw(fake_picamera2):
    cfg = config_from_dict({"camera": {"backend": "picamera2", "shutter_us": 200_000, "gain": 2.0}})
    cam = open_camera(cfg, "A", ManualClock(1000.0))
    fake = fake_picamera2.instances[0]
    assert fake.config["raw"] == {"format": "SGBRG10", "size": (FULL_W, FULL_H)}  # the full-size mode, unpacked
    assert fake.config["sensor"] == {"output_size": (FULL_W, FULL_H), "bit_depth": 10}
    assert fake.controls["AeEnable"] is False
    assert fake.controls["ExposureTime"] == 200_000 and fake.controls["AnalogueGain"] == 2.0
    assert cam.set_exposure(150_000) == 150_000
    frame = cam.capture()
    assert frame.pixels.shape == (486, 648) and frame.pixels.dtype == np.uint16
    assert frame.exposure_us == int(150_000 * 0.99983)  # what the sensor reported, not what was asked
    assert frame.sensor_temperature_c == 41.5 and frame.gain == 2.0 and frame.bit_depth == 10
    expected = area_bin(fake.scene_pixels(), 648, 486)
    np.testing.assert_array_equal(frame.pixels, expected)
    assert frame.pixels[10, 20] == (3 * 20 + 5 * 10) % 1024  # 4x4 blocks of a constant value bin to that value
    cam.close()
    cam.close()
    assert fake.calls.count("close") == 1
    with pytest.raises(DeviceUnavailable):
        cam.capture()


@pytest.mark.parametrize(
    ("platform", "packed", "bits"),
    [("vc4", False, 10), ("vc4", True, 10), ("vc4", False, 12), ("vc4", True, 12), ("pisp", False, 10),
     ("pisp", False, 12), ("pisp_compressed", False, 12)],
)  # fmt: skip
def test_picamera2_raw_format_and_bit_depth_from_the_accepted_configuration(fake_picamera2, platform, packed, bits):
    """Pi 3/4 packed or unpacked, Pi 5 16-bit left-aligned: values come out in the sensor's own range."""
    fake_picamera2.platform, fake_picamera2.packed, fake_picamera2.bits = platform, packed, bits
    cfg = config_from_dict({"camera": {"backend": "picamera2", "shutter_us": 10_000}})
    cam = open_camera(cfg, "A", ManualClock(1000.0))
    fake = fake_picamera2.instances[0]
    assert cam.layout.format == fake.accepted["raw"]["format"] and cam.layout.sensor_bits == bits
    frame = check_frame(cam.capture(), 648, 486)
    assert frame.bit_depth == bits and frame.metadata["raw_format"] == fake.accepted["raw"]["format"]
    np.testing.assert_array_equal(frame.pixels, area_bin(fake.scene_pixels(), 648, 486))
    assert int(frame.pixels.max()) > (1 << (bits - 1))  # the top of the range is reached, not scaled away
    cam.close()


def test_picamera2_frames_are_requested_after_the_slot_starts(fake_picamera2):
    """A frame exposed before capture() was called (queued in the pipeline) is never returned for this slot."""
    cam = open_camera(config_from_dict({"camera": {"backend": "picamera2", "shutter_us": 1000}}), "B", ManualClock())
    fake = fake_picamera2.instances[0]
    for _ in range(3):
        called = time.monotonic_ns()
        frame = cam.capture()
        assert fake.flushes and all(f is not None and f >= called for f in fake.flushes[-1:])
        start_ns = frame.metadata["sensor_timestamp_ns"] - 1000 * frame.exposure_us
        assert start_ns >= called
        assert int(frame.pixels.max()) > 0  # not the stale all-zero frame
    cam.close()


def test_picamera2_exposure_clamped_to_the_sensor_limits_and_reported(fake_picamera2):
    fake_picamera2.exposure_limits = (100, 1_000_000)
    cfg = config_from_dict({"camera": {"backend": "picamera2", "shutter_us": 5_000_000}})
    with structlog.testing.capture_logs() as logs:
        cam = open_camera(cfg, "A", ManualClock(1000.0))
        assert cam.exposure_us == 1_000_000
        assert cam.set_exposure(10) == 100
        assert cam.set_exposure(2_000_000) == 1_000_000
    fake = fake_picamera2.instances[0]
    assert fake.controls["ExposureTime"] == 1_000_000
    lo, hi = fake.controls["FrameDurationLimits"]
    assert lo >= 1_000_000 and hi <= fake.camera_controls["FrameDurationLimits"][1]
    clamped = [e for e in logs if e["event"] == "exposure_clamped"]
    assert [(e["requested_us"], e["used_us"]) for e in clamped] == [(5_000_000, 1_000_000), (10, 100),
                                                                    (2_000_000, 1_000_000)]  # fmt: skip
    frame = cam.capture()  # the sensor can do it: no frames wasted waiting for an impossible exposure
    assert frame.exposure_us == int(1_000_000 * 0.99983)
    name = ImageName(datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC), "A", 1, frame.exposure_us, "Plume")
    assert str(name) == "2026-03-14T150926_fltrA_1ag_999830ss_Plume.png"  # the runner names files from the frame
    cam.close()


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


@pytest.mark.parametrize("bits", [10, 12])
def test_csi2p_unpacking_round_trips(bits):
    from controller.hardware.raw import pack_csi2p, unpack_csi2p

    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=(6, 16), dtype=np.uint16)
    packed = pack_csi2p(values, bits, stride=64)
    assert packed.shape == (6, 64) and packed[:, : 16 * bits // 8].size == 6 * 16 * bits // 8
    np.testing.assert_array_equal(unpack_csi2p(packed, 16, bits), values)
    # the documented MIPI layout: the first byte is pixel 0's high 8 bits
    assert packed[0, 0] == values[0, 0] >> (bits - 8)


def test_raw_layout_refuses_what_it_cannot_read():
    from controller.hardware.raw import RawLayout

    with pytest.raises(ValueError, match="holds 10 bits, the sensor gives 12"):
        RawLayout("SRGGB10", 8, 8, 12).check()
    with pytest.raises(ValueError, match="unknown packing"):
        RawLayout("SRGGB10_MIPI", 8, 8, 10).check()
    assert RawLayout("BGGR_PISP_COMP1", 8, 8, 12).container_bits == 16


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


def test_seabreeze_pinned_to_the_release_with_aarch64_wheels_everywhere():
    """The Pi gets a wheel (2.10.0: manylinux aarch64, cp311), and the tests run against that same release."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]
    pins = {extra: [r for r in reqs if r.startswith("seabreeze")] for extra, reqs in
            project["optional-dependencies"].items() if any(r.startswith("seabreeze") for r in reqs)}  # fmt: skip
    assert pins == {"pi": ["seabreeze==2.10.0"], "dev": ["seabreeze==2.10.0"]}
    assert version("seabreeze") == "2.10.0"


# ---------------------------------------------------------------------------------------------------- gpio


def test_wake_pulse_reaches_slave_gpio3():
    cfg = Config()
    lines = open_power_lines(cfg)
    lines.pulse_wake(0.02)
    states = [s.state for s in lines.slave_pin.states]
    assert states == [True, False, True]  # idle high, pulled low, released
    # MockPin stamps each state with the time since the previous change: states[2] says how long the line was low
    # (a lower bound only: a busy machine can make the pulse longer, never shorter)
    assert lines.slave_pin.states[2].timestamp >= 0.019
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
