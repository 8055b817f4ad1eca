"""PNGs too big to hold whole, written band by band: one valid PNG, one zlib stream, made in horizontal bands.

Why: a full-size result of an 8000² picture is 256 MB of pixels; encoding it in one piece (libpng through
OpenCV) takes a BGRA copy, libpng's output buffer and a bytes copy of that (~0.8 GB at once). Here each band is
filtered (Up) and deflated on its own as one part of a single zlib stream, as pigz does: raw deflate primed with
the previous band's last 32 KiB and ended by a sync flush (so the parts join on byte boundaries), Adler-32s
combined. A decoder sees one ordinary PNG. Because the parts are independent, the unchanged bands of an edit's
result can be deflated before the result exists (:class:`BandsAhead`, while the server works), and a picture is
deflated on every core: the upload (:func:`encode`) of a 1536² RGBA crop takes 80-170 ms on the 2-core machine
of docs/performance.md, where libpng's one thread took 240-480 ms.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

#: the deflate window: each band is primed with this much of the stream before it.
WINDOW = 32 * 1024
#: zlib level and strategy of the streamed PNGs. Run-length matches only (``Z_RLE``) suit Up-filtered camera
#: pixels: their residuals are small numbers that Huffman codes pack, and long matches are rare, so level 1's
#: match search mostly costs time. On a 1536² photo with camera noise: 4.7 MB in 134 ms vs 5.5 MB in 149 ms
#: (one thread); on pure noise 146 vs 290 ms, the same size; flat art smaller still. A smooth picture upscaled
#: from a small one is the loss: 1.24 MB vs 1.05 MB, 69 vs 49 ms.
LEVEL = 1
STRATEGY = zlib.Z_RLE


def _deflate_library() -> Any:
    """zlib-ng where its wheel is installed, else the standard library's zlib: the same deflate format and, with
    ``Z_RLE``, the same bytes' worth of compression at twice the speed (a 4 MB band of an 8000² photo: 28 instead
    of 58 ms). An 8000² result is 62 such bands; at a server's few seconds they decide whether the original's
    bands are all made ahead. zlib-ng is an optional dependency (not every platform has a wheel)."""
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        return zlib
    return zlib_ng


DEFLATE = _deflate_library()

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def workers() -> int:
    """Threads for one PNG: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))  # not on macOS or Windows: AttributeError
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="png")
        return _pool


def _deflate(rows: bytes | memoryview, primer: bytes, last: bool) -> bytes:
    compressor = DEFLATE.compressobj(LEVEL, zlib.DEFLATED, -15, 8, STRATEGY, *([primer] if primer else []))
    return bytes(compressor.compress(rows) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH))


def _zlib_header() -> bytes:
    """CMF/FLG for a 32 KiB window and the fastest-level hint (FCHECK makes the pair divisible by 31)."""
    cmf, flg = 0x78, 0
    flg += 31 - ((cmf << 8) + flg) % 31
    return bytes([cmf, flg])


#: A band of a streamed PNG holds about this many bytes of pixels (an 8000-px-wide RGBA band: 131 rows).
STREAM_BAND_BYTES = 4 << 20

#: the smallest band :func:`encode` makes: smaller ones would spend more on their primers than they gain.
MIN_BAND_BYTES = 256 << 10

RowSource = Callable[[int, int], np.ndarray]


def _up_filtered(rows: RowSource, span: tuple[int, int], width: int, channels: int,
                 buffer: np.ndarray) -> memoryview:
    """Rows ``span`` of the source, PNG filter Up (each byte minus the one above it, modulo 256; the first row
    of the image against zeros), each row led by its filter byte 2. One numpy subtraction per band: ~20x faster
    than libpng's per-row choice (0.09 s for an 8000x131 RGBA band on this machine), and on photos Up is as
    small as that choice (x0.96-0.99, see imaging's figures)."""
    row0, row1 = span
    stride = width * channels
    band = rows(row0, row1).reshape(row1 - row0, stride)
    above = rows(row0 - 1, row0).reshape(1, stride) if row0 > 0 else np.zeros((1, stride), np.uint8)
    out = buffer[: row1 - row0]  # reused band after band: no fresh (kernel-zeroed) mapping per band
    out[:, 0] = 2
    np.subtract(band[:1], above, out=out[:1, 1:])
    np.subtract(band[1:], band[:-1], out=out[1:, 1:])
    return memoryview(out.data).cast("B")


def _band_spans(width: int, height: int, channels: int, band_bytes: int | None = None) -> list[tuple[int, int]]:
    band = max(1, (band_bytes or STREAM_BAND_BYTES) // (width * channels))
    return [(y, min(height, y + band)) for y in range(0, height, band)]


def _primer_rows(previous: tuple[int, int], width: int, channels: int) -> tuple[int, int]:
    """The rows of the band before whose filtered bytes end the stream just before the next band: the last
    ``WINDOW`` bytes of them, never more than that band."""
    stride = width * channels + 1
    return max(previous[0], previous[1] - (WINDOW + stride - 1) // stride), previous[1]


def _tail(rows: RowSource, previous: tuple[int, int], width: int, channels: int) -> bytes:
    """A band's deflate primer: the last ``WINDOW`` bytes of the band before it, filtered."""
    first, last = _primer_rows(previous, width, channels)
    buffer = np.empty((last - first, width * channels + 1), np.uint8)
    return bytes(_up_filtered(rows, (first, last), width, channels, buffer)[-WINDOW:])


def _depends_on(spans: list[tuple[int, int]], index: int, width: int, channels: int) -> tuple[int, int]:
    """The source rows band ``index``'s deflate part depends on: its own, those of its primer, and the row above
    those (the Up filter)."""
    first = _primer_rows(spans[index - 1], width, channels)[0] if index else spans[index][0]
    return max(0, first - 1), spans[index][1]


def adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """The Adler-32 of A+B from those of A and B and the length of B (zlib's adler32_combine)."""
    base = 65521
    rem = length2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 += (adler2 & 0xFFFF) + base - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + base - rem
    sum1 %= base
    sum2 %= base
    return sum1 | (sum2 << 16)


class BandsAhead:
    """The deflate parts of a picture's bands, made before they are needed (while a server works), for the
    bands a later change leaves alone: the full-size result of an edit is the original with a crop pasted in,
    so most of its PNG is known before the result arrives. Parts go to a temporary file, not to memory.

    ``start()`` works on every core until done or ``stop()``; :func:`write_png` takes the parts that were made.
    On a 2-core machine, 8000² RGBA at the bench's 1 s latency: 36 of 62 bands made ahead on one thread, of them
    21 usable (the others were where the result went); on two threads, without those bands, see
    docs/performance.md."""

    def __init__(self, width: int, height: int, channels: int, rows: RowSource) -> None:
        import tempfile

        self.width, self.height, self.channels, self.rows = width, height, channels, rows
        self.spans = _band_spans(width, height, channels)
        self.file = tempfile.TemporaryFile(prefix="gimp-openai-bands-")
        self.parts: dict[int, tuple[int, int, int, int]] = {}  # band -> (offset, size, adler, filtered bytes)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the queue of bands, the file of parts and its index
        self._threads: list[threading.Thread] = []
        self._queue: Iterator[int] = iter(())
        self._end = 0  # where the next part goes in the file
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def start(self, skip: Sequence[tuple[int, int]] = (), threads: int = 0) -> BandsAhead:
        """Deflate the bands on ``threads`` threads (0: one per core), except those touching the row ranges
        ``skip``: the rows the answer will replace, whose parts could never be used."""
        order = [i for i in range(len(self.spans)) if not self._touched(i, skip)]
        self._started = True
        self._queue = iter(order)
        self._threads = [threading.Thread(target=self._run, name=f"png-ahead-{k}", daemon=True)
                         for k in range(min(threads or workers(), len(order)))]
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> None:
        """Wait until every band is made (or the making stopped)."""
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        """Stop making parts (the ones made are kept) and wait for those being made."""
        self._stop.set()
        self.wait()

    def close(self) -> None:
        self.stop()
        self.file.close()

    def _run(self) -> None:
        try:
            self._make_parts()
        except (OSError, ValueError, MemoryError):  # no room for the parts: the rest are made when needed
            return

    def _make_parts(self) -> None:
        stride = self.width * self.channels + 1
        buffer = np.empty((self.spans[0][1] - self.spans[0][0], stride), np.uint8)
        while not self._stop.is_set():
            with self._lock:
                index = next(self._queue, None)
            if index is None:
                return
            filtered = _up_filtered(self.rows, self.spans[index], self.width, self.channels, buffer)
            primer = _tail(self.rows, self.spans[index - 1], self.width, self.channels) if index else b""
            part = _deflate(filtered, primer, index == len(self.spans) - 1)
            with self._lock:
                self.file.seek(self._end)  # reusable() may have read elsewhere
                self.file.write(part)
                self.parts[index] = (self._end, len(part), zlib.adler32(filtered), len(filtered))
                self._end += len(part)

    def _touched(self, index: int, changed: Sequence[tuple[int, int]]) -> bool:
        """Whether rows ``changed`` touch what band ``index``'s part depends on (its rows, its primer's, the row
        above): then a part made before the change is not that band's part after it."""
        first, last = _depends_on(self.spans, index, self.width, self.channels)
        return any(c0 < last and first < c1 for c0, c1 in changed)

    def reusable(self, index: int, changed: Sequence[tuple[int, int]]) -> tuple[bytes, int, int] | None:
        """The part made ahead for band ``index`` when no changed rows touch what it depends on."""
        entry = self.parts.get(index)
        if entry is None or self._touched(index, changed):
            return None
        offset, size, adler, length = entry
        with self._lock:
            self.file.seek(offset)
            return self.file.read(size), adler, length


def write_png(out: Any, width: int, height: int, channels: int, rows: RowSource, *,
              ahead: BandsAhead | None = None, changed: Sequence[tuple[int, int]] = (),
              band_bytes: int | None = None) -> int:
    """Write a PNG to the binary file ``out`` from ``rows(row0, row1)`` (u8 (rows, width[, channels]) arrays),
    band by band, deflated on every core; return the bytes written.

    Only a few bands are alive at a time (``workers()`` bands of ``STREAM_BAND_BYTES``), and the source may build
    each band on demand (the original's rows with a result pasted in), so no full-size copy exists at all. The
    bands' deflate parts join into one zlib stream (one IDAT per group of bands).

    ``ahead``: parts made earlier from the same picture before ``changed`` (row ranges) were changed; a band whose
    rows (and primer) no change touches is copied from there instead of being deflated again. ``band_bytes``:
    the size of a band (smaller for a picture that would make fewer bands than there are cores)."""
    if width <= 0 or height <= 0 or channels not in (1, 3, 4):
        raise ValueError(f"cannot write a {width}x{height} PNG with {channels} channels")
    if ahead is not None:
        ahead.stop()
        if (ahead.width, ahead.height, ahead.channels) != (width, height, channels) or band_bytes is not None:
            ahead = None
    spans = _band_spans(width, height, channels, band_bytes)
    group = workers()
    pool = _executor() if group > 1 and len(spans) > 1 else None
    written = 0

    def put(*parts: bytes) -> None:
        nonlocal written
        for part in parts:
            out.write(part)
            written += len(part)

    def fresh(index: int, buffer: np.ndarray) -> tuple[bytes, int, int]:
        """Band ``index`` filtered and deflated now: (part, Adler-32 of its filtered bytes, their length)."""
        span = spans[index]
        filtered = _up_filtered(rows, span, width, channels, buffer)
        primer = _tail(rows, spans[index - 1], width, channels) if index else b""
        part = _deflate(filtered, primer, index == len(spans) - 1)
        return part, zlib.adler32(filtered), len(filtered)

    def band(index: int, buffer: np.ndarray) -> tuple[bytes, int, int]:
        if ahead is not None:
            made = ahead.reusable(index, changed)
            if made is not None:
                return made
        return fresh(index, buffer)

    color_type = {1: 0, 3: 2, 4: 6}[channels]
    put(b"\x89PNG\r\n\x1a\n", *png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)))
    adler, head = 1, _zlib_header()
    band_rows = spans[0][1] - spans[0][0]
    buffers = [np.empty((band_rows, width * channels + 1), np.uint8) for _ in range(min(group, len(spans)))]
    for start in range(0, len(spans), group):
        indexes = list(range(start, min(start + group, len(spans))))
        jobs = list(zip(indexes, buffers, strict=False))
        results = (list(pool.map(lambda job: band(*job), jobs)) if pool else [band(*job) for job in jobs])
        for _part, band_adler, length in results:
            adler = adler32_combine(adler, band_adler, length)
        put(*png_chunk(b"IDAT", head + b"".join(part for part, _a, _n in results)))
        head = b""
        del results
    put(*png_chunk(b"IDAT", struct.pack(">I", adler & 0xFFFFFFFF)), *png_chunk(b"IEND", b""))
    return written


def encode(pixels: np.ndarray) -> bytes:
    """PNG bytes of u8 gray (H, W), RGB or RGBA pixels, deflated in bands on every core."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"cannot encode {pixels.dtype} {pixels.shape} as a PNG")
    out = io.BytesIO()
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    two_per_core = -(-pixels.nbytes // (2 * workers()))  # a 1024² RGBA picture is one default band
    band_bytes = max(MIN_BAND_BYTES, min(STREAM_BAND_BYTES, two_per_core))
    write_png(out, pixels.shape[1], pixels.shape[0], channels, lambda row0, row1: pixels[row0:row1],
              band_bytes=band_bytes)
    return out.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """A PNG chunk's parts: length, type, payload, CRC of type and payload."""
    crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)), kind, payload, struct.pack(">I", crc)
