"""Request pixels, back-mapping with no shift, and the GIMP-equivalent composite."""

from __future__ import annotations

import numpy as np
import pytest
from gimp_openai.capabilities import FAMILIES
from gimp_openai.composite import composite, request_pixels, result_to_place, target_selection
from gimp_openai.geometry import Rect, RegionPlan, plan_region
from gimp_openai.imaging import resize


def texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.dstack([rgb, np.full((h, w), 255, np.uint8)])


def smooth(h, w):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rgb = np.dstack([128 + 100 * np.sin(xx / 9), 128 + 100 * np.cos(yy / 7), 128 + 60 * np.sin((xx + yy) / 13)])
    return np.dstack([rgb, np.full((h, w), 255, np.float32)]).astype(np.uint8)


PLANS = [
    ("scale 1, no padding", RegionPlan(Rect(0, 0, 32, 32), Rect(0, 0, 32, 32), (32, 32))),
    ("scale 1, padded", RegionPlan(Rect(5, 0, 20, 16), Rect(3, -4, 24, 24), (24, 24))),
    ("upscale, padded", RegionPlan(Rect(0, 0, 40, 30), Rect(0, -5, 40, 40), (816, 816))),
    ("downscale", RegionPlan(Rect(0, 0, 300, 200), Rect(0, 0, 300, 200), (96, 64))),
    ("strip", RegionPlan(Rect(0, 0, 3000, 20), Rect(0, -490, 3000, 1000), (384, 128))),
]


@pytest.mark.parametrize("name, plan", PLANS, ids=[p[0] for p in PLANS])
def test_request_pixels_shape_and_padding(name, plan):
    place = smooth(plan.place.height, plan.place.width)
    req = request_pixels(place, plan)
    assert req.shape == (plan.target[1], plan.target[0], 4) and req.dtype == np.uint8
    inner = plan.place_in_target
    if plan.scale == (1.0, 1.0):
        assert np.array_equal(req[inner.y : inner.bottom, inner.x : inner.right], place)
        if inner.x > 0:  # mirrored: the column left of the place equals its first column
            assert np.array_equal(req[inner.y : inner.bottom, inner.x - 1], place[:, 0])


@pytest.mark.parametrize("name, plan", PLANS, ids=[p[0] for p in PLANS])
def test_identity_model_round_trip_has_no_shift(name, plan):
    place = smooth(plan.place.height, plan.place.width)
    back = result_to_place(request_pixels(place, plan), plan)
    assert back.shape == place.shape
    diff = np.abs(back.astype(int) - place.astype(int))
    if plan.scale == (1.0, 1.0):
        assert not diff.any(), "scale 1 must be exact"
    else:
        # exactly the place scaled to its target rectangle and back: nothing but resampling, no offset
        inner = plan.place_in_target
        assert np.array_equal(back, resize(resize(place, inner.size), plan.place.size))
        if name != "strip":  # 20 rows squeezed into 3 cannot come back sharp
            assert diff[..., :3].mean() < 4.0, diff.mean()


def test_result_of_wrong_size_is_scaled_to_target_first():
    plan = RegionPlan(Rect(0, 0, 32, 32), Rect(0, 0, 32, 32), (64, 64))
    out = result_to_place(np.full((100, 100, 4), 200, np.uint8), plan)
    assert out.shape == (32, 32, 4) and (out == 200).all()


def test_target_selection_aligns_with_request_pixels():
    plan = RegionPlan(Rect(5, 0, 20, 16), Rect(3, -4, 24, 24), (48, 48))
    sel = np.full((16, 20), 255, np.uint8)
    ts = target_selection(sel, plan)
    inner = plan.place_in_target
    assert ts.shape == (48, 48) and ts[inner.y : inner.bottom, inner.x : inner.right].all()
    assert ts.sum() == 255 * inner.area


def test_request_pixels_rejects_wrong_size():
    plan = RegionPlan(Rect(0, 0, 32, 32), Rect(0, 0, 32, 32), (32, 32))
    with pytest.raises(ValueError):
        request_pixels(np.zeros((31, 32, 4), np.uint8), plan)


def test_plan_then_round_trip_for_a_real_plan():
    layer = Rect(-20, 10, 500, 300)
    plan = plan_region(layer, Rect(400, 250, 100, 100), FAMILIES["gpt-image-1"])
    place = smooth(plan.place.height, plan.place.width)
    back = result_to_place(request_pixels(place, plan), plan)
    assert np.abs(back.astype(int) - place.astype(int))[..., :3].mean() < 4.0


# --- composite ---------------------------------------------------------------------------------------------


def _px(*rgba):
    return np.array([[rgba]], np.uint8)


@pytest.mark.parametrize(
    "original, result, mask, linear, expected",
    [
        (_px(10, 20, 30, 255), _px(200, 100, 50, 255), 0, True, (10, 20, 30, 255)),
        (_px(10, 20, 30, 255), _px(200, 100, 50, 255), 255, True, (200, 100, 50, 255)),
        # 50 % in sRGB values (legacy) vs in linear light (GIMP's Normal): linear mid of 0 and 255 is 188
        (_px(0, 0, 0, 255), _px(255, 255, 255, 255), 128, False, (128, 128, 128, 255)),
        (_px(0, 0, 0, 255), _px(255, 255, 255, 255), 128, True, (188, 188, 188, 255)),
        # transparent original: the result's colour, at the mask's opacity
        (_px(9, 9, 9, 0), _px(200, 100, 50, 255), 128, True, (200, 100, 50, 128)),
        (_px(9, 9, 9, 0), _px(200, 100, 50, 255), 0, True, (9, 9, 9, 0)),
        # transparent result over opaque original: the original shows
        (_px(10, 20, 30, 255), _px(200, 100, 50, 0), 255, True, (10, 20, 30, 255)),
        # both transparent
        (_px(1, 2, 3, 0), _px(200, 100, 50, 0), 255, True, (0, 0, 0, 0)),
    ],
)
def test_composite_formula(original, result, mask, linear, expected):
    out = composite(original, result, np.array([[mask]], np.uint8), linear=linear)
    assert np.abs(out[0, 0].astype(int) - expected).max() <= 1, out[0, 0]


def test_composite_outside_bit_identical_random():
    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    result = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    mask = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    mask[rng.random((64, 64)) < 0.4] = 0
    out = composite(original, result, mask)
    assert np.array_equal(out[mask == 0], original[mask == 0])
    opaque_full = (mask == 255) & (result[..., 3] == 255)
    assert np.array_equal(out[opaque_full], result[opaque_full])


def test_composite_rejects_size_mismatch():
    with pytest.raises(ValueError):
        composite(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 5, 4), np.uint8), np.zeros((4, 4), np.uint8))
