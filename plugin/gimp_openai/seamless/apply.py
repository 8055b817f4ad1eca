"""Put the corrections into pixels: the alignment's warp, then the tone's Lab map, both on every core.

What goes where (seamless.corrected_windows): the selection's box, all the layer mask can show, is resampled
bicubic; the rest of the crop bilinear (OpenCV has no vectorised bicubic warp for 8-bit RGBA: ~30 ns a pixel
where bilinear costs ~4). The tone is mapped in that box grown by the tone ring (room to paint the mask wider);
beyond it, hidden behind a mask of 0 unless the artist paints it in, the layer keeps the model's colours.

Why two steps and not one fused pass: the warp does not need the tone fit, so make_seamless fits the tone on
one core while the warp runs (OpenCV spreads it over the cores, but not perfectly); fused per band, they cost
the same CPU time (measured, 2048² crop: 145 ms either way), so the overlap is a free ~10-20 ms.

Why the Lab map runs in bands on one thread per core: OpenCV spreads the colour conversions over the cores, but
the steps between them (uint8 -> float, the Lab affine, float -> uint8, the channel shuffle) run on one; bands
taken by one thread per core (OpenCV releases the GIL) keep every core busy, and each thread's float scratch
(a few MB) stays in cache instead of ~200 MB of full-size temporaries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import cv2
import numpy as np

from .tone import LabBands, band_rows

__all__ = ["WORKERS", "apply_corrections", "map_tone", "warp"]

#: threads that take bands (the calling one included): one per core, at most 4 (each holds ~5 MB of scratch).
WORKERS = max(1, min(4, os.cpu_count() or 1))

_CUBIC = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
_LINEAR = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP


def _from(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The forward map `matrix` for output pixels counted from (x0, y0)."""
    m = np.array(matrix, np.float64)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return m


def _empty(window: tuple[int, int, int, int]) -> bool:
    y0, y1, x0, x1 = window
    return y1 <= y0 or x1 <= x0


def frame(height: int, width: int, window: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The crop minus the window, as up to four (y0, y1, x0, x1) rectangles (full-width rows above and below,
    the sides beside the window)."""
    if _empty(window):
        return [(0, height, 0, width)] if height and width else []
    y0, y1, x0, x1 = window
    parts = [(0, y0, 0, width), (y1, height, 0, width), (y0, y1, 0, x0), (y0, y1, x1, width)]
    return [p for p in parts if p[1] > p[0] and p[3] > p[2]]


def warp(result: np.ndarray, matrix: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """A new image: `result` (RGBA uint8) sampled where the forward map `matrix` (original -> result) puts each
    pixel (its border replicated beyond the edge), bicubic in `window` = (y0, y1, x0, x1), bilinear around it."""
    h, w = result.shape[:2]
    out = np.empty_like(result)
    for ya, yb, xa, xb in frame(h, w, window):
        cv2.warpAffine(result, _from(matrix, xa, ya), (xb - xa, yb - ya), dst=out[ya:yb, xa:xb], flags=_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    if not _empty(window):
        y0, y1, x0, x1 = window
        cv2.warpAffine(result, _from(matrix, x0, y0), (x1 - x0, y1 - y0), dst=out[y0:y1, x0:x1], flags=_CUBIC,
                       borderMode=cv2.BORDER_REPLICATE)
    return out


def map_tone(src: np.ndarray, lab: np.ndarray, window: tuple[int, int, int, int], out: np.ndarray) -> None:
    """``out``'s window := ``src``'s window (RGBA uint8) with its colours mapped through the Lab affine `lab`
    (3x4), alpha kept. ``src`` may be ``out`` itself (mapped in place)."""
    if _empty(window):
        return
    y0, y1, x0, x1 = window
    rows = band_rows(x1 - x0, y1 - y0)

    def worker() -> Callable[[int, int], None]:
        bands = LabBands(rows, x1 - x0)
        return lambda y, n: bands.map_into(src[y : y + n, x0:x1], lab, out[y : y + n, x0:x1])

    in_bands(y0, y1, rows, worker)


def apply_corrections(result: np.ndarray, matrix: np.ndarray | None, lab: np.ndarray | None,
                      window: tuple[int, int, int, int], sharp: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """`warp` by `matrix` (None: not warped; bicubic in `sharp`, None: the window), then `map_tone` by `lab` in
    the window (None: not mapped); a new image, or `result` itself when both are None."""
    if matrix is None and lab is None:
        return result
    if matrix is not None:
        out = warp(result, matrix, window if sharp is None else sharp)
        src = out
    else:
        out = np.empty_like(result)
        for ya, yb, xa, xb in frame(result.shape[0], result.shape[1], window):
            out[ya:yb, xa:xb] = result[ya:yb, xa:xb]
        src = result
    if lab is not None:
        map_tone(src, lab, window, out)
    return out


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
