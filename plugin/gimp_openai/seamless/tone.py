"""Tone match: fit a colour transform result -> original in CIELAB over a ring of context, and apply it.

Why: GPT image models re-render the whole picture and its colours and brightness drift. Around the selection
both images should agree, so a transform fitted there, applied to the whole result, removes the tone step the
artist would otherwise see at the edge of the selection. The fit is done in CIELAB (perceptual, so errors are
weighted as the eye weighs them) and is robust: the model may have changed things in the ring too (Huber IRLS),
and it is pulled towards the identity (ridge) so that a ring with few colours cannot produce a wild transform
for colours that only occur inside the selection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .align import valid_area

#: below this mean ΔE2000 over the ring the tone difference is not visible: leave the result alone.
MIN_DELTA_E = 1.0
#: apply only when the fit removes at least this much ΔE2000 (absolute) ...
MIN_GAIN = 0.5
#: ... and at least this share of it (relative).
MIN_RATIO = 0.15
#: samples used for the fit (a strided subset of the ring): plenty for 12 parameters (100-case figures the same
#: as with 20,000: ΔE mean 0.30, max 0.99), and the fit and its ΔE checks cost 40 % of what 20,000 did.
MAX_SAMPLES = 8_000
#: ridge strength per sample towards the identity, in (Lab units)²: a ring with a channel std of 1 unit
#: gets its gain halved towards 1; with std 10 units the pull is 1 %.
RIDGE = 1.0


def _rows(arr: np.ndarray) -> np.ndarray:
    """(..., C) as a C-contiguous 2-D image of C channels for OpenCV: (H, W, C) stays, anything else becomes
    one long row. Never (N, 1, C): OpenCV converts row by row, and one-pixel rows are several times slower."""
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 3:
        return arr
    return arr.reshape(1, -1, arr.shape[-1])


_lab_lock = threading.Lock()
_lab_tables: list[bool] = []


def _lab_tables_ready() -> None:
    """Set up OpenCV's CIELAB tables once per process (~90 ms on the first Lab conversion, float or 8-bit alike),
    under a lock: their set-up is not safe to race (a batch's items and the Lab map's band threads convert
    concurrently)."""
    if _lab_tables:
        return
    with _lab_lock:
        if not _lab_tables:
            cv2.cvtColor(np.zeros((1, 1, 3), np.float32), cv2.COLOR_RGB2Lab)
            _lab_tables.append(True)


def rgb_to_lab(rgb: np.ndarray, *, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB(A) (..., 3|4) -> float32 CIELAB (D65, sRGB gamma), L 0..100. ``out`` (float32 (..., 3)) and
    ``scratch`` (float32, the shape of ``rgb``): buffers to reuse instead of allocating (see LabBands). An
    (H, W, C) ``rgb`` may be a strided view (a window of a bigger image): it is read in place, not copied."""
    _lab_tables_ready()
    # one pass to float32 in [0, 1], reading strided views as they are; OpenCV's float conversion reads 3 or 4
    # channels (alpha ignored)
    src = rgb if rgb.ndim == 3 else _rows(rgb)
    unit = np.multiply(src, np.float32(1 / 255), dtype=np.float32, out=scratch)
    lab = cv2.cvtColor(unit, cv2.COLOR_RGB2Lab, dst=out)
    return lab.reshape(rgb.shape[:-1] + (3,))


def lab_to_rgb(lab: np.ndarray, *, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """float32 CIELAB (..., 3) -> uint8 RGB, clipped to the gamut, rounded. ``out`` (uint8 (..., 3)) and
    ``scratch`` (float32 (..., 3)): buffers to reuse instead of allocating."""
    _lab_tables_ready()
    rgb = cv2.cvtColor(_rows(lab.astype(np.float32, copy=False)), cv2.COLOR_Lab2RGB, dst=scratch)
    # scale, round and saturate to uint8 in one OpenCV pass (numpy takes four, each a full-size temporary)
    out = cv2.multiply(rgb, (255.0, 255.0, 255.0, 0.0), dst=out, dtype=cv2.CV_8U)
    return np.asarray(out).reshape(lab.shape[:-1] + (3,))


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu, Dalal 2005), vectorised over leading axes; kL = kC = kH = 1."""
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c1 = np.hypot(a1, b1)
    c2 = np.hypot(a2, b2)
    c_bar7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    zero = (c1p * c2p) == 0

    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(zero, 0.0, dh)
    dhh = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))

    l_bar = (l1 + l2) / 2
    c_bar_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_bar = np.where(zero, h_sum, h_bar)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    c_bar_p7 = c_bar_p**7
    r_c = 2 * np.sqrt(c_bar_p7 / (c_bar_p7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar_p
    s_h = 1 + 0.015 * c_bar_p * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dhh / s_h) ** 2 + r_t * (dc / s_c) * (dhh / s_h))


def ring_window(selected: np.ndarray) -> tuple[float, Window]:
    """(ring width, (y0, y1, x0, x1)): the window that holds the whole context ring of a non-empty selection.

    Only the selection's bounding box grown by the ring's reach can hold ring pixels; the (chamfer) distance
    from a pixel to its nearest selected pixel is measured along a path inside the rectangle spanned by the
    two, so computing it on that window gives the same ring as on the whole crop, at a fraction of the cost.
    The 3x3 chamfer's unit step is 0.955, so a ring distance d can be d / 0.955 pixels away.
    """
    width = float(np.clip(0.25 * np.sqrt(np.count_nonzero(selected)), 8, 128))
    reach = int(np.ceil((width + 2.0) / 0.95)) + 2
    h, w = selected.shape
    y0, y1, x0, x1 = bounding_box(selected)
    return width, (max(y0 - reach, 0), min(y1 + reach, h), max(x0 - reach, 0), min(x1 + reach, w))


def bounding_box(selected: np.ndarray) -> Window:
    """(y0, y1, x0, x1), ends exclusive, of the True pixels of a non-empty bool mask."""
    rows = np.flatnonzero(selected.any(axis=1))
    cols = np.flatnonzero(selected.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def context_ring(selection: np.ndarray) -> np.ndarray:
    """bool ring of context around the selection: outside it (a 2 px gap for soft/aliased edges), inside the crop.

    Its width grows with the selection (a quarter of the square root of its area, 8..128 px): wide enough for
    plenty of samples, near enough that its colours are those around the edit.
    """
    selected = selection > 0
    if not selected.any() or selected.all():
        return np.zeros(selection.shape, bool)
    width, (y0, y1, x0, x1) = ring_window(selected)
    window = selected[y0:y1, x0:x1]
    outside = np.where(window, 0, 255).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
    part = (dist > 2.0) & (dist <= 2.0 + width)
    ring = np.zeros(selection.shape, bool)
    ring[y0:y1, x0:x1] = part
    return ring


def fit_lab_transform(src: np.ndarray, dst: np.ndarray, iterations: int = 6) -> np.ndarray:
    """Robust affine 3x4 M with dst ≈ M @ [src, 1] (rows are Lab samples), ridge-pulled towards the identity.

    IRLS on the Euclidean Lab residual, the scale being the MAD of the residuals (at least 1 unit): Huber
    weights first (convex, finds the main trend from the least-squares start), then Tukey's biweight, which
    gives pixels the model repainted in the ring no weight at all.
    """
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    n = src.shape[0]
    x = np.hstack([src, np.ones((n, 1))])
    prior = np.hstack([np.eye(3), np.zeros((3, 1))])
    ridge = np.diag([RIDGE, RIDGE, RIDGE, 0.0])
    weights = np.ones(n)
    m = prior
    for step in range(iterations):
        xw = x * weights[:, None]
        total = weights.sum()
        # einsum, not matmul: tiny outputs, and no multi-threaded BLAS to wait for on a busy machine
        lhs = np.einsum("ni,nj->ij", xw, x) + ridge * total
        rhs = np.einsum("ni,nj->ij", xw, dst) + (ridge * total) @ prior.T
        m = np.linalg.solve(lhs, rhs).T
        pred = np.einsum("ni,ji->nj", x, m)
        resid = np.sqrt(((pred - dst) ** 2).sum(axis=1))
        scale = max(1.4826 * float(np.median(resid)), 1.0)
        if step < iterations // 2:
            k = 1.5 * scale
            weights = np.where(resid <= k, 1.0, k / np.maximum(resid, 1e-12))
        else:
            k = 4.685 * scale
            weights = np.where(resid < k, (1 - (resid / k) ** 2) ** 2, 0.0)
            if weights.sum() < 10:  # degenerate: keep the Huber fit
                break
    return m


def _transform(lab: np.ndarray, m: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """lab @ m[:, :3].T + m[:, 3] per pixel, with OpenCV (numpy's matmul goes through a multi-threaded BLAS
    that is slow on busy machines for this shape). ``out``: a float32 buffer of lab's shape to reuse."""
    return cv2.transform(_rows(lab.astype(np.float32, copy=False)), m.astype(np.float32), dst=out).reshape(lab.shape)


Window = tuple[int, int, int, int]   # (y0, y1, x0, x1), ends exclusive; empty when y1 <= y0 or x1 <= x0

#: pixels per band of the Lab map: each thread's float scratch (16 + 3 x 12 bytes a pixel) is made once and reused
#: band after band, a few MB in cache, where a 2048² window at once took ~200 MB of fresh temporaries (each one
#: zeroed by the kernel: the engine returns big freed buffers, see memory.py).
BAND_PIXELS = 1 << 16
#: threads that take bands (the calling one included): one per core, at most 4 (each holds ~5 MB of scratch).
WORKERS = max(1, min(4, os.cpu_count() or 1))


class LabBands:
    """Maps bands of an RGBA image through a Lab affine, reusing one set of float buffers (one per thread);
    `rows` x `width` is the largest band it takes."""

    def __init__(self, rows: int, width: int) -> None:
        self.unit = np.empty((rows, width, 4), np.float32)
        self.lab = np.empty((rows, width, 3), np.float32)
        self.mapped = np.empty((rows, width, 3), np.float32)
        self.rgb = np.empty((rows, width, 3), np.float32)
        self.rgb8 = np.empty((rows, width, 3), np.uint8)

    def map_into(self, band: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:
        """``out`` (n, w, 4), a view allowed := ``band``'s (n, w, 4) colours through the Lab affine ``m``, its
        alpha untouched."""
        n, w = band.shape[:2]
        rgb_to_lab(band, out=self.lab[:n, :w], scratch=self.unit[:n, :w])
        _transform(self.lab[:n, :w], m, out=self.mapped[:n, :w])
        lab_to_rgb(self.mapped[:n, :w], out=self.rgb8[:n, :w], scratch=self.rgb[:n, :w])
        # the new colours beside the untouched alpha, in one OpenCV pass
        cv2.mixChannels([self.rgb8[:n, :w], band], [out], [0, 0, 1, 1, 2, 2, 6, 3])


def band_rows(width: int, height: int) -> int:
    """Rows per band for a `width`-pixel-wide image of `height` rows (at least 1, at most all)."""
    return max(1, min(height, BAND_PIXELS // max(1, width)))


def apply_lab_transform(rgba: np.ndarray, m: np.ndarray, *, window: Window | None = None,
                        out: np.ndarray | None = None) -> np.ndarray:
    """``out`` with the colours of ``rgba`` (RGBA uint8) in `window` (None: all of it) mapped through the Lab
    affine `m`, alpha untouched. ``out``: None makes a new image (a copy of ``rgba`` outside the window); it may be
    ``rgba`` itself (mapped in place); outside the window it is left as it is.

    In bands, on one thread per core: OpenCV spreads the colour conversions over the cores, but the steps between
    them (uint8 -> float, the Lab affine, float -> uint8, the channel shuffle) run on one; bands taken by one
    thread per core (OpenCV releases the GIL) keep every core busy, and each thread's scratch stays in cache.
    """
    height, width = rgba.shape[:2]
    if out is None:
        out = np.empty(rgba.shape, np.uint8) if window is None else rgba.copy()
    y0, y1, x0, x1 = (0, height, 0, width) if window is None else window
    if y1 <= y0 or x1 <= x0:
        return out
    rows = band_rows(x1 - x0, y1 - y0)

    def worker() -> Callable[[int, int], None]:
        bands = LabBands(rows, x1 - x0)
        return lambda y, n: bands.map_into(rgba[y : y + n, x0:x1], m, out[y : y + n, x0:x1])

    in_bands(y0, y1, rows, worker)
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


@dataclass
class ToneContext:
    """The context ring's pixels (all of it: the alignment's valid area is applied per result) and the original's
    Lab there: what the tone match needs from the original and the selection alone, computed before the result
    arrives."""

    idx: np.ndarray    # flat indices of the ring's pixels, ascending
    lab: np.ndarray    # float32 (len(idx), 3): the original's Lab there


def _ring_indices(selection: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(context_ring(selection))
    return idx.astype(np.int32) if selection.size < 2**31 else idx  # int32: half the memory of numpy's int64


def prepare_tone(original: np.ndarray, selection: np.ndarray) -> ToneContext:
    idx = _ring_indices(selection)
    lab = rgb_to_lab(original.reshape(-1, original.shape[-1])[idx]) if idx.size else np.zeros((0, 3), np.float32)
    return ToneContext(idx, lab)


@dataclass
class ToneFit:
    """What the tone match found: whether to apply it, and the Lab affine `m` (3x4) when a fit was made."""

    applied: bool
    delta_e_before: float | None
    delta_e_after: float | None
    m: np.ndarray | None = None
    samples: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        def r(v: float | None) -> float | None:
            return None if v is None else round(float(v), 3)

        return {
            "applied": self.applied,
            "delta_e_before": r(self.delta_e_before),
            "delta_e_after": r(self.delta_e_after),
            "lab_matrix": None if self.m is None else [[round(float(v), 5) for v in row] for row in self.m],
            "samples": self.samples,
            "note": self.note,
        }


def _result_samples(result: np.ndarray, idx: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """The result's RGBA at the original's flat pixel indices `idx`: where the forward map `matrix` (original ->
    result) puts them, sampled bicubic as the selection's box of the aligned image is (OpenCV warps and remaps with
    the same 1/32 px interpolation tables); as they are without a map."""
    flat = result.reshape(-1, result.shape[-1])
    if matrix is None:
        return flat[idx]
    ys, xs = np.divmod(idx.astype(np.int64), result.shape[1])
    mapx = (matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]).astype(np.float32)
    mapy = (matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]).astype(np.float32)
    # one row per 4096 samples: remap's output rows must stay under 32767 pixels
    cols = min(4096, idx.size)
    rows = -(-idx.size // cols)
    pad = rows * cols - idx.size
    maps = [np.pad(v, (0, pad), mode="edge").reshape(rows, cols) for v in (mapx, mapy)]
    got = cv2.remap(result, maps[0], maps[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(got).reshape(-1, result.shape[-1])[: idx.size]


def fit_tone(original: np.ndarray, result: np.ndarray, selection: np.ndarray, matrix: np.ndarray | None = None,
             prepared: ToneContext | None = None) -> ToneFit:
    """Fit result -> original over the context ring; `applied` says whether it visibly helps.

    `matrix`: the alignment's forward map (original -> result) when the result is to be warped: the ring is then
    sampled where the map puts it, and only where that lies inside the result (not its replicated border), so
    the fit sees the aligned result without the warped image having to exist yet. `prepared`:
    `prepare_tone(original, selection)`, computed ahead (e.g. while the engine waits for the server).
    """
    if prepared is None:
        idx, ring_lab = _ring_indices(selection), None
    else:
        idx, ring_lab = prepared.idx, prepared.lab
    usable = None
    if matrix is not None and idx.size:
        h, w = selection.shape
        usable = np.flatnonzero(valid_area(matrix, w, h).ravel()[idx])
    count = idx.size if usable is None else usable.size
    if count < 200:
        return ToneFit(False, None, None, note="too little context around the selection to match tone")
    # at most MAX_SAMPLES of them, evenly strided (deterministic)
    pick = np.linspace(0, count - 1, min(count, MAX_SAMPLES)).astype(np.int64)
    at = pick if usable is None else usable[pick]
    sample = idx[at]
    orig_lab = rgb_to_lab(original.reshape(-1, original.shape[-1])[sample]) if ring_lab is None else ring_lab[at]
    res_lab = rgb_to_lab(_result_samples(result, sample, matrix))
    before = float(delta_e_2000(orig_lab, res_lab).mean())
    if before < MIN_DELTA_E:
        return ToneFit(False, before, before, samples=int(sample.size), note="tone already matches")
    m = fit_lab_transform(res_lab, orig_lab)
    mapped = _transform(res_lab, m)
    # Measure what will really be applied: through 8-bit RGB, as the image will be.
    mapped_rgb = lab_to_rgb(mapped.astype(np.float32))
    after = float(delta_e_2000(orig_lab, rgb_to_lab(mapped_rgb)).mean())
    if before - after < MIN_GAIN or after > before * (1 - MIN_RATIO):
        return ToneFit(False, before, after, m, int(sample.size), note="a colour fit would not help enough")
    return ToneFit(True, before, after, m, int(sample.size))
