"""Poisson blend: the membrane solver against an exact dense solve, and the blend's promises.

The solver is approximate by design (cascadic multigrid, a fixed number of sweeps, for speed on 2048² crops):
it stays within a fraction of a grey level on average of the exact solution, also for pure-noise boundaries.
"""

import cv2
import numpy as np
import pytest
from gimp_openai.seamless.blend import poisson_blend, solve_membrane

from tests.seamless.scenes import rgba, textured_image


def exact_membrane(boundary, region):
    """Dense reference: Δc = 0 inside region, c = boundary outside (small sizes only)."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    index = -np.ones((h, w), int)
    index[ys, xs] = np.arange(len(ys))
    a = np.zeros((len(ys), len(ys)))
    rhs = np.zeros((len(ys), boundary.shape[2]))
    for k, (y, x) in enumerate(zip(ys, xs)):
        a[k, k] = 4
        for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if region[yy, xx]:
                a[k, index[yy, xx]] = -1
            else:
                rhs[k] += boundary[yy, xx]
    c = boundary.astype(np.float64).copy()
    c[ys, xs] = np.linalg.solve(a, rhs)
    return c


def ellipse(h, w, axes, angle=20.0):
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, ((w / 2, h / 2), axes, angle), 1, -1)
    return m.astype(bool)


@pytest.mark.parametrize(("kind", "size", "mean_tol", "max_tol"), [
    ("smooth", 48, 0.05, 0.2),
    ("smooth", 72, 0.2, 0.5),
    ("noisy", 48, 0.6, 2.5),
    ("noisy", 72, 0.6, 2.5),
    ("constant", 72, 1e-4, 1e-4),
])
def test_membrane_matches_exact_solution(kind, size, mean_tol, max_tol):
    rng = np.random.default_rng(0)
    region = ellipse(size, size, (size * 0.7, size * 0.5))
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "smooth":
        b = np.stack([10 * np.sin(xx / 9.0) + 5 * np.cos(yy / 7.0), 0.3 * xx - 0.2 * yy], -1)
    elif kind == "noisy":
        b = rng.normal(0, 8, (size, size, 2))
    else:
        b = np.full((size, size, 2), 7.5)
    c = solve_membrane(b.astype(np.float32), region)
    err = np.abs(c - exact_membrane(b, region))[region]
    assert err.mean() <= mean_tol and err.max() <= max_tol
    assert np.array_equal(c[~region], b.astype(np.float32)[~region])   # the boundary is never changed


def test_blend_removes_a_tone_step_and_keeps_the_results_detail():
    rng = np.random.default_rng(1)
    original = rgba(textured_image(rng, 160, 160))
    result = original.astype(int)
    result[..., :3] = np.clip(result[..., :3] + 25, 0, 255)     # a brightness step
    result = result.astype(np.uint8)
    sel = ellipse(160, 160, (90, 70)).astype(np.uint8) * 255
    out = poisson_blend(original, result, sel)
    inside = sel > 0
    # Same gradients inside, so a pure offset is removed entirely (up to clipping at 255 and rounding).
    unclipped = inside & (original[..., :3].max(axis=2) < 225)
    assert np.abs(out[..., :3].astype(int) - original[..., :3])[unclipped].mean() < 0.6
    assert np.array_equal(out[~inside], result[~inside])
    assert np.array_equal(out[..., 3], result[..., 3])


def test_blend_meets_the_original_at_the_edge():
    rng = np.random.default_rng(2)
    original = rgba(textured_image(rng, 200, 200))
    result = rgba(textured_image(rng, 200, 200))                 # something entirely different
    sel = ellipse(200, 200, (120, 80)).astype(np.uint8) * 255
    out = poisson_blend(original, result, sel)
    inside = sel > 0
    # The step across the edge, at the scale the eye sees a seam (its texture is the result's own, by design).
    edge = inside & ~cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    step_raw = np.abs((result[..., :3].astype(float) - original[..., :3])[edge].mean(axis=0))
    step_blend = np.abs((out[..., :3].astype(float) - original[..., :3])[edge].mean(axis=0))
    assert np.all(step_blend < np.maximum(step_raw / 3, 5.0)), (step_raw, step_blend)


@pytest.mark.parametrize("where", ["corner", "empty", "edge-to-edge"])
def test_blend_handles_selections_at_the_crop_edge(where):
    rng = np.random.default_rng(3)
    original = rgba(textured_image(rng, 96, 128))
    result = original.copy()
    result[..., :3] //= 2
    sel = np.zeros((96, 128), np.uint8)
    if where == "corner":
        sel[:40, :50] = 255
    elif where == "edge-to-edge":
        sel[30:60, :] = 255
    out = poisson_blend(original, result, sel)
    assert out.shape == result.shape and out.dtype == np.uint8
    if where == "empty":
        assert np.array_equal(out, result)
    else:
        inside = sel > 0
        assert np.abs(out.astype(int) - original)[inside].mean() < np.abs(result.astype(int) - original)[inside].mean()


def converged_membrane(boundary, region, rtol=1e-7):
    """Reference for larger sizes: conjugate gradients on the 5-point Laplacian (float64), to `rtol`."""
    kernel = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float64)
    inside = region.astype(np.float64)
    out = boundary.astype(np.float64).copy()
    for ch in range(boundary.shape[2]):
        fixed = boundary[..., ch].astype(np.float64) * (1 - inside)
        b = cv2.filter2D(fixed, -1, kernel, borderType=cv2.BORDER_CONSTANT) * inside

        def apply(x):
            return (4 * x - cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_CONSTANT)) * inside

        x = np.zeros_like(b)
        r = b - apply(x)
        p = r.copy()
        rs = float((r * r).sum())
        stop = rtol**2 * float((b * b).sum())
        for _ in range(20 * int(np.sqrt(region.size))):
            if rs <= stop:
                break
            ap = apply(p)
            alpha = rs / float((p * ap).sum())
            x += alpha * p
            r -= alpha * ap
            rs_new = float((r * r).sum())
            p = r + (rs_new / rs) * p
            rs = rs_new
        out[..., ch] = np.where(region, x, boundary[..., ch])
    return out


def _half_size_error(original, result, sel):
    """Grey-level error of poisson_blend (half-size path) against result + the converged membrane, inside."""
    inside = sel > 0
    out = poisson_blend(original, result, sel)
    c = converged_membrane(original[..., :3].astype(np.float64) - result[..., :3], inside)
    ref = np.clip(np.round(result[..., :3] + c), 0, 255)
    return np.abs(out[..., :3].astype(np.float64) - ref)[inside]


@pytest.mark.parametrize(("kind", "mean_tol", "max_tol"), [
    # measured: mean 0.10, max 1 (a rounding step): a smooth boundary difference, what tone drift leaves
    ("tone step", 0.3, 2.0),
    # measured: mean 1.9, 99th percentile 6, max 9 grey levels. A misaligned texture makes the boundary
    # difference a noise-like pattern; its detail finer than the half-size level is settled only on the 4 px
    # fine band, so some of it is missing a few pixels further in (the ~5 grey levels seen at 2048²)
    ("raw shifted", 3.0, 12.0),
])
def test_half_size_poisson_path_against_a_converged_solve(kind, mean_tol, max_tol):
    """~400² (the half-size path: above FULL_LEVEL_PIXELS): the fast solver against a converged one, inside.

    The reference (conjugate gradients to 1e-7) agrees with the dense exact solve to ~1e-6 at 48²."""
    rng = np.random.default_rng(5)
    size = 400
    original = rgba(textured_image(rng, size, size))
    if kind == "tone step":
        result = original.astype(int)
        result[..., :3] = np.clip(result[..., :3] * 1.08 + 10, 0, 255)
        result = result.astype(np.uint8)
    else:
        m = np.array([[1.01, 0, 5.5], [0, 1.01, -3.25]])
        result = cv2.warpAffine(original, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    sel = ellipse(size, size, (300, 220)).astype(np.uint8) * 255
    err = _half_size_error(original, result, sel)
    assert err.mean() <= mean_tol and err.max() <= max_tol, (kind, err.mean(), np.percentile(err, 99), err.max())
