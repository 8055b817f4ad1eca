"""Past-the-edge edits, ``ref:`` references and Expand Canvas through the one workflow, with a fake adapter
(images as numpy arrays) and the real engine against the local server: what is exported, what the engine
answers and what goes into the image, as an artist would check it."""

import glob
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.gimp2.test_workflow import FakeAdapter, FakeImage, flow, hl, proc, run


@pytest.fixture
def engine(monkeypatch, local_server):
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", sys.executable)
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    return local_server


class LayerImage(FakeImage):
    """A canvas with one smaller layer (``layer_box``), and ``ref:`` layers as name -> pixels."""

    def __init__(self, width, height, layer_box, selection=None, refs=()):
        FakeImage.__init__(self, layer_box[2], layer_box[3], selection=selection)
        self.canvas = (width, height)
        self.box = layer_box
        self.refs = list(refs)
        self.resized = None


class EdgeAdapter(FakeAdapter):
    """GIMP's answers for a layer smaller than the canvas: its rectangle, and transparent pixels where a region
    runs past it (what GEGL's abyss and the GIMP 2 host's padding give)."""

    def __init__(self, *args, **kw):
        FakeAdapter.__init__(self, *args, **kw)
        self.references_exported, self.canvas_calls = [], []

    def target(self, image, drawables):
        target = FakeAdapter.target(self, image, drawables)
        x, y, w, h = image.box
        target.layer_rect = {"x": x, "y": y, "width": w, "height": h}
        return target

    def export_region(self, target, place, path):
        self.exports.append(("region", target.name, dict(place)))
        x0, y0, w, h = target.image.box
        out = np.zeros((place["height"], place["width"], 4), np.uint8)
        for yy in range(place["height"]):
            for xx in range(place["width"]):
                lx, ly = place["x"] + xx - x0, place["y"] + yy - y0
                if 0 <= lx < w and 0 <= ly < h:
                    out[yy, xx] = target.image.pixels[ly, lx]
        hl.write_png(path, place["width"], place["height"], out.tobytes(), 4)

    def image_size(self, image):
        return getattr(image, "canvas", None) or FakeAdapter.image_size(self, image)

    def reference_layers(self, image, exclude):
        return list(image.refs)

    def export_reference(self, layer, max_width, max_height, path):
        h, w = layer.shape[:2]
        scale = min(1.0, float(max_width) / w, float(max_height) / h)
        im = Image.fromarray(layer).resize((max(1, int(w * scale)), max(1, int(h * scale))))
        self.references_exported.append((im.size, (max_width, max_height)))
        im.save(path)

    def export_visible(self, image, path):
        Image.fromarray(image.pixels).save(path)

    def expand_canvas(self, image, width, height, dx, dy, spec):
        image.undo_groups += 1  # the resize and the layer: one group
        spec.mask_pixels = np.asarray(Image.open(spec.mask_png))  # read now: the job folder goes after the run
        self.canvas_calls.append((width, height, dx, dy, spec))
        image.layers.insert(0, spec.name)
        return spec.name


def _mask(spec):
    return spec.mask_pixels


def test_an_edit_past_the_layer_fills_the_whole_selection_and_the_layer_stays(engine):
    # layer 100x100 at (0,0) in a 200x150 canvas; the selection 60..160 runs 60 px past its right edge
    image = LayerImage(200, 150, (0, 0, 100, 100), selection=(60, 20, 100, 60))
    before = image.pixels.copy()
    adapter = EdgeAdapter([image])
    adapter.keep_workdir = lambda path: adapter.__dict__.setdefault("workdir", path) and True
    run(adapter, "edit-selection", {"prompt": "the wall continues", "model": "gpt-image-2"}, image)
    region = [e for e in adapter.exports if e[0] == "region"][0][2]
    assert region["x"] <= 60 and region["x"] + region["width"] >= 160  # the whole selection was exported
    (insert,) = adapter.inserted
    (name, x, y, w, h, mask, _parasite) = insert["layers"][0]
    assert x <= 60 and x + w >= 160 and y <= 20 and y + h >= 80  # the result layer grows past the layer
    assert mask == "engine" and image.undo_groups == 1
    assert np.array_equal(image.pixels, before) and image.box == (0, 0, 100, 100)  # the layer never changes
    out = os.path.join(adapter.workdir, "out", "img-1-1.png")
    layer = np.asarray(Image.open(out).convert("RGBA"))
    layer_mask = np.asarray(Image.open(out.replace(".png", "-mask.png")))
    assert layer.shape[:2] == (h, w)
    past = (slice(25 - y, 75 - y), slice(105 - x, 155 - x))  # selected, beyond the old layer
    assert layer_mask[past].min() == 255 and layer[past][..., 3].min() == 255  # painted, opaque
    assert layer_mask[(20 - y) // 2 if y < 20 else 0, :].max() == 0 or y >= 20  # unselected rows stay hidden


def test_a_selection_beside_the_layer_is_refused_with_where_to_click(engine):
    image = LayerImage(200, 150, (0, 0, 100, 100), selection=(120, 20, 50, 50))
    adapter = EdgeAdapter([image])
    with pytest.raises(hl.HostError) as caught:
        run(adapter, "edit-selection", {"prompt": "x"}, image)
    assert "does not touch" in caught.value.message and "Layers dialog" in caught.value.hint
    assert adapter.exports == [] and adapter.inserted == []


def test_ref_layers_go_with_the_edit_scaled_to_the_request_and_the_message_names_them(engine, monkeypatch):
    big = np.full((3000, 2000, 3), 90, np.uint8)
    image = LayerImage(200, 150, (0, 0, 200, 150), selection=(50, 40, 60, 50),
                       refs=[("ref: kite", big), ("ref: sky (other.xcf)", np.full((40, 30, 3), 200, np.uint8))])
    captured = {}
    real = hl.run_job

    def spy(job, workdir, **kwargs):
        captured.update(json.loads(json.dumps(job)))
        return real(job, workdir, **kwargs)
    monkeypatch.setattr(hl, "run_job", spy)
    adapter = EdgeAdapter([image])
    text = run(adapter, "edit-selection", {"prompt": "a red kite", "model": "gpt-image-2"}, image)
    (item,) = captured["items"]
    assert item["references"] == [{"path": "img-1-ref-1.png", "name": "ref: kite"},
                                  {"path": "img-1-ref-2.png", "name": "ref: sky (other.xcf)"}]
    for (w, h), (mw, mh) in adapter.references_exported:
        assert w <= mw and h <= mh  # never more pixels than the request has
    assert adapter.references_exported[1][0] == (30, 40)  # never scaled up
    assert "References sent: ref: kite, ref: sky (other.xcf)." in text
    sidecars = [json.load(open(p)) for p in glob.glob(os.path.join(os.environ["GIMP_OPENAI_HISTORY_DIR"], "*.json"))]
    assert [s["references"] for s in sidecars] == [["ref: kite", "ref: sky (other.xcf)"]]


def test_generate_sends_ref_layers_and_says_so(engine):
    image = LayerImage(120, 90, (0, 0, 120, 90), refs=[("ref: style", np.full((64, 64, 3), 30, np.uint8))])
    adapter = EdgeAdapter([image])
    text = run(adapter, "generate", {"prompt": "a lighthouse", "model": "gpt-image-2", "size": "1024x1024"},
               image)
    assert "References sent: ref: style." in text
    assert len(adapter.inserted) == 1


@pytest.mark.parametrize("values, canvas, old", [
    ({"sides": "left-right", "amount": 32}, (184, 90), (32, 0)),
    ({"sides": "right", "amount": 40}, (160, 90), (0, 0)),
    ({"sides": "all", "aspect": "16:9"}, (160, 90), (20, 0)),
    ({"sides": "bottom", "aspect": "1:1"}, (120, 120), (0, 0)),
])
def test_expand_canvas_grows_the_canvas_and_adds_one_masked_layer_in_one_undo_step(engine, values, canvas, old):
    image = LayerImage(120, 90, (0, 0, 120, 90))
    before = image.pixels.copy()
    adapter = EdgeAdapter([image])
    text = run(adapter, "expand-canvas", dict(values, model="gpt-image-2"), image)
    assert text.startswith("OpenAI cost: $0.0") and text.endswith("(1 image, gpt-image-2, auto quality)"), text
    (width, height, dx, dy, spec), = adapter.canvas_calls
    assert (width, height) == canvas and (dx, dy) == old
    assert image.undo_groups == 1 and np.array_equal(image.pixels, before)
    assert spec.name == "OpenAI: expanded canvas" and spec.mask == "engine"
    mask = _mask(spec)
    assert mask.shape == (spec.height, spec.width)
    # 255 exactly on the new area, 0 over the old canvas
    covered = np.zeros((height, width), bool)
    covered[spec.y:spec.y + spec.height, spec.x:spec.x + spec.width] = True
    new_area = np.ones((height, width), bool)
    new_area[dy:dy + 90, dx:dx + 120] = False
    assert covered[new_area].all()
    full = np.zeros((height, width), np.uint8)
    full[spec.y:spec.y + spec.height, spec.x:spec.x + spec.width] = mask
    assert (full[new_area] == 255).all() and (full[~new_area] == 0).all()
    assert "canvas 120x90" in adapter.statuses[-1]


def test_expand_canvas_refuses_growing_nothing_before_sending(engine):
    image = LayerImage(120, 90, (0, 0, 120, 90))
    adapter = EdgeAdapter([image])
    with pytest.raises(hl.HostError) as caught:
        run(adapter, "expand-canvas", {"sides": "all", "amount": 0}, image)
    assert "0 px" in caught.value.message and adapter.canvas_calls == []
    assert engine.url  # nothing was asked of the server


# --- what an expansion costs, before it is sent -----------------------------------------------------------------

def _edits(server):
    return sum(v for k, v in server.stats()["endpoints"].items() if "edits" in k)


def test_expand_canvas_says_its_estimate_in_the_progress_before_sending(engine):
    image = LayerImage(120, 90, (0, 0, 120, 90))
    adapter = EdgeAdapter([image])
    run(adapter, "expand-canvas", {"sides": "right", "amount": 40, "model": "gpt-image-2", "quality": "low"}, image)
    said = [t for _f, t in adapter.progress_seen if t.startswith("OpenAI: expanding the canvas")]
    assert said and said[0].startswith("OpenAI: expanding the canvas, about $0.0"), adapter.progress_seen
    assert adapter.asked == []  # within the limit: nothing to ask


def test_expand_canvas_above_the_limit_is_refused_unpaid_in_a_script(engine):
    from gimp_openai.settings import update_settings

    update_settings(max_cost=0.001)
    image = LayerImage(120, 90, (0, 0, 120, 90))
    adapter = EdgeAdapter([image])
    with pytest.raises(hl.HostError) as caught:
        run(adapter, "expand-canvas", {"sides": "right", "amount": 40, "model": "gpt-image-2", "quality": "high"},
            image)
    assert caught.value.message.startswith("Not sent: this run (1 request) is estimated at about $0.1")
    assert "above your cost limit of $0.0010" in caught.value.message
    assert adapter.canvas_calls == [] and _edits(engine) == 0


@pytest.mark.parametrize("answer, sent", [(False, 0), (True, 1)])
def test_expand_canvas_above_the_limit_asks_the_artist_first(engine, answer, sent):
    from gimp_openai.settings import update_settings

    update_settings(max_cost=0.001)
    image = LayerImage(120, 90, (0, 0, 120, 90))
    adapter = EdgeAdapter([image], interactive=True, answers=[answer])
    values = {"sides": "right", "amount": 40, "model": "gpt-image-2", "quality": "high"}
    if answer:
        run(adapter, "expand-canvas", values, image)
    else:
        with pytest.raises(flow.Stop):
            run(adapter, "expand-canvas", values, image)
    ((question, title, yes),) = adapter.asked
    assert question.startswith("This run (1 request) is estimated at about $0.1") and "above your limit" in question
    assert title == "OpenAI: above your cost limit" and yes == "_Send"
    assert _edits(engine) == sent and len(adapter.canvas_calls) == sent


def test_the_expand_dialog_estimate_counts_the_tiles(engine):
    """What the Expand Canvas dialog shows: the plan built from its values, asked of the engine."""
    image = LayerImage(3000, 200, (0, 0, 3000, 200))
    adapter = EdgeAdapter([image])
    estimate = flow.DialogEstimate(adapter, proc("expand-canvas"), image, None)
    values = dict(hl.defaults(proc("expand-canvas")), sides="left-right", amount=512, model="gpt-image-2",
                  quality="low")
    plan = estimate.plan(values)
    assert plan["operation"] == "expand" and plan["canvas"] == {"width": 3000, "height": 200}
    assert plan["margins"] == {"left": 512, "top": 0, "right": 512, "bottom": 0}
    answer = hl.estimate(plan)
    assert answer is not None and answer["estimate"]["tiles"] == 2 == len(answer["tiles"])
    label = hl.estimate_label(answer)
    assert label.startswith("Estimated cost: about $0.0") and "for 2 requests (tiles of the new area)" in label
    assert "gpt-image-2, low quality" in label
    with pytest.raises(flow.Refusal):  # the dialog then says "nothing to send yet"
        estimate.plan(dict(values, amount=0))
    nothing = hl.estimate(estimate.plan(dict(values, aspect="15:1")))  # 3000x200 is already 15:1
    assert hl.estimate_label(nothing) == "Estimated cost: nothing to send (the canvas would not grow)"
