"""The GIMP 2.10 host's Expand Canvas, visible-canvas export and ``ref:`` references, through the gimpfu stubs.

First the stubs' new procedures against GIMP 2.10's PDB semantics (a host test is only as true as its fake),
then the host's exports, then the procedures end to end: the real engine subprocess and the local server."""

import glob
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.gimp2.conftest import make_image, textured
from tests.gimp2.test_plugin_fake_engine import edit_args, plugin_steps

# --- the stubs: what GIMP 2.10's PDB does ---------------------------------------------------------------


def test_image_resize_moves_layers_keeps_their_pixels_and_shifts_the_selection(g2):
    image, layer = make_image(g2, 100, 80, layer_box=(10, 5, 60, 50))
    before = layer.pixels.copy()
    g2.pdb.gimp_image_select_rectangle(image, 2, 20, 10, 30, 20)
    image.undo_steps = []
    g2.pdb.gimp_image_resize(image, 150, 100, 40, 7)
    assert (image.width, image.height) == (150, 100)
    assert layer.offsets == (50, 12) and (layer.width, layer.height) == (60, 50)  # moved, not resized
    assert np.array_equal(layer.pixels, before)
    assert g2.pdb.gimp_selection_bounds(image) == (1, 60, 17, 90, 37)  # the selection moved with the picture
    assert image.selection.pixels.shape == (100, 150, 1)
    assert image.undo_steps == [["resize image"]]
    composite = image.composite()
    assert not composite[:, :50].any() and not composite[:, 110:].any()  # the new area is transparent
    with pytest.raises(RuntimeError):
        g2.pdb.gimp_image_resize(image, 0, 100, 0, 0)


def test_layer_new_from_visible_is_the_canvas_with_alpha_and_not_inserted(g2):
    image, layer = make_image(g2, 100, 80, layer_box=(20, 10, 40, 30))  # RGB layer smaller than the canvas
    hidden = g2.gimp.Layer(image, "hidden", 100, 80, 1)
    hidden.pixels[...] = 255
    image.insert_layer(hidden)
    hidden.visible = False
    visible = g2.pdb.gimp_layer_new_from_visible(image, image, "seen")
    assert (visible.width, visible.height, visible.offsets, visible.type) == (100, 80, (0, 0), 1)  # RGBA
    assert visible not in image.layers and visible.name == "seen"
    assert np.array_equal(visible.pixels[10:40, 20:60, :3], layer.pixels)
    assert (visible.pixels[10:40, 20:60, 3] == 255).all()
    outside = np.ones((80, 100), bool)
    outside[10:40, 20:60] = False
    assert not visible.pixels[outside].any()  # transparent where no visible layer is, hidden ones ignored


def test_layer_new_from_drawable_copies_for_another_image(g2):
    image, layer = make_image(g2, 100, 80, layer_box=(5, 6, 40, 30))
    other = g2.pdb.gimp_image_new(10, 10, 0)
    copy = g2.pdb.gimp_layer_new_from_drawable(layer, other)
    assert copy.image is other and copy.name == "Background copy" and copy.offsets == (5, 6)
    assert np.array_equal(copy.pixels, layer.pixels) and copy is not layer and copy not in other.layers


def test_layer_scale_needs_an_image_scales_offsets_and_keeps_flat_colour(g2):
    image, layer = make_image(g2, 400, 300, layer_box=(100, 60, 200, 100), layer_type=1)
    layer.pixels[...] = (200, 100, 50, 255)
    layer.pixels[:, :100, 3] = 0  # left half transparent (its colour must not bleed in)
    layer.pixels[:, :100, :3] = (0, 255, 0)
    g2.pdb.gimp_layer_scale(layer, 100, 50, False)
    assert (layer.width, layer.height) == (100, 50) and layer.offsets == (50, 30)  # about the image origin
    opaque = layer.pixels[..., 3] == 255
    # cubic rings by a level or two at the alpha edge; green from the transparent half would shift it far more
    assert opaque.sum() > 0 and (np.abs(layer.pixels[opaque][:, :3].astype(int) - (200, 100, 50)) <= 3).all()
    g2.pdb.gimp_layer_scale(layer, 50, 26, True)
    assert layer.offsets == (75, 42)  # about its centre
    loose = g2.gimp.Layer(image, "loose", 10, 10, 1)
    with pytest.raises(RuntimeError, match="has not been added to an image"):
        g2.pdb.gimp_layer_scale(loose, 5, 5, False)


# --- the host's exports ------------------------------------------------------------------------------------


def test_export_visible_is_the_whole_canvas_and_leaves_the_image_as_it_was(g2, tmp_path):
    image, layer = make_image(g2, 120, 90, layer_box=(30, 20, 50, 40))
    path = str(tmp_path / "visible.png")
    g2.plugin.export_visible(image, path)
    got = np.asarray(Image.open(path))
    assert got.shape == (90, 120, 4)
    assert np.array_equal(got[20:60, 30:80, :3], layer.pixels) and (got[20:60, 30:80, 3] == 255).all()
    assert got[..., 3].sum() == 255 * 50 * 40  # transparent around the layer
    assert image.layers == [layer] and image.undo_steps == []


def test_export_reference_is_scaled_down_in_a_temporary_image(g2, tmp_path):
    image, _layer = make_image(g2, 100, 80)
    ref = g2.gimp.Layer(image, "ref: kite", 2000, 1500, 1)
    ref.pixels[...] = (30, 120, 200, 255)
    ref.pixels[:750, :, :3] = (250, 240, 10)  # top half yellow: the layout must survive the scaling
    image.insert_layer(ref)
    images_before, steps_before = list(g2.gimp.image_list()), list(image.undo_steps)
    path = str(tmp_path / "ref.png")
    g2.plugin.export_reference(ref, 512, 512, path)
    got = np.asarray(Image.open(path).convert("RGBA"))
    assert got.shape == (384, 512, 4)  # fits 512x512, aspect kept
    assert (np.abs(got[:180, :, :3].astype(int) - (250, 240, 10)) <= 2).all()
    assert (np.abs(got[204:, :, :3].astype(int) - (30, 120, 200)) <= 2).all()
    assert g2.gimp.image_list() == images_before and image.undo_steps == steps_before
    assert (ref.width, ref.height) == (2000, 1500)
    small = str(tmp_path / "small.png")
    g2.plugin.export_reference(ref, 4000, 4000, small)  # never scaled up
    assert Image.open(small).size == (2000, 1500)


# --- end to end: the real engine and the local server ------------------------------------------------------


@pytest.fixture
def engine(monkeypatch, local_server):
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", sys.executable)
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    return local_server


def _expand_args(sides, amount, aspect="amount", prompt=""):
    return (prompt, sides, amount, aspect, "gpt-image-2", "low", 16)


@pytest.mark.slow
@pytest.mark.parametrize("sides, amount, canvas, moved", [
    ("right", 32, (192, 120), (0, 0)),
    ("left-right", 24, (208, 120), (24, 0)),
    ("top", 40, (160, 160), (0, 40)),
])
def test_expand_canvas_in_gimp2(g2, engine, sides, amount, canvas, moved):
    image, layer = make_image(g2, 160, 120, layer_box=(0, 0, 160, 120))
    before = layer.pixels.copy()
    g2.pdb.python_fu_openai_expand_canvas(image, layer, *_expand_args(sides, amount))
    assert [m for m in g2.gimp.state.messages if "canvas" not in m] == [], g2.gimp.state.messages
    assert (image.width, image.height) == canvas
    assert layer.offsets == moved and np.array_equal(layer.pixels, before)  # the old layer: moved, untouched
    top = image.layers[0]
    assert top.name == "OpenAI: expanded canvas" and top.mask is not None and image.layers[1] is layer
    mask = np.zeros(canvas[::-1], np.uint8)
    x, y = top.offsets
    mask[y:y + top.height, x:x + top.width] = top.mask.pixels[..., 0]
    old = np.zeros(canvas[::-1], bool)
    old[moved[1]:moved[1] + 120, moved[0]:moved[0] + 160] = True
    assert (mask[~old] == 255).all() and (mask[old] == 0).all()  # white exactly on the new area
    shown = image.composite()
    assert np.array_equal(shown[old][:, :3], before.reshape(-1, 3))  # no old pixel changes
    assert (shown[~old][:, 3] == 255).all()  # the new area is painted, opaque
    assert len(plugin_steps(image)) == 1 and image.undo_depth == 0  # resize + layer: one undo step
    assert json.loads(top.parasite_find("gimp-openai").data)["model"] == "gpt-image-2"


@pytest.mark.slow
def test_expand_canvas_fills_the_transparent_canvas_around_a_small_layer(g2, engine):
    """A layer smaller than the canvas: the transparent canvas around it is unknown and painted too, and the
    layer's own pixels still show unchanged."""
    image, layer = make_image(g2, 160, 120, layer_box=(20, 0, 140, 120))
    before = layer.pixels.copy()
    g2.pdb.python_fu_openai_expand_canvas(image, layer, *_expand_args("right", 32))
    assert (image.width, image.height) == (192, 120) and layer.offsets == (20, 0)
    shown = image.composite()
    assert (shown[..., 3] == 255).all(), "no transparent ring is left inside the old canvas"
    assert np.array_equal(shown[:, 20:160, :3], before)


def _spy_job(monkeypatch, g2):
    """The job the workflow sends, with the reference PNGs read before the job folder goes."""
    host = sys.modules["gimp_openai_host"]
    seen = {}
    real = host.run_job

    def spy(job, workdir, **kwargs):
        seen["job"] = json.loads(json.dumps(job))
        seen["refs"] = {r["path"]: Image.open(os.path.join(workdir, r["path"])).size
                        for item in job.get("items") or [] for r in item.get("references") or []}
        return real(job, workdir, **kwargs)
    monkeypatch.setattr(host, "run_job", spy)
    return seen


@pytest.mark.slow
def test_edit_selection_sends_ref_layers_downscaled_and_named(g2, engine, monkeypatch):
    image, layer = make_image(g2, 160, 120)
    ref = g2.gimp.Layer(image, "ref: kite", 1600, 1200, 1)
    ref.pixels[..., :3] = textured(1200, 1600, 3, seed=3)
    ref.pixels[..., 3] = 255
    image.insert_layer(ref, None, 1)
    ref.visible = False  # a hidden reference still counts
    other, other_layer = make_image(g2, 50, 40, name="other.xcf", seed=5)
    other_layer.name = "ref: sky"
    image.active_layer = layer
    g2.pdb.gimp_image_select_rectangle(image, 2, 40, 30, 60, 40)
    seen = _spy_job(monkeypatch, g2)
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("a red kite"))
    (item,) = seen["job"]["items"]
    label = f"ref: sky (other.xcf (#{other.ID}))"
    assert [r["name"] for r in item["references"]] == ["ref: kite", label]
    tw, th = item["target"]
    kite, sky = (seen["refs"][r["path"]] for r in item["references"])
    assert kite[0] <= tw and kite[1] <= th and max(kite) < 1600  # scaled down to the request
    assert abs(kite[0] / kite[1] - 4 / 3) < 0.02
    assert sky == (50, 40)  # never scaled up
    message = g2.gimp.state.messages[-1]
    assert f"References sent: ref: kite, {label}." in message, message
    sidecars = [json.load(open(p)) for p in glob.glob(os.path.join(os.environ["GIMP_OPENAI_HISTORY_DIR"],
                                                                   "*.json"))]
    assert [s.get("references") for s in sidecars] == [["ref: kite", label]]
    assert (ref.width, ref.height) == (1600, 1200) and ref.visible is False  # the reference is untouched
