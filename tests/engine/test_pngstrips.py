"""pngstrips: a PNG written band by band (some bands made ahead) is one valid PNG with exactly the pixels given."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from gimp_openai import pngstrips
from PIL import Image


def _chunks(png: bytes, kind: bytes) -> list[bytes]:
    """The payloads of the ``kind`` chunks, each CRC checked."""
    found, pos = [], 8
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        payload = png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(png[pos + 4 : pos + 8 + length]) & 0xFFFFFFFF == crc
        if png[pos + 4 : pos + 8] == kind:
            found.append(payload)
        pos += 12 + length
    return found


#: the deflate libraries a PNG may be written with: the standard library's always, zlib-ng where installed
DEFLATES = [zlib] + ([pngstrips.DEFLATE] if pngstrips.DEFLATE is not zlib else [])


@pytest.fixture(params=DEFLATES, ids=lambda module: module.__name__)
def deflate(request, monkeypatch):
    monkeypatch.setattr(pngstrips, "DEFLATE", request.param)
    return request.param


def test_zlib_ng_is_used_where_installed_and_zlib_elsewhere(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zlib_ng", None)  # as on a platform without its wheel
    assert pngstrips._deflate_library() is zlib
    monkeypatch.delitem(sys.modules, "zlib_ng")
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pytest.skip("zlib-ng is not installed here")
    assert pngstrips._deflate_library() is zlib_ng


@pytest.mark.parametrize("shape", [(1, 1, 4), (3, 5, 4), (301, 257, 4), (700, 300, 3), (90, 61)])
def test_a_streamed_png_decodes_to_the_exact_pixels(monkeypatch, shape, deflate):
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
    data = out.getvalue()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    stream = b"".join(_chunks(data, b"IDAT"))
    assert stream[0] == 0x78 and (stream[0] << 8 | stream[1]) % 31 == 0
    rows_bytes = zlib.decompress(stream)  # one zlib stream: checks the joined parts and the combined Adler-32
    assert len(rows_bytes) == shape[0] * (1 + shape[1] * channels)
    band = max(1, 4096 // (shape[1] * channels))
    assert max(requested) <= band + 1  # never more than a band (and the row above it) at a time


def test_adler32_combine_equals_the_adler_of_the_concatenation():
    rng = np.random.default_rng(5)
    for n1, n2 in [(0, 0), (1, 0), (0, 1), (3, 70000), (65521, 65521), (100003, 7)]:
        a, b = rng.integers(0, 256, n1, np.uint8).tobytes(), rng.integers(0, 256, n2, np.uint8).tobytes()
        assert pngstrips.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@pytest.mark.parametrize("stop_early", [False, True])
def test_bands_made_ahead_give_the_same_png_as_writing_it_all_now(tmp_path, monkeypatch, stop_early, deflate):
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
        ahead.wait()
        assert len(ahead.parts) == len(ahead.spans)
    with_ahead, plain = tmp_path / "ahead.png", tmp_path / "plain.png"
    with open(with_ahead, "wb") as out:
        pngstrips.write_png(out, 40, 300, 4, lambda a, b: changed[a:b], ahead=ahead, changed=[(101, 160)])
    with open(plain, "wb") as out:
        pngstrips.write_png(out, 40, 300, 4, lambda a, b: changed[a:b])
    ahead.close()
    assert with_ahead.read_bytes() == plain.read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(with_ahead)), changed)


def test_bands_ahead_leave_out_the_rows_the_answer_replaces(monkeypatch):
    """While the server works, the bands the result will replace would be wasted: they are not made."""
    monkeypatch.setattr(pngstrips, "STREAM_BAND_BYTES", 40 * 4 * 10)
    monkeypatch.setattr(pngstrips, "workers", lambda: 1)  # one thread: the order of the parts in the file is the order
    picture = np.random.default_rng(5).integers(0, 256, (200, 40, 4), np.uint8)
    ahead = pngstrips.BandsAhead(40, 200, 4, lambda a, b: picture[a:b]).start(skip=[(95, 125)])
    ahead.wait()
    by_offset = sorted(ahead.parts, key=lambda band: ahead.parts[band][0])
    # band 13 (rows 130-140) is deflated primed with band 12's rows, which the answer replaces: left out too
    assert by_offset == [0, 1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 17, 18, 19]
    changed = picture.copy()
    changed[95:125] ^= 0x5A
    with_ahead, plain = io.BytesIO(), io.BytesIO()
    pngstrips.write_png(with_ahead, 40, 200, 4, lambda a, b: changed[a:b], ahead=ahead, changed=[(95, 125)])
    pngstrips.write_png(plain, 40, 200, 4, lambda a, b: changed[a:b])
    assert with_ahead.getvalue() == plain.getvalue()
    ahead.close()


def test_bands_ahead_that_cannot_be_stored_are_made_when_needed(tmp_path, monkeypatch):
    """A full temp folder while the server works: no error, and the PNG is still whole and exact."""
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (120, 30, 4), np.uint8)
    monkeypatch.setattr(pngstrips, "STREAM_BAND_BYTES", 30 * 4 * 10)
    ahead = pngstrips.BandsAhead(30, 120, 4, lambda a, b: picture[a:b])

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def seek(self, offset):
            pass

        def close(self):
            pass
    ahead.file = Full()
    ahead.start().stop()
    assert ahead.parts == {}
    out = io.BytesIO()
    pngstrips.write_png(out, 30, 120, 4, lambda a, b: picture[a:b], ahead=ahead, changed=[(0, 5)])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.getvalue()))), picture)
