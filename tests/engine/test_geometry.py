"""Region planning: table-driven cases plus the invariants every plan must keep."""

from __future__ import annotations

import numpy as np
import pytest
from gimp_openai.capabilities import FAMILIES, family_for
from gimp_openai.errors import InvalidInputError
from gimp_openai.geometry import (
    Rect,
    RegionPlan,
    aspect_error_px,
    choose_standard_size,
    context_rect,
    extent,
    grow_to_aspect,
    plan_region,
    selection_bounds,
)

ALL_FAMILIES = [FAMILIES[name] for name in ("dall-e-2", "gpt-image-1", "gpt-image-2")]


def assert_invariants(plan: RegionPlan, layer: Rect, selection: Rect | None, family) -> None:
    """What every caller relies on, whatever the input."""
    area = extent(layer, selection)
    assert area.contains(plan.place), (plan, layer)
    assert plan.request.contains(plan.place)
    assert plan.request.intersect(area) == plan.place, "every pixel the edit may change must be exported"
    selected = layer if selection is None else selection
    assert plan.place.contains(selected), "a selection reaching past the layer is planned whole"
    assert family.check_size(plan.target_size) is None, plan.target_size
    assert aspect_error_px(plan.request.size, plan.target) <= 0.5
    if family.square_input:
        assert plan.request.width == plan.request.height
    if family.free_sizes is None:  # fixed sizes: exactly uniform scaling
        assert plan.request.width * plan.target[1] == plan.request.height * plan.target[0]
    pit = plan.place_in_target
    assert Rect(0, 0, *plan.target).contains(pit) and not pit.is_empty
    assert RegionPlan.from_dict(plan.to_dict()) == plan


# --- Rect ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, inter, union",
    [
        (Rect(0, 0, 10, 10), Rect(5, 5, 10, 10), Rect(5, 5, 5, 5), Rect(0, 0, 15, 15)),
        (Rect(-5, -5, 10, 10), Rect(0, 0, 3, 3), Rect(0, 0, 3, 3), Rect(-5, -5, 10, 10)),
        (Rect(0, 0, 10, 10), Rect(20, 20, 5, 5), Rect(20, 20, 0, 0), Rect(0, 0, 25, 25)),
        (Rect(0, 0, 10, 10), Rect(10, 0, 5, 5), Rect(10, 0, 0, 5), Rect(0, 0, 15, 10)),  # touching edges
        (Rect(0, 0, 0, 0), Rect(3, 3, 2, 2), Rect(3, 3, 0, 0), Rect(3, 3, 2, 2)),
    ],
)
def test_rect_intersect_union(a, b, inter, union):
    assert a.intersect(b).is_empty == inter.is_empty
    if not inter.is_empty:
        assert a.intersect(b) == inter
    assert a.union(b) == union


@pytest.mark.parametrize(
    "outer, inner, expected",
    [
        (Rect(0, 0, 10, 10), Rect(0, 0, 10, 10), True),
        (Rect(0, 0, 10, 10), Rect(1, 1, 10, 1), False),
        (Rect(-3, -3, 5, 5), Rect(-3, -3, 1, 1), True),
        (Rect(0, 0, 1, 1), Rect(50, 50, 0, 0), True),
    ],
)
def test_rect_contains(outer, inner, expected):
    assert outer.contains(inner) is expected


@pytest.mark.parametrize(
    "data",
    [
        {"x": 1, "y": 2, "width": 3},
        {"x": 1, "y": 2, "width": -3, "height": 4},
        {"x": 1.5, "y": 2, "width": 3, "height": 4},
        {"x": True, "y": 2, "width": 3, "height": 4},
        "1,2,3,4",
        None,
    ],
)
def test_rect_from_dict_rejects(data):
    with pytest.raises(InvalidInputError):
        Rect.from_dict(data)


def test_rect_dict_round_trip():
    r = Rect(-10, 7, 30, 40)
    assert Rect.from_dict(r.to_dict()) == r
    assert r.right == 20 and r.bottom == 47 and r.area == 1200


# --- selection_bounds --------------------------------------------------------------------------------------


def _sel(h, w, rects, value=255):
    a = np.zeros((h, w), np.uint8)
    for x, y, rw, rh in rects:
        a[y : y + rh, x : x + rw] = value
    return a


@pytest.mark.parametrize(
    "selection, origin, threshold, expected",
    [
        (_sel(10, 10, []), (0, 0), 1, None),
        (_sel(10, 10, [(0, 0, 1, 1)]), (0, 0), 1, Rect(0, 0, 1, 1)),
        (_sel(10, 10, [(9, 9, 1, 1)]), (5, -3), 1, Rect(14, 6, 1, 1)),
        (_sel(10, 10, [(2, 3, 4, 1), (7, 8, 1, 2)]), (0, 0), 1, Rect(2, 3, 6, 7)),
        (_sel(10, 10, [(2, 3, 4, 4)], value=10), (0, 0), 11, None),
        (_sel(10, 10, [(2, 3, 4, 4)], value=10), (0, 0), 10, Rect(2, 3, 4, 4)),
        (_sel(1, 300, [(0, 0, 300, 1)]), (-100, 0), 1, Rect(-100, 0, 300, 1)),
    ],
)
def test_selection_bounds(selection, origin, threshold, expected):
    assert selection_bounds(selection, origin, threshold) == expected


def test_selection_bounds_rejects_rgb():
    with pytest.raises(InvalidInputError):
        selection_bounds(np.zeros((4, 4, 3), np.uint8))


# --- helpers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "w, h, tw, th, exact, expected",
    [
        (100, 100, 1024, 1024, True, (100, 100)),
        (100, 50, 1024, 1024, True, (100, 100)),
        (14, 8, 1536, 1024, True, (15, 10)),
        (300, 200, 1536, 1024, True, (300, 200)),
        (301, 200, 1536, 1024, True, (303, 202)),
        (200, 301, 1024, 1536, True, (202, 303)),
        (13, 6, 1200, 560, False, (13, 6)),  # within half a request pixel
        (1000, 1000, 1008, 1024, False, (1000, 1016)),
    ],
)
def test_grow_to_aspect(w, h, tw, th, exact, expected):
    got = grow_to_aspect(w, h, tw, th, exact=exact)
    assert got == expected
    assert got[0] >= w and got[1] >= h
    assert aspect_error_px(got, (tw, th)) <= (0 if exact else 0.5)


@pytest.mark.parametrize(
    "w, h, sizes, expected",
    [
        (100, 100, FAMILIES["dall-e-2"].sizes, (256, 256)),
        (256, 256, FAMILIES["dall-e-2"].sizes, (256, 256)),
        (257, 257, FAMILIES["dall-e-2"].sizes, (512, 512)),
        (5000, 5000, FAMILIES["dall-e-2"].sizes, (1024, 1024)),
        (300, 200, FAMILIES["gpt-image-1"].sizes, (1536, 1024)),
        (200, 300, FAMILIES["gpt-image-1"].sizes, (1024, 1536)),
        (110, 100, FAMILIES["gpt-image-1"].sizes, (1024, 1024)),
        (130, 100, FAMILIES["gpt-image-1"].sizes, (1536, 1024)),  # 1.3 is nearer 1.5 than 1.0 in log terms
        (30000, 200, FAMILIES["gpt-image-1"].sizes, (1536, 1024)),
    ],
)
def test_choose_standard_size(w, h, sizes, expected):
    assert choose_standard_size(w, h, sizes) == expected


@pytest.mark.parametrize(
    "selection, layer, padding, expected",
    [
        (Rect(100, 100, 100, 100), Rect(0, 0, 1000, 1000), 0.25, Rect(75, 75, 150, 150)),
        (Rect(0, 0, 100, 100), Rect(0, 0, 1000, 1000), 0.25, Rect(0, 0, 150, 150)),  # corner: shifted inside
        (Rect(500, 500, 1, 1), Rect(0, 0, 1000, 1000), 0.25, Rect(469, 469, 64, 64)),  # min context
        (Rect(0, 0, 1, 1), Rect(0, 0, 10, 10), 0.25, Rect(0, 0, 10, 10)),  # min context > layer
        (Rect(10, 10, 1, 100), Rect(0, 0, 1000, 1000), 0.5, Rect(0, 0, 101, 200)),  # thin line: pad by long side
        (Rect(100, 100, 100, 100), Rect(0, 0, 1000, 1000), 0.0, Rect(100, 100, 100, 100)),
    ],
)
def test_context_rect(selection, layer, padding, expected):
    assert context_rect(selection, layer, padding) == expected


# --- plan_region: table -------------------------------------------------------------------------------------

CASES = [
    # (name, family, layer, selection, size_mode, place, request, target)
    ("centre 1000 px, gpt-image-2 native, grown to multiples of 16",
     "gpt-image-2", Rect(0, 0, 8000, 8000), Rect(4000, 4000, 1000, 1000), "auto",
     Rect(3748, 3748, 1504, 1504), Rect(3748, 3748, 1504, 1504), (1504, 1504)),
    ("small selection upscaled for gpt-image-2",
     "gpt-image-2", Rect(0, 0, 8000, 8000), Rect(100, 100, 300, 300), "auto",
     Rect(25, 25, 450, 450), Rect(25, 25, 450, 450), (816, 816)),
    ("corner selection: context kept at full size by growing inward",
     "gpt-image-1", Rect(0, 0, 4000, 3000), Rect(3900, 2900, 100, 100), "auto",
     Rect(3850, 2850, 150, 150), Rect(3850, 2850, 150, 150), (1024, 1024)),
    ("wide selection takes 3:2",
     "gpt-image-1", Rect(0, 0, 4000, 3000), Rect(1000, 1000, 600, 300), "auto",
     Rect(850, 850, 900, 600), Rect(850, 850, 900, 600), (1536, 1024)),
    ("request past a small layer is padded, place is the layer",
     "gpt-image-1", Rect(10, -5, 100, 40), None, "auto",
     Rect(10, -5, 100, 40), Rect(9, -19, 102, 68), (1536, 1024)),
    ("dall-e-2 square, smallest size that holds it",
     "dall-e-2", Rect(0, 0, 4000, 3000), Rect(1000, 1000, 300, 100), "auto",
     Rect(925, 825, 450, 450), Rect(925, 825, 450, 450), (512, 512)),
    ("dall-e-2 huge selection capped at 1024",
     "dall-e-2", Rect(0, 0, 8000, 8000), None, "auto",
     Rect(0, 0, 8000, 8000), Rect(0, 0, 8000, 8000), (1024, 1024)),
    ("negative offsets, selection partly outside the layer: planned whole, place past the layer",
     "gpt-image-2", Rect(-500, -300, 2000, 2000), Rect(-800, -600, 600, 600), "auto",
     Rect(-800, -600, 912, 912), Rect(-800, -600, 912, 912), (912, 912)),
    ("whole 8000^2 layer downscaled for gpt-image-2",
     "gpt-image-2", Rect(0, 0, 8000, 8000), None, "auto",
     Rect(0, 0, 8000, 8000), Rect(0, 0, 8000, 8000), (2880, 2880)),
    ("30000x200 strip: short side grown to 3:1, padded",
     "gpt-image-2", Rect(0, 0, 30000, 200), None, "auto",
     Rect(0, 0, 30000, 200), Rect(0, -4900, 30000, 10000), (3840, 1280)),
    ("explicit size",
     "gpt-image-1", Rect(0, 0, 4000, 3000), Rect(1000, 1000, 300, 300), "1024x1536",
     Rect(925, 813, 450, 675), Rect(925, 813, 450, 675), (1024, 1536)),
    ("explicit free size",
     "gpt-image-2", Rect(0, 0, 4000, 3000), Rect(1000, 1000, 300, 300), "2048x1024",
     Rect(700, 925, 900, 450), Rect(700, 925, 900, 450), (2048, 1024)),
    ("1x1 selection gets the minimum context",
     "gpt-image-1", Rect(0, 0, 1000, 1000), Rect(999, 999, 1, 1), "auto",
     Rect(936, 936, 64, 64), Rect(936, 936, 64, 64), (1024, 1024)),
]


@pytest.mark.parametrize("name, fam, layer, selection, size_mode, place, req, target", CASES,
                         ids=[c[0] for c in CASES])
def test_plan_region_table(name, fam, layer, selection, size_mode, place, req, target):
    family = FAMILIES[fam]
    plan = plan_region(layer, selection, family, size_mode=size_mode)
    assert (plan.place, plan.request, plan.target) == (place, req, target)
    assert_invariants(plan, layer, selection, family)


LAYERS = [
    Rect(0, 0, 1, 1),
    Rect(0, 0, 1, 500),
    Rect(0, 0, 500, 1),
    Rect(-37, -11, 640, 480),
    Rect(0, 0, 8000, 8000),
    Rect(100, 100, 30000, 200),
    Rect(0, 0, 200, 30000),
    Rect(-4000, -4000, 4096, 4096),
]


def _selections_for(layer: Rect) -> list[Rect | None]:
    return [
        None,
        Rect(layer.x, layer.y, 1, 1),  # top-left pixel
        Rect(layer.right - 1, layer.bottom - 1, 1, 1),  # bottom-right pixel
        Rect(layer.x - 50, layer.y - 50, 60, 60),  # partly outside
        Rect(layer.x, layer.y + layer.height // 2, layer.width, 1),  # a 1 px line across
        Rect(layer.x + layer.width // 2, layer.y, 1, layer.height),  # a 1 px line down
        Rect(layer.x - 10, layer.y - 10, layer.width + 20, layer.height + 20),  # bigger than the layer
    ]


@pytest.mark.parametrize("family", ALL_FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("layer", LAYERS, ids=str)
@pytest.mark.parametrize("fallback", [False, True])
def test_plan_invariants_sweep(family, layer, fallback):
    for selection in _selections_for(layer):
        plan = plan_region(layer, selection, family, fallback_standard_size=fallback)
        assert_invariants(plan, layer, selection, family)
        if fallback:
            assert plan.target_size in family.sizes


@pytest.mark.parametrize("padding", [0.0, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("family", ALL_FAMILIES, ids=lambda f: f.name)
def test_cost_follows_the_selection(family, padding):
    small = plan_region(Rect(0, 0, 8000, 8000), Rect(3000, 3000, 300, 300), family, padding=padding)
    assert small.request.area <= (300 * (1 + 2 * padding) + 64) ** 2 * 1.6
    assert small.place.area == small.request.area


@pytest.mark.parametrize(
    "layer, selection, size_mode, family",
    [
        (Rect(0, 0, 0, 100), None, "auto", "gpt-image-2"),
        (Rect(0, 0, 100, 100), Rect(200, 200, 10, 10), "auto", "gpt-image-2"),
        (Rect(0, 0, 100, 100), Rect(50, 50, 0, 0), "auto", "gpt-image-2"),
        (Rect(0, 0, 100, 100), None, "1000x1000", "gpt-image-2"),  # not a multiple of 16
        (Rect(0, 0, 100, 100), None, "512x512", "gpt-image-1"),
        (Rect(0, 0, 100, 100), None, "big", "dall-e-2"),
        (Rect(0, 0, 100, 100), None, "4000x1000", "gpt-image-2"),  # over 3:1 and 3840
    ],
)
def test_plan_region_rejects(layer, selection, size_mode, family):
    with pytest.raises(InvalidInputError) as info:
        plan_region(layer, selection, FAMILIES[family], size_mode=size_mode)
    assert info.value.message


def test_selection_outside_message_is_clear():
    with pytest.raises(InvalidInputError, match="does not touch the active layer"):
        plan_region(Rect(0, 0, 100, 100), Rect(500, 0, 10, 10), FAMILIES["gpt-image-2"])


def test_unknown_model_uses_free_sizes():
    family = family_for("some-compatible-model")
    plan = plan_region(Rect(0, 0, 4000, 4000), Rect(0, 0, 1000, 1000), family)
    assert family.check_size(plan.target_size) is None


def test_fallback_keeps_explicit_standard_size():
    plan = plan_region(Rect(0, 0, 4000, 4000), Rect(0, 0, 100, 100), FAMILIES["gpt-image-2"],
                       size_mode="1536x1024", fallback_standard_size=True)
    assert plan.target == (1536, 1024)


@pytest.mark.parametrize(
    "data",
    [
        {"place": {"x": 0, "y": 0, "width": 10, "height": 10}, "request": {"x": 1, "y": 0, "width": 10, "height": 10},
         "target": [16, 16]},
        {"place": {"x": 0, "y": 0, "width": 10, "height": 10}, "request": {"x": 0, "y": 0, "width": 10, "height": 10},
         "target": [0, 16]},
        {"place": {"x": 0, "y": 0, "width": 10, "height": 10}},
    ],
)
def test_plan_from_dict_rejects(data):
    with pytest.raises(InvalidInputError):
        RegionPlan.from_dict(data)


@pytest.mark.parametrize(
    "plan, expected",
    [
        (RegionPlan(Rect(0, 0, 100, 100), Rect(0, 0, 100, 100), (1024, 1024)), Rect(0, 0, 1024, 1024)),
        (RegionPlan(Rect(10, 0, 100, 50), Rect(10, -25, 100, 100), (1024, 1024)), Rect(0, 256, 1024, 512)),
        (RegionPlan(Rect(0, 0, 30000, 200), Rect(0, -4900, 30000, 10000), (3840, 1280)), Rect(0, 627, 3840, 26)),
        (RegionPlan(Rect(0, 0, 1, 300), Rect(-400, 0, 900, 300), (48, 16)), Rect(21, 0, 1, 16)),  # at least 1 px
    ],
)
def test_place_in_target(plan, expected):
    assert plan.place_in_target == expected


# --- generating for a canvas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "canvas, family, expected",
    [
        ((3000, 2000), "gpt-image-2", (1248, 832)),  # 3:2 at about a megapixel, sides in multiples of 16
        ((2000, 3000), "gpt-image-2", (832, 1248)),
        ((640, 480), "gpt-image-2", (1184, 880)),  # small canvases are asked at the same tier, not upscaled less
        ((1920, 1080), "gpt-image-2", (1360, 768)),
        ((9000, 1000), "gpt-image-2", (1776, 592)),  # 9:1 is clamped to the model's 3:1
        ((100, 100), "gpt-image-2", (1024, 1024)),
        ((3000, 2000), "gpt-image-1", (1536, 1024)),  # fixed sizes: the nearest aspect
        ((2000, 3000), "gpt-image-1", (1024, 1536)),
        ((1000, 1000), "dall-e-2", (1024, 1024)),
    ],
)
def test_generation_size_takes_the_canvas_s_aspect(canvas, family, expected):
    from gimp_openai.geometry import GENERATION_PIXELS, generation_size_for_canvas

    fam = FAMILIES[family]
    size = generation_size_for_canvas(*canvas, fam)
    assert size == expected
    assert fam.check_size(f"{size[0]}x{size[1]}") is None
    if fam.free_sizes is not None:
        assert abs(size[0] * size[1] / GENERATION_PIXELS - 1) < 0.06
        clamped = min(max(canvas[0] / canvas[1], 1 / 3), 3)
        assert abs(size[0] / size[1] / clamped - 1) < 0.03


def test_generation_size_refuses_an_empty_canvas():
    from gimp_openai.geometry import generation_size_for_canvas

    with pytest.raises(InvalidInputError, match="0x10 px"):
        generation_size_for_canvas(0, 10, FAMILIES["gpt-image-2"])
