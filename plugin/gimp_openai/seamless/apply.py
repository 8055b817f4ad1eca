"""Put the corrections into pixels: the alignment's warp and the tone's Lab map, in one banded pass.

Why one pass: warping the crop and then tone-mapping it made two full-size images and read every pixel of the
window twice; on a 2048² crop that was ~100 ms of the engine's own time. Here each band of the window is
resampled into a small buffer that stays in cache and goes straight through the Lab map into the output.

Why bands on several threads: OpenCV spreads its warps and colour conversions over the cores, but the steps
between them (uint8 -> float, the Lab affine, float -> uint8, the channel shuffle) run on one; bands taken by
one thread per core (OpenCV releases the GIL) keep every core busy.

What goes where: the window (the selection's box grown by the tone ring: everything the layer mask shows, and
room to paint it wider) is resampled bicubic and tone-mapped; the rest of the crop, hidden behind a mask of 0
unless the artist paints it in, is only warped, bilinear (OpenCV has no vectorised bicubic warp for 8-bit RGBA:
on a 2048² crop it costs ~70 ms where bilinear costs ~10).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import cv2
import numpy as np

from .tone import LabBands, band_rows

__all__ = ["apply_corrections", "WORKERS"]

#: threads that take bands (the calling one included): one per core, at most 4 (each holds ~5 MB of scratch).
WORKERS = max(1, min(4, os.cpu_count() or 1))

_CUBIC = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
_LINEAR = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP


def _from(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The forward map `matrix` for output pixels counted from (x0, y0)."""
    m = np.array(matrix, np.float64)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return m


def frame(height: int, width: int, window: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The crop minus the window, as up to four (y0, y1, x0, x1) rectangles (full-width rows above and below,
    the sides beside the window)."""
    y0, y1, x0, x1 = window
    if y1 <= y0 or x1 <= x0:
        return [(0, height, 0, width)] if height and width else []
    parts = [(0, y0, 0, width), (y1, height, 0, width), (y0, y1, 0, x0), (y0, y1, x1, width)]
    return [p for p in parts if p[1] > p[0] and p[3] > p[2]]


def apply_corrections(result: np.ndarray, matrix: np.ndarray | None, lab: np.ndarray | None,
                      window: tuple[int, int, int, int]) -> np.ndarray:
    """A new image: `result` (RGBA uint8) warped by the forward map `matrix` (original -> result; None: not
    warped) and its colours mapped through the Lab affine `lab` (3x4; None: not mapped) in `window` = (y0, y1,
    x0, x1); outside the window only warped (bilinear) or copied. Returns `result` itself when both are None."""
    if matrix is None and lab is None:
        return result
    h, w = result.shape[:2]
    out = np.empty_like(result)
    for ya, yb, xa, xb in frame(h, w, window):
        if matrix is None:
            out[ya:yb, xa:xb] = result[ya:yb, xa:xb]
        else:
            cv2.warpAffine(result, _from(matrix, xa, ya), (xb - xa, yb - ya), dst=out[ya:yb, xa:xb], flags=_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    y0, y1, x0, x1 = window
    if y1 > y0 and x1 > x0:
        _window(result, matrix, lab, out, window)
    return out


def _window(result: np.ndarray, matrix: np.ndarray | None, lab: np.ndarray | None, out: np.ndarray,
            window: tuple[int, int, int, int]) -> None:
    y0, y1, x0, x1 = window
    width = x1 - x0
    rows = band_rows(width, y1 - y0)

    def worker() -> Callable[[int, int], None]:
        warped = np.empty((rows, width, result.shape[2]), np.uint8) if matrix is not None and lab is not None else None
        bands = LabBands(rows, width) if lab is not None else None

        def band(y: int, n: int) -> None:
            dst = out[y : y + n, x0:x1]
            if matrix is None:
                src = result[y : y + n, x0:x1]
            elif warped is None:   # warp only: straight into the output
                cv2.warpAffine(result, _from(matrix, x0, y), (width, n), dst=dst, flags=_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
                return
            else:
                src = warped[:n]
                cv2.warpAffine(result, _from(matrix, x0, y), (width, n), dst=src, flags=_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
            assert bands is not None and lab is not None
            bands.map_into(src, lab, dst)

        return band

    in_bands(y0, y1, rows, worker)


def in_bands(y0: int, y1: int, rows: int, make_worker: Callable[[], Callable[[int, int], None]],
             workers: int | None = None) -> None:
    """Run the bands of rows [y0, y1), `rows` at a time, on up to `workers` threads (WORKERS; the calling one
    included). `make_worker()` is called once per thread and returns its band function (y, n), so each thread
    owns its scratch. The first exception of any thread is raised here, after every thread has stopped."""
    starts = list(range(y0, y1, rows))
    count = max(1, min(workers or WORKERS, len(starts)))
    errors: list[BaseException] = []

    def run(part: int) -> None:
        try:
            band = make_worker()
            for y in starts[part::count]:
                band(y, min(rows, y1 - y))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,), name=f"seamless-band-{k}", daemon=True)
               for k in range(1, count)]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
