"""Alignment: register the model result against the original using only the context outside the selection.

Why: GPT image models re-render the whole picture; inside the crop the returned image is often shifted,
rescaled or slightly rotated. Composited through a feathered mask that shows as a ghosted double edge.
Outside the selection both images should show the same thing, so that is where we measure.

How: on a pyramid level no larger than WORK_SIZE, ORB features detected in the context only are matched
and a similarity (shift, scale, rotation) is fitted with RANSAC; when too few features match, phase
correlation gives a translation instead. ECC (OpenCV, masked with the context in both images) then refines
to sub-pixel precision; its affine answer is projected onto the nearest similarity. The correlation ECC
reaches over the context is the confidence. A correction is applied only when confident, within bounds, and
not already aligned (then the result is returned untouched, byte for byte).

Convention: `matrix` is the 2x3 forward map from original to result coordinates: the content at p in the
original is at matrix @ [p, 1] in the result. Aligning samples the result there (WARP_INVERSE_MAP).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: long side of the pyramid level the estimate runs on (the answer is scaled back to full size). At 512 a
#: 2048² crop is registered to ~0.03 px (ECC converges in about 10 iterations); 768 costs 2.5x for ~0.01 px.
WORK_SIZE = 512
#: bounds: shift of the crop centre (share of the crop side), scale, rotation.
MAX_SHIFT_SHARE = 0.05
MAX_SCALE_DELTA = 0.05
MAX_ANGLE_DEG = 3.0
#: "already aligned": below these nothing is warped.
ALIGNED_SHIFT_PX = 0.1
ALIGNED_SCALE_DELTA = 1e-3
ALIGNED_ANGLE_DEG = 0.05
#: the ECC correlation over the context must reach this to trust the fit.
MIN_CORRELATION = 0.5
#: mean gradient magnitude (grey levels per pixel) below which the context is too flat to align to.
MIN_TEXTURE = 0.6
#: a context smaller than this share of the crop (or MIN_CONTEXT_PX pixels) is not enough to align to.
MIN_CONTEXT_SHARE = 0.05
MIN_CONTEXT_PX = 2000
MIN_INLIERS = 12
#: ECC iterations: from the feature (or phase) estimate it settles in about 10; each costs ~4 ms at 512².
ECC_ITERATIONS = 20


@dataclass
class Alignment:
    """What the alignment found (full-size coordinates) and whether it is to be applied."""

    matrix: np.ndarray            # 2x3 forward map original -> result
    dx: float                     # displacement of the crop centre, px
    dy: float
    scale: float
    angle_deg: float
    confidence: float             # ECC correlation over the context, 0..1 (0 when no fit)
    applied: bool
    residual_px: float | None     # median reprojection error of the matched features under the final fit
    #                               (None when no features were matched: the coarse-to-fine estimate sufficed)
    note: str                     # why it was (not) applied

    def to_dict(self) -> dict:
        def r(v: float | None, nd: int = 4) -> float | None:
            return None if v is None else round(float(v), nd)

        return {
            "dx": r(self.dx, 3), "dy": r(self.dy, 3), "scale": r(self.scale, 5), "angle_deg": r(self.angle_deg, 4),
            "confidence": r(self.confidence, 4), "applied": self.applied, "residual_px": r(self.residual_px, 3),
            "note": self.note, "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
        }


IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _grey(rgba: np.ndarray) -> np.ndarray:
    # straight from RGBA (same weights, alpha ignored): no full-size RGB copy first
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2GRAY)


def _level(image: np.ndarray, f: float) -> np.ndarray:
    if f == 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _rescale(m: np.ndarray, f: float, size_small: tuple[int, int], size_full: tuple[int, int]) -> np.ndarray:
    """A forward map estimated on the level (pixel centres x_s = fx * (x + 0.5) - 0.5) back to full size."""
    fx = size_small[0] / size_full[0]
    fy = size_small[1] / size_full[1]
    to_small = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
    full = np.linalg.inv(to_small) @ np.vstack([m, [0, 0, 1]]) @ to_small
    return full[:2]


def to_similarity(m: np.ndarray) -> np.ndarray:
    """Nearest similarity (least squares on the 2x2 part) of an affine 2x3."""
    a = (m[0, 0] + m[1, 1]) / 2
    b = (m[1, 0] - m[0, 1]) / 2
    return np.array([[a, -b, m[0, 2]], [b, a, m[1, 2]]])


def describe(m: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(dx, dy, scale, angle_deg) of a forward map: the crop centre's displacement, uniform scale, rotation
    (degrees counter-clockwise as seen on screen, OpenCV's getRotationMatrix2D convention)."""
    c = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    dx, dy = m @ c - c[:2]
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    angle = float(np.degrees(np.arctan2(m[0, 1] - m[1, 0], m[0, 0] + m[1, 1])))
    return float(dx), float(dy), scale, angle


def context_mask(selection: np.ndarray, margin: int) -> np.ndarray:
    """uint8 255 where the pixel is context: not selected, and more than `margin` px from the selection."""
    selected = (selection > 0).astype(np.uint8)
    if margin > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        selected = np.asarray(cv2.dilate(selected, kernel))
    return np.where(selected > 0, 0, 255).astype(np.uint8)


def _features(orig: np.ndarray, res: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray | None, int, np.ndarray]:
    """Similarity from ORB matches in the context (RANSAC); (matrix or None, inliers, inlier points in orig)."""
    orb = cv2.ORB.create(nfeatures=800, fastThreshold=10)
    k1, d1 = orb.detectAndCompute(orig, mask)
    k2, d2 = orb.detectAndCompute(res, mask)
    empty = np.zeros((0, 2, 2))
    if d1 is None or d2 is None or len(k1) < MIN_INLIERS or len(k2) < MIN_INLIERS:
        return None, 0, empty
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(d1, d2)
    if len(matches) < MIN_INLIERS:
        return None, 0, empty
    p1 = np.array([k1[m.queryIdx].pt for m in matches], np.float32)
    p2 = np.array([k2[m.trainIdx].pt for m in matches], np.float32)
    m, inl = cv2.estimateAffinePartial2D(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=2.0, maxIters=2000,
                                         confidence=0.995)
    if m is None or inl is None:
        return None, 0, empty
    keep = inl.ravel().astype(bool)
    return m.astype(np.float64), int(keep.sum()), np.stack([p1[keep], p2[keep]], axis=1).astype(np.float64)


def _phase(orig: np.ndarray, res: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Translation from phase correlation of the masked, windowed gradients; (matrix, response)."""
    def prep(g: np.ndarray) -> np.ndarray:
        g = g.astype(np.float32)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1)
        return cv2.magnitude(gx, gy) * (mask > 0)

    win = cv2.createHanningWindow(orig.shape[::-1], cv2.CV_32F)
    (sx, sy), response = cv2.phaseCorrelate(prep(orig), prep(res), win)
    return np.array([[1.0, 0, sx], [0, 1.0, sy]]), float(response)


def _ecc(orig: np.ndarray, res: np.ndarray, tmask: np.ndarray, imask: np.ndarray, init: np.ndarray,
         iterations: int) -> tuple[np.ndarray, float] | None:
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-6)
    start = init.astype(np.float32)
    try:
        if hasattr(cv2, "findTransformECCWithMask"):
            rho, warp = cv2.findTransformECCWithMask(orig, res, tmask, imask, start, cv2.MOTION_AFFINE, criteria, 3)
        else:  # OpenCV < 4.12: only the input mask; the template side is covered by the same context
            both = cv2.bitwise_and(tmask, imask)
            rho, warp = cv2.findTransformECC(orig, res, start, cv2.MOTION_AFFINE, criteria, both, 3)
    except cv2.error:
        return None
    return np.asarray(warp, np.float64), float(rho)


def _result_mask(selection: np.ndarray, m: np.ndarray, margin: int) -> np.ndarray:
    """Context in result coordinates: where the (moved) selection is not, given the forward map m."""
    h, w = selection.shape
    moved = cv2.warpAffine((selection > 0).astype(np.uint8) * 255, m, (w, h), flags=cv2.INTER_NEAREST)
    return context_mask(moved, margin)


def _texture(grey: np.ndarray, mask: np.ndarray) -> float:
    g = grey.astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1))
    sel = mask > 0
    return float(mag[sel].mean()) if sel.any() else 0.0


#: coarse-to-fine: the smallest level's long side (at least), ECC iterations per level (coarsest first; the
#: work level last), and the correlation every level's fit must reach to skip the feature (ORB) estimate.
#: (15, 5, 2) against (30, 8, 3): 100-case residual max 0.065 px instead of 0.050 (the bound is 0.5), the
#: warped tone figure the same (ΔE mean 0.80 / max 1.76), ~15 ms less on a 2048² crop (an iteration on the 512
#: level costs ~7 ms, one on the 128 level ~0.5). One iteration on the work level is not enough: the demo's
#: exactly aligned results then read "shifted 0.1, 0.1 px" and were resampled (tests/engine/test_demo.py).
COARSE_MIN_SIDE = 96
COARSE_LEVELS = 2
CTF_ITERATIONS = (15, 5, 2)
CTF_MIN_CORRELATION = 0.95


def _coarse_to_fine(orig: np.ndarray, res: np.ndarray, sel: np.ndarray,
                    margin: int) -> tuple[np.ndarray, float] | None:
    """Phase correlation on a coarse level, then masked ECC refined level by level up to the work level.

    Much cheaper than ORB + RANSAC + ECC on the work level (most iterations run on 1/16 of the pixels) and
    as precise (the last iterations run on the work level). None when a level's fit is not confident
    (too little shared content, or a scale/rotation beyond phase correlation's reach): the caller then
    falls back to features.
    """
    levels = [(orig, res, sel)]
    while len(levels) <= COARSE_LEVELS and max(levels[-1][2].shape) // 2 >= COARSE_MIN_SIDE:
        o, r, s = levels[-1]
        levels.append((_level(o, 0.5), _level(r, 0.5), _level(s, 0.5)))
    levels.reverse()
    iterations = CTF_ITERATIONS[-len(levels):]
    m = None
    rho = 0.0
    prev_size = (0, 0)
    for (o, r, s), iters in zip(levels, iterations, strict=True):
        hs, ws = s.shape
        mg = max(2, round(margin * max(hs, ws) / max(sel.shape)))
        tmask = context_mask(s, mg)
        if m is None:
            m = to_similarity(_phase(o, r, tmask)[0])
        else:
            m = _rescale(m, 1.0, prev_size, (ws, hs))    # the coarser level's map, on this level
        imask = _result_mask(s, m, mg + 2)
        fit = _ecc(o, r, tmask, imask, m, iters)
        if fit is None:
            return None
        m, rho = to_similarity(fit[0]), fit[1]
        if rho < CTF_MIN_CORRELATION:   # a wrong basin reaches 0.6-0.9 on textured scenes; the right one 0.98+
            return None
        prev_size = (ws, hs)
    return None if m is None else (m, rho)


def _not_applied(m: np.ndarray, w: int, h: int, confidence: float, residual: float | None, note: str) -> Alignment:
    dx, dy, s, a = describe(m, w, h)
    return Alignment(m, dx, dy, s, a, confidence, False, residual, note)


@dataclass
class AlignContext:
    """Everything the estimate needs from the original and the selection alone (not the result): computed
    while the engine waits for the server (`prepare_alignment`), so only result-dependent work remains."""

    f: float
    orig: np.ndarray              # the original's grey work level
    sel: np.ndarray               # the selection's work level
    margin: int
    tmask: np.ndarray             # context in original coordinates (work level)
    refusal: str | None           # why nothing can be aligned (too little context or texture), else None


def prepare_alignment(original: np.ndarray, selection: np.ndarray) -> AlignContext:
    h, w = selection.shape
    f = min(1.0, WORK_SIZE / max(h, w))
    orig = _level(_grey(original), f)
    sel = _level(selection, f)
    hs, ws = sel.shape
    margin = max(2, round(0.01 * max(hs, ws)))
    tmask = context_mask(sel, margin)
    context = int(np.count_nonzero(tmask))
    refusal = None
    if context < max(MIN_CONTEXT_PX * f * f, MIN_CONTEXT_SHARE * hs * ws):
        refusal = "too little context outside the selection"
    elif _texture(orig, tmask) < MIN_TEXTURE:
        refusal = "too little texture in the context"
    return AlignContext(f, orig, sel, margin, tmask, refusal)


def estimate_alignment(original: np.ndarray, result: np.ndarray, selection: np.ndarray,
                       prepared: AlignContext | None = None) -> Alignment:
    """Find the similarity that maps the original onto the result over the context, and decide on it.
    `prepared`: `prepare_alignment(original, selection)`, when it was computed ahead (e.g. during the wait)."""
    h, w = selection.shape
    ctx = prepared if prepared is not None else prepare_alignment(original, selection)
    if ctx.refusal is not None:
        return _not_applied(IDENTITY.copy(), w, h, 0.0, None, ctx.refusal)
    f, orig, sel, margin, tmask = ctx.f, ctx.orig, ctx.sel, ctx.margin, ctx.tmask
    res = _level(_grey(result), f)
    hs, ws = sel.shape

    fast = _coarse_to_fine(orig, res, sel, margin)
    if fast is not None:
        small, rho = fast
        pairs = np.zeros((0, 2, 2))
    else:
        init, inliers, pairs = _features(orig, res, tmask)
        if init is None or inliers < MIN_INLIERS:
            init, _response = _phase(orig, res, tmask)
        init = to_similarity(init)
        # The changed inside moves with the warp: exclude it where the first estimate puts it (+ slack).
        imask = _result_mask(sel, init, margin + 2)
        fit = _ecc(orig, res, tmask, imask, init, ECC_ITERATIONS)
        if fit is None:
            return _not_applied(IDENTITY.copy(), w, h, 0.0, None,
                                "the result does not match the original outside the selection")
        small, rho = fit
        small = to_similarity(small)
    matrix = _rescale(small, f, (ws, hs), (w, h))
    residual = None
    if len(pairs):
        residual = float(np.median(np.linalg.norm(pairs[:, 0] @ small[:, :2].T + small[:, 2] - pairs[:, 1], axis=1)))
        residual /= f
    if rho < MIN_CORRELATION:
        return _not_applied(IDENTITY.copy(), w, h, max(rho, 0.0), residual,
                            f"the result does not match the original outside the selection (correlation {rho:.2f})")
    dx, dy, scale, angle = describe(matrix, w, h)
    if (abs(dx) > MAX_SHIFT_SHARE * w or abs(dy) > MAX_SHIFT_SHARE * h or abs(scale - 1) > MAX_SCALE_DELTA
            or abs(angle) > MAX_ANGLE_DEG):
        return Alignment(matrix, dx, dy, scale, angle, rho, False, residual,
                         f"the fit (shift {dx:.1f}, {dy:.1f} px, scale {scale:.3f}, rotation {angle:.1f}°) "
                         "is beyond the bounds (5% shift, ±5% scale, 3°)")
    if (np.hypot(dx, dy) < ALIGNED_SHIFT_PX and abs(scale - 1) < ALIGNED_SCALE_DELTA
            and abs(angle) < ALIGNED_ANGLE_DEG):
        return Alignment(matrix, dx, dy, scale, angle, rho, False, residual, "aligned already")
    return Alignment(matrix, dx, dy, scale, angle, rho, True, residual, "")


def valid_area(matrix: np.ndarray, width: int, height: int, inset: float = 2.0) -> np.ndarray:
    """bool (H, W): where the forward map `matrix` samples the result at least `inset` px inside its border.

    The result's rectangle (inset) pulled back through the map is a convex quadrilateral; filling it is a
    few milliseconds on a 2048² crop, where warping a full-size mask and eroding it is tens.
    """
    corners = np.array([[inset, inset], [width - 1 - inset, inset], [width - 1 - inset, height - 1 - inset],
                        [inset, height - 1 - inset]])
    back = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    pts = corners @ back[:, :2].T + back[:, 2]
    area = np.zeros((height, width), np.uint8)
    shift = 4  # sub-pixel vertex precision (1/16 px)
    cv2.fillConvexPoly(area, np.round(pts * (1 << shift)).astype(np.int32), 1, cv2.LINE_8, shift)
    return area.view(bool)
