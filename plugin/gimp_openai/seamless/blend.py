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
BAND_SWEEPS = 20


def _relax(c: np.ndarray, region: np.ndarray, sweeps: int) -> np.ndarray:
    """Jacobi sweeps of Δc = 0 inside `region`; values outside it are the fixed boundary and never change."""
    mask = region.view(np.uint8)
    avg = np.empty_like(c)
    for _ in range(sweeps):
        cv2.filter2D(c, -1, _KERNEL, dst=avg, borderType=cv2.BORDER_REPLICATE)
        cv2.copyTo(avg, mask, c)    # in place, region pixels only (a masked OpenCV copy: no numpy where)
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
    around, pos, neighbours = _band_stencil(idx, region.size, w)
    acc = np.empty(idx.size, np.float32)
    tmp = np.empty(idx.size, np.float32)
    for ch in range(flat.shape[1]):
        local = np.ascontiguousarray(flat[around, ch])
        _jacobi(local, pos, neighbours, sweeps, acc, tmp)
        flat[idx, ch] = local[pos]
    return c


def _band_stencil(idx: np.ndarray, size: int, w: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """(around, pos, (left, right, up, down)): the band pixels `idx` and their four neighbours, sorted and unique
    (a mark array: cheaper than np.unique), with the positions in `around` of each band pixel and of its
    neighbours, so the sweeps gather from a small compact copy."""
    mark = np.zeros(size, bool)
    for step in (0, -1, 1, -w, w):
        mark[idx + step] = True
    around = np.flatnonzero(mark)
    pos = np.searchsorted(around, idx)
    neighbours = tuple(np.searchsorted(around, idx + step) for step in (-1, 1, -w, w))
    return around, pos, neighbours


def _jacobi(local: np.ndarray, pos: np.ndarray, neighbours: tuple[np.ndarray, ...], sweeps: int,
            acc: np.ndarray, tmp: np.ndarray) -> None:
    """`sweeps` Jacobi sweeps in place on one channel's compact copy: each band pixel becomes the mean of its
    four neighbours (`acc`, `tmp`: scratch arrays of the band's size)."""
    left, right, up, down = neighbours
    quarter = np.float32(0.25)
    for _ in range(sweeps):
        np.take(local, left, out=acc)
        acc += np.take(local, right, out=tmp)
        acc += np.take(local, up, out=tmp)
        acc += np.take(local, down, out=tmp)
        acc *= quarter
        local[pos] = acc


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


def _solve_from(levels: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Cascadic solve over a pyramid [(values, region), ...] finest first: the coarsest level exactly enough,
    then upsample and relax level by level; returns the finest level's c."""
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


def solve_membrane(boundary: np.ndarray, region: np.ndarray) -> np.ndarray:
    """c with Δc = 0 inside `region` and c = `boundary` outside it; (H, W, C) float32, C <= 4.

    `region` must not touch the array's border (pad by one pixel first): every region pixel needs four
    neighbours.
    """
    boundary = np.ascontiguousarray(boundary, dtype=np.float32)
    return _solve_from([(boundary, region)])


def _fine_band(c: np.ndarray, diff: np.ndarray, region: np.ndarray, width: int, sweeps: int) -> None:
    """Jacobi sweeps on the finest level, in place, on region pixels within `width` px (chessboard) of the
    boundary; neighbours outside the region read the boundary values from `diff` (c holds upsampled values
    there, which are never used). Channels 0..2 only (a 4th, if any, stays as it is)."""
    reg_u8 = region.view(np.uint8)
    inner = cv2.erode(reg_u8, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * width + 1, 2 * width + 1)),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    idx = np.flatnonzero(cv2.subtract(reg_u8, inner))
    if idx.size == 0:
        return
    w = region.shape[1]
    around, pos, neighbours = _band_stencil(idx, region.size, w)
    fixed = np.flatnonzero(~region.ravel()[around])          # positions (in `around`) of boundary pixels
    flat = c.reshape(-1, c.shape[-1])
    dflat = diff.reshape(-1, diff.shape[-1])
    acc = np.empty(idx.size, np.float32)
    tmp = np.empty(idx.size, np.float32)
    for ch in range(3):
        local = flat[around, ch]
        local[fixed] = dflat[around[fixed], ch]
        _jacobi(local, pos, neighbours, sweeps, acc, tmp)
        flat[idx, ch] = local[pos]


#: finest level (poisson_blend): band width and sweeps. Only detail finer than the half-size level could hold
#: (wavelengths of 2-4 px) is missing after upsampling, and it decays within a few pixels of the boundary.
FINE_BAND_PX = 4
FINE_BAND_SWEEPS = 12


def poisson_blend(original: np.ndarray, result: np.ndarray, selection: np.ndarray, *,
                  in_place: bool = False) -> np.ndarray:
    """RGBA result whose colour inside the selection (selection > 0) is Poisson-blended into the original.

    Outside the selection the result is returned as it is (the caller composites through the mask, so those
    pixels never show). Alpha is the result's. `in_place`: write into `result` itself (the caller owns it)
    instead of a copy.

    Only the selection's bounding box (plus 1 px) is touched. The membrane is solved from the half-size level
    down (its boundary values are the 2x2 means of original - result over the outside pixels only), bilinearly
    upsampled, and the full-size detail is settled by a few sweeps on a narrow band along the boundary.
    """
    region = selection > 0
    rows = np.flatnonzero(region.any(axis=1))
    out = result if in_place else result.copy()
    if rows.size == 0:
        return out
    cols = np.flatnonzero(region.any(axis=0))
    h, w = region.shape
    y0, y1 = int(rows[0]) - 1, int(rows[-1]) + 2
    x0, x1 = int(cols[0]) - 1, int(cols[-1]) + 2
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    pads = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
    orig = original[cy0:cy1, cx0:cx1]
    res = out[cy0:cy1, cx0:cx1]
    if any(pads):
        # A selection touching the crop edge has no original boundary there: replicate both images outwards, so
        # the boundary value there is the edge pixels' difference (Neumann-like).
        orig = cv2.copyMakeBorder(orig, *pads, cv2.BORDER_REPLICATE)
        res_p = cv2.copyMakeBorder(res, *pads, cv2.BORDER_REPLICATE)
    else:
        res_p = res
    reg = np.zeros((y1 - y0, x1 - x0), bool)
    reg[1:-1, 1:-1] = region[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
    outside = (~reg).view(np.uint8)
    # original - result over the boundary pixels (0 inside the region), float32, one OpenCV pass; its 4th
    # channel then holds the boundary indicator, so one area resize gives both the sums and their weights.
    diff = cv2.subtract(orig, res_p, mask=outside, dtype=cv2.CV_32F)
    ph, pw = reg.shape
    if ph * pw <= FULL_LEVEL_PIXELS:
        c4 = solve_membrane(diff, reg)
        c4[..., 3] = 0                                              # alpha untouched
    else:
        cv2.mixChannels([outside.astype(np.float32)], [diff], [0, 3])
        h2, w2 = (ph + 1) // 2, (pw + 1) // 2
        summed = cv2.resize(diff, (w2, h2), interpolation=cv2.INTER_AREA)
        weight = summed[..., 3]
        coarse_reg = weight < 0.5
        coarse_reg[0, :] = coarse_reg[-1, :] = False
        coarse_reg[:, 0] = coarse_reg[:, -1] = False
        np.maximum(weight, 1e-6, out=weight)
        coarse = summed[..., :3] / weight[..., None]
        half = _solve_from([(coarse, coarse_reg)])
        half = cv2.merge([half, np.zeros(half.shape[:2], np.float32)])   # alpha untouched
        c4 = cv2.resize(half, (pw, ph), interpolation=cv2.INTER_LINEAR)
        _fine_band(c4, diff, reg, FINE_BAND_PX, FINE_BAND_SWEEPS)
    top, left = pads[0], pads[2]
    c4 = c4[top:top + (cy1 - cy0), left:left + (cx1 - cx0)]
    mask = reg[top:top + (cy1 - cy0), left:left + (cx1 - cx0)].view(np.uint8)
    # result + correction, rounded and saturated to uint8, written into the region's pixels in one pass
    cv2.add(res, c4, dst=res, mask=mask, dtype=cv2.CV_8U)
    return out
