"""Safe decoding, PNG encoding and resampling of RGBA ``uint8`` arrays.

Decoding reads the declared size from the header first and refuses anything over ``MAX_DECODE_PIXELS`` before
a single pixel is inflated (a 100-byte PNG can declare 30000x30000 and ask for 3.6 GB). Every input mode that
GIMP, cameras or servers produce ends up as RGBA u8: 16-bit is rounded (v/257), not truncated; grayscale,
palette-with-transparency and CMYK go through Pillow's conversions; float images are taken as 0..1.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import ImageTooLargeError, UnreadableImageError

MAX_DECODE_PIXELS = 100_000_000

#: zlib level for PNGs we send. On a 1024^2 photo-like image level 1 took 85 ms / 1.42 MB, level 3 257 ms /
#: 1.29 MB, level 6 654 ms / 1.15 MB (``pytest -m bench tests/engine/test_imaging.py``): upload time for the
#: extra 20 % is far below the model's minute of work, the encode time is not.
PNG_COMPRESS_LEVEL = 1

#: PNG row filters (libpng through OpenCV). ``None`` = libpng's adaptive choice among all five per row.
#: OpenCV added IMWRITE_PNG_FILTER in 4.11; older builds (Debian trixie's 4.10, which GIMP 3's own Python uses
#: after a Flatpak or distro install) lack it, so a filter is a speed hint there, never a requirement.
_PNG_FILTERS: dict[str, int] = {
    name: getattr(cv2, f"IMWRITE_PNG_FILTER_{name.upper()}")
    for name in ("none", "sub", "up", "paeth")
    if hasattr(cv2, f"IMWRITE_PNG_FILTER_{name.upper()}")
}

#: The upload keeps libpng's adaptive row filters. A single fixed filter is faster (Sub: 110 ms instead of 176 ms
#: on a 1536^2 photo-like crop) but content-dependent: x1.035 the bytes there, x1.08 on a smooth upscaled photo
#: (Up: x0.96 there, x0.99 on the sample), over the x1.05 upload-size budget; zlib's RLE strategy is 18 % smaller on
#: photos but 2.6x larger on flat graphics with text.

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _open(data: bytes, what: str) -> Image.Image:
    """Open lazily (header only) and check the declared size."""
    if not data:
        raise UnreadableImageError(f"The {what} is empty (0 bytes).")
    if data[:8] == _PNG_SIGNATURE:
        _check_pixels(*image_size_of(data, what=what), what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own check (at twice its limit) fired first
        raise ImageTooLargeError(
            f"The {what} declares more than {Image.MAX_IMAGE_PIXELS or 0:,} pixels; it was not decoded "
            "(it may be a decompression bomb).",
            hint="Scale the image down or select a smaller region.",
        ) from exc
    except Exception as exc:  # Pillow raises many types for garbage
        raise UnreadableImageError(f"The {what} is not an image Pillow can read ({type(exc).__name__}).") from exc
    _check_pixels(*image.size, what)
    return image


def _check_pixels(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableImageError(f"The {what} declares an impossible size {width}x{height}.")
    if width * height > MAX_DECODE_PIXELS:
        raise ImageTooLargeError(
            f"The {what} declares {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{MAX_DECODE_PIXELS:,}; it was not decoded (it may be a decompression bomb).",
            hint="Scale the image down or select a smaller region.",
        )


def check_image_bytes(data: bytes, *, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file's bytes, from its header alone; UnreadableImageError or
    ImageTooLargeError (a bomb) when it is not an image this engine would decode."""
    image = _open(data, what)
    return int(image.size[0]), int(image.size[1])


def image_size_of(data: bytes, *, what: str = "image") -> tuple[int, int]:
    """(width, height) from the header alone; nothing is decoded."""
    if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tuple(Image.open(io.BytesIO(data)).size)  # type: ignore[return-value]
    except Exception as exc:
        raise UnreadableImageError(f"The {what} is not an image Pillow can read ({type(exc).__name__}).") from exc


def _png_bit_depth(data: bytes) -> int:
    return data[24] if data[:8] == _PNG_SIGNATURE and len(data) > 25 else 8


def _scale_to_u8(array: np.ndarray) -> np.ndarray:
    """Integer or float samples of any depth -> u8, rounding."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(np.rint(finite * 255.0), 0, 255).astype(np.uint8)
    # 32-bit integer images (Pillow mode "I"): GIMP and PNG put 16-bit data there.
    return ((np.clip(array, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)


def _decode_png16(data: bytes, what: str) -> np.ndarray:
    """16-bit PNGs through OpenCV, which keeps all 16 bits (Pillow drops the low byte of RGB16)."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UnreadableImageError(f"The {what} is a damaged or truncated 16-bit PNG.")
    array = _scale_to_u8(array)
    if array.ndim == 2:
        return np.dstack([array, array, array, np.full_like(array, 255)])
    if array.shape[2] == 2:  # gray + alpha
        g, a = array[..., 0], array[..., 1]
        return np.dstack([g, g, g, a])
    if array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGBA)
    return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)


def _pil_to_rgba(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGBA":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _scale_to_u8(np.asarray(image))
        return np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK (Adobe inversion handled by Pillow), YCbCr, LAB, HSV
    return np.asarray(image.convert("RGBA"), dtype=np.uint8).copy()


def _plain_png_colour(data: bytes) -> bool:
    """An 8-bit RGB or RGBA PNG with nothing before its pixels that Pillow would apply and libpng would not
    (tRNS transparency, eXIf orientation): what the hosts export and what the Images API returns."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR":
        return False
    if data[24] != 8 or data[25] not in (2, 6):
        return False
    idat = data.find(b"IDAT", 33)
    if idat < 0:
        return False
    head = data[33:idat]
    return b"tRNS" not in head and b"eXIf" not in head


def _decode_plain_png(data: bytes) -> np.ndarray | None:
    """libpng through OpenCV, colour order fixed in place: one pixel buffer, where Pillow's path makes three
    (its image, the bytes behind ``np.asarray``, the copy); about 20 % faster too. None when libpng refuses it
    (truncated or damaged): the Pillow path then says what is wrong."""
    return _plain_colour_to_rgba(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))


def _plain_colour_to_rgba(array: np.ndarray | None) -> np.ndarray | None:
    """libpng's BGR(A) u8 -> RGBA u8 (in place for BGRA); None when it is not what a plain PNG decodes to."""
    if array is None or array.ndim != 3 or array.dtype != np.uint8 or array.shape[2] not in (3, 4):
        return None
    if array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGBA)
    return _bgra_to_rgba_in_place(array)


def _bgra_to_rgba_in_place(array: np.ndarray, band_rows: int = 256) -> np.ndarray:
    """Swap B and R in place, band by band. Why bands: OpenCV's "in place" cvtColor (dst=src) still makes a
    full-size temporary (measured: +246 MB for 8000x8000), a third of the CLI's peak on a big picture."""
    for row0 in range(0, array.shape[0], band_rows):
        band = array[row0 : row0 + band_rows]
        cv2.cvtColor(band, cv2.COLOR_BGRA2RGBA, dst=band)
    return array


def decode_image(data: bytes, *, what: str = "image") -> np.ndarray:
    """Bytes of any common image format -> RGBA u8 (H, W, 4). Errors say what is wrong in plain words."""
    image = _open(data, what)
    if image.format == "PNG" and _png_bit_depth(data) == 16:
        return _decode_png16(data, what)
    if image.format == "PNG" and _plain_png_colour(data):
        fast = _decode_plain_png(data)
        if fast is not None:
            return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return _pil_to_rgba(image)
    except (ImageTooLargeError, UnreadableImageError):
        raise
    except Exception as exc:
        raise UnreadableImageError(
            f"The {what} could not be decoded: it is truncated or damaged ({type(exc).__name__}: {exc})."
        ) from exc


def decode_selection(data: bytes, *, what: str = "selection") -> np.ndarray:
    """Bytes -> u8 (H, W), 255 = selected. Grayscale as is; with alpha, gray x alpha; colour by luminance."""
    image = _open(data, what)
    if image.format == "PNG" and _png_bit_depth(data) == 16:
        rgba = _decode_png16(data, what)
        return rgba[..., 0]
    try:
        image.load()
        if image.mode == "L":
            return np.asarray(image, dtype=np.uint8).copy()
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return _scale_to_u8(np.asarray(image)).copy()
        if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
            la = np.asarray(image.convert("LA"), dtype=np.uint16)
            return ((la[..., 0] * la[..., 1] + 127) // 255).astype(np.uint8)
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    except Exception as exc:
        raise UnreadableImageError(
            f"The {what} could not be decoded: it is truncated or damaged ({type(exc).__name__}: {exc})."
        ) from exc


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImageError(f"Cannot read the {what} file {os.fspath(path)!r}: {exc.strerror or exc}.") from exc


#: How much of a file is read to judge whether it is a plain PNG (its IDAT must start within it).
_PLAIN_HEAD_BYTES = 1 << 20


def is_plain_png_file(path: str | os.PathLike[str], head_bytes: int = _PLAIN_HEAD_BYTES) -> bool:
    """True when ``path`` is an 8-bit RGB(A) PNG that every reader decodes to exactly what :func:`read_image`
    gives (see :func:`_plain_png_colour`), judged from its first ``head_bytes``; such a file can be copied
    where its pixels are wanted (the .ora's original layer) instead of being encoded again."""
    try:
        with open(path, "rb") as handle:
            return _plain_png_colour(handle.read(head_bytes))
    except OSError:
        return False


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    what = f"image {Path(path).name!r}"
    direct = _read_plain_png_file(path, what)
    if direct is not None:
        return direct
    return decode_image(_read(path, "image"), what=what)


def _read_plain_png_file(path: str | os.PathLike[str], what: str) -> np.ndarray | None:
    """A plain 8-bit RGB(A) PNG decoded by libpng straight from the file (its declared size checked first, from
    the header); None for anything else, or when libpng refuses it (the bytes path then says why). Why: the
    bytes path holds the whole file while the pixels are decoded (an 8000² picture: 121 MB more at the CLI's
    peak)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PLAIN_HEAD_BYTES)
    except OSError:
        return None
    if not _plain_png_colour(head):
        return None
    _check_pixels(*image_size_of(head, what=what), what)
    array = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    return _plain_colour_to_rgba(array)


def read_selection(path: str | os.PathLike[str]) -> np.ndarray:
    return decode_selection(_read(path, "selection"), what=f"selection {Path(path).name!r}")


def encode_png(pixels: np.ndarray, *, compress_level: int = PNG_COMPRESS_LEVEL, png_filter: str | None = None) -> bytes:
    """RGBA (H, W, 4), RGB (H, W, 3) or gray (H, W) u8 -> PNG bytes (OpenCV's libpng; Pillow's is as fast).

    ``png_filter`` ("none", "sub", "up", "paeth") fixes libpng's row filter; None lets it choose per row."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {pixels.dtype}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ValueError(f"encode_png cannot encode an array of shape {pixels.shape}")
    bgr = libpng_order(pixels)
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)]
    if png_filter is not None and png_filter not in ("none", "sub", "up", "paeth"):
        raise ValueError(f"unknown PNG filter {png_filter!r}")
    if png_filter in _PNG_FILTERS and hasattr(cv2, "IMWRITE_PNG_FILTER"):
        params += [cv2.IMWRITE_PNG_FILTER, _PNG_FILTERS[png_filter]]
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def encode_upload_png(pixels: np.ndarray, *, limit: int | None = None) -> bytes:
    """The PNG sent to the model, made in bands on every core (:func:`pngstrips.encode`): with a server that
    answers in seconds, libpng's one-thread encoding of a 1536² crop (0.24-0.48 s) was a third of what a GIMP
    run adds to the server's time. Over ``limit`` bytes, the smallest encoding libpng makes (level 9) is tried
    before the caller refuses the upload."""
    from . import pngstrips

    data = pngstrips.encode(pixels)
    if limit is not None and len(data) > limit:
        smaller = encode_png(pixels, compress_level=9)
        if len(smaller) < len(data):
            return smaller
    return data


def encode_host_png(pixels: np.ndarray) -> bytes:
    """A PNG handed to the host (a temp file it reads once, then deletes): exact pixels, as fast as possible to
    write AND to read, and the same on every OpenCV (4.10, in GIMP's distro Pythons, cannot switch libpng's
    row filters off). No row filter; RGBA/RGB stored (zlib level 0): a 1536^2 layer in ~15 ms where libpng's
    adaptive level 1 took 176-325 ms, and read back in a quarter of the time; twice the bytes in a temp folder
    cost less than that. Gray (layer masks, mostly flat): zlib level 1, as fast, kilobytes instead of megabytes.
    Peak extra memory: two copies of the pixels (the filtered rows, then the compressed stream)."""
    check_png_pixels(pixels, "encode_host_png")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # column 0: filter type 0 (None) for every row
    rows[:, 1:] = pixels.reshape(height, width * channels)
    stream = zlib.compress(rows.data, 1 if channels == 1 else 0)
    del rows
    return png_file(width, height, channels, stream)


def check_png_pixels(pixels: np.ndarray, who: str) -> None:
    """What the engine's PNG writers take: u8 gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"{who} needs u8 gray, RGB or RGBA pixels, got {pixels.dtype} {pixels.shape}")


def libpng_order(pixels: np.ndarray) -> np.ndarray:
    """RGB(A) as OpenCV hands it to libpng (BGR(A)); gray as it is."""
    if pixels.ndim == 2:
        return pixels
    return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)


def png_file(width: int, height: int, channels: int, stream: bytes) -> bytes:
    """An 8-bit PNG around a finished zlib ``stream`` of filtered rows: signature, IHDR, one IDAT, IEND."""
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    from .pngstrips import png_chunk

    return b"".join([_PNG_SIGNATURE, *png_chunk(b"IHDR", header), *png_chunk(b"IDAT", stream),
                     *png_chunk(b"IEND", b"")])


def _interpolation(src: int, dst: int) -> int:
    return cv2.INTER_AREA if dst < src else cv2.INTER_CUBIC


def _resize_channels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area when shrinking (no aliasing), bicubic when enlarging; one pass per axis when they disagree."""
    w, h = size
    src_h, src_w = pixels.shape[:2]
    if (w < src_w) == (h < src_h) or w == src_w or h == src_h:
        shrinking = w * h < src_w * src_h
        method = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        return cv2.resize(pixels, (w, h), interpolation=method)
    step = cv2.resize(pixels, (w, src_h), interpolation=_interpolation(src_w, w))
    return cv2.resize(step, (w, h), interpolation=_interpolation(src_h, h))


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize RGBA (or gray) u8 to exactly ``size`` = (width, height).

    Transparent pixels are resampled premultiplied, so their (arbitrary) colour cannot bleed into visible
    neighbours as a dark or coloured fringe. Fully opaque images skip that (faster, bit-identical alpha).
    """
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"Cannot resize to {w}x{h}")
    if pixels.shape[1] == w and pixels.shape[0] == h:
        return pixels.copy()
    if pixels.ndim == 2 or pixels.shape[2] != 4 or bool((pixels[..., 3] == 255).all()):
        out = _resize_channels(pixels, (w, h))
        return out.reshape((h, w) + pixels.shape[2:])
    alpha = pixels[..., 3:4].astype(np.float32) / 255.0
    premultiplied = np.concatenate([pixels[..., :3].astype(np.float32) * alpha, alpha * 255.0], axis=2)
    out = np.clip(_resize_channels(premultiplied, (w, h)), 0.0, 255.0)
    a = out[..., 3:4]
    rgb = np.where(a > 0.5, out[..., :3] * 255.0 / np.maximum(a, 1e-6), 0.0)
    result = np.concatenate([np.clip(rgb, 0, 255), a], axis=2)
    return np.rint(result).astype(np.uint8)


def cover(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``pixels`` uniformly until they cover ``size`` = (width, height), then cut the overhang evenly
    from both sides: a generation of nearly the canvas's aspect fills the canvas, undistorted."""
    w, h = int(size[0]), int(size[1])
    src_h, src_w = pixels.shape[:2]
    scale = max(w / src_w, h / src_h)
    sw = max(w, int(math.ceil(src_w * scale - 1e-9)))
    sh = max(h, int(math.ceil(src_h * scale - 1e-9)))
    scaled = resize(pixels, (sw, sh))
    x0, y0 = (sw - w) // 2, (sh - h) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + h, x0 : x0 + w])
