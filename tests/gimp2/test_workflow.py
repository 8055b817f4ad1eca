"""The one host workflow (plugin/hostlib/gimp_openai_workflow.py) driven by a fake adapter: no GIMP, no root.

The fake adapter keeps images as numpy arrays and records every call, so each test reads like an artist's run:
what was exported, what was inserted where, with which names and masks, what was asked and said. The engine is
the fake engine of tests/gimp2 (plan/job over one session process).
"""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "plugin", "hostlib"))
import gimp_openai_host as hl  # noqa: E402
import gimp_openai_workflow as flow  # noqa: E402

MANIFEST = hl.load_manifest(os.path.join(ROOT, "manifest", "procedures.json"))


def proc(name):
    return hl.procedure(MANIFEST, "python-fu-openai-" + name)


class FakeImage:
    def __init__(self, width, height, selection=None, name="photo.png", kind="layer", indexed=False):
        rng = np.random.default_rng(width * height)
        self.pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        self.pixels[..., 3] = 255
        self.selection = selection  # (x, y, w, h) or None
        self.name, self.kind, self.indexed = name, kind, indexed
        self.layers = ["photo"]
        self.undo_groups = 0


class FakeAdapter:
    """Answers as GIMP would for FakeImages; records everything the workflow asks of it."""

    shows_saved_settings = True

    def __init__(self, images=(), interactive=False, answers=(), closed=(), close_after_preview=(),
                 preview_fails=False):
        self.images = list(images)
        self.interactive = interactive
        self.answers = list(answers)
        self.closed = set(closed)
        self.close_after_preview, self.preview_fails = set(close_after_preview), preview_fails
        self.asked, self.statuses, self.exports, self.inserted, self.shown = [], [], [], [], []
        self.progress_seen = []
        self.events = []  # previews, their removal and inserts, in order

    def target(self, image, drawables):
        if image is None:
            return flow.Target(None, None, "", kind="none")
        h, w = image.pixels.shape[:2]
        sel = None
        if image.selection:
            x, y, sw, sh = image.selection
            sel = {"x": x, "y": y, "width": sw, "height": sh}
        return flow.Target(image, "photo", image.name, kind=image.kind,
                           layer_rect={"x": 0, "y": 0, "width": w, "height": h}, selection=sel, indexed=image.indexed)

    def open_targets(self):
        return [self.target(image, None) for image in self.images]

    def export_region(self, target, place, path):
        self.exports.append(("region", target.name, dict(place)))
        crop = target.image.pixels[place["y"]:place["y"] + place["height"], place["x"]:place["x"] + place["width"]]
        hl.write_png(path, place["width"], place["height"], crop.tobytes(), 4)

    def export_selection(self, target, place, path):
        self.exports.append(("selection", target.name, dict(place)))
        sel = np.zeros((place["height"], place["width"]), np.uint8)
        x, y, w, h = target.image.selection
        sel[max(0, y - place["y"]):y - place["y"] + h, max(0, x - place["x"]):x - place["x"] + w] = 255
        hl.write_png(path, place["width"], place["height"], sel.tobytes(), 1)

    def alive(self, image, layer):
        return image.name not in self.closed

    def preview(self, target, spec):
        """Like GIMP: one preview layer per image, above the layer, its pixels replaced by each newer preview;
        never an undo group."""
        image = target.image
        assert image.name not in self.closed, "preview in a closed image"
        pixels = np.asarray(Image.open(spec.png).convert("RGBA"))
        assert pixels.shape[:2] == (spec.height, spec.width)
        assert spec.name == hl.PREVIEW_NAME and json.loads(spec.parasite)["preview"] is True
        if self.preview_fails:
            raise RuntimeError("the preview layer could not be added")
        if hl.PREVIEW_NAME not in image.layers:
            image.layers.insert(0 if target.layer is None else image.layers.index(target.layer), hl.PREVIEW_NAME)
        image.preview = pixels
        self.events.append(("preview", image.name, target.layer, spec.x, spec.y, spec.width, spec.height, spec.mask,
                            pixels))
        if image.name in self.close_after_preview:
            self.closed.add(image.name)

    def end_preview(self, target):
        image = target.image
        assert image.name not in self.closed, "end_preview on a closed image"
        removed = image.layers.count(hl.PREVIEW_NAME)
        image.layers = [name for name in image.layers if name != hl.PREVIEW_NAME]
        self.events.append(("end", image.name, removed))

    def previews(self):
        return [e for e in self.events if e[0] == "preview"]

    def insert(self, image, anchor, layers, group_name):
        assert image.name not in self.closed, "inserted into a closed image"
        assert hl.PREVIEW_NAME not in image.layers, "the preview is still there when the results go in"
        self.events.append(("insert", image.name))
        image.undo_groups += 1
        for spec in layers:
            pixels = np.asarray(Image.open(spec.png))
            assert pixels.shape[:2] == (spec.height, spec.width)
            image.layers.insert(0, spec.name)
        self.inserted.append({"image": image.name, "anchor": anchor, "group": group_name,
                              "layers": [(s.name, s.x, s.y, s.width, s.height, s.mask, json.loads(s.parasite))
                                         for s in layers]})

    def new_image(self, width, height):
        image = FakeImage(width, height, name="new")
        image.layers = []
        return image

    def image_size(self, image):
        return image.pixels.shape[1], image.pixels.shape[0]

    def show(self, image):
        self.shown.append(image)

    def ask(self, question, title="OpenAI", yes="_Yes"):
        self.asked.append((question, title, yes))
        return self.answers.pop(0) if self.answers else False

    def ask_secret(self, question):
        return None

    def progress(self, fraction, text):
        self.progress_seen.append((fraction, text))

    def status(self, text):
        self.statuses.append(text)

    def end_progress(self):
        self.progress_seen.append("end")

    def models_listed(self, models):
        pass

    def keep_workdir(self, path):
        return False


def run(adapter, name, values, image=None):
    return flow.Workflow(adapter, proc(name), dict(hl.defaults(proc(name)), **values)).run(image, None)


def test_edit_exports_the_planned_region_and_inserts_masked_layers_in_one_undo_group(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image])
    workflow = flow.Workflow(adapter, proc("edit-selection"), dict(hl.defaults(proc("edit-selection")),
                                                                    prompt="a red kite", n=2))
    text = workflow.run(image, None)
    assert text == "OpenAI cost: $0.100 (2 images, gpt-image-2, auto quality)"  # the run's one message
    assert workflow.only_cost  # nothing else to read: hosts show it as status text, not in a message box
    region, selection = adapter.exports
    # the fake engine plans the selection plus 25 % of its larger side, clipped to the layer
    assert region[2] == selection[2] == {"x": 48, "y": 28, "width": 74, "height": 54}
    (insert,) = adapter.inserted
    assert insert["group"] == "OpenAI: a red kite (2 results)" and insert["anchor"] == "photo"
    names = [layer[0] for layer in insert["layers"]]
    assert names == ["OpenAI: a red kite (1/2)", "OpenAI: a red kite (2/2)"]
    for _name, x, y, w, h, mask, parasite in insert["layers"]:
        assert (x, y, w, h) == (48, 28, 74, 54) and mask == "engine"
        assert parasite["prompt"] == "a red kite" and parasite["model"] == "gpt-image-2"
        # each layer's share of its request, and the whole, so the layer says what it cost
        assert parasite["cost"]["usd"] == 0.05 and parasite["cost"]["request_usd"] == 0.1
        assert parasite["cost"]["images_in_request"] == 2 and parasite["cost"]["price_as_of"] == "2026-04-21"
    assert adapter.statuses[-1] == text
    assert "about $0.100 (up to $0.400 if the model picks high quality)" in adapter.progress_seen[1][1]
    assert image.undo_groups == 1
    call_argvs = [c["argv"][3] for c in fake_engine()]
    assert call_argvs == ["plan", "job"] and len({c["argv"][2] for c in fake_engine()}) == 1  # one session


def test_job_carries_the_manifest_values_as_they_are(fake_engine, tmp_path, monkeypatch):
    """The host forwards the dialog's values, typed as the manifest says; host-only ones stay home."""
    captured = {}
    real = hl.run_job

    def spy(job, workdir, **kwargs):
        captured.update(job)
        return real(job, workdir, **kwargs)
    monkeypatch.setattr(hl, "run_job", spy)
    image = FakeImage(100, 80, selection=(10, 10, 20, 20))
    run(FakeAdapter([image]), "edit-selection", {"prompt": "sky", "feather": 3, "n": 1, "quality": "low",
                                                 "whole_layer": True}, image)
    assert captured["feather"] == 3.0 and isinstance(captured["feather"], float)
    assert captured["quality"] == "low" and captured["prompt"] == "sky" and captured["operation"] == "edit"
    assert "whole_layer" not in captured and captured["model"] == "gpt-image-2"


@pytest.mark.parametrize("image, refusal", [
    (FakeImage(50, 50, selection=(5, 5, 10, 10), indexed=True), "indexed"),
    (FakeImage(50, 50, selection=(5, 5, 10, 10), kind="group"), "layer group"),
    (FakeImage(50, 50, selection=(5, 5, 10, 10), kind="channel"), "channel, not a layer"),
    (FakeImage(50, 50, selection=(60, 60, 10, 10)), "does not touch"),
    (FakeImage(50, 50), "no selection"),
])
def test_refusals_come_before_anything_is_sent(fake_engine, image, refusal):
    with pytest.raises(flow.Refusal) as info:
        run(FakeAdapter([image]), "edit-selection", {"prompt": "x"}, image)
    assert refusal in info.value.message and info.value.hint
    assert fake_engine() == []


def test_empty_prompt_is_refused_before_the_engine_starts(fake_engine):
    image = FakeImage(50, 50, selection=(5, 5, 10, 10))
    with pytest.raises(flow.Refusal) as info:
        run(FakeAdapter([image]), "edit-selection", {"prompt": "  "}, image)
    assert info.value.code == "empty_prompt" and fake_engine() == []


def test_nothing_selected_asks_once_and_no_means_nothing_changed(fake_engine):
    image = FakeImage(60, 40)
    adapter = FakeAdapter([image], interactive=True, answers=[False])
    with pytest.raises(flow.Stop) as info:
        run(adapter, "edit-selection", {"prompt": "x"}, image)
    assert "Nothing was changed" in str(info.value)
    (question, title, yes), = adapter.asked
    assert "60x40" in question and yes == "_Use the whole layer"
    adapter = FakeAdapter([image], interactive=True, answers=[True])
    run(adapter, "edit-selection", {"prompt": "x"}, image)
    assert adapter.inserted[0]["layers"][0][1:5] == (0, 0, 60, 40)


def test_variation_of_a_selection_is_masked_by_the_selection_and_whole_layers_are_not(fake_engine):
    image = FakeImage(120, 90, selection=(30, 20, 40, 30))
    adapter = FakeAdapter([image])
    run(adapter, "variations", {"n": 1}, image)
    assert adapter.inserted[0]["layers"][0][5] == "selection"
    assert adapter.inserted[0]["layers"][0][0].startswith("OpenAI: variation [variation by edit]")
    whole = FakeImage(120, 90)
    adapter = FakeAdapter([whole])
    run(adapter, "variations", {"n": 1, "add_mask": True}, whole)
    assert adapter.inserted[0]["layers"][0][5] is None and adapter.exports == [("region", "photo.png", {
        "x": 0, "y": 0, "width": 120, "height": 90})]


def test_batch_summary_skips_and_one_failure_leaves_the_others(fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "img-2")
    a = FakeImage(80, 60, selection=(10, 10, 20, 20), name="a.png")
    b = FakeImage(80, 60, selection=(10, 10, 20, 20), name="b.png")
    c = FakeImage(80, 60, name="c.png")
    d = FakeImage(80, 60, selection=(10, 10, 20, 20), name="d.png", indexed=True)
    adapter = FakeAdapter([a, b, c, d])
    text = run(adapter, "batch", {"prompt": "clear sky", "no_selection": "skip"})
    assert "OpenAI batch: 1 of 2 images done." in text
    assert "\u2713 a.png: 1 layer(s) added" in text and "\u2717 b.png: The server failed (500)" in text
    assert "c.png: skipped (nothing selected)" in text and "d.png: This image is indexed" in text
    assert [i["image"] for i in adapter.inserted] == ["a.png"]
    assert sum(1 for call in fake_engine() if call["argv"][3] == "job") == 1


def test_an_image_closed_while_waiting_gets_its_results_as_a_new_image(fake_engine):
    a = FakeImage(80, 60, selection=(10, 10, 20, 20), name="a.png")
    b = FakeImage(80, 60, selection=(10, 10, 20, 20), name="b.png")
    adapter = FakeAdapter([a, b], closed={"a.png"})
    text = run(adapter, "batch", {"prompt": "clear sky", "n": 2})
    assert "OpenAI batch: 2 of 2 images done." in text
    assert "a.png was closed while the request ran, so its 2 results opened as a new image." in text
    (new,) = adapter.shown
    assert [i["image"] for i in adapter.inserted] == ["new", "b.png"]
    rescued = adapter.inserted[0]
    assert rescued["anchor"] is None and rescued["group"] == "OpenAI: clear sky (2 results)"
    assert [layer[1:3] for layer in rescued["layers"]] == [(0, 0), (0, 0)]  # at the new image's corner
    assert (new.pixels.shape[1], new.pixels.shape[0]) == rescued["layers"][0][3:5]


def test_an_insert_that_fails_keeps_the_others_and_names_the_history_folder(fake_engine):
    a = FakeImage(80, 60, selection=(10, 10, 20, 20), name="a.png")
    b = FakeImage(80, 60, selection=(10, 10, 20, 20), name="b.png")
    adapter = FakeAdapter([a, b])
    real = adapter.insert

    def broken(image, *args):
        if image.name == "a.png":
            raise RuntimeError("GIMP said no")
        return real(image, *args)
    adapter.insert = broken
    text = run(adapter, "batch", {"prompt": "clear sky"})
    assert "\u2717 a.png: The results could not be added to the image: GIMP said no" in text
    assert "history folder" in text and "\u2713 b.png" in text


def test_notices_of_a_cancelled_run_reach_the_artist_with_this_run_s_message(fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_NOTICE", "/history/kite.png")
    image = FakeImage(80, 60, selection=(10, 10, 20, 20))
    text = run(FakeAdapter([image]), "edit-selection", {"prompt": "x"}, image)
    assert text == ("OpenAI cost: $0.0500 (1 image, gpt-image-2, auto quality)\n\nA cancelled run had already "
                    "received 1 image (paid for); it is saved here:\n  /history/kite.png")  # a message box


def _jobs(log):
    calls = [json.loads(line) for line in open(log)]
    return [json.load(open(c["argv"][-1])) for c in calls if c["argv"][-2] == "job"]


def test_generate_into_a_new_image_or_filling_the_current_canvas(fake_engine, tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    monkeypatch.setattr(hl, "cleanup", lambda path: None)  # keep the job files to read what was asked
    adapter = FakeAdapter()
    run(adapter, "generate", {"prompt": "a lighthouse", "n": 1, "target": "new image"})
    (new,) = adapter.shown
    assert adapter.inserted[0]["image"] == "new" and adapter.inserted[0]["layers"][0][1:3] == (0, 0)
    image = FakeImage(200, 150, selection=(1, 1, 2, 2))
    adapter = FakeAdapter([image])
    run(adapter, "generate", {"prompt": "a lighthouse", "n": 2, "target": "layers in this image"}, image)
    (insert,) = adapter.inserted
    assert insert["group"] == "OpenAI: a lighthouse (2 results)" and insert["anchor"] is None  # on top
    # the canvas's shape is asked for and each result covers it exactly
    assert [layer[1:5] for layer in insert["layers"]] == [(0, 0, 200, 150)] * 2
    assert all(layer[5] is None for layer in insert["layers"]) and not adapter.shown
    first, second = _jobs(log)
    assert "canvas" not in first and second["canvas"] == {"width": 200, "height": 150}
    # an explicit size is the artist's: sent as chosen, the result centred
    adapter = FakeAdapter([image])
    run(adapter, "generate", {"prompt": "a lighthouse", "size": "1024x1024", "target": "layers in this image"}, image)
    assert "canvas" not in _jobs(log)[-1] and _jobs(log)[-1]["size"] == "1024x1024"


def test_a_shut_down_model_is_offered_once_and_the_run_repeated_with_its_replacement(fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_GONE", "gpt-image-1")
    saved = []
    monkeypatch.setattr(hl, "save_settings", lambda changes, python=None: saved.append(changes))
    image = FakeImage(80, 60, selection=(10, 10, 20, 20))
    adapter = FakeAdapter([image], interactive=True, answers=[True])
    run(adapter, "edit-selection", {"prompt": "x", "model": "gpt-image-1"}, image)
    (question, title, yes), = adapter.asked
    assert title == "OpenAI: model shut down" and yes == "_Use gpt-image-2" and "was shut down" in question
    assert saved == [{"default_model": "gpt-image-2"}]
    assert adapter.inserted[0]["layers"][0][6]["model"] == "gpt-image-2"
    adapter = FakeAdapter([image], interactive=False)
    with pytest.raises(flow.ModelGone) as info:
        run(adapter, "edit-selection", {"prompt": "x", "model": "gpt-image-1"}, image)
    assert info.value.replacement == "gpt-image-2" and adapter.asked == []


@pytest.mark.parametrize("shows_saved, interactive, expected", [
    (True, True, {"base_url": "", "default_model": "gpt-image-2", "history_dir": "", "max_cost": 1.0}),  # as shown
    (False, True, {"default_model": "gpt-image-2"}),    # last values, not the saved ones: empty keeps
    (True, False, {"default_model": "gpt-image-2"}),    # a script: empty keeps
])
def test_settings_save_what_the_dialog_shows_and_empty_keeps_elsewhere(fake_engine, monkeypatch, shows_saved,
                                                                        interactive, expected):
    saved = []
    monkeypatch.setattr(hl, "save_settings", lambda changes, python=None: saved.append(changes))
    adapter = FakeAdapter(interactive=interactive)
    adapter.shows_saved_settings = shows_saved
    text = run(adapter, "settings", {"base_url": "", "default_model": "gpt-image-2", "history_folder": "",
                                      "test_connection": False})
    assert saved == [expected]
    assert text.startswith("OpenAI settings:\nSettings saved: ") and "model gpt-image-2" in text


def test_notices_survive_a_run_that_fails(fake_engine, monkeypatch):
    """The paid images of a cancelled run are named even when this run fails (e.g. no key)."""
    monkeypatch.setenv("FAKE_ENGINE_NOTICE", "/history/kite.png")
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "img-1")
    image = FakeImage(80, 60, selection=(10, 10, 20, 20))
    with pytest.raises(hl.HostError) as info:
        run(FakeAdapter([image]), "edit-selection", {"prompt": "x"}, image)
    assert "The server failed (500)" in info.value.message and "/history/kite.png" in info.value.message


def test_an_empty_prompt_is_said_before_any_question(fake_engine):
    image = FakeImage(60, 40)  # nothing selected: the whole-layer question would come next
    adapter = FakeAdapter([image], interactive=True, answers=[True])
    with pytest.raises(flow.Refusal):
        run(adapter, "edit-selection", {"prompt": ""}, image)
    assert adapter.asked == []


@pytest.mark.parametrize("interactive, answer, edited", [
    (True, True, ["a.png", "c.png"]),   # asked once, yes: whole layers too
    (True, False, ["a.png"]),           # asked once, no: skipped
    (False, None, ["a.png"]),           # a script is never asked and never pays for them silently
])
def test_batch_asks_once_about_images_without_a_selection(fake_engine, interactive, answer, edited):
    a = FakeImage(80, 60, selection=(10, 10, 20, 20), name="a.png")
    c = FakeImage(80, 60, name="c.png")
    adapter = FakeAdapter([a, c], interactive=interactive, answers=[answer, True] if answer is not None else [])
    text = run(adapter, "batch", {"prompt": "clear sky"})
    assert [i["image"] for i in adapter.inserted] == edited
    assert len(adapter.asked) == (2 if interactive else 0)  # then the batch's price, for what is sent
    if interactive:
        assert "1 open image(s) have nothing selected (c.png)" in adapter.asked[0][0]
        images = f"{len(edited)} image{'s' * (len(edited) > 1)}"
        assert f"Send this batch ({images})" in adapter.asked[1][0]
    if "c.png" not in edited:
        assert "c.png: skipped (nothing selected)" in text


@pytest.mark.parametrize("name, image_kw, answers, expected", [
    ("edit-selection", dict(selection=(10, 10, 20, 20)), [], {}),  # a selection: nothing to ask
    ("edit-selection", dict(), [True], {"whole_layer": True}),  # asked first; the dialog shows the answer
    ("edit-selection", dict(), [False], flow.Stop),  # "no": no dialog at all
    ("edit-selection", dict(kind="channel"), [], flow.Refusal),
    ("edit-selection", dict(indexed=True, selection=(1, 1, 2, 2)), [], flow.Refusal),
    ("edit-selection", dict(selection=(500, 500, 5, 5)), [], flow.Refusal),  # beside the layer
    ("variations", dict(), [], {}),  # variations take the whole layer without asking
    ("generate", dict(kind="channel"), [], {}),  # generate needs no layer
])
def test_the_checks_that_need_no_server_run_before_the_dialog(name, image_kw, answers, expected):
    image = FakeImage(80, 60, **image_kw)
    adapter = FakeAdapter([image], interactive=True, answers=answers)
    if isinstance(expected, dict):
        assert flow.before_dialog(adapter, proc(name), image, None, hl.defaults(proc(name))) == expected
    else:
        with pytest.raises(expected):
            flow.before_dialog(adapter, proc(name), image, None, hl.defaults(proc(name)))
    assert len(adapter.asked) == len(answers)


# ------------------------------------------------------------------------------------------- live previews

def test_each_preview_shows_where_the_result_goes_and_the_result_replaces_it(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image])
    assert run(adapter, "edit-selection", {"prompt": "a red kite", "n": 1, "partial_images": 3}, image) == \
        "OpenAI cost: $0.0500 (1 image, gpt-image-2, auto quality)"  # only the cost: the status text
    previews = adapter.previews()
    assert len(previews) == 3
    for j, (_what, name, anchor, x, y, w, h, mask, pixels) in enumerate(previews, 1):
        # placed exactly like the result (the planned place), above the artist's layer, through the engine's mask
        assert (name, anchor, x, y, w, h, mask) == ("photo.png", "photo", 48, 28, 74, 54, "engine")
        assert tuple(pixels[40 - 28 + 15, 60 - 48 + 25]) == (j * 60, j * 60, j * 60, 255)  # inside the selection
    (insert,) = adapter.inserted
    assert insert["layers"][0][1:5] == (48, 28, 74, 54)
    kinds = [(e[0], e[2]) if e[0] == "end" else (e[0],) for e in adapter.events]
    # a stale-preview sweep first (nothing found), three previews, the preview removed, then the result
    assert kinds == [("end", 0), ("preview",), ("preview",), ("preview",), ("end", 1), ("insert",)]
    assert image.layers == [insert["layers"][0][0], "photo"]
    assert image.undo_groups == 1  # the result's one undo group; previews are none


class PreparingAdapter(FakeAdapter):
    """An adapter that makes the preview layer ahead (GIMP 3's does), when the engine says where it will go."""

    def prepare_preview(self, target, spec):
        image = target.image
        assert spec.png is None and spec.name == hl.PREVIEW_NAME and json.loads(spec.parasite)["preview"] is True
        mask = np.asarray(Image.open(spec.mask_png)) if spec.mask_png else None
        if hl.PREVIEW_NAME not in image.layers:
            image.layers.insert(image.layers.index(target.layer), hl.PREVIEW_NAME)
        self.events.append(("prepare", image.name, target.layer, spec.x, spec.y, spec.width, spec.height, spec.mask,
                            None if mask is None else mask.shape))


def test_the_preview_layer_is_made_while_the_model_works_then_only_its_pixels_change(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = PreparingAdapter([image])
    run(adapter, "edit-selection", {"prompt": "a red kite", "n": 1, "partial_images": 2}, image)
    kinds = [(e[0], e[2]) if e[0] == "end" else (e[0],) for e in adapter.events]
    assert kinds == [("end", 0), ("prepare",), ("preview",), ("preview",), ("end", 1), ("insert",)]
    prepared = adapter.events[1]
    # at the place and size every preview and the result get, with their mask
    assert prepared[1:] == ("photo.png", "photo", 48, 28, 74, 54, "engine", (54, 74))
    assert all(p[3:8] == prepared[3:8] for p in adapter.previews())
    assert image.undo_groups == 1 and image.layers == [adapter.inserted[0]["layers"][0][0], "photo"]


def test_a_layer_made_ahead_is_removed_even_when_no_preview_shows(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = PreparingAdapter([image], preview_fails=True)
    run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 2}, image)
    kinds = [(e[0], e[2]) if e[0] == "end" else (e[0],) for e in adapter.events]
    assert kinds == [("end", 0), ("prepare",), ("end", 1), ("insert",)] and hl.PREVIEW_NAME not in image.layers


def test_no_previews_asked_none_shown(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image])
    run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 0}, image)
    assert adapter.previews() == [] and adapter.inserted


def test_without_a_layer_mask_the_preview_carries_the_mask_in_its_alpha(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image])
    run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 1, "add_mask": False}, image)
    ((_what, _name, _anchor, _x, _y, _w, _h, mask, pixels),) = adapter.previews()
    assert mask is None and pixels[0, 0, 3] == 0 and pixels[40 - 28 + 15, 60 - 48 + 25, 3] == 255


@pytest.mark.parametrize("fault", ["FAKE_ENGINE_FAIL", "FAKE_ENGINE_CRASH"])
def test_a_run_that_fails_after_previews_removes_them(fake_engine, monkeypatch, fault):
    monkeypatch.setenv(fault, "img-1" if fault == "FAKE_ENGINE_FAIL" else "1")
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image])
    with pytest.raises(hl.HostError):
        run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 2}, image)
    assert len(adapter.previews()) == 2 and adapter.events[-1] == ("end", "photo.png", 1)
    assert image.layers == ["photo"] and not adapter.inserted and image.undo_groups == 0


def test_an_image_closed_while_previews_come_gets_no_more_and_no_error(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30), name="a.png")
    adapter = FakeAdapter([image], close_after_preview={"a.png"})
    text = run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 3, "n": 1}, image)
    assert len(adapter.previews()) == 1  # the fake asserts nothing touched the closed image afterwards
    assert "a.png was closed while the request ran" in text and adapter.shown


def test_a_preview_that_cannot_be_shown_does_not_fail_the_run(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image], preview_fails=True)
    assert run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 3}, image) == \
        "OpenAI cost: $0.0500 (1 image, gpt-image-2, auto quality)"  # only the cost: the status text
    assert adapter.inserted and image.undo_groups == 1


def test_the_next_run_removes_a_preview_a_killed_run_left(fake_engine):
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    image.layers = [hl.PREVIEW_NAME, "photo"]  # GIMP killed the plug-in (Cancel) while a preview showed
    adapter = FakeAdapter([image])
    run(adapter, "edit-selection", {"prompt": "a red kite", "partial_images": 0}, image)
    assert adapter.events[0] == ("end", "photo.png", 1) and hl.PREVIEW_NAME not in image.layers


def test_batch_previews_each_image_over_its_own_selection(fake_engine):
    a = FakeImage(200, 150, selection=(60, 40, 50, 30), name="a.png")
    b = FakeImage(120, 100, selection=(10, 10, 20, 20), name="b.png")
    adapter = FakeAdapter([a, b])
    run(adapter, "batch", {"prompt": "a red kite", "partial_images": 1})
    assert sorted((e[1], e[3], e[4]) for e in adapter.previews()) == [("a.png", 48, 28), ("b.png", 5, 5)]
    assert hl.PREVIEW_NAME not in a.layers + b.layers and a.undo_groups == b.undo_groups == 1


def test_generate_previews_centred_on_the_open_image_and_none_for_a_new_image(fake_engine):
    image = FakeImage(200, 150)
    adapter = FakeAdapter([image])
    run(adapter, "generate", {"prompt": "a kite", "size": "1024x1024", "partial_images": 2}, image)
    previews = adapter.previews()
    assert [(e[2], e[3], e[4], e[5], e[6], e[7]) for e in previews] == [(None, (200 - 64) // 2, (150 - 48) // 2,
                                                                       64, 48, None)] * 2
    assert hl.PREVIEW_NAME not in image.layers and adapter.inserted
    fresh = FakeAdapter([image])
    run(fresh, "generate", {"prompt": "a kite", "target": "new image", "partial_images": 2}, image)
    assert fresh.previews() == [] and fresh.shown


def test_previews_are_on_by_default_within_the_engine_s_bounds_and_say_they_cost():
    from gimp_openai.bounds import BOUNDS

    for name in ("edit-selection", "generate"):
        (param,) = [p for p in proc(name)["params"] if p["name"] == "partial_images"]
        bound = BOUNDS["partial_images"]
        assert (param["min"], param["max"]) == (bound.minimum, bound.maximum)
        assert 0 < param["default"] <= param["max"]
        assert "cost" in param["label"] and "100 more image output tokens" in param["help"]


# ------------------------------------------------------------------------------------------------------ cost

def _sent(calls):
    return [c for c in calls if c["argv"][3] == "job"]


def test_a_run_above_the_limit_asks_with_the_amount_and_no_sends_nothing(fake_engine):
    """n=6 at auto quality: about $0.30, up to $1.20 if the model picks high, above the default $1 limit."""
    image = FakeImage(80, 60, selection=(10, 10, 20, 20))
    adapter = FakeAdapter([image], interactive=True, answers=[False])
    with pytest.raises(flow.Stop) as info:
        run(adapter, "edit-selection", {"prompt": "x", "n": 6}, image)
    assert "Nothing was sent" in str(info.value) and not _sent(fake_engine()) and not adapter.inserted
    (question, title, yes), = adapter.asked
    assert title == "OpenAI: above your cost limit" and yes == "_Send"
    assert "This run (6 images) is estimated at about $0.300 (up to $1.20 if the model picks high quality)" in question
    assert "above your limit of $1.00" in question
    adapter = FakeAdapter([image], interactive=True, answers=[True])
    text = run(adapter, "edit-selection", {"prompt": "x", "n": 6}, image)
    assert len(_sent(fake_engine())) == 1 and text == "OpenAI cost: $0.300 (6 images, gpt-image-2, auto quality)"


def test_a_script_above_the_limit_is_refused_unpaid_until_the_limit_is_raised(fake_engine, monkeypatch):
    image = FakeImage(80, 60, selection=(10, 10, 20, 20))
    adapter = FakeAdapter([image], interactive=False)
    with pytest.raises(flow.Refusal) as info:  # 6 x high: $1.20
        run(adapter, "edit-selection", {"prompt": "x", "n": 6, "quality": "high"}, image)
    refusal = info.value
    assert refusal.code == "cost_limit" and adapter.asked == [] and not _sent(fake_engine())
    assert refusal.message == ("Not sent: this run (6 images) is estimated at about $1.20, above your cost limit of "
                               "$1.00.")
    assert "Settings" in refusal.hint and "max_cost" in refusal.hint
    monkeypatch.setenv("FAKE_ENGINE_MAX_COST", "0.3")  # a lower limit refuses a smaller run
    with pytest.raises(flow.Refusal) as info:
        run(adapter, "edit-selection", {"prompt": "x", "n": 2, "quality": "high"}, image)
    assert "above your cost limit of $0.300" in info.value.message and not _sent(fake_engine())
    monkeypatch.setenv("FAKE_ENGINE_MAX_COST", "5")  # raised: sent
    assert run(adapter, "edit-selection", {"prompt": "x", "n": 6, "quality": "high"}, image) == \
        "OpenAI cost: $1.20 (6 images, gpt-image-2, high)"
    assert len(_sent(fake_engine())) == 1


def test_a_batch_asks_with_its_total_and_sums_up_what_each_image_cost(fake_engine):
    a = FakeImage(80, 60, selection=(10, 10, 20, 20), name="a.png")
    b = FakeImage(80, 60, selection=(10, 10, 20, 20), name="b.png")
    adapter = FakeAdapter([a, b], interactive=True, answers=[False])
    with pytest.raises(flow.Stop):
        run(adapter, "batch", {"prompt": "clear sky", "quality": "low"})
    (question, title, _yes), = adapter.asked
    assert title == "OpenAI: batch cost" and "Send this batch (2 images) now? It is estimated at about $0.0200" \
        in question
    assert not _sent(fake_engine())
    adapter = FakeAdapter([a, b], interactive=True, answers=[True])
    text = run(adapter, "batch", {"prompt": "clear sky", "quality": "low", "n": 2})
    head, first, second = text.splitlines()[:3]
    assert head == "OpenAI batch: 2 of 2 images done. Cost: $0.0400 (4 images, gpt-image-2, low)."
    assert first == "\u2713 a.png: 2 layer(s) added, $0.0200 (2 images, gpt-image-2, low)"
    assert second == "\u2713 b.png: 2 layer(s) added, $0.0200 (2 images, gpt-image-2, low)"
    # a script's batch within the limit is not asked
    adapter = FakeAdapter([a, b], interactive=False)
    assert run(adapter, "batch", {"prompt": "clear sky"}).startswith("OpenAI batch: 2 of 2 images done. Cost: $0.100")
    assert adapter.asked == []


def test_a_model_without_a_price_shows_its_tokens(fake_engine):
    image = FakeImage(80, 60, selection=(10, 10, 20, 20))
    adapter = FakeAdapter([image])
    text = run(adapter, "edit-selection", {"prompt": "x", "n": 10, "model": "local-model", "quality": "high"}, image)
    # never over a dollar limit without dollars: sent, and the tokens said
    assert text == "OpenAI cost: 41,700 tokens (10 images, local-model, high; no price known for this model)"
    parasite = adapter.inserted[0]["layers"][0][6]
    assert parasite["cost"]["usd"] is None and parasite["cost"]["output_tokens"] == 4160


def test_generate_is_estimated_at_its_size_and_says_its_cost(fake_engine, tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    monkeypatch.setattr(hl, "cleanup", lambda path: None)
    image = FakeImage(200, 150)
    adapter = FakeAdapter([image])
    text = run(adapter, "generate", {"prompt": "a lighthouse", "n": 2, "quality": "medium",
                                     "target": "layers in this image"}, image)
    assert text == "OpenAI cost: $0.100 (2 images, gpt-image-2, medium)"
    assert adapter.progress_seen[0][1] == "OpenAI: generating, about $0.100"
    calls = [json.loads(line) for line in open(log)]
    plan = json.load(open(next(c["argv"][-1] for c in calls if c["argv"][-2] == "plan")))
    assert plan["canvas"] == {"width": 200, "height": 150} and plan["n"] == 2 and plan["quality"] == "medium"
    layers = adapter.inserted[0]["layers"]
    assert [la[6]["cost"]["usd"] for la in layers] == [0.05, 0.05]
    adapter = FakeAdapter(interactive=False)
    with pytest.raises(flow.Refusal):  # 10 at auto: up to $2
        run(adapter, "generate", {"prompt": "a lighthouse", "n": 10, "target": "new image"})
    assert adapter.inserted == []


def test_the_dialog_estimate_follows_n_quality_and_model(fake_engine):
    """What the GIMP 3 dialog shows: the regions read once, a plan per set of values, the engine's answer."""
    image = FakeImage(200, 150, selection=(60, 40, 50, 30))
    adapter = FakeAdapter([image], interactive=True)
    estimator = flow.DialogEstimate(adapter, proc("edit-selection"), image, None)
    values = dict(hl.defaults(proc("edit-selection")), prompt="a kite")
    labels = []
    for change in ({}, {"n": 3}, {"n": 3, "quality": "low"}, {"n": 10}, {"model": "local-model"}):
        plan = estimator.plan(dict(values, **change))
        assert plan["items"][0]["selection_bounds"] == {"x": 60, "y": 40, "width": 50, "height": 30}
        labels.append(hl.estimate_label(hl.estimate(plan)))
    one, three, low, ten, unpriced = labels
    assert one == ("Estimated cost: about $0.0500 for 1 image of 74x54\ngpt-image-2, automatic quality\n"
                   "Up to $0.200 if the model picks high quality.")
    assert three.startswith("Estimated cost: about $0.150 for 3 images of 74x54\n") and "Up to $0.600" in three
    assert low == "Estimated cost: about $0.0300 for 3 images of 74x54\ngpt-image-2, low quality"
    assert ten.endswith("\nAbove your limit of $1.00: you will be asked before it is sent.")
    assert unpriced == ("Estimated: about 1,156 tokens for 1 image of 74x54\nlocal-model, automatic quality\n"
                        "No price is known for this model, so no dollar figure.")
    assert not _sent(fake_engine())  # nothing paid while choosing
    # the estimates went to one engine session, and the run then takes that one: no second engine start
    run(adapter, "edit-selection", {"prompt": "a kite"}, image)
    calls = fake_engine()
    assert [c["argv"][3] for c in calls] == ["estimate"] * 5 + ["plan", "job"]
    assert len({c["pid"] for c in calls}) == 1


def test_the_dialog_estimate_of_a_batch_and_of_a_generation(fake_engine):
    a = FakeImage(80, 60, selection=(10, 10, 20, 20), name="a.png")
    b = FakeImage(80, 60, name="b.png")  # nothing selected: counted only when whole layers are chosen
    c = FakeImage(80, 60, selection=(1, 1, 5, 5), name="c.png", indexed=True)  # refused: not counted
    adapter = FakeAdapter([a, b, c], interactive=True)
    batch = flow.DialogEstimate(adapter, proc("batch"), None, None)
    values = dict(hl.defaults(proc("batch")), prompt="clear sky", n=2)
    assert [i["id"] for i in batch.plan(values)["items"]] == ["img-1"]
    assert [i["id"] for i in batch.plan(dict(values, no_selection="whole layer"))["items"]] == ["img-1", "img-2"]
    label = hl.estimate_label(hl.estimate(batch.plan(dict(values, no_selection="whole layer"))))
    assert label.startswith("Estimated cost: about $0.200 for 4 images\n"), label  # two sizes: none named
    generate = flow.DialogEstimate(adapter, proc("generate"), a, None)
    values = dict(hl.defaults(proc("generate")), prompt="a lighthouse", quality="low")
    assert generate.plan(values)["canvas"] == {"width": 80, "height": 60}
    assert "canvas" not in generate.plan(dict(values, target="new image"))
    sized = generate.plan(dict(values, size="1536x1024"))
    assert sized["size"] == "1536x1024" and "canvas" not in sized
    assert hl.estimate_label(hl.estimate(sized)) == ("Estimated cost: about $0.0100 for 1 image of 1536x1024\n"
                                                     "gpt-image-2, low quality")
    started = hl._take_prestarted(os.environ["GIMP_OPENAI_PYTHON"])  # the session the estimates started
    assert started is not None
    started[0].stdin.close()  # end of input: it ends
    assert started[0].wait(10) == 0
    started[1].close()
