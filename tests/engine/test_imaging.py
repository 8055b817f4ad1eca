"""Safe decoding, conversion to RGBA u8, PNG encoding and exact-size resampling."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from gimp_openai.errors import ImageTooLargeError, UnreadableImageError
from gimp_openai.imaging import decode_image, decode_selection, encode_png, image_size_of, read_image, resize
from PIL import Image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG of a few hundred bytes declaring width x height (the rows would inflate to gigabytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def pil_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w=16, h=8) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.dstack([x, y, 255 - x, np.full_like(x, 255)]).astype(np.uint8)


# --- refusing bad input ----------------------------------------------------------------------------------


def test_bomb_refused_before_decoding():
    data = bomb_png()
    assert len(data) < 200
    assert image_size_of(data) == (30000, 30000)
    with pytest.raises(ImageTooLargeError, match="30000x30000") as info:
        decode_image(data)
    assert "decompression bomb" in info.value.message


def test_bomb_refused_for_selection_too():
    with pytest.raises(ImageTooLargeError):
        decode_selection(bomb_png(20000, 20000))


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "not an image"),
    ],
)
def test_garbage_is_unreadable(data, expected):
    with pytest.raises(UnreadableImageError, match=expected):
        decode_image(data)


def test_truncated_png_is_unreadable():
    data = pil_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 4), np.uint8)))
    with pytest.raises(UnreadableImageError, match="truncated or damaged"):
        decode_image(data[: len(data) // 2])


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableImageError, match="Cannot read"):
        read_image(tmp_path / "nope.png")


# --- conversions -----------------------------------------------------------------------------------------


def _png16(array: np.ndarray) -> bytes:
    """16-bit PNG via OpenCV (array in RGB(A) order, uint16)."""
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "name, data, expected_first_pixel",
    [
        ("RGB", pil_bytes(Image.new("RGB", (3, 2), (10, 20, 30))), (10, 20, 30, 255)),
        ("RGBA", pil_bytes(Image.new("RGBA", (3, 2), (10, 20, 30, 40))), (10, 20, 30, 40)),
        ("L", pil_bytes(Image.new("L", (3, 2), 77)), (77, 77, 77, 255)),
        ("LA", pil_bytes(Image.new("LA", (3, 2), (77, 9))), (77, 77, 77, 9)),
        ("1-bit", pil_bytes(Image.new("1", (3, 2), 1)), (255, 255, 255, 255)),
        ("I;16 gray", pil_bytes(Image.fromarray(np.full((2, 3), 65535 // 3, np.uint16))), (85, 85, 85, 255)),
        ("16-bit gray PNG", _png16(np.full((2, 3), 32896, np.uint16)), (128, 128, 128, 255)),
        # truncating to the high byte would give (255, 0, 0); rounding v/257 gives (254, 1, 128)
        ("16-bit RGB PNG", _png16(np.dstack([np.full((2, 3), v, np.uint16) for v in (0xFF00, 0x00FF, 0x8080)])),
         (254, 1, 128, 255)),
        ("16-bit RGBA PNG", _png16(np.dstack([np.full((2, 3, 3), 65535, np.uint16),
                                               np.full((2, 3), 0, np.uint16)])), (255, 255, 255, 0)),
        ("float TIFF", pil_bytes(Image.fromarray(np.full((2, 3), 0.5, np.float32)), "TIFF"), (128, 128, 128, 255)),
        ("JPEG", pil_bytes(Image.new("RGB", (8, 8), (200, 100, 50)), "JPEG", quality=100), (200, 100, 50, 255)),
    ],
)
def test_modes_convert_to_rgba_u8(name, data, expected_first_pixel):
    out = decode_image(data)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 4
    assert np.abs(out[0, 0].astype(int) - expected_first_pixel).max() <= (2 if "JPEG" in name else 0), out[0, 0]


def test_palette_with_transparency():
    image = Image.new("P", (4, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putdata([0, 1, 0, 1])
    image.info["transparency"] = 1
    out = decode_image(pil_bytes(image, transparency=1))
    assert out[0, 0].tolist() == [255, 0, 0, 255]
    assert out[0, 1, 3] == 0


def test_cmyk_jpeg():
    data = pil_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100)  # pure red in CMYK
    out = decode_image(data)
    r, g, b, a = (int(v) for v in out[4, 4])
    assert r > 240 and g < 15 and b < 15 and a == 255


def test_exif_orientation_applied():
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(pil_bytes(image, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (4, 2)


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("L", (2, 2), 200), 200),
        (Image.new("LA", (2, 2), (200, 128)), 100),  # gray x alpha
        (Image.new("RGB", (2, 2), (255, 255, 255)), 255),
        (Image.new("RGBA", (2, 2), (255, 255, 255, 0)), 0),
    ],
)
def test_decode_selection(image, expected):
    out = decode_selection(pil_bytes(image))
    assert out.shape == (2, 2) and out.dtype == np.uint8
    assert abs(int(out[0, 0]) - expected) <= 1


# --- encoding and size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 4), (7, 13, 4), (5, 3, 3), (9, 4)])
def test_encode_png_round_trip(shape):
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels)
    assert image_size_of(data) == (shape[1], shape[0])
    back = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(back, pixels)


def test_image_size_of_non_png():
    assert image_size_of(pil_bytes(Image.new("RGB", (33, 17)), "JPEG")) == (33, 17)
    with pytest.raises(UnreadableImageError):
        image_size_of(b"garbage")


# --- resize ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, dst",
    [((16, 8), (16, 8)), ((16, 8), (1024, 512)), ((1000, 10), (7, 3)), ((16, 8), (4, 40)), ((1, 1), (3, 5))],
)
def test_resize_exact_size(src, dst):
    out = resize(gradient(*src), dst)
    assert out.shape == (dst[1], dst[0], 4) and out.dtype == np.uint8


def test_resize_constant_stays_constant():
    image = np.zeros((30, 40, 4), np.uint8)
    image[...] = (12, 200, 99, 255)
    for size in [(13, 7), (97, 61), (40, 30)]:
        assert np.array_equal(np.unique(resize(image, size).reshape(-1, 4), axis=0), [[12, 200, 99, 255]])


def test_resize_premultiplied_no_fringe():
    """A red opaque half next to transparent *green* pixels must not turn green-brown at the edge."""
    image = np.zeros((8, 8, 4), np.uint8)
    image[:, :4] = (255, 0, 0, 255)
    image[:, 4:] = (0, 255, 0, 0)
    out = resize(image, (32, 32))
    visible = out[..., 3] > 0
    assert out[visible][:, 1].max() <= 1, "colour of invisible pixels leaked"
    assert out[visible][:, 0].min() >= 254


def test_resize_gray():
    sel = np.zeros((10, 10), np.uint8)
    sel[2:8, 2:8] = 255
    assert resize(sel, (20, 5)).shape == (5, 20)


@pytest.mark.bench
@pytest.mark.parametrize("level", [0, 1, 3, 6])
def test_bench_encode_png(level):
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (1024, 1024, 3), np.uint8), (0, 0), 3)
    photo = np.dstack([base, np.full((1024, 1024), 255, np.uint8)])
    t = time.perf_counter()
    data = encode_png(photo, compress_level=level)
    opencv = time.perf_counter() - t
    t = time.perf_counter()
    pil = pil_bytes(Image.fromarray(photo), compress_level=level)
    pillow = time.perf_counter() - t
    print(f"\nencode_png 1024^2 level {level}: opencv {opencv * 1000:.0f} ms {len(data) / 1e6:.2f} MB; "
          f"pillow {pillow * 1000:.0f} ms {len(pil) / 1e6:.2f} MB")


# --- the PNG settings per destination (their per-pixel cost) ---------------------------------------------------------


def _photo(h: int = 256, w: int = 320, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    out = np.dstack([np.clip(base.astype(np.int16) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8),
                     rng.integers(0, 256, (h, w), dtype=np.uint8)])
    return out


@pytest.mark.parametrize("shape", [(256, 320, 4), (256, 320, 3), (256, 320), (1, 1, 4), (7, 1)])
def test_host_png_is_exact_and_readable_by_pillow_and_libpng(shape):
    from gimp_openai.imaging import encode_host_png

    full = _photo(max(shape[0], 16), max(shape[1], 16))
    pixels = np.ascontiguousarray(full[: shape[0], : shape[1], : shape[2]] if len(shape) == 3
                                  else full[: shape[0], : shape[1], 0])
    data = encode_host_png(pixels)
    back = np.asarray(Image.open(io.BytesIO(data)))
    assert back.shape == pixels.shape and np.array_equal(back, pixels)
    by_libpng = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if len(shape) == 3:
        by_libpng = by_libpng[..., [2, 1, 0, 3][: shape[2]]]
    assert np.array_equal(by_libpng.reshape(pixels.shape), pixels)
    if len(shape) == 3 and shape[2] == 4:
        assert np.array_equal(decode_image(data), pixels)
    elif len(shape) == 2:
        assert np.array_equal(decode_selection(data), pixels)


def test_host_png_stores_colour_and_compresses_masks():
    """Colour: stored (the temp file costs a copy, not a deflate); gray masks: deflated (mostly flat)."""
    from gimp_openai.imaging import encode_host_png

    colour = _photo(256, 320)
    assert len(encode_host_png(colour)) >= colour.nbytes + 256  # the rows + one filter byte each, uncompressed
    mask = np.zeros((256, 320), np.uint8)
    mask[40:200, 50:300] = 255
    assert len(encode_host_png(mask)) < mask.nbytes // 20
    with pytest.raises(ValueError, match="u8 gray, RGB or RGBA"):
        encode_host_png(colour.astype(np.uint16))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_upload_png_is_exact_and_no_bigger_than_libpngs_on_a_camera_photo(channels):
    """The banded encoder (several bands at this size) decodes to the same pixels in every channel layout; on
    a photo with camera noise it is no bigger than libpng's own adaptive level-1 PNG."""
    from gimp_openai import pngstrips
    from gimp_openai.imaging import encode_upload_png

    pixels = _photo(1024, 1536)
    pixels[..., 3] = 255
    noisy = np.random.default_rng(7).normal(0, 4, pixels.shape)
    pixels = np.clip(pixels + noisy, 0, 255).astype(np.uint8)
    pixels = pixels[..., 0] if channels == 1 else np.ascontiguousarray(pixels[..., :channels])
    assert len(pngstrips._band_spans(1536, 1024, channels)) >= 2 or channels == 1
    data = encode_upload_png(pixels)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert len(data) <= len(encode_png(pixels, compress_level=1))


def test_upload_png_tries_the_smallest_encoding_near_a_size_limit():
    from gimp_openai.imaging import encode_upload_png

    pixels = _photo(512, 512)
    pixels[..., 3] = 255
    fast = encode_upload_png(pixels)
    small = encode_upload_png(pixels, limit=len(fast) - 1)
    assert len(small) < len(fast) and np.array_equal(decode_image(small), decode_image(fast))


# --- the libpng fast path for plain 8-bit colour PNGs (what hosts export and the API returns) ------------------------


def _pil_png(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "RGB-tRNS", "LA", "P"])
def test_plain_png_fast_path_gives_exactly_what_pillow_gives(mode):
    from gimp_openai.imaging import _plain_png_colour

    photo = _photo(96, 128)
    if mode == "RGBA":
        data = _pil_png(photo)
    elif mode == "RGB":
        data = _pil_png(photo[..., :3].copy())
    elif mode == "RGB-tRNS":
        data = _pil_png(photo[..., :3].copy(), transparency=tuple(int(v) for v in photo[0, 0, :3]))
    elif mode == "LA":
        data = _pil_png(np.dstack([photo[..., 0], photo[..., 3]]))
    else:
        data = _pil_png(np.asarray(Image.fromarray(photo[..., :3].copy()).convert("P")))
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    assert np.array_equal(decode_image(data), expected)
    assert _plain_png_colour(data) is (mode in ("RGBA", "RGB"))


def test_a_damaged_plain_png_is_refused_with_a_clear_message_not_decoded_as_garbage():
    data = bytearray(_pil_png(_photo(96, 128)))
    at = data.index(b"IDAT") + 400
    data[at] ^= 0xFF  # the chunk's CRC no longer matches
    with pytest.raises(UnreadableImageError, match="truncated or damaged"):
        decode_image(bytes(data))
    with pytest.raises(UnreadableImageError, match="truncated or damaged"):
        decode_image(bytes(_pil_png(_photo(96, 128))[:-200]))


@pytest.mark.parametrize(
    "src, size, kept_columns",
    [
        ((1248, 832), (3000, 2000), None),  # nearly the same aspect: scaled, a pixel or two cut
        ((1024, 1024), (300, 200), "middle"),  # square into 3:2: the top and bottom are cut evenly
        ((100, 50), (100, 50), None),  # already the size: unchanged
    ],
)
def test_cover_fills_the_size_without_distorting(src, size, kept_columns):
    from gimp_openai.imaging import cover

    w, h = src
    pixels = np.zeros((h, w, 4), np.uint8)
    pixels[..., 3] = 255
    pixels[: h // 2, :, 0] = 255  # top half red: where the cut falls shows in the result
    pixels[:, : w // 2, 1] = 255  # left half green
    out = cover(pixels, size)
    assert out.shape == (size[1], size[0], 4) and out.flags["C_CONTIGUOUS"]
    # the halves stay halves (within the resampling blur): no shift, no stretch
    assert out[: size[1] // 2 - 3, :, 0].min() > 200 and out[size[1] // 2 + 3 :, :, 0].max() < 55
    assert out[:, : size[0] // 2 - 3, 1].min() > 200 and out[:, size[0] // 2 + 3 :, 1].max() < 55
    if src == size:
        assert np.array_equal(out, pixels)
