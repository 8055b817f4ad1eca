"""Property tests: for random layers and selections, outside the selection nothing changes (bit for bit), and
an identity model's result lands exactly where it came from (no shift)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from gimp_openai.capabilities import FAMILIES
from gimp_openai.composite import composite, request_pixels, result_to_place
from gimp_openai.geometry import Rect, plan_region, selection_bounds
from gimp_openai.imaging import encode_png
from gimp_openai.masks import api_mask, layer_mask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """High-texture but band-limited (survives resampling), opaque."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(noise, (0, 0), 1.5) if min(h, w) > 3 else noise
    rgb = cv2.normalize(rgb, None, 0, 255, cv2.NORM_MINMAX)
    return np.dstack([rgb, np.full((h, w), 255, np.uint8)])


def selection_over(layer: Rect, shape: str, cx: float, cy: float, rx: float, ry: float, soft: float) -> np.ndarray:
    """Selection channel over the layer for a rect/ellipse given in image coordinates (may leave the layer)."""
    yy, xx = np.mgrid[layer.y : layer.bottom, layer.x : layer.right].astype(np.float32) + 0.5
    if shape == "ellipse":
        d = (np.hypot((xx - cx) / max(rx, 0.5), (yy - cy) / max(ry, 0.5)) - 1.0) * min(rx, ry)
    else:
        d = np.maximum(np.abs(xx - cx) - rx, np.abs(yy - cy) - ry)
    if soft > 0:
        return np.clip(0.5 - d / soft, 0, 1).__mul__(255).round().astype(np.uint8)
    return np.where(d <= 0, 255, 0).astype(np.uint8)


layers = st.builds(
    Rect,
    st.integers(-300, 300),
    st.integers(-300, 300),
    st.integers(1, 240),
    st.integers(1, 240),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layer=layers,
    family=st.sampled_from(["dall-e-2", "gpt-image-1", "gpt-image-2"]),
    shape=st.sampled_from(["rect", "ellipse"]),
    fx=st.floats(-0.3, 1.3),
    fy=st.floats(-0.3, 1.3),
    fr=st.floats(0.02, 0.8),
    aspect=st.floats(0.2, 5.0),
    soft=st.sampled_from([0.0, 3.0, 12.0]),
    feather=st.sampled_from([0.0, 4.0]),
    padding=st.sampled_from([0.0, 0.25, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_pipeline_outside_untouched_inside_aligned(
    layer, family, shape, fx, fy, fr, aspect, soft, feather, padding, seed
):
    cx, cy = layer.x + fx * layer.width, layer.y + fy * layer.height
    rx = max(0.5, fr * layer.width * min(1.0, aspect))
    ry = max(0.5, fr * layer.height / max(1.0, aspect))
    selection = selection_over(layer, shape, cx, cy, rx, ry, soft)
    bounds = selection_bounds(selection, (layer.x, layer.y))
    if bounds is None:
        return  # the edit path refuses this before planning (tested in test_geometry)
    plan = plan_region(layer, bounds, FAMILIES[family], padding=padding)
    original = textured(layer.height, layer.width, seed)
    local = plan.place.translate(-layer.x, -layer.y)
    place = original[local.y : local.bottom, local.x : local.right]
    sel = selection[local.y : local.bottom, local.x : local.right]
    assert sel.sum() == selection.sum(), "the whole selection is inside place"

    sent = request_pixels(place, plan)
    assert sent.shape == (plan.target[1], plan.target[0], 4)
    mask = layer_mask(sel, feather)
    assert api_mask(sel, plan.place_in_target.size).shape[2] == 4

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, sent.shape, dtype=np.uint8)
    for model_output in (sent, noise):
        back = result_to_place(model_output, plan)
        out = composite(place, back, mask)
        assert np.array_equal(out[mask == 0], place[mask == 0]), "outside must be bit-identical"
        assert np.array_equal(out[sel == 0], place[sel == 0])

    identity = result_to_place(sent, plan)
    if plan.scale == (1.0, 1.0):
        assert np.array_equal(identity, place)
    diff = np.abs(identity[..., :3].astype(int) - place[..., :3].astype(int))
    if min(plan.scale) >= 1.0 and min(plan.place.size) >= 8:  # nothing thrown away: interpolation error only
        assert diff.mean() < 6.0, diff.mean()
    if min(plan.place.size) >= 24 and min(plan.scale) >= 0.5:
        assert abs_shift(place, identity) < 0.25


def _vertex(e_minus: float, e_zero: float, e_plus: float) -> float:
    curvature = e_minus - 2 * e_zero + e_plus
    return 0.0 if curvature <= 1e-9 else (e_minus - e_plus) / (2 * curvature)


def abs_shift(a_rgba: np.ndarray, b_rgba: np.ndarray) -> float:
    """Sub-pixel shift of b against a: the vertex of the parabola through the mean squared differences at
    integer shifts -1, 0, +1 on each axis (robust on small crops, unlike FFT phase correlation)."""
    a = cv2.cvtColor(a_rgba[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(b_rgba[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float64)
    h, w = a.shape
    core = a[1 : h - 1, 1 : w - 1]
    ex = [np.mean((b[1 : h - 1, 1 + k : w - 1 + k] - core) ** 2) for k in (-1, 0, 1)]
    ey = [np.mean((b[1 + k : h - 1 + k, 1 : w - 1] - core) ** 2) for k in (-1, 0, 1)]
    return max(abs(_vertex(*ex)), abs(_vertex(*ey)))


@pytest.mark.parametrize("dx, dy", [(0.0, 0.0), (0.5, 0.0), (0.0, -0.5), (0.3, 0.3), (0.25, 0.0)])
def test_shift_measure_sees_a_sub_pixel_shift(dx, dy):
    """The alignment check above is able to fail: a copy moved by a fraction of a pixel is detected."""
    place = textured(40, 30, 1)
    moved = cv2.warpAffine(place, np.float32([[1, 0, dx], [0, 1, dy]]), (30, 40), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    assert abs(abs_shift(place, moved) - max(abs(dx), abs(dy))) < 0.15


@pytest.mark.bench
@pytest.mark.parametrize("layer_side", [1024, 4096, 8000])
@pytest.mark.parametrize("family", ["gpt-image-1", "gpt-image-2"])
def test_bench_plan_request_encode(layer_side, family):
    """Engine overhead for a 1024^2 selection: plan + request pixels + PNG, per layer size (figures only)."""
    layer = Rect(0, 0, layer_side, layer_side)
    t0 = time.perf_counter()
    pixels = np.zeros((layer_side, layer_side, 4), np.uint8)
    pixels[..., 3] = 255
    mid = slice(max(0, layer_side // 2 - 1024), layer_side // 2 + 1024)
    pixels[mid, mid] = textured(pixels[mid, mid].shape[0], pixels[mid, mid].shape[1], 0)  # texture where it is cut
    make = time.perf_counter() - t0
    selection = Rect((layer_side - 1024) // 2, (layer_side - 1024) // 2, 1024, 1024)
    t = time.perf_counter()
    plan = plan_region(layer, selection, FAMILIES[family])
    t_plan = time.perf_counter() - t
    local = plan.place
    place = pixels[local.y : local.bottom, local.x : local.right]
    t = time.perf_counter()
    sent = request_pixels(place, plan)
    t_req = time.perf_counter() - t
    t = time.perf_counter()
    data = encode_png(sent)
    t_enc = time.perf_counter() - t
    crop_png = len(encode_png(place))
    print(
        f"\n{family} layer {layer_side}^2 (made in {make:.2f}s): place {plan.place.width}x{plan.place.height} "
        f"target {plan.target[0]}x{plan.target[1]}; plan {t_plan * 1e3:.2f} ms, request_pixels {t_req * 1e3:.0f} ms, "
        f"encode {t_enc * 1e3:.0f} ms, upload {len(data) / 1e6:.2f} MB (crop PNG {crop_png / 1e6:.2f} MB)"
    )
