"""Image decode/convert/encode policy: passthrough, deliberate conversions, upscaling, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from data_prep.images import encode_array, encode_image_bytes, sixteen_to_eight


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


RGB = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint32).reshape(64, 64, 3).astype(np.uint8))


def test_rgb_jpeg_and_png_keep_their_original_bytes():
    for fmt in ("JPEG", "PNG"):
        data = _bytes(RGB, fmt)
        enc = encode_image_bytes(data, min_size=56)
        assert enc.data is data and enc.fmt == fmt and enc.conversions == () and (enc.width, enc.height) == (64, 64)


def test_tiff_becomes_lossless_png():
    enc = encode_image_bytes(_bytes(RGB, "TIFF"), min_size=56)
    assert enc.fmt == "PNG" and enc.conversions == ("tiff->png",)
    assert np.array_equal(np.asarray(_decode(enc.data)), np.asarray(RGB))


def test_sixteen_bit_maps_full_range_linearly():
    assert sixteen_to_eight(np.array([0, 128, 129, 257, 32767, 65535], dtype=np.uint16)).tolist() == [
        0,
        0,
        1,
        1,
        127,
        255,
    ]
    gray16 = np.array([[0, 257 * 10], [65535, 257 * 200]] * 32, dtype=np.uint16).repeat(32, axis=1)
    enc = encode_image_bytes(_bytes(Image.fromarray(gray16), "PNG"), min_size=0)
    out = np.asarray(_decode(enc.data))
    assert enc.conversions == ("16bit->rgb",) and out.shape == (64, 64, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 40].tolist() == [10, 10, 10] and out[1, 0].tolist() == [255] * 3


@pytest.mark.parametrize(("mode", "name"), [("L", "grayscale->rgb"), ("CMYK", "cmyk->rgb"), ("P", "palette->rgb")])
def test_non_rgb_modes_are_converted_and_named(mode, name):
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    enc = encode_image_bytes(_bytes(RGB.convert(mode), fmt), min_size=56)
    assert enc.conversions == (name,) and enc.fmt == "PNG"
    assert _decode(enc.data).mode == "RGB"


def test_rgba_drops_alpha():
    enc = encode_image_bytes(_bytes(RGB.convert("RGBA"), "PNG"), min_size=0)
    assert enc.conversions == ("rgba->rgb",)
    assert np.array_equal(np.asarray(_decode(enc.data)), np.asarray(RGB))


def test_small_images_upscale_by_integer_nearest_neighbour():
    arr = np.array([[0, 50], [100, 200]], dtype=np.uint8).repeat(14, axis=0).repeat(14, axis=1)  # 28 x 28
    enc = encode_array(arr, min_size=56)
    out = np.asarray(_decode(enc.data))
    assert out.shape == (56, 56, 3) and enc.conversions == ("grayscale->rgb", "upscaled")
    assert np.array_equal(out[:, :, 1], arr.repeat(2, axis=0).repeat(2, axis=1))
    assert (enc.width, enc.height) == (28, 28)
    odd = encode_array(np.zeros((8, 10, 3), dtype=np.uint8), min_size=56)  # 56 / 8 = 7 -> 56 x 70
    assert _decode(odd.data).size == (70, 56)


def test_corrupt_truncated_and_unsupported_inputs_are_errors_not_crashes():
    good = _bytes(RGB, "JPEG")
    assert encode_image_bytes(b"not an image", 56).error_kind == "corrupt_image"
    assert encode_image_bytes(good[: len(good) // 2], 56).error_kind == "corrupt_image"
    float_tiff = _bytes(Image.fromarray(np.zeros((4, 4), dtype=np.float32)), "TIFF")
    assert encode_image_bytes(float_tiff, 0).error_kind == "unsupported_image"
    assert encode_array(np.zeros((4, 4), dtype=np.float32), 0).error_kind == "unsupported_image"
    assert encode_array(np.zeros((4, 4, 2), dtype=np.uint8), 0).error_kind == "unsupported_image"


def _png48(arr16: np.ndarray) -> bytes:
    """A 48-bit (16 bit per channel) RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = arr16.shape
    raw = b"".join(b"\0" + arr16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_48_bit_rgb_png_is_counted_and_reencoded_as_8_bit():
    arr16 = np.zeros((60, 60, 3), dtype=np.uint16)
    arr16[..., 0], arr16[..., 1], arr16[..., 2] = 65535, 257 * 100, 0
    enc = encode_image_bytes(_png48(arr16), min_size=56)
    assert enc.conversions == ("16bit->rgb",) and enc.fmt == "PNG"
    assert np.asarray(_decode(enc.data))[0, 0].tolist() == [255, 100, 0]


def test_fast_verify_checks_header_and_end_marker_and_still_converts_odd_modes():
    from data_prep.images import quick_rgb_header

    jpeg, png = _bytes(RGB, "JPEG"), _bytes(RGB, "PNG")
    assert quick_rgb_header(jpeg) == ("JPEG", 64, 64) and quick_rgb_header(png) == ("PNG", 64, 64)
    assert quick_rgb_header(_bytes(RGB.convert("L"), "JPEG")) is None  # 1 component -> full path
    assert quick_rgb_header(_bytes(RGB.convert("CMYK"), "JPEG")) is None
    assert quick_rgb_header(_bytes(RGB.convert("RGBA"), "PNG")) is None
    for data in (jpeg, png):
        fast = encode_image_bytes(data, 56, verify="fast")
        assert fast.data is data and (fast.width, fast.height) == (64, 64) and fast.conversions == ()
        cut = encode_image_bytes(data[: len(data) - 40], 56, verify="fast")
        assert cut.data is None and cut.error_kind == "corrupt_image" and "no end marker" in cut.error
    assert encode_image_bytes(jpeg + b"\0\0", 56, verify="fast").data is not None  # zero padding after EOI is fine
    assert encode_image_bytes(b"\xff\xd8garbage", 56, verify="fast").error_kind == "corrupt_image"
    assert encode_image_bytes(_bytes(RGB.convert("CMYK"), "JPEG"), 56, verify="fast").conversions == ("cmyk->rgb",)
    small = encode_image_bytes(_bytes(RGB.resize((20, 20)), "PNG"), 56, verify="fast")
    assert small.conversions == ("upscaled",) and _decode(small.data).size == (60, 60)
