"""16-bit grayscale PNG with numpy + zlib only (the slave has no OpenCV).

Encoding uses the Up filter on every row. Decoding handles 8- and 16-bit grayscale, non-interlaced, with all five
row filters (None, Sub, Up, Average, Paeth) as libpng/OpenCV write them. Average and Paeth rows depend on the
reconstructed pixel to their left, so they are reconstructed along anti-diagonals (a wavefront over all rows at
once) instead of pixel by pixel.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(arr: np.ndarray, level: int = 6) -> bytes:
    """A single-channel 16-bit PNG of a 2-D uint16 array."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise ValueError(f"expected a 2-D uint16 array, got {arr.dtype} {arr.shape}")
    height, width = arr.shape
    data = arr.astype(">u2").view(np.uint8).reshape(height, width * 2)
    filtered = np.empty((height, width * 2 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: smooth images compress better than unfiltered
    filtered[0, 1:] = data[0]
    filtered[1:, 1:] = data[1:] - data[:-1]  # uint8 arithmetic wraps modulo 256, as PNG requires
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
        + _chunk(b"IEND", b"")
    )  # fmt: skip


def _read_chunks(data: bytes) -> tuple[tuple, bytes]:
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    pos, ihdr, idat = len(SIGNATURE), None, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError(f"truncated PNG chunk {kind!r}")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"PNG chunk {kind!r} fails its CRC")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if ihdr is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    return ihdr, b"".join(idat)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a, b, c = a.astype(np.int16), b.astype(np.int16), c.astype(np.int16)
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def _unfilter(raw: np.ndarray, bpp: int) -> np.ndarray:
    """Reconstruct (height, width, bpp) bytes from filtered rows (height, 1 + width*bpp)."""
    height = raw.shape[0]
    ftype = raw[:, 0]
    if int(ftype.max(initial=0)) > 4:
        raise ValueError(f"unknown PNG filter type {int(ftype.max())}")
    filt = raw[:, 1:].reshape(height, -1, bpp)
    width = filt.shape[1]
    out = np.zeros((height + 1, width + 1, bpp), dtype=np.uint8)  # one zero row above and column to the left
    simple = bool(np.all(ftype <= 2))
    if simple:
        for r in range(height):
            row, prior = filt[r], out[r, 1:]
            if ftype[r] == 0:
                out[r + 1, 1:] = row
            elif ftype[r] == 1:
                out[r + 1, 1:] = np.cumsum(row, axis=0, dtype=np.uint64).astype(np.uint8)
            else:
                out[r + 1, 1:] = row + prior
        return out[1:, 1:]
    # Wavefront: pixel (r, x) needs (r, x-1), (r-1, x), (r-1, x-1), all on earlier anti-diagonals.
    rows_all = np.arange(height)
    for d in range(height + width - 1):
        r = rows_all[max(0, d - width + 1) : min(height, d + 1)]
        x = d - r
        left, up, upleft = out[r + 1, x], out[r, x + 1], out[r, x]
        f = ftype[r][:, None]
        avg = ((left.astype(np.uint16) + up) >> 1).astype(np.uint8)
        pred = np.where(f == 1, left, np.where(f == 2, up, np.where(f == 3, avg, 0)))
        if np.any(f == 4):
            pred = np.where(f == 4, _paeth(left, up, upleft), pred)
        out[r + 1, x + 1] = filt[r, x] + pred.astype(np.uint8)
    return out[1:, 1:]


def decode_png16(data: bytes) -> np.ndarray:
    """Pixels of a grayscale PNG (8 or 16 bit) as a 2-D array (uint16 for 16-bit, uint8 for 8-bit)."""
    ihdr, idat = _read_chunks(data)
    width, height, bit_depth, color_type, _, _, interlace = ihdr
    if color_type != 0 or bit_depth not in (8, 16):
        raise ValueError(f"only 8/16-bit grayscale PNG is supported (bit depth {bit_depth}, colour type {color_type})")
    if interlace:
        raise ValueError("interlaced PNG is not supported")
    bpp = bit_depth // 8
    try:
        raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)
    except zlib.error as e:
        raise ValueError(f"corrupt PNG image data: {e}") from e
    if raw.size != height * (1 + width * bpp):
        raise ValueError(f"PNG image data has {raw.size} bytes, expected {height * (1 + width * bpp)}")
    pixels = _unfilter(raw.reshape(height, 1 + width * bpp), bpp)
    if bpp == 1:
        return pixels[:, :, 0].copy()
    return pixels.reshape(height, width * 2).view(">u2").astype(np.uint16)
