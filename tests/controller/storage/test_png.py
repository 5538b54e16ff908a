"""PNG encode/decode with numpy + zlib, checked against OpenCV on the real station images."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from controller.storage.png import decode_png16, encode_png16


def real_pngs(shared_data) -> list:
    return sorted(shared_data.glob("**/*.png"))


def _filter_types(data: bytes) -> set[int]:
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        ihdr = struct.unpack(">IIBBBBB", body) if kind == b"IHDR" else ihdr
        idat += body if kind == b"IDAT" else b""
        pos += 12 + n
    width, height = ihdr[0], ihdr[1]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 2)
    return set(raw[:, 0].tolist())


def _check_against_cv2(paths) -> set[int]:
    cv2 = pytest.importorskip("cv2")
    seen: set[int] = set()
    for path in paths:
        data = path.read_bytes()
        ours = decode_png16(data)
        theirs = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert ours.dtype == theirs.dtype == np.uint16, path.name
        np.testing.assert_array_equal(ours, theirs, err_msg=path.name)
        seen |= _filter_types(data)
    return seen


def test_decode_matches_opencv_on_real_images(shared_data):
    paths = real_pngs(shared_data)
    assert len(paths) > 50
    sample = [p for p in paths if "pairs" in str(p)] + paths[::9]
    _check_against_cv2(sample)


@pytest.mark.slow
def test_decode_matches_opencv_on_every_real_image(shared_data):
    seen = _check_against_cv2(real_pngs(shared_data))
    assert seen >= {1, 2, 3, 4}  # the real files exercise Sub, Up, Average and Paeth rows


def test_round_trip_and_opencv_reads_ours():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 65536, (37, 53), dtype=np.uint16)
    data = encode_png16(img)
    np.testing.assert_array_equal(decode_png16(data), img)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), img)


@pytest.mark.parametrize("ftype", [0, 1, 2, 3, 4])
def test_every_filter_type_written_by_opencv_decodes(ftype, tmp_path):
    """Rows of each single filter type (libpng picks per row; force each by image content is unreliable, so
    filter the rows ourselves with the PNG definition and compare)."""
    rng = np.random.default_rng(ftype)
    img = rng.integers(0, 1024, (9, 11), dtype=np.uint16)
    data = img.astype(">u2").view(np.uint8).reshape(9, 22).astype(np.int32)
    out = np.zeros((9, 23), dtype=np.uint8)
    out[:, 0] = ftype
    for r in range(9):
        for i in range(22):
            a = data[r, i - 2] if i >= 2 else 0
            b = data[r - 1, i] if r >= 1 else 0
            c = data[r - 1, i - 2] if (r >= 1 and i >= 2) else 0
            p = a + b - c
            paeth = (
                a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (b if abs(p - b) <= abs(p - c) else c)
            )
            pred = [0, a, b, (a + b) // 2, paeth][ftype]
            out[r, 1 + i] = (data[r, i] - pred) % 256
    ihdr = struct.pack(">IIBBBBB", 11, 9, 16, 0, 0, 0, 0)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(out.tobytes())) + chunk(b"IEND", b"")
    )
    np.testing.assert_array_equal(decode_png16(png), img)


def test_corrupt_png_is_refused():
    data = bytearray(encode_png16(np.zeros((4, 4), np.uint16)))
    data[20] ^= 0xFF  # inside IHDR: CRC fails
    with pytest.raises(ValueError, match="CRC"):
        decode_png16(bytes(data))
    with pytest.raises(ValueError, match="signature"):
        decode_png16(b"GIF89a")
    with pytest.raises(ValueError):
        encode_png16(np.zeros((4, 4), np.float32))
