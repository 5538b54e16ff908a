"""Raw Bayer/mono buffers as picamera2 delivers them, turned into uint16 sensor values (0 .. 2**bit_depth - 1).

Formats as picamera2's `formats.py` / `sensor_format.py` name them: `SRGGB10`, `SBGGR12_CSI2P`, `R10`, `SRGGB16`,
`BGGR_PISP_COMP1` ... The layout depends on the Pi:
- Pi 3/4 (VC4): unpacked formats (`SRGGB12`) hold one little-endian uint16 per pixel, right-aligned (0 .. 2**bits-1);
  packed `_CSI2P` formats hold 4 pixels in 5 bytes (10-bit) or 2 pixels in 3 bytes (12-bit): the high 8 bits of each
  pixel first, then a byte with the low bits.
- Pi 5 (PiSP): the raw stream is 16 bits per pixel whatever the sensor gives (`SRGGB16`, or `*_PISP_COMP1`
  compressed, which picamera2's `helpers.decompress` expands to 16 bits): values are left-aligned, so a 12-bit
  sensor's values are shifted right by 4 to come back to the sensor's range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawLayout:
    """How to read one configured raw stream."""

    format: str  # as picamera2 reports it after configure()
    width: int
    height: int
    sensor_bits: int  # the sensor mode's bit depth: the range of the values returned

    @property
    def packing(self) -> str | None:
        return self.format.split("_", 1)[1] if "_" in self.format else None

    @property
    def compressed(self) -> bool:
        return (self.packing or "").startswith("PISP_COMP")

    @property
    def container_bits(self) -> int:
        """Bits per pixel in the buffer after unpacking / decompression."""
        if self.compressed:
            return 16
        m = re.search(r"(\d+)$", self.format.split("_", 1)[0])
        if m is None:
            raise ValueError(f"raw format {self.format!r} names no bit depth")
        return int(m.group(1))

    def check(self) -> None:
        """ValueError with one line when the format cannot be read as this sensor's values."""
        bits = self.container_bits
        if self.packing not in (None, "CSI2P") and not self.compressed:
            raise ValueError(f"raw format {self.format!r}: unknown packing {self.packing!r}")
        if self.packing == "CSI2P" and bits not in (10, 12):
            raise ValueError(f"raw format {self.format!r}: only 10- and 12-bit CSI2P packing is known")
        if bits < self.sensor_bits or bits == 8:
            raise ValueError(f"raw format {self.format!r} holds {bits} bits, the sensor gives {self.sensor_bits}")

    def to_values(self, buf: np.ndarray) -> np.ndarray:
        """The (height, width) uint16 sensor values of one buffer (rows may be padded to a stride)."""
        if self.packing == "CSI2P":
            pixels = unpack_csi2p(buf, self.width, self.container_bits)
        else:
            pixels = raw_to_uint16(buf, self.width)
        pixels = pixels[: self.height]
        shift = self.container_bits - self.sensor_bits
        return pixels >> np.uint16(shift) if shift > 0 else pixels


def raw_to_uint16(raw: np.ndarray, width: int) -> np.ndarray:
    """The raw buffer (uint8 rows of stride bytes, two little-endian bytes per pixel) as uint16 (h, width)."""
    if raw.dtype == np.uint16:
        return np.ascontiguousarray(raw[:, :width])
    rows = np.ascontiguousarray(raw).view("<u2")
    return rows[:, :width]


def unpack_csi2p(raw: np.ndarray, width: int, bits: int) -> np.ndarray:
    """MIPI CSI-2 packed rows (uint8, padded to a stride) as uint16 (h, width)."""
    raw = np.ascontiguousarray(raw).view(np.uint8)
    if bits == 10:
        group, per = 5, 4
    elif bits == 12:
        group, per = 3, 2
    else:
        raise ValueError(f"no CSI-2 unpacking for {bits}-bit")
    nbytes = (width + per - 1) // per * group
    g = raw[:, :nbytes].reshape(raw.shape[0], -1, group).astype(np.uint16)
    high = g[:, :, :per] << np.uint16(bits - 8)
    low = g[:, :, per]
    shifts = np.arange(per, dtype=np.uint16) * np.uint16(bits - 8)
    values = high | ((low[:, :, None] >> shifts) & np.uint16((1 << (bits - 8)) - 1))
    return values.reshape(raw.shape[0], -1)[:, :width]


def pack_csi2p(values: np.ndarray, bits: int, stride: int | None = None) -> np.ndarray:
    """The inverse of `unpack_csi2p` (test stand-ins and round-trip checks); width a multiple of 4 (10) / 2 (12)."""
    per = 4 if bits == 10 else 2
    h, w = values.shape
    v = values.astype(np.uint16).reshape(h, w // per, per)
    high = (v >> np.uint16(bits - 8)).astype(np.uint8)
    shifts = np.arange(per, dtype=np.uint16) * np.uint16(bits - 8)
    low = np.bitwise_or.reduce((v & np.uint16((1 << (bits - 8)) - 1)) << shifts, axis=2).astype(np.uint8)
    packed = np.concatenate([high, low[:, :, None]], axis=2).reshape(h, -1)
    if stride is not None and stride > packed.shape[1]:
        packed = np.pad(packed, ((0, 0), (0, stride - packed.shape[1])))
    return packed
