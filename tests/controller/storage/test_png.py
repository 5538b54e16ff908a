"""Image files through OpenCV: 16-bit grayscale PNGs with the same values, read by the original's loaders."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from controller.storage.png import decode_png16, encode_png16


def real_pngs(shared_data) -> list:
    return sorted(shared_data.glob("**/*.png"))


def _ihdr(data: bytes) -> tuple:
    assert data[12:16] == b"IHDR"
    return struct.unpack(">IIBBBBB", data[16:29])


def test_real_station_images_round_trip_as_16_bit_png(shared_data, tmp_path):
    paths = [p for p in real_pngs(shared_data) if "pairs" in str(p)][:8]
    assert paths
    for path in paths:
        original = decode_png16(path.read_bytes())
        assert original.dtype == np.uint16 and original.ndim == 2, path.name
        data = encode_png16(original)
        width, height, depth, colour, *_ = _ihdr(data)
        assert (width, height, depth, colour) == (original.shape[1], original.shape[0], 16, 0)  # 16-bit grayscale
        out = tmp_path / path.name
        out.write_bytes(data)
        # the original PyCam's loader (cv2.imread(path, -1)) and an independent decoder (Pillow/libpng) agree
        np.testing.assert_array_equal(cv2.imread(str(out), -1), original, err_msg=path.name)
        with Image.open(out) as im:
            np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), original, err_msg=path.name)


def test_written_at_opencvs_default_png_settings():
    """The size and speed figure of the bench is OpenCV's default: the bytes are exactly what it writes."""
    img = np.random.default_rng(5).integers(0, 1024, (486, 648), dtype=np.uint16)
    assert encode_png16(img) == cv2.imencode(".png", img)[1].tobytes()
    np.testing.assert_array_equal(decode_png16(encode_png16(img)), img)


def test_full_16_bit_range_round_trips():
    img = np.random.default_rng(6).integers(0, 65536, (37, 53), dtype=np.uint16)
    np.testing.assert_array_equal(decode_png16(encode_png16(img)), img)


def test_corrupt_or_wrong_input_is_refused():
    data = bytearray(encode_png16(np.arange(64, dtype=np.uint16).reshape(8, 8)))
    with pytest.raises(ValueError, match="signature"):
        decode_png16(b"GIF89a")
    with pytest.raises(ValueError, match="corrupt PNG"):
        decode_png16(bytes(data[:40]))  # truncated after IHDR
    with pytest.raises(ValueError, match="2-D uint16"):
        encode_png16(np.zeros((4, 4), np.float32))
    rgb = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    with pytest.raises(ValueError, match="grayscale"):
        decode_png16(rgb)


def test_bench_png_figures_compare_with_opencvs_default():
    from controller.bench.supervisor import png_figures

    fig = png_figures(repeats=2)
    assert fig["frame"] == [486, 648] and fig["meets_target"] is True
    assert fig["kib"] == fig["opencv_default_kib"] and fig["encode_ms"] > 0 and fig["decode_ms"] > 0
