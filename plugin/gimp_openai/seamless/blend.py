"""Gradient-domain (Poisson) blending: the result's gradients inside the selection, the original's values on
its boundary.

Why: on flat or smoothly shaded surroundings (sky, a wall, skin) even a small tone step around a feathered
patch is visible. Poisson blending keeps everything the model drew (its gradients) and bends it, smoothly, so
that it meets the original exactly at the edge of the selection.

Maths: the blended image is f = result + c, where the correction c is harmonic inside the region (Δc = 0) and
equals original - result on the pixels just outside it (Dirichlet). That membrane is smooth away from the
boundary, so it is solved coarse-to-fine (cascadic multigrid): exactly enough on a small pyramid level, then
upsampled and relaxed with a few Jacobi sweeps per finer level, where only the fine detail near the boundary
still has to settle. Each sweep is one OpenCV 4-neighbour filter on the region's bounding box, so a 2048²
crop costs a fraction of a second.
"""

from __future__ import annotations

import cv2
import numpy as np

_KERNEL = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)
#: the coarsest level's long side; solved there with many sweeps (it is tiny).
COARSEST = 24
COARSEST_SWEEPS = 300
#: levels up to this many pixels are relaxed everywhere (cheap); larger ones only in a band along the boundary.
FULL_LEVEL_PIXELS = 160 * 160
FULL_SWEEPS = 60
#: band relaxation: width of the band inside the region along its boundary, and sweeps.
BAND_PX = 10
BAND_SWEEPS = 40


def _relax(c: np.ndarray, region: np.ndarray, sweeps: int) -> np.ndarray:
    """Jacobi sweeps of Δc = 0 inside `region`; values outside it are the fixed boundary and never change."""
    mask = region[..., None]
    for _ in range(sweeps):
        avg = cv2.filter2D(c, -1, _KERNEL, borderType=cv2.BORDER_REPLICATE)
        np.copyto(c, avg.reshape(c.shape), where=mask)
    return c


def _relax_band(c: np.ndarray, region: np.ndarray, width: int, sweeps: int) -> np.ndarray:
    """Jacobi sweeps only on region pixels within `width` px of the boundary.

    After upsampling a coarser solution the error is concentrated there: the interior of a harmonic field is
    smooth (bilinear upsampling is accurate), while boundary detail finer than the coarser level could hold
    decays within a few of its wavelengths. The band's inner edge acts as a boundary held at the upsampled
    values. Works on gathered pixel indices, so the cost follows the perimeter, not the area.
    """
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    idx = np.flatnonzero(region.ravel() & (dist.ravel() <= width))
    if idx.size == 0:
        return c
    w = region.shape[1]
    flat = c.reshape(-1, c.shape[-1])
    # Work on a compact copy of the band and its neighbours: small, cache-friendly gathers, one channel at a
    # time (np.take on a 1-D array is several times faster than gathering 3-float rows).
    # the band and its four neighbours, sorted and unique (a mark array: cheaper than np.unique)
    mark = np.zeros(region.size, bool)
    for step in (0, -1, 1, -w, w):
        mark[idx + step] = True
    around = np.flatnonzero(mark)
    pos = np.searchsorted(around, idx)
    left, right = np.searchsorted(around, idx - 1), np.searchsorted(around, idx + 1)
    up, down = np.searchsorted(around, idx - w), np.searchsorted(around, idx + w)
    quarter = np.float32(0.25)
    acc = np.empty(idx.size, np.float32)
    tmp = np.empty(idx.size, np.float32)
    for ch in range(flat.shape[1]):
        local = np.ascontiguousarray(flat[around, ch])
        for _ in range(sweeps):
            np.take(local, left, out=acc)
            acc += np.take(local, right, out=tmp)
            acc += np.take(local, up, out=tmp)
            acc += np.take(local, down, out=tmp)
            acc *= quarter
            local[pos] = acc
        flat[idx, ch] = local[pos]
    return c


def _down(values: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-size level: region where most of the 2x2 block is region; boundary values averaged over the
    block's non-region pixels only (the inside of the result must not leak into the boundary)."""
    h, w = region.shape
    h2, w2 = max(1, (h + 1) // 2), max(1, (w + 1) // 2)
    outside = (~region).astype(np.float32)
    weight = cv2.resize(outside, (w2, h2), interpolation=cv2.INTER_AREA)
    summed = cv2.resize(values * outside[..., None], (w2, h2), interpolation=cv2.INTER_AREA)
    summed = summed.reshape(h2, w2, values.shape[-1])
    coarse_region = weight < 0.5
    coarse_region[0, :] = coarse_region[-1, :] = False
    coarse_region[:, 0] = coarse_region[:, -1] = False
    coarse = np.where(weight[..., None] > 0, summed / np.maximum(weight, 1e-6)[..., None], 0).astype(np.float32)
    return coarse, coarse_region


def solve_membrane(boundary: np.ndarray, region: np.ndarray) -> np.ndarray:
    """c with Δc = 0 inside `region` and c = `boundary` outside it; (H, W, C) float32, C <= 4.

    `region` must not touch the array's border (pad by one pixel first): every region pixel needs four
    neighbours.
    """
    boundary = np.ascontiguousarray(boundary, dtype=np.float32)
    levels = [(boundary, region)]
    while max(levels[-1][1].shape) > COARSEST:
        levels.append(_down(*levels[-1]))
    values, reg = levels[-1]
    c = values.copy()
    if reg.any() and (~reg).any():
        c[reg] = values[~reg].mean(axis=0)  # a good start: fewer sweeps to converge
    c = _relax(c, reg, COARSEST_SWEEPS)
    for values, reg in reversed(levels[:-1]):
        h, w = reg.shape
        c = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        np.copyto(c, values, where=~reg[..., None])
        if h * w <= FULL_LEVEL_PIXELS:
            c = _relax(c, reg, FULL_SWEEPS)
        else:
            c = _relax_band(c, reg, BAND_PX, BAND_SWEEPS)
    return c


def poisson_blend(original: np.ndarray, result: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """RGBA result whose colour inside the selection (selection > 0) is Poisson-blended into the original.

    Outside the selection the result is returned as it is (the caller composites through the mask, so those
    pixels never show). Alpha is the result's.
    """
    region = selection > 0
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return result.copy()
    cols = np.flatnonzero(region.any(axis=0))
    h, w = region.shape
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
    orig = original[y0:y1, x0:x1, :3]
    res = result[y0:y1, x0:x1, :3]
    reg = region[y0:y1, x0:x1]
    # A selection touching the crop edge has no original boundary there: pad by replicating (Neumann-like).
    # Where the pad meets the region, the boundary value is the nearest region pixel's difference: keep it
    # from biasing by treating padded pixels as boundary with the edge-replicated difference.
    diff = cv2.copyMakeBorder(cv2.subtract(orig, res, dtype=cv2.CV_32F), 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    reg_p = np.pad(reg, 1, mode="constant", constant_values=False)
    c = solve_membrane(diff, reg_p)[1:-1, 1:-1]
    out = result.copy()
    # result + correction, rounded and saturated to uint8 in one OpenCV pass
    blended = cv2.add(res, c, dtype=cv2.CV_8U)
    patch = out[y0:y1, x0:x1, :3]
    np.copyto(patch, blended, where=reg[..., None])
    return out
