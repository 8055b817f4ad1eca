"""Expand Canvas and edits past the layer: table-driven geometry, then real HTTP against the local server."""

from __future__ import annotations

import numpy as np
import pytest
from gimp_openai import beyond, expand, operations
from gimp_openai.capabilities import FAMILIES
from gimp_openai.errors import InvalidInputError
from gimp_openai.expand import Margins, margins_for_aspect, parse_aspect, plan_tiles
from gimp_openai.geometry import Rect, extent, plan_region
from gimp_openai.history import History
from gimp_openai.settings import Settings
from PIL import Image

from tests.engine._client_helpers import client_for
from tests.engine.test_jobs_e2e import DATA

# --- margins ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height, aspect, sides, expected", [
    (1024, 768, (16, 9), (), Margins(left=171, right=171)),
    (1024, 768, (16, 9), ("right",), Margins(right=342)),
    (1024, 768, (16, 9), ("left", "top"), Margins(left=342)),          # top is not on the growing axis
    (1024, 768, (1, 1), (), Margins(top=128, bottom=128)),
    (1024, 768, (1, 1), ("bottom",), Margins(bottom=256)),
    (1024, 768, (4, 3), (), Margins()),                                 # already that aspect
    (1000, 1001, (1, 1), (), Margins(left=0, right=1)),                 # odd pixel to the right
    (3, 1000, (3, 1), (), Margins(left=1498, right=1499)),
])
def test_margins_for_aspect(width, height, aspect, sides, expected):
    got = margins_for_aspect(width, height, aspect, sides)
    assert got == expected
    new_w, new_h = width + got.left + got.right, height + got.top + got.bottom
    assert abs(new_w / new_h - aspect[0] / aspect[1]) <= 1.0 / min(new_w, new_h)


@pytest.mark.parametrize("text, expected", [("16:9", (16, 9)), ("4x3", (4, 3)), ("1.5", (3, 2)), ("2/2", (1, 1))])
def test_parse_aspect(text, expected):
    assert parse_aspect(text) == expected


@pytest.mark.parametrize("call", [
    lambda: parse_aspect("wide"), lambda: parse_aspect("0:1"), lambda: parse_aspect("1000:1"),
    lambda: margins_for_aspect(1024, 768, (16, 9), ("top",)), lambda: margins_for_aspect(10, 10, (2, 1), ("up",)),
    lambda: Margins(left=-1), lambda: Margins(right=10**6), lambda: expand.expanded(29000, 10, Margins(right=2000)),
])
def test_bad_expansions_are_refused_in_words(call):
    with pytest.raises(InvalidInputError) as info:
        call()
    assert info.value.message


# --- tiles -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("canvas, old, limit, count", [
    (Rect(0, 0, 1280, 768), Rect(0, 0, 1024, 768), 2880, 1),      # fits: one edit of the whole canvas
    (Rect(0, 0, 1280, 768), Rect(0, 0, 1024, 768), 1024, 1),      # right strip 256 + context, 768 high
    (Rect(0, 0, 1280, 768), Rect(0, 0, 1024, 768), 512, 2),       # two pieces along the strip
    (Rect(0, 0, 1366, 768), Rect(171, 0, 1024, 768), 1024, 2),    # left and right
    (Rect(0, 0, 3000, 1000), Rect(0, 0, 1000, 1000), 1024, 3),    # 2000 px deep: columns stepping outward
    (Rect(0, 0, 1200, 1200), Rect(100, 100, 1000, 1000), 1024, 6),  # four sides: corners come with top/bottom
])
def test_plan_tiles_cover_the_new_area_within_the_limit(canvas, old, limit, count):
    tiles = plan_tiles(canvas, old, limit)
    assert len(tiles) == count
    covered = np.zeros((canvas.height, canvas.width), bool)
    covered[old.y:old.bottom, old.x:old.right] = True
    for tile in tiles:
        assert max(tile.request.size) <= limit and canvas.contains(tile.request) and tile.request.contains(tile.fill)
        before = covered[tile.request.y:tile.request.bottom, tile.request.x:tile.request.right]
        assert before.any(), "every tile shows the model known pixels"
        covered[tile.fill.y:tile.fill.bottom, tile.fill.x:tile.fill.right] = True
    assert covered.all()


@pytest.mark.parametrize("family, limit", [("gpt-image-1", 1024), ("dall-e-2", 1024), ("gpt-image-2", 2880)])
def test_tile_limit_is_the_native_size(family, limit):
    assert expand.tile_limit(FAMILIES[family]) == limit


# --- past the layer --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer, selection, place_contains, past", [
    (Rect(0, 0, 1000, 800), Rect(900, 100, 300, 200), Rect(900, 100, 300, 200), True),    # past the right edge
    (Rect(100, 100, 500, 500), Rect(0, 0, 200, 200), Rect(0, 0, 200, 200), True),         # past a corner
    (Rect(0, 0, 1000, 800), Rect(100, 100, 300, 200), Rect(100, 100, 300, 200), False),   # inside
])
def test_a_selection_past_the_layer_is_planned_whole(layer, selection, place_contains, past):
    plan = plan_region(layer, selection, FAMILIES["gpt-image-2"])
    assert plan.place.contains(place_contains) and extent(layer, selection).contains(plan.place)
    assert (not layer.contains(plan.place)) == past
    clipped = plan_region(layer, selection, FAMILIES["gpt-image-2"], beyond_layer=False)
    assert layer.contains(clipped.place)


def test_known_mask_and_fill():
    known = beyond.known_mask(Rect(-2, 0, 6, 2), Rect(0, 0, 10, 10))
    assert known is not None and known.tolist() == [[False, False, True, True, True, True]] * 2
    assert beyond.known_mask(Rect(1, 1, 3, 3), Rect(0, 0, 10, 10)) is None
    pixels = np.zeros((2, 6, 4), np.uint8)
    pixels[:, 2:] = [[10, 20, 30, 255], [40, 50, 60, 255], [0, 0, 0, 255], [0, 0, 0, 255]]
    filled = beyond.fill_unknown(pixels, known)
    assert (filled[:, :2] == [10, 20, 30, 255]).all() and (filled[:, 2:] == pixels[:, 2:]).all()


# --- real HTTP -------------------------------------------------------------------------------------------


@pytest.fixture()
def photo():
    return np.asarray(Image.open(DATA / "lake-balloon.png").convert("RGBA"))


def _engine(server, tmp_path):
    return operations.Engine(Settings(), client_for(server.url), History(tmp_path / "history"))


@pytest.mark.slow
@pytest.mark.parametrize("limit", [None, 512])
def test_expand_keeps_every_old_pixel_and_fills_the_new_area(local_server, tmp_path, photo, limit):
    engine = _engine(local_server, tmp_path)
    out = expand.expand(engine, operations.Options(model="gpt-image-2"), photo, Margins(right=256), limit=limit)
    full = out.composite(photo)
    assert full.shape == (768, 1280, 4) and (full[:, :1024] == photo).all()
    new = full[:, 1024:]
    assert (new[..., 3] == 255).all()
    assert new[..., :3].reshape(-1, 3).std(axis=0).min() > 10, "the new area continues the picture, not a flat fill"
    o = out.output
    assert (o.x, o.y, o.width, o.height) == (1024 - 16, 0, 272, 768)
    assert (o.mask[:, :16] == 0).all() and (o.mask[:, 16:] == 255).all()
    edits = sum(v for k, v in local_server.stats()["endpoints"].items() if "edits" in k)
    assert edits == len(out.tiles) == (1 if limit is None else 2)
    assert len(out.history) == edits
    if limit:  # neighbouring tiles agree at their seam: rows across it differ no more than rows elsewhere
        seam = out.tiles[1].request.y + 8
        step = np.abs(new[seam].astype(int) - new[seam - 1].astype(int))[:, :3].mean()
        typical = np.abs(np.diff(new[100:300].astype(int), axis=0))[..., :3].mean()
        assert step <= 3 * typical + 2


@pytest.mark.slow
def test_an_edit_past_the_layer_fills_the_whole_selection(local_server, tmp_path, photo):
    """A layer at (200, 0) in a wider image; the selection reaches 100 px past its left edge."""
    engine = _engine(local_server, tmp_path)
    layer = Rect(200, 0, 1024, 768)
    selection = Rect(100, 300, 300, 200)
    plan = plan_region(layer, selection, FAMILIES["gpt-image-2"])
    assert plan.place.x <= 100
    place = np.zeros((plan.place.height, plan.place.width, 4), np.uint8)  # what a host exports: transparent
    inside = plan.place.intersect(layer)
    place[inside.y - plan.place.y:inside.bottom - plan.place.y, inside.x - plan.place.x:inside.right - plan.place.x] = \
        photo[inside.y:inside.bottom, inside.x - 200:inside.right - 200]
    sel = np.zeros(place.shape[:2], np.uint8)
    sel[selection.y - plan.place.y:selection.bottom - plan.place.y,
        selection.x - plan.place.x:selection.right - plan.place.x] = 255
    outcome = operations.edit(engine, operations.Options(model="gpt-image-2", prompt="a rock"), place_pixels=place,
                              selection=sel, layer=layer, plan=plan)
    (o,) = outcome.outputs
    assert (o.x, o.y, o.width, o.height) == (plan.place.x, plan.place.y, plan.place.width, plan.place.height)
    outside_selected = (sel == 255) & (beyond.known_mask(plan.place, layer) == False)  # noqa: E712
    assert outside_selected.sum() == 100 * 200
    assert (o.mask[outside_selected] == 255).all() and (o.pixels[outside_selected][:, 3] == 255).all()
    assert (o.mask[sel == 0] == 0).all(), "the layer mask still follows the selection"


# --- references ------------------------------------------------------------------------------------------


def test_references_are_scaled_to_the_target_and_limited_by_the_family(photo):
    from gimp_openai import imaging, references

    big = imaging.encode_png(photo)
    sent, notes = references.fit([big, big], FAMILIES["gpt-image-2"], (512, 384), names=["ref:sky", "ref:lake"])
    assert [imaging.image_size_of(d) for d in sent] == [(512, 384), (512, 384)]
    small_png = imaging.encode_png(imaging.resize(photo, (512, 384)))
    assert sum(map(len, sent)) <= 1.1 * 2 * len(small_png), "never more bytes than the model's size needs"
    assert notes == ["references sent: ref:sky, ref:lake"]
    sent, notes = references.fit([big] * 20, FAMILIES["gpt-image-2"], (512, 384))
    assert len(sent) == 15 and "left out" in notes[1] and "16 input image(s)" in notes[1]
    sent, notes = references.fit([big], FAMILIES["dall-e-2"], (512, 512))
    assert sent == [] and "takes 1 input image(s)" in notes[0]
