"""Alignment: recovers known similarities from the context only, and refuses (saying why) when it should."""

import cv2
import numpy as np
import pytest
from gimp_openai.seamless.align import (
    context_mask,
    describe,
    estimate_alignment,
    to_similarity,
    valid_area,
)
from gimp_openai.seamless.apply import apply_corrections

from tests.seamless.scenes import make_case, noise_result, rgba, similarity


def context_points(selection):
    ys, xs = np.nonzero(context_mask(selection, 0))
    return np.column_stack([xs, ys]).astype(float)


def residual(found, case):
    """max |estimated - true| displacement over the context pixels, in px."""
    pts = context_points(case.selection)
    true = pts @ case.forward[:, :2].T + case.forward[:, 2]
    est = pts @ found.matrix[:, :2].T + found.matrix[:, 2]
    return float(np.linalg.norm(true - est, axis=1).max())


@pytest.mark.parametrize(("dx", "dy", "scale", "angle"), [
    (5.8, -3.9, 1.012, 0.0),
    (-12.0, 12.0, 1.0, 0.0),
    (0.4, 0.3, 1.0, 0.0),                 # sub-pixel
    (0.0, 0.0, 0.97, 0.0),                # scale only
    (0.0, 0.0, 1.03, 0.0),
    (3.0, -2.0, 1.0, 1.0),                # small rotation
    (-7.5, 4.25, 0.975, -0.8),
])
def test_recovers_the_similarity(dx, dy, scale, angle):
    rng = np.random.default_rng(7)
    base = make_case(rng, (320, 288), warp=False)
    case = _rewarp(base, dx, dy, scale, angle)
    found = estimate_alignment(case.original, case.result, case.selection)
    assert found.applied, found.note
    assert residual(found, case) < 0.25
    assert found.confidence > 0.8
    assert found.dx == pytest.approx(dx, abs=0.1) and found.dy == pytest.approx(dy, abs=0.1)
    assert found.scale == pytest.approx(scale, abs=1e-3) and found.angle_deg == pytest.approx(angle, abs=0.05)
    # features are matched only when the coarse-to-fine estimate is not confident: no residual otherwise
    assert found.residual_px is None or found.residual_px < 1.0


def _rewarp(case, dx, dy, scale, angle):
    """The same scene warped by an exact similarity (reflect border is fine: the borders are context)."""
    h, w = case.selection.shape
    fwd = similarity(dx, dy, scale, angle, ((w - 1) / 2, (h - 1) / 2))
    edited = case.original.copy()
    edited[case.changed] = 255 - edited[case.changed]
    edited[..., 3] = 255
    result = cv2.warpAffine(edited, fwd, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    case.result, case.forward = result, fwd
    return case


def test_exactly_aligned_is_not_touched():
    rng = np.random.default_rng(8)
    case = make_case(rng, (300, 300), warp=False)
    found = estimate_alignment(case.original, case.result, case.selection)
    assert not found.applied and found.note == "aligned already"
    assert abs(found.dx) < 0.1 and abs(found.dy) < 0.1


@pytest.mark.parametrize(("dx", "scale", "why"), [(30.0, 1.0, "beyond the bounds"), (0.0, 1.08, "beyond the bounds")])
def test_out_of_bounds_is_reported_not_applied(dx, scale, why):
    rng = np.random.default_rng(9)
    case = _rewarp(make_case(rng, (320, 320), warp=False), dx, 0.0, scale, 0.0)
    found = estimate_alignment(case.original, case.result, case.selection)
    assert not found.applied and why in found.note


@pytest.mark.parametrize(("make_result", "why"), [
    ("noise", "does not match"),
    ("flat", "too little texture"),
    ("full", "too little context"),
])
def test_nothing_to_align_to(make_result, why):
    rng = np.random.default_rng(10)
    case = make_case(rng, (256, 256), warp=False)
    original, result, selection = case.original, case.result, case.selection
    if make_result == "noise":
        result = noise_result(rng, original)
    elif make_result == "flat":
        original = rgba(np.full((256, 256, 3), 120, np.uint8))
    else:
        selection = np.full_like(selection, 255)
    found = estimate_alignment(original, result, selection)
    assert not found.applied and why in found.note
    assert found.to_dict()["applied"] is False


def test_large_crop_is_estimated_on_a_pyramid_level():
    rng = np.random.default_rng(11)
    case = make_case(rng, (1100, 900), max_shift=20, max_scale=0.02, max_angle=0.5)
    found = estimate_alignment(case.original, case.result, case.selection)
    assert found.applied, found.note
    assert residual(found, case) < 0.5


def test_helpers():
    m = similarity(2.0, -1.0, 1.01, 0.5, (49.5, 49.5))
    dx, dy, s, a = describe(m, 100, 100)
    assert (dx, dy) == pytest.approx((2.0, -1.0)) and s == pytest.approx(1.01) and a == pytest.approx(0.5)
    assert np.allclose(to_similarity(m), m)
    img = np.zeros((50, 60, 4), np.uint8)
    img[..., 0] = np.arange(60, dtype=np.uint8)[None]
    shift = np.array([[1.0, 0, 10], [0, 1, 0]])
    out, valid = apply_corrections(img, shift, None, (10, 40, 5, 30)), valid_area(shift, 60, 50)
    # bicubic inside the window, bilinear outside: an integer shift is exact in both
    assert out[20, 20, 0] == 30 and out[45, 40, 0] == 50 and valid[20, 20] and not valid[20, 55]
