"""Decode, check, convert and encode one image (runs in the pool workers).

Policy (`verify`, for images stored unchanged; an image that needs a conversion is always decoded in full):
- `"full"` (default): every image is decoded, so a corrupt or truncated file is caught here, never in training. An RGB
  JPEG kept as is is decoded in libjpeg's draft mode: the whole entropy-coded stream is decoded (every coefficient
  of every block, so truncation, broken tables and markers fail exactly as in a complete decode), but the inverse DCT
  runs for the DC term of the luma only (1/8 scale, grey). It catches the same damage as `"pixels"` on the damage
  corpus of tests/data_prep (every JPEG flavour), at ~2/3 of its CPU cost.
- `"pixels"`: every pixel of every image decoded (the complete decode; PNG is always decoded this way).
- `"fast"`: an RGB JPEG/PNG is checked by its header and its end marker (JPEG EOI, PNG IEND) only: truncation and
  non-images are still caught, damage inside the compressed data is not.
- Every level refuses an aspect ratio over 200 (Qwen2.5-VL's processor refuses it) and more pixels than PIL's
  decompression-bomb limit, from the header alone.
- RGB JPEG/PNG that needs no change keeps its original bytes (no re-encoding loss, and fast).
- Everything else is converted deliberately and the conversion is named (report.json counts it):
  grayscale/bilevel -> RGB, palette -> RGB, RGBA -> RGB (alpha dropped), CMYK/YCbCr -> RGB,
  16-bit -> 8-bit by the full-range linear map v * 255 / 65535 (rounded), then -> RGB (grey 16-bit, and 48/64-bit
  RGB(A) TIFF, whose samples are read here because Pillow would truncate them to their high byte).
  Float images are refused (no safe fixed mapping).
- Images whose short side is below `min_size` are upscaled by the smallest integer factor that reaches it, with
  nearest-neighbour (every source pixel becomes an f x f block, so no pixel value is invented).
- Converted images are written as PNG (lossless); TIFF/BMP/GIF/WebP sources too.
"""

from __future__ import annotations

import io
import math
import re
import signal
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from data_prep.lifeline import follow_main_process
from data_prep.source import FileRef, read_ref

PASSTHROUGH_FORMATS = ("JPEG", "PNG")
VERIFY_LEVELS = ("fast", "full", "pixels")
PNG_COMPRESS_LEVEL = 3
_MODE_CONVERSION = {
    "1": "grayscale->rgb",
    "L": "grayscale->rgb",
    "LA": "grayscale->rgb",
    "P": "palette->rgb",
    "PA": "palette->rgb",
    "RGBA": "rgba->rgb",
    "RGBX": "rgba->rgb",
    "RGBa": "rgba->rgb",
    "CMYK": "cmyk->rgb",
    "YCbCr": "ycbcr->rgb",
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's smart_resize raises for max(h, w) / min(h, w) > 200
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class Encoded:
    """A worker's answer for one image: bytes + what was done, or an error (`data` is None)."""

    data: bytes | None
    fmt: str = ""
    width: int = 0
    height: int = 0
    conversions: tuple[str, ...] = ()
    error: str = ""
    error_kind: str = ""


def error_text(exc: BaseException) -> str:
    """`Type: message` of a decoding error without object reprs (`<_io.BytesIO object at 0x7f..>` -> `<bytes>`), so
    report.json stays byte-identical across runs."""
    return _OBJECT_REPR.sub("<bytes>", f"{type(exc).__name__}: {exc}")


def geometry_error(width: int, height: int) -> Encoded | None:
    """The refusal of an image the model's processor or PIL would refuse by its size alone, else None.

    - `extreme_aspect_ratio`: long side / short side > 200 (Qwen2.5-VL's `smart_resize` raises on it in training);
    - `too_many_pixels`: width x height > PIL's `Image.MAX_IMAGE_PIXELS` (its decompression-bomb limit; PIL warns
      above it and refuses above twice it).
    """
    if min(width, height) <= 0:
        return Encoded(None, error=f"image size {width}x{height}", error_kind="corrupt_image")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        detail = f"{width}x{height}: aspect ratio {ratio:.1f} > {MAX_ASPECT_RATIO}"
        return Encoded(None, width=width, height=height, error=detail, error_kind="extreme_aspect_ratio")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        detail = f"{width}x{height} = {width * height} pixels > PIL's limit {limit}"
        return Encoded(None, width=width, height=height, error=detail, error_kind="too_many_pixels")
    return None


def sixteen_to_eight(arr: np.ndarray) -> np.ndarray:
    """Map 16-bit values to 8 bits linearly over the full range (0 -> 0, 65535 -> 255), rounding to nearest."""
    wide = np.clip(arr.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _tiff_sixteen_bit_rgb(im: Image.Image, tiles: list, data: bytes) -> np.ndarray | None:
    """H x W x 3|4 uint16 samples of a 48/64-bit RGB(A) TIFF (Pillow reads those as 8-bit RGB by keeping the high
    byte, not by the README's formula), or None for any other image. Uncompressed strips/tiles are read from `data`;
    a compressed one raises ValueError (no reader here keeps its 16 bits). `tiles`: `im.tile` before `im.load()`."""
    if im.format != "TIFF" or im.mode not in ("RGB", "RGBA"):
        return None
    bits = im.tag_v2.get(258)  # BitsPerSample
    if not isinstance(bits, tuple) or len(bits) not in (3, 4) or set(bits) != {16}:
        return None
    channels = len(bits)
    out = np.zeros((im.height, im.width, channels), dtype=np.uint16)
    for tile in tiles:
        x0, y0, x1, y1 = tile.extents
        args = tuple(tile.args) if isinstance(tile.args, tuple) else (tile.args,)
        rawmode, stride, orientation = str(args[0]) if args else "", (args[1:2] or (0,))[0], (args[2:3] or (1,))[0]
        packed = stride in (0, (x1 - x0) * channels * 2) and orientation == 1
        if tile.codec_name != "raw" or not rawmode.endswith(("16L", "16B", "16N")) or not packed:
            raise ValueError(
                f"16-bit-per-channel TIFF stored with {tile.codec_name!r} compression: save it uncompressed (or as "
                "8-bit), so that its 16-bit values can be mapped by v * 255 / 65535"
            )
        order = {"B": ">", "L": "<"}.get(rawmode[-1], "=")
        count = (x1 - x0) * (y1 - y0) * channels
        block = np.frombuffer(data, dtype=f"{order}u2", count=count, offset=tile.offset)  # ValueError if cut short
        out[y0:y1, x0:x1] = block.reshape(y1 - y0, x1 - x0, channels)  # rows of the tile, H' x W' x C
    return out


def to_rgb(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """Return an RGB image and the names of the conversions applied (empty for RGB input)."""
    mode = im.mode
    if mode == "RGB":
        return im, []
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(sixteen_to_eight(np.asarray(im)), mode="L").convert("RGB"), ["16bit->rgb"]
    if mode in _MODE_CONVERSION:
        return im.convert("RGB"), [_MODE_CONVERSION[mode]]
    raise ValueError(f"unsupported image mode {mode!r}")


def upscale_to_min(im: Image.Image, min_size: int) -> tuple[Image.Image, bool]:
    """Nearest-neighbour upscale by the smallest integer factor giving a short side >= min_size."""
    short = min(im.size)
    if min_size <= 0 or short >= min_size:
        return im, False
    factor = math.ceil(min_size / short)
    return im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST), True


def upscale_error(width: int, height: int, min_size: int) -> Encoded | None:
    """`too_many_pixels` when the upscale to `min_size` would exceed PIL's decompression-bomb limit, else None."""
    short = min(width, height)
    limit = Image.MAX_IMAGE_PIXELS
    if min_size <= 0 or short <= 0 or short >= min_size or limit is None:
        return None
    factor = math.ceil(min_size / short)
    if width * height * factor * factor <= limit:
        return None
    detail = f"{width}x{height} upscaled x{factor} for --min-size {min_size} = {width * height * factor**2} pixels"
    return Encoded(
        None, width=width, height=height, error=f"{detail} > PIL's limit {limit}", error_kind="too_many_pixels"
    )


def _encode_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _is_sixteen_bit_png(im: Image.Image) -> bool:
    """True for 48/64-bit PNGs, which Pillow silently reads as 8-bit RGB(A)."""
    return im.format == "PNG" and any(str(tile[-1]).endswith(";16B") for tile in getattr(im, "tile", []) or [])


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from an 8-bit JPEG's SOF segment, or None (not a plain JPEG)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 10 > n or data[i + 4] != 8:
                return None
            height, width = int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height, data[i + 9]) if width and height else None
        if marker == 0xDA:  # scan data before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def quick_rgb_header(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) if `data` is an 8-bit RGB JPEG/PNG by its header alone, else None."""
    if data.startswith(_PNG_SIGNATURE):
        if data[12:16] != b"IHDR" or len(data) < 26 or data[24] != 8 or data[25] != 2:
            return None
        return "PNG", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    header = _jpeg_header(data)
    if header is None or header[2] != 3:
        return None
    return "JPEG", header[0], header[1]


def _has_end_marker(data: bytes, fmt: str) -> bool:
    """True if a JPEG ends with EOI (trailing zero padding allowed) or a PNG with its IEND chunk."""
    if fmt == "JPEG":
        return data.rstrip(b"\0").endswith(b"\xff\xd9")
    return data.endswith(b"IEND\xaeB`\x82")


def encode_image_bytes(data: bytes, min_size: int, verify: str = "full") -> Encoded:
    """Check and decode `data` as `verify` says (module docstring), convert to RGB, upscale if small, and return the
    bytes to store."""
    if verify == "fast":
        quick = quick_rgb_header(data)
        if quick is not None and min(quick[1], quick[2]) >= min_size:
            refused = geometry_error(quick[1], quick[2])
            if refused is not None:
                return refused
            if not _has_end_marker(data, quick[0]):
                return Encoded(None, error=f"truncated {quick[0]}: no end marker", error_kind="corrupt_image")
            return Encoded(data, quick[0], quick[1], quick[2], ())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by geometry_error
            im = Image.open(io.BytesIO(data))
        width, height = im.size
        refused = geometry_error(width, height)
        if refused is not None:
            return refused
        fmt = im.format or ""
        sixteen = _is_sixteen_bit_png(im)
        check_only = verify == "full" and fmt == "JPEG" and im.mode == "RGB" and min(width, height) >= min_size
        if check_only:  # kept as is: decode every coefficient, but the IDCT of the luma DC term only (1/8, grey)
            im.draft("L", (1, 1))
        tiles = list(im.tile)  # load() clears them
        im.load()
    except Image.DecompressionBombError as exc:  # raised by Image.open itself above twice the limit
        return Encoded(None, error=error_text(exc), error_kind="too_many_pixels")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return Encoded(None, error=error_text(exc), error_kind="corrupt_image")
    if check_only:
        return Encoded(data, fmt, width, height, ())
    try:
        wide = _tiff_sixteen_bit_rgb(im, tiles, data)
        if wide is not None:
            rgb = Image.fromarray(np.ascontiguousarray(sixteen_to_eight(wide[:, :, :3])), mode="RGB")
            conversions = ["16bit->rgb", *(["rgba->rgb"] if wide.shape[2] == 4 else [])]
        else:
            rgb, conversions = to_rgb(im)
    except ValueError as exc:
        return Encoded(None, error=str(exc), error_kind="unsupported_image")
    if sixteen and "16bit->rgb" not in conversions:  # 48/64-bit RGB(A) PNG, already reduced to 8 bits by Pillow
        conversions.append("16bit->rgb")
    too_big = upscale_error(width, height, min_size)
    if too_big is not None:
        return too_big
    rgb, upscaled = upscale_to_min(rgb, min_size)
    if upscaled:
        conversions.append("upscaled")
    if fmt in PASSTHROUGH_FORMATS and not conversions:
        return Encoded(data, fmt, width, height, ())
    if fmt not in PASSTHROUGH_FORMATS:
        conversions.append(f"{fmt.lower() or 'unknown'}->png")
    return Encoded(_encode_png(rgb), "PNG", width, height, tuple(conversions))


def encode_array(arr: np.ndarray, min_size: int) -> Encoded:
    """Encode one image array (H x W gray or H x W x 3 RGB; uint8 or uint16) as PNG."""
    height, width = int(arr.shape[0]), int(arr.shape[1])
    conversions: list[str] = []
    if arr.dtype == np.uint16:
        arr, conversions = sixteen_to_eight(arr), ["16bit->rgb"]
    elif arr.dtype != np.uint8:
        return Encoded(None, error=f"unsupported array dtype {arr.dtype}", error_kind="unsupported_image")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        im = Image.fromarray(np.ascontiguousarray(arr), mode="L").convert("RGB")
        if not conversions:
            conversions.append("grayscale->rgb")
    elif arr.ndim == 3 and arr.shape[2] == 3:
        im = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    else:
        return Encoded(None, error=f"unsupported array shape {arr.shape}", error_kind="unsupported_image")
    too_big = upscale_error(width, height, min_size)
    if too_big is not None:
        return too_big
    im, upscaled = upscale_to_min(im, min_size)
    if upscaled:
        conversions.append("upscaled")
    return Encoded(_encode_png(im), "PNG", width, height, tuple(conversions))


def encode_payload(payload: FileRef | np.ndarray, min_size: int, verify: str = "full") -> Encoded:
    """Encode a file member or an array (arrays are always built from their pixels)."""
    if isinstance(payload, np.ndarray):
        return encode_array(payload, min_size)
    try:
        data = read_ref(payload)
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # unreadable, damaged zip member
        return Encoded(None, error=f"cannot read: {error_text(exc)}", error_kind="corrupt_image")
    except (RuntimeError, NotImplementedError) as exc:  # zipfile: an encrypted member, an unsupported compression
        return Encoded(None, error=f"cannot read the archive member: {exc}", error_kind="unreadable_archive_member")
    return encode_image_bytes(data, min_size, verify)


def encode_chunk(payloads: list[FileRef | np.ndarray], min_size: int, verify: str = "full") -> list[Encoded]:
    """Pool entry point: encode a chunk of payloads in order."""
    return [encode_payload(p, min_size, verify) for p in payloads]


def worker_init(main_pid: int | None = None) -> None:
    """Pool initializer: never accept truncated files in our worker processes, whatever a library set globally; leave
    Ctrl-C and SIGTERM (sent to the whole process group by terminals and job schedulers) to the main process, which
    then removes its temporary files and kills the workers itself; and exit when the main process `main_pid` dies
    without doing so (SIGKILL, the OOM killer: data_prep.lifeline)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if main_pid is not None:
        follow_main_process(main_pid)


def worker_started() -> None:
    """A no-op task: submitting one per worker starts them all at once."""
