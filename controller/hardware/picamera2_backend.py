"""Camera backend on picamera2 (Raspberry Pi camera stack). picamera2 is imported only when a camera is opened.

Raw capture as the original PyCam: the sensor's unpacked raw Bayer data (no _CSI2P packing), auto exposure off,
fixed ExposureTime (µs) and AnalogueGain, area-binned (block mean) from the full sensor size to the configured
width x height, so values stay in the sensor's bit range.
"""

from __future__ import annotations

import numpy as np

from controller.config import CameraConfig
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError
from controller.hardware.interfaces import Frame
from controller.logging import get_logger
from controller.timekeeping.clock import Clock

# Frames to wait for the sensor to apply a new exposure before taking what it reports.
SETTLE_FRAMES = 6


def unpacked_format(sensor_format: str) -> str:
    """'SGBRG10_CSI2P' -> 'SGBRG10': picamera2 gives the unpacked layout (one uint16 per pixel) without the suffix."""
    return sensor_format.split("_")[0]


def raw_to_uint16(raw: np.ndarray, width: int) -> np.ndarray:
    """The raw buffer (uint8 rows of stride bytes, two little-endian bytes per pixel) as uint16 (h, width)."""
    if raw.dtype == np.uint16:
        return np.ascontiguousarray(raw[:, :width])
    rows = np.ascontiguousarray(raw).view("<u2")
    return rows[:, :width]


def area_bin(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Block-mean binning to (height, width); the full frame is cropped to a whole number of blocks."""
    fy, fx = pixels.shape[0] // height, pixels.shape[1] // width
    if fy < 1 or fx < 1:
        raise ValueError(f"cannot bin {pixels.shape[1]}x{pixels.shape[0]} down to {width}x{height}")
    block = pixels[: height * fy, : width * fx].reshape(height, fy, width, fx).astype(np.float64)
    return np.rint(block.mean(axis=(1, 3))).astype(np.uint16)


class Picamera2Camera:
    """One Pi camera (A or B) through picamera2."""

    def __init__(self, cfg: CameraConfig, band: str, clock: Clock, camera_num: int = 0):
        self.band = band
        self.cfg = cfg
        self.clock = clock
        self.device = f"camera {band}"
        self._log = get_logger("hardware", device=self.device, backend="picamera2")
        self._cam = None
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise DeviceUnavailable(self.device, "picamera2 is not installed (apt install python3-picamera2)") from e
        try:
            self._cam = Picamera2(camera_num)
            sensor_format = unpacked_format(str(self._cam.sensor_format))
            self._full_size = tuple(self._cam.sensor_resolution)
            config = self._cam.create_still_configuration(
                raw={"format": sensor_format, "size": self._full_size}, buffer_count=2
            )
            self._cam.configure(config)
            self.exposure_us = int(cfg.shutter_us)
            self.gain = float(cfg.gain)
            self._cam.set_controls(self._controls())
            self._cam.start()
        except (RuntimeError, OSError, IndexError, ValueError) as e:
            self.close()
            raise DeviceUnavailable(self.device, f"cannot open camera {camera_num}: {e}") from e
        self._log.info("camera_opened", format=sensor_format, size=self._full_size)

    def _controls(self) -> dict:
        # the frame duration must allow the exposure, else the sensor silently clips it
        return {
            "AeEnable": False, "ExposureTime": self.exposure_us, "AnalogueGain": self.gain,
            "FrameDurationLimits": (self.exposure_us + 1000, self.exposure_us + 100_000),
        }  # fmt: skip

    def _require_open(self):
        if self._cam is None:
            raise DeviceUnavailable(self.device, "camera is closed")
        return self._cam

    def set_exposure(self, exposure_us: int) -> int:
        self.exposure_us = int(exposure_us)
        self._set_controls()
        return self.exposure_us

    def set_gain(self, gain: float) -> float:
        self.gain = float(gain)
        self._set_controls()
        return self.gain

    def _set_controls(self) -> None:
        try:
            self._require_open().set_controls(self._controls())
        except (RuntimeError, OSError) as e:
            raise HardwareError(self.device, f"cannot set controls: {e}") from e

    def capture(self) -> Frame:
        """Capture one frame taken with the requested exposure (waits a few frames for it to apply)."""
        cam = self._require_open()
        try:
            for _ in range(SETTLE_FRAMES):
                with cam.captured_request() as request:
                    metadata = dict(request.get_metadata())
                    reported = int(metadata.get("ExposureTime", self.exposure_us))
                    # the sensor reports a line-quantised exposure: accept within 1 % or 100 µs
                    if abs(reported - self.exposure_us) <= max(100, 0.01 * self.exposure_us):
                        raw = request.make_array("raw")
                        break
            else:
                raise HardwareError(self.device, f"exposure {self.exposure_us} µs not applied by the sensor")
        except TimeoutError as e:
            raise DeviceTimeout(self.device, f"no frame: {e}") from e
        except (RuntimeError, OSError) as e:
            raise HardwareError(self.device, f"capture failed: {e}") from e
        full = raw_to_uint16(raw, self._full_size[0])
        pixels = area_bin(full, self.cfg.width, self.cfg.height)
        return Frame(
            pixels=pixels, exposure_us=reported, gain=float(metadata.get("AnalogueGain", self.gain)),
            timestamp=self.clock.time(), band=self.band, sensor_temperature_c=metadata.get("SensorTemperature"),
            bit_depth=self.cfg.bit_depth, metadata={"backend": "picamera2", "sensor_size": self._full_size},
        )  # fmt: skip

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in ("stop", "close"):
            try:
                getattr(cam, step)()
            except (RuntimeError, OSError) as e:
                self._log.warning("camera_close_failed", step=step, error=str(e))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
