"""Camera backend on picamera2 (Raspberry Pi camera stack). picamera2 is imported only when a camera is opened.

Raw capture as the original PyCam: the sensor's full-resolution raw mode at its highest bit depth, auto exposure off,
fixed ExposureTime (µs, clamped to the sensor's limits from `camera_controls`) and AnalogueGain, area-binned (block
mean) to the configured width x height. The raw format and bit depth are read back from the configuration the camera
accepted (`camera_configuration()`), so 10-, 12- and 16-bit and the Pi 3/4 and Pi 5 layouts all come out in the
sensor's own range (controller/hardware/raw.py). Each capture asks for a frame exposed after the call
(`captured_request(flush=...)`): A and B of a slot are never a stale frame apart.
"""

from __future__ import annotations

import time

import numpy as np

from controller.config import CameraConfig
from controller.errors import DeviceTimeout, DeviceUnavailable, HardwareError
from controller.hardware.interfaces import Frame
from controller.hardware.raw import RawLayout
from controller.logging import get_logger
from controller.timekeeping.clock import Clock

# Frames to wait for the sensor to apply a new exposure before taking what it reports.
SETTLE_FRAMES = 6


def unpacked_format(sensor_format: str) -> str:
    """'SGBRG10_CSI2P' -> 'SGBRG10': picamera2 gives the unpacked layout (one uint16 per pixel) without the suffix."""
    return sensor_format.split("_")[0]


def full_size_mode(modes: list[dict]) -> dict | None:
    """The sensor mode with the largest size, and of those the highest bit depth (None when modes say nothing)."""
    usable = [m for m in modes if m.get("size") and m.get("bit_depth")]
    if not usable:
        return None
    return max(usable, key=lambda m: (m["size"][0] * m["size"][1], int(m["bit_depth"])))


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
            self.layout = self._configure(self._cam)
            self._exposure_limits = self._limits("ExposureTime")
            self._frame_limits = self._limits("FrameDurationLimits")
            self.gain = float(cfg.gain)
            self.exposure_us = self._clamp_exposure(int(cfg.shutter_us))
            self._cam.set_controls(self._controls())
            self._cam.start()
        except (RuntimeError, OSError, IndexError, ValueError, KeyError, TypeError) as e:
            self.close()
            raise DeviceUnavailable(self.device, f"cannot open camera {camera_num}: {e}") from e
        self._log.info("camera_opened", format=self.layout.format, size=(self.layout.width, self.layout.height),
                       bit_depth=self.layout.sensor_bits, exposure_limits_us=self._exposure_limits)  # fmt: skip

    def _configure(self, cam) -> RawLayout:
        """Ask for the full-size raw mode at its highest bit depth, then read what the camera accepted."""
        mode = full_size_mode(list(cam.sensor_modes or []))
        if mode is not None:
            size, bits = tuple(mode["size"]), int(mode["bit_depth"])
            raw_format = str(mode.get("unpacked") or unpacked_format(str(mode["format"])))
        else:
            size, raw_format = tuple(cam.sensor_resolution), unpacked_format(str(cam.sensor_format))
            bits = RawLayout(raw_format, *size, sensor_bits=8).container_bits
        config = cam.create_still_configuration(raw={"format": raw_format, "size": size},
                                                sensor={"output_size": size, "bit_depth": bits}, buffer_count=2)  # fmt: skip
        cam.configure(config)
        accepted = cam.camera_configuration()
        raw = accepted["raw"]
        sensor_bits = int((accepted.get("sensor") or {}).get("bit_depth") or bits)
        layout = RawLayout(str(raw["format"]), int(raw["size"][0]), int(raw["size"][1]), sensor_bits)
        layout.check()
        return layout

    def _limits(self, control: str) -> tuple[int, int] | None:
        lo, hi, _default = self._cam.camera_controls.get(control) or (None, None, None)
        if lo is None or hi is None or hi <= 0:
            return None
        return int(lo), int(hi)

    def _clamp_exposure(self, exposure_us: int) -> int:
        """The exposure within the sensor's limits; one event when it had to be clamped."""
        if self._exposure_limits is None:
            return exposure_us
        lo, hi = self._exposure_limits
        used = min(max(exposure_us, lo), hi)
        if used != exposure_us:
            self._log.warning("exposure_clamped", requested_us=exposure_us, used_us=used, min_us=lo, max_us=hi)
        return used

    def _controls(self) -> dict:
        # the frame duration must allow the exposure, else the sensor silently clips it
        lo, hi = self.exposure_us + 1000, self.exposure_us + 100_000
        if self._frame_limits is not None:
            fmin, fmax = self._frame_limits
            lo, hi = min(max(lo, fmin), fmax), min(max(hi, fmin), fmax)
        return {"AeEnable": False, "ExposureTime": self.exposure_us, "AnalogueGain": self.gain,
                "FrameDurationLimits": (lo, hi)}  # fmt: skip

    def _require_open(self):
        if self._cam is None:
            raise DeviceUnavailable(self.device, "camera is closed")
        return self._cam

    def set_exposure(self, exposure_us: int) -> int:
        """Set the shutter speed, clamped to the sensor's limits; returns the exposure that will be used."""
        self._require_open()
        self.exposure_us = self._clamp_exposure(int(exposure_us))
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
        """One frame exposed after this call, with the requested exposure (waits a few frames for it to apply)."""
        cam = self._require_open()
        called_ns = time.monotonic_ns()
        try:
            for _ in range(SETTLE_FRAMES):
                # flush: picamera2 drops frames whose exposure started before `called_ns` (SensorTimestamp -
                # ExposureTime), so a frame queued before the slot started is never taken for this slot
                with cam.captured_request(flush=called_ns) as request:
                    metadata = dict(request.get_metadata())
                    reported = int(metadata.get("ExposureTime", self.exposure_us))
                    # the sensor reports a line-quantised exposure: accept within 1 % or 100 µs
                    if abs(reported - self.exposure_us) <= max(100, 0.01 * self.exposure_us):
                        raw = request.make_array("raw")
                        break
            else:
                raise HardwareError(self.device, f"exposure {self.exposure_us} µs not applied by the sensor")
            if self.layout.compressed:
                raw = cam.helpers.decompress(raw)  # Pi 5 PiSP compression: picamera2's own decoder, 16-bit out
        except TimeoutError as e:
            raise DeviceTimeout(self.device, f"no frame: {e}") from e
        except (RuntimeError, OSError) as e:
            raise HardwareError(self.device, f"capture failed: {e}") from e
        pixels = area_bin(self.layout.to_values(raw), self.cfg.width, self.cfg.height)
        return Frame(
            pixels=pixels, exposure_us=reported, gain=float(metadata.get("AnalogueGain", self.gain)),
            timestamp=self._exposure_start(metadata), band=self.band,
            sensor_temperature_c=metadata.get("SensorTemperature"), bit_depth=self.layout.sensor_bits,
            metadata={"backend": "picamera2", "raw_format": self.layout.format,
                      "sensor_size": (self.layout.width, self.layout.height),
                      "sensor_timestamp_ns": metadata.get("SensorTimestamp")},
        )  # fmt: skip

    def _exposure_start(self, metadata: dict) -> float:
        """Epoch seconds (station clock) at the start of the exposure, from the sensor's monotonic timestamp."""
        now = self.clock.time()
        ts = metadata.get("SensorTimestamp")
        if ts is None:
            return now
        # SensorTimestamp is the end of the frame's readout on the monotonic clock picamera2's flush compares with
        age_s = (time.monotonic_ns() - (int(ts) - 1000 * int(metadata.get("ExposureTime", 0)))) / 1e9
        return now - age_s if 0.0 <= age_s < 60.0 else now

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
