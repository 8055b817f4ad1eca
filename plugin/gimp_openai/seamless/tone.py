"""Tone match: fit a colour transform result -> original in CIELAB over a ring of context, and apply it.

Why: GPT image models re-render the whole picture and its colours and brightness drift. Around the selection
both images should agree, so a transform fitted there, applied to the whole result, removes the tone step the
artist would otherwise see at the edge of the selection. The fit is done in CIELAB (perceptual, so errors are
weighted as the eye weighs them) and is robust: the model may have changed things in the ring too (Huber IRLS),
and it is pulled towards the identity (ridge) so that a ring with few colours cannot produce a wild transform
for colours that only occur inside the selection.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

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


_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def _init_lab_tables() -> None:
    cv2.cvtColor(np.zeros((1, 1, 3), np.float32), cv2.COLOR_RGB2Lab)


def warm_up_lab() -> None:
    """Start OpenCV's one-time CIELAB table set-up (~90 ms on the first Lab conversion of a process, float or
    8-bit alike) on a background thread, so it overlaps the alignment estimate instead of adding to it. Every
    engine job is a fresh process: without this, each one pays it in full. Idempotent."""
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_init_lab_tables, name="seamless-lab-init", daemon=True)
            _warm_thread.start()


def lab_ready() -> None:
    """Wait for the warm-up (if one was started): OpenCV's table set-up is not safe to race, and a process must
    not exit while it runs (the C++ runtime aborts with "terminate called without an active exception")."""
    thread = _warm_thread
    if thread is not None and thread.is_alive():
        thread.join()


def rgb_to_lab(rgb: np.ndarray, *, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB(A) (..., 3|4) -> float32 CIELAB (D65, sRGB gamma), L 0..100. ``out`` (float32 (..., 3)) and
    ``scratch`` (float32, the shape of ``rgb``): buffers to reuse instead of allocating (see apply_lab_transform)."""
    lab_ready()
    # one pass to float32 in [0, 1]; OpenCV's float conversion reads 3 or 4 channels (alpha ignored)
    unit = np.multiply(_rows(rgb), np.float32(1 / 255), dtype=np.float32, out=scratch)
    lab = cv2.cvtColor(unit, cv2.COLOR_RGB2Lab, dst=out)
    return lab.reshape(rgb.shape[:-1] + (3,))


def lab_to_rgb(lab: np.ndarray, *, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """float32 CIELAB (..., 3) -> uint8 RGB, clipped to the gamut, rounded. ``out`` (uint8 (..., 3)) and
    ``scratch`` (float32 (..., 3)): buffers to reuse instead of allocating."""
    lab_ready()
    rgb = cv2.cvtColor(_rows(lab.astype(np.float32, copy=False)), cv2.COLOR_Lab2RGB, dst=scratch)
    # scale, round and saturate to uint8 in one OpenCV pass (numpy takes four, each a full-size temporary)
    out = cv2.multiply(rgb, (255.0, 255.0, 255.0, 0.0), dst=out, dtype=cv2.CV_8U)  # type: ignore[call-overload]  # a Scalar; the stubs omit it
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


def ring_window(selected: np.ndarray) -> tuple[float, tuple[int, int, int, int]]:
    """(ring width, (y0, y1, x0, x1)): the window that holds the whole context ring of a non-empty selection.

    Only the selection's bounding box grown by the ring's reach can hold ring pixels; the (chamfer) distance
    from a pixel to its nearest selected pixel is measured along a path inside the rectangle spanned by the
    two, so computing it on that window gives the same ring as on the whole crop, at a fraction of the cost.
    The 3x3 chamfer's unit step is 0.955, so a ring distance d can be d / 0.955 pixels away.
    """
    width = float(np.clip(0.25 * np.sqrt(np.count_nonzero(selected)), 8, 128))
    reach = int(np.ceil((width + 2.0) / 0.95)) + 2
    rows = np.flatnonzero(selected.any(axis=1))
    cols = np.flatnonzero(selected.any(axis=0))
    h, w = selected.shape
    y0, y1 = max(int(rows[0]) - reach, 0), min(int(rows[-1]) + reach + 1, h)
    x0, x1 = max(int(cols[0]) - reach, 0), min(int(cols[-1]) + reach + 1, w)
    return width, (y0, y1, x0, x1)


def context_ring(selection: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
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
    if valid is not None:
        part &= valid[y0:y1, x0:x1]
    ring = np.zeros(selection.shape, bool)
    ring[y0:y1, x0:x1] = part
    return ring


def _sample(mask: np.ndarray, limit: int) -> np.ndarray:
    """Flat indices of at most `limit` pixels of `mask`, evenly strided (deterministic)."""
    idx = np.flatnonzero(mask)
    if idx.size > limit:
        idx = idx[np.linspace(0, idx.size - 1, limit).astype(np.int64)]
    return idx


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


#: pixels per band of `apply_lab_transform`: its float scratch (16 + 3 x 12 bytes a pixel) is made once per call
#: and reused band after band, a few MB in cache, where the whole 2048² window at once took ~200 MB of fresh
#: temporaries (each one zeroed by the kernel: the engine returns big freed buffers, see memory.py).
BAND_PIXELS = 1 << 17


def apply_lab_transform(rgba: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The RGBA (H, W, 4) image with its colours mapped through the Lab affine `m` (alpha untouched)."""
    src = np.ascontiguousarray(rgba)
    out = np.empty_like(src)
    height, width = src.shape[:2]
    if height == 0 or width == 0:
        return out
    rows = max(1, min(height, BAND_PIXELS // max(1, width)))
    unit = np.empty((rows, width, src.shape[2]), np.float32)
    lab = np.empty((rows, width, 3), np.float32)
    mapped = np.empty((rows, width, 3), np.float32)
    rgb = np.empty((rows, width, 3), np.float32)
    rgb8 = np.empty((rows, width, 3), np.uint8)
    for y in range(0, height, rows):
        band = src[y : y + rows]
        n = band.shape[0]
        rgb_to_lab(band, out=lab[:n], scratch=unit[:n])
        _transform(lab[:n], m, out=mapped[:n])
        lab_to_rgb(mapped[:n], out=rgb8[:n], scratch=rgb[:n])
        # the new colours beside the untouched alpha, in one OpenCV pass
        cv2.mixChannels([rgb8[:n], band], [out[y : y + n]], [0, 0, 1, 1, 2, 2, 6, 3])
    return out


@dataclass
class ToneContext:
    """The context ring (without the alignment's valid area) and the original's Lab over all of it: what the
    tone match needs from the original and the selection alone, computed before the result arrives."""

    ring: np.ndarray   # bool (H, W)
    idx: np.ndarray    # flat indices of the ring's pixels, ascending
    lab: np.ndarray    # float32 (len(idx), 3): the original's Lab there


def prepare_tone(original: np.ndarray, selection: np.ndarray) -> ToneContext:
    ring = context_ring(selection)
    idx = np.flatnonzero(ring)
    if ring.size < 2**31:
        idx = idx.astype(np.int32)  # half the memory of numpy's default int64
    lab = rgb_to_lab(original.reshape(-1, original.shape[-1])[idx]) if idx.size else np.zeros((0, 3), np.float32)
    return ToneContext(ring, idx, lab)


@dataclass
class ToneMatch:
    """What the tone match found; `image` is the (possibly) corrected result."""

    image: np.ndarray
    applied: bool
    delta_e_before: float | None
    delta_e_after: float | None
    matrix: list[list[float]] | None = None
    samples: int = 0
    note: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def r(v: float | None) -> float | None:
            return None if v is None else round(float(v), 3)

        return {
            "applied": self.applied,
            "delta_e_before": r(self.delta_e_before),
            "delta_e_after": r(self.delta_e_after),
            "lab_matrix": self.matrix,
            "samples": self.samples,
            "note": self.note,
        }


def match_tone(original: np.ndarray, result: np.ndarray, selection: np.ndarray,
               valid: np.ndarray | None = None, window: tuple[int, int, int, int] | None = None,
               in_place: bool = False, prepared: ToneContext | None = None) -> ToneMatch:
    """Fit result -> original over the context ring and apply it when it visibly helps.

    `valid` marks result pixels that hold real content (alignment may have pulled in a border).
    `window` = (y0, y1, x0, x1): apply the transform there only (the selection's bounding box grown by the
    ring: all the layer mask can show, and the ring); the rest of the crop, hidden behind a mask of 0, keeps
    the result's colours. None: the whole crop. `in_place`: write into `result` (the caller owns it).
    Returns the result itself (same object, untouched) when nothing is applied. `prepared`:
    `prepare_tone(original, selection)`, computed ahead (e.g. while the engine waits for the server).
    """
    if prepared is None:
        ring = context_ring(selection, valid)
    else:
        ring = prepared.ring if valid is None else prepared.ring & valid
    idx = _sample(ring, MAX_SAMPLES)
    if idx.size < 200:
        return ToneMatch(result, False, None, None, note="too little context around the selection to match tone")
    if prepared is None:
        orig_lab = rgb_to_lab(original.reshape(-1, original.shape[-1])[idx])
    else:  # the original's Lab over the whole ring was converted ahead: pick the samples
        orig_lab = prepared.lab[np.searchsorted(prepared.idx, idx)]
    res_lab = rgb_to_lab(result.reshape(-1, result.shape[-1])[idx])
    before = float(delta_e_2000(orig_lab, res_lab).mean())
    if before < MIN_DELTA_E:
        return ToneMatch(result, False, before, before, samples=int(idx.size), note="tone already matches")
    m = fit_lab_transform(res_lab, orig_lab)
    mapped = _transform(res_lab, m)
    # Measure what will really be applied: through 8-bit RGB, as the image will be.
    mapped_rgb = lab_to_rgb(mapped.astype(np.float32))
    after = float(delta_e_2000(orig_lab, rgb_to_lab(mapped_rgb)).mean())
    matrix = [[round(float(v), 5) for v in row] for row in m]
    if before - after < MIN_GAIN or after > before * (1 - MIN_RATIO):
        return ToneMatch(result, False, before, after, matrix, int(idx.size),
                         note="a colour fit would not help enough")
    if window is None:
        return ToneMatch(apply_lab_transform(result, m), True, before, after, matrix, int(idx.size))
    y0, y1, x0, x1 = window
    out = result if in_place else result.copy()
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = apply_lab_transform(result[y0:y1, x0:x1], m)
    return ToneMatch(out, True, before, after, matrix, int(idx.size))
