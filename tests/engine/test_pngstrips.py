"""pngstrips: a PNG made in strips on several cores is one valid PNG with exactly the pixels given."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from gimp_openai import pngstrips
from PIL import Image


def _image(kind: str, h: int, w: int, channels: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "smooth":  # Up/Average/Paeth rows everywhere: the strip seams are re-filtered
        yy, xx = np.mgrid[0:h, 0:w]
        base = ((xx * 3 + yy * 5) % 256).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(base[..., None], channels, axis=2).squeeze())
    if kind == "flat":
        return np.full(shape, 77, np.uint8)
    photo = cv2.resize(rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    if channels == 1:
        return np.ascontiguousarray(photo[..., 0])
    if channels == 3:
        return photo
    return np.dstack([photo, rng.integers(0, 256, (h, w), dtype=np.uint8)])


def _decode_libpng(data: bytes, channels: int) -> np.ndarray:
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if channels == 4:
        return cv2.cvtColor(out, cv2.COLOR_BGRA2RGBA)
    if channels == 3:
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return out


CASES = [  # kind, height, width, channels, strips
    ("photo", 300, 200, 4, 2), ("photo", 301, 199, 3, 3), ("photo", 97, 64, 1, 4), ("smooth", 256, 256, 4, 2),
    ("smooth", 255, 130, 3, 5), ("smooth", 64, 64, 1, 7), ("noise", 120, 90, 4, 2), ("flat", 200, 300, 4, 3),
    ("photo", 5, 400, 4, 8), ("photo", 3, 3, 4, 3), ("photo", 1, 1, 4, 1), ("smooth", 2, 9, 1, 2),
]


BACKENDS = [pytest.param(pngstrips.ZLIB, id="zlib"),
            pytest.param(pngstrips.ISAL, id="isal",
                         marks=pytest.mark.skipif(pngstrips.ISAL is None, reason="isal not installed here"))]


@pytest.mark.parametrize("deflate", BACKENDS)
@pytest.mark.parametrize(("kind", "h", "w", "channels", "strips"), CASES)
def test_strips_decode_to_exactly_the_pixels_in_pillow_and_libpng(kind, h, w, channels, strips, deflate):
    pixels = _image(kind, h, w, channels)
    data = pngstrips.encode_png(pixels, strips=strips, deflate=deflate)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert np.array_equal(_decode_libpng(data, channels), pixels)


@pytest.mark.parametrize("deflate", BACKENDS)
def test_one_zlib_stream_with_a_valid_header_and_adler32(deflate):
    pixels = _image("photo", 400, 300, 4)
    data = pngstrips.encode_png(pixels, strips=4, deflate=deflate)
    assert data.count(b"IDAT") == 1
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    stream = data[at + 4 : at + 4 + length]
    assert (stream[0] << 8 | stream[1]) % 31 == 0 and stream[0] == 0x78
    rows = zlib.decompress(stream)  # checks the Adler-32 too
    assert len(rows) == 400 * (1 + 300 * 4)
    assert zlib.crc32(data[at : at + 4 + length]) & 0xFFFFFFFF == struct.unpack(">I", data[at + 4 + length :
                                                                                         at + 8 + length])[0]


def test_seam_rows_that_libpng_filtered_against_nothing_are_refiltered():
    """On a smooth image libpng picks Up/Paeth for most rows; at every strip start that choice assumed a row of
    zeros above. Those rows must come out as Up against the real row above (filter byte 2)."""
    pixels = _image("smooth", 200, 100, 3)
    data = pngstrips.encode_png(pixels, strips=4)
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    rows = zlib.decompress(data[at + 4 : at + 4 + length])
    stride = 1 + 100 * 3
    for start in (50, 100, 150):
        assert rows[start * stride] in (0, 1, 2)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_no_bigger_than_one_libpng_stream_at_the_same_zlib_level():
    pixels = _image("photo", 1024, 768, 4)
    ok, single = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    parallel = pngstrips.encode_png(pixels, strips=2, deflate=pngstrips.ZLIB)
    assert 0.99 < len(parallel) / single.size <= 1.001


@pytest.mark.skipif(pngstrips.ISAL is None, reason="isal not installed here")
def test_isal_is_used_where_installed_and_is_no_bigger_than_zlib_level_1():
    assert pngstrips.best_deflate() is pngstrips.ISAL
    pixels = _image("photo", 1024, 768, 4)
    assert len(pngstrips.encode_png(pixels)) <= len(pngstrips.encode_png(pixels, deflate=pngstrips.ZLIB))


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.uint16),
                                 np.zeros((0, 4, 4), np.uint8)])
def test_refuses_what_it_cannot_encode(bad):
    with pytest.raises(ValueError):
        pngstrips.encode_png(bad)


@pytest.mark.parametrize("shape", [(1, 1, 4), (3, 5, 4), (301, 257, 4), (700, 300, 3), (90, 61)])
def test_a_streamed_png_decodes_to_the_exact_pixels(monkeypatch, shape):
    """write_png: bands (here tiny, so there are many and several groups), Up-filtered against the row above
    the band, deflate parts joined into one zlib stream: every decoder sees the source's pixels."""
    monkeypatch.setattr(pngstrips, "STREAM_BAND_BYTES", 4096)
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 3] = 17  # flat rows too
    requested = []

    def rows(row0: int, row1: int) -> np.ndarray:
        requested.append(row1 - row0)
        return pixels[row0:row1]

    out = io.BytesIO()
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    assert pngstrips.write_png(out, shape[1], shape[0], channels, rows) == len(out.getvalue())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out.getvalue()))), pixels)
    band = max(1, 4096 // (shape[1] * channels))
    assert max(requested) <= band + 1  # never more than a band (and the row above it) at a time


def test_adler32_combine_equals_the_adler_of_the_concatenation():
    rng = np.random.default_rng(5)
    for n1, n2 in [(0, 0), (1, 0), (0, 1), (3, 70000), (65521, 65521), (100003, 7)]:
        a, b = rng.integers(0, 256, n1, np.uint8).tobytes(), rng.integers(0, 256, n2, np.uint8).tobytes()
        assert pngstrips.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@pytest.mark.parametrize("stop_early", [False, True])
def test_bands_made_ahead_give_the_same_png_as_writing_it_all_now(tmp_path, monkeypatch, stop_early):
    """The original's bands deflated before a crop was pasted in: the PNG is byte for byte the one written
    without them, decodes to the changed picture, and bands near the change are made again."""
    monkeypatch.setattr(pngstrips, "STREAM_BAND_BYTES", 40 * 4 * 7)  # many small bands
    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, (300, 40, 4), np.uint8)
    changed = original.copy()
    changed[101:160, 5:30] = 255 - changed[101:160, 5:30]
    ahead = pngstrips.BandsAhead(40, 300, 4, lambda a, b: original[a:b]).start()
    if stop_early:
        ahead.stop()  # the result came first: only the bands made so far are used
    else:
        ahead._thread.join()
        assert len(ahead.parts) == len(ahead.spans)
    with_ahead, plain = tmp_path / "ahead.png", tmp_path / "plain.png"
    with open(with_ahead, "wb") as out:
        pngstrips.write_png(out, 40, 300, 4, lambda a, b: changed[a:b], ahead=ahead, changed=[(101, 160)])
    with open(plain, "wb") as out:
        pngstrips.write_png(out, 40, 300, 4, lambda a, b: changed[a:b])
    ahead.close()
    assert with_ahead.read_bytes() == plain.read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(with_ahead)), changed)


def test_bands_ahead_that_cannot_be_stored_are_made_when_needed(tmp_path, monkeypatch):
    """A full temp folder while the server works: no error, and the PNG is still whole and exact."""
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (120, 30, 4), np.uint8)
    monkeypatch.setattr(pngstrips, "STREAM_BAND_BYTES", 30 * 4 * 10)
    ahead = pngstrips.BandsAhead(30, 120, 4, lambda a, b: picture[a:b])

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            pass
    ahead.file = Full()
    ahead.start().stop()
    assert ahead.parts == {}
    out = io.BytesIO()
    pngstrips.write_png(out, 30, 120, 4, lambda a, b: picture[a:b], ahead=ahead, changed=[(0, 5)])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.getvalue()))), picture)
