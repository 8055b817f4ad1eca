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


# --- the estimate: the plan's tiles, each one edit -------------------------------------------------------

GPT2 = FAMILIES["gpt-image-2"]


def _gpt2_price():
    from gimp_openai import pricing

    return pricing.price_for("gpt-image-2")


@pytest.mark.parametrize("width, height, margins, limit, tiles", [
    (1024, 768, Margins(right=256), None, 1),  # the grown canvas fits one request
    (1024, 768, Margins(right=256), 512, 2),  # a right strip in two pieces
    (1024, 768, Margins(left=256, right=256), 512, 4),
    (1024, 768, Margins(left=64, top=64, right=64, bottom=64), 512, 10),  # 2 + 2 beside it, 3 + 3 across
    (1024, 768, Margins(), None, 0),  # nothing grows: nothing is sent
])
def test_the_estimate_is_the_sum_of_the_tiles_requests(width, height, margins, limit, tiles):
    planned = expand.estimate("gpt-image-2", GPT2, _gpt2_price(), width=width, height=height, margins=margins,
                              quality="low", limit=limit)
    assert len(planned.tiles) == len(planned.estimates) == tiles
    if margins.is_empty:
        assert planned.usd == 0 and planned.text() == "nothing to paint: the canvas would not grow"
        return
    canvas, old = expand.expanded(width, height, margins)
    assert [t.request for t in planned.tiles] == [t.request for t in plan_tiles(canvas, old, limit or 2880,
                                                                                overlap=16)]
    for tile, one in zip(planned.tiles, planned.estimates, strict=True):
        target = plan_region(tile.request, None, GPT2, padding=0.0).target
        assert one.n == 1 and one.size == tuple(target) and one.quality == "low"
    assert planned.usd == pytest.approx(sum(e.usd for e in planned.estimates))
    assert planned.to_dict()["tiles"] == tiles and planned.to_dict()["images"] == tiles
    assert planned.text().startswith(f"{tiles} request{'s' if tiles > 1 else ''} (tile")


def test_one_tile_s_estimate_in_dollars():
    """1024x768 grown 256 px to the right: one edit of 1280x768 at low quality. Tokens: the default prompt
    (4 characters a token), the upload (65 + 129 per started 512 tile: 3 x 2), the output (200 per 1024x1024 at
    low, scaled by pixels); dollars at gpt-image-2's $5 text in, $8 image in, $30 out per million."""
    planned = expand.estimate("gpt-image-2", GPT2, _gpt2_price(), width=1024, height=768,
                              margins=Margins(right=256), quality="low")
    text = len(expand.DEFAULT_PROMPT) // 4
    image = 65 + 129 * 3 * 2
    output = round(200 * 1280 * 768 / 1024**2)
    assert planned.estimates[0].size == (1280, 768)
    assert planned.usd == pytest.approx((text * 5 + image * 8 + output * 30) / 1e6)
    assert planned.text() == f"1 request (tile of 1280x768), gpt-image-2, quality low: about ${planned.usd:.4f}"
    auto = expand.estimate("gpt-image-2", GPT2, _gpt2_price(), width=1024, height=768, margins=Margins(right=256),
                           quality="auto")
    assert auto.usd_upper > auto.usd and "(up to $" in auto.text()  # auto may be high
    unpriced = expand.estimate("gpt-image-2", GPT2, None, width=1024, height=768, margins=Margins(right=256),
                               quality="low")
    assert unpriced.usd is None and unpriced.text().endswith("tokens (no price known)")


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


# --- transparent pixels of the old canvas ------------------------------------------------------------------


@pytest.mark.parametrize("unknown, limit, count", [
    ([], 512, 0),                                                  # nothing left: no tile
    ([(10, 10, 20, 20)], 512, 1),                                  # one small hole: one tile around it
    ([(0, 0, 5, 5), (900, 700, 10, 10)], 512, 2),  # far apart: of the box's 6 pieces only the 2 with holes
    ([(0, 0, 1000, 3)], 512, 3),                                   # a thin ring side: pieces along it
])
def test_hole_tiles_cover_every_unknown_pixel_with_context_within_the_limit(unknown, limit, count):
    canvas = Rect(0, 0, 1000, 800)
    mask = np.zeros((800, 1000), bool)
    for x, y, w, h in unknown:
        mask[y:y + h, x:x + w] = True
    tiles = expand.hole_tiles(canvas, mask, limit)
    assert len(tiles) == count
    covered = np.zeros_like(mask)
    for tile in tiles:
        assert max(tile.request.size) <= limit and canvas.contains(tile.request) and tile.request.contains(tile.fill)
        covered[tile.fill.y:tile.fill.bottom, tile.fill.x:tile.fill.right] = True
    assert covered[mask].all()


def _transparent_left_and_top(photo):
    out = photo.copy()
    out[:, :96, 3] = 0  # a layer smaller than the canvas: a transparent margin on the left and the top
    out[:48, :, 3] = 0
    return out


def _transparent_hole(photo):
    out = photo.copy()
    out[300:400, 400:560, 3] = 0  # a hole in the middle, out of a strip tile's reach
    return out


def _half_transparent_column(photo):
    out = _transparent_left_and_top(photo)
    out[48:, 96:100, 3] = 128  # a soft edge: it shows something, so it is kept as it is
    return out


@pytest.mark.slow
@pytest.mark.parametrize("make, margins, limit", [
    (_transparent_left_and_top, Margins(right=128), None),
    (_transparent_left_and_top, Margins(right=128), 512),
    (_transparent_hole, Margins(right=64), 512),
    (_half_transparent_column, Margins(left=64, bottom=64), None),
    (lambda photo: photo, Margins(top=64), None),
])
def test_expand_fills_the_old_canvas_transparent_pixels_and_keeps_every_visible_one(
        local_server, tmp_path, photo, make, margins, limit):
    """What an artist expects: everything transparent in the grown canvas is painted; every pixel that showed
    something before shows exactly the same; the layer's mask is white on exactly what was painted."""
    pixels = make(photo)
    engine = _engine(local_server, tmp_path)
    out = expand.expand(engine, operations.Options(model="gpt-image-2"), pixels, margins, limit=limit)
    canvas, old = out.canvas, out.old
    full = out.composite(pixels)
    before = np.zeros((canvas.height, canvas.width, 4), np.uint8)
    before[old.y:old.bottom, old.x:old.right] = pixels
    shown = before[..., 3] > 0
    assert np.array_equal(full[shown], before[shown]), "a visible pixel of the old canvas changed"
    assert (full[~shown][:, 3] == 255).all(), "a transparent pixel was left unpainted"
    o = out.output
    mask = np.zeros(shown.shape, np.uint8)
    mask[o.y:o.y + o.height, o.x:o.x + o.width] = o.mask
    assert (mask[~shown] == 255).all() and (mask[shown] == 0).all()
    assert (o.pixels[o.mask == 255][:, 3] == 255).all()
    holes = int((pixels[..., 3] == 0).sum())
    assert any(f"{holes} transparent px" in n for n in out.notes) == (holes > 0)
    # the estimate made before the run planned exactly the requests the run made, priced as it priced them
    planned = expand.estimate("gpt-image-2", engine.family("gpt-image-2"), engine.price("gpt-image-2"),
                              width=pixels.shape[1], height=pixels.shape[0], margins=margins, quality="auto",
                              limit=limit, shown=pixels[..., 3] > 0)
    assert [t.request for t in planned.tiles] == [t.request for t in out.tiles]
    assert [e.to_dict() for e in planned.estimates] == [e.to_dict() for e in out.estimates]


def test_a_fully_transparent_picture_is_refused_before_any_request(local_server, tmp_path, photo):
    empty = photo.copy()
    empty[..., 3] = 0
    with pytest.raises(InvalidInputError) as info:
        expand.expand(_engine(local_server, tmp_path), operations.Options(model="gpt-image-2"), empty,
                      Margins(right=64))
    assert info.value.message == "The picture is fully transparent: there is nothing to continue."
    assert not any("edits" in k for k in local_server.stats()["endpoints"])
