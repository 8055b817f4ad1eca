"""The GIMP 2.10 host end to end through the gimpfu stubs, with the protocol-faithful fake engine:
registration, pixels, offsets, names, masks, undo balance, messages, batch, bad inputs, key hygiene."""

import json
import os

import numpy as np
import pytest

from tests.conftest import FAKE_KEY
from tests.gimp2.conftest import ROOT, make_image

MANIFEST = json.load(open(os.path.join(ROOT, "manifest", "procedures.json")))
PF = {"string": "PF_STRING", "text": "PF_TEXT", "int": "PF_SPINNER", "float": "PF_SLIDER", "bool": "PF_TOGGLE",
      "choice": "PF_RADIO", "dirname": "PF_DIRNAME"}


def plugin_steps(image):
    """Undo steps the plug-in made (the test's own selection steps left out)."""
    return [s for s in image.undo_steps if s != ["selection"]]


def edit_args(prompt="a red kite", **kw):
    values = dict(prompt=prompt, model="", n=1, quality="auto", size_mode="auto", background="auto", feather=0.0,
                  context_padding=0.25, add_mask=True, align=True, tone_match=True, blend="feather",
                  partial_images=0, whole_layer=False)
    values.update(kw)
    order = [p["name"] for p in MANIFEST["procedures"][0]["params"]]
    return [values[n] for n in order]


def test_registrations_equal_the_manifest(g2):
    gf = g2.gimpfu
    assert sorted(gf._registered_plugins_) == sorted(p["name"] for p in MANIFEST["procedures"])
    for proc in MANIFEST["procedures"]:
        reg = gf._registered_plugins_[proc["name"]]
        blurb, help_, label, types, params, menu = reg[0], reg[1], reg[5], reg[6], reg[8], reg[11]
        label_2 = proc.get("gimp2_label", proc["label"])  # where 2.10 runs it differently (no chooser)
        assert (blurb, help_, label, types, menu) == (proc["blurb"], proc["help"], label_2,
                                                      proc["image_types"], MANIFEST["menu"]["gimp2"])
        public = [p for p in proc["params"] if not p.get("secret")]
        lead = 2 if proc["image_params"] else 0
        assert [p[1] for p in params[lead:]] == [p["name"] for p in public]
        for entry, p in zip(params[lead:], public):
            label = ("Advanced: " if p.get("advanced") else "") + p["label"]
            widget = "PF_FLOAT" if p["name"] == "max_cost" else PF[p["type"]]  # a plain entry: see below
            assert entry[0] == getattr(gf, widget) and entry[2] == label and entry[3] == p["default"]
            if widget in ("PF_SPINNER", "PF_SLIDER"):
                assert entry[4] == (p["min"], p["max"], p["step"])
            elif widget == "PF_FLOAT":
                assert len(entry) == 4
            if p["type"] == "choice":
                assert [v for _l, v in entry[4]] == p["values"]
                assert [w for w, _v in entry[4]] == [p.get("value_labels", {}).get(v, v) for v in p["values"]]
        installed = g2.gimp.state.procedures[proc["name"]]
        assert installed["menus"] == ["<Image>/Filters/OpenAI"]
        assert [p[1] for p in installed["params"]][0] == "run-mode"
    assert "api_key" not in [p[1] for p in gf._registered_plugins_["python-fu-openai-settings"][8]]


def test_edit_selection_inserts_masked_layer_at_exact_offsets(g2, fake_engine):
    image, layer = make_image(g2, 200, 150, layer_box=(-20, 10, 240, 120))
    before = image.composite()
    g2.pdb.gimp_image_select_ellipse(image, 2, 60, 40, 50, 40)
    sel = image.selection.pixels[..., 0].copy()
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("a red\nkite " + FAKE_KEY, n=1))
    top = image.layers[0]
    assert top is not layer and image.layers[1] is layer
    assert top.name == "OpenAI: a red kite [key hidden] (1/1)"
    # place = selection box + 25% of its longer side as context, inside the layer
    _, x1, y1, x2, y2 = g2.pdb.gimp_selection_bounds(image)
    pad = int(round(0.25 * max(x2 - x1, y2 - y1)))
    assert top.offsets == (x1 - pad, y1 - pad) and (top.width, top.height) == (x2 - x1 + 2 * pad, y2 - y1 + 2 * pad)
    assert top.mask is not None
    mx, my = top.offsets
    np.testing.assert_array_equal(top.mask.pixels[..., 0], sel[my:my + top.height, mx:mx + top.width])
    after = image.composite()
    outside = sel == 0
    np.testing.assert_array_equal(after[outside], before[outside])
    assert (after[sel == 255][:, :3] == (255, 0, 0)).all()
    assert len(plugin_steps(image)) == 1 and image.undo_depth == 0 and g2.gimp.state.context_depth == 0
    parasite = json.loads(top.parasite_find("gimp-openai").data)
    assert parasite["model"] == "gpt-image-2" and parasite["request_id"] == "req-img-1-0"
    assert parasite["cost"]["usd"] == 0.05
    assert parasite["cost"]["text"] == "$0.0500 (1 image, gpt-image-2, auto quality)"
    # a run that worked says its cost in the status text, not in a message box that interrupts the artist
    assert FAKE_KEY not in json.dumps(parasite) and g2.gimp.state.messages == []
    texts = [text for kind, text in g2.gimp.state.progress if kind == "text"]
    assert texts[-1] == "OpenAI cost: $0.0500 (1 image, gpt-image-2, auto quality)"
    assert any(t.startswith("OpenAI: sending 1 request(s), about $0.0500") for t in texts)  # the estimate first
    assert g2.gimp.state.flushes >= 1 and ("update", 0.5) in g2.gimp.state.progress


def test_exports_only_the_planned_region(g2, fake_engine, tmp_path, monkeypatch):
    from PIL import Image
    image, layer = make_image(g2, 800, 600)
    g2.pdb.gimp_image_select_rectangle(image, 2, 100, 100, 40, 30)
    seen = {}
    host = g2.plugin.host
    real = host.run_job

    def spy(job, workdir, **kw):
        seen["image"] = Image.open(os.path.join(workdir, job["items"][0]["image"])).size
        seen["sel"] = np.asarray(Image.open(os.path.join(workdir, job["items"][0]["selection"])))
        seen["job"] = job
        return real(job, workdir, **kw)
    monkeypatch.setattr(host, "run_job", spy)
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    assert seen["image"] == (40 + 20, 30 + 20)
    assert seen["sel"].shape == (50, 60) and seen["sel"][10:40, 10:50].min() == 255 and seen["sel"][:10].max() == 0
    assert seen["job"]["align"] is True and seen["job"]["tone_match"] is True and seen["job"]["blend"] == "feather"


def test_n_results_go_into_a_group_in_order(g2, fake_engine):
    image, layer = make_image(g2)
    g2.pdb.gimp_image_select_rectangle(image, 2, 20, 20, 30, 30)
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("kite", n=3))
    group = image.layers[0]
    assert group.is_group and [layer.name for layer in group.layers] == ["OpenAI: kite (1/3)", "OpenAI: kite (2/3)",
                                                                  "OpenAI: kite (3/3)"]
    assert len(plugin_steps(image)) == 1


def test_add_mask_off_uses_alpha(g2, fake_engine):
    image, layer = make_image(g2)
    before = image.composite()
    g2.pdb.gimp_image_select_ellipse(image, 2, 20, 20, 40, 40)
    sel = image.selection.pixels[..., 0]
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args(add_mask=False))
    assert image.layers[0].mask is None
    np.testing.assert_array_equal(image.composite()[sel == 0], before[sel == 0])


def test_grayscale_image_round_trips_as_gray_layers(g2, fake_engine):
    image, layer = make_image(g2, 100, 80, base=1)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 20, 20)
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    assert image.layers[0].type in (2, 3) and image.layers[0].mask is not None


def test_selection_partly_off_canvas_layer(g2, fake_engine):
    image, layer = make_image(g2, 100, 80, layer_box=(-50, -30, 200, 160))
    before = image.composite()
    g2.pdb.gimp_image_select_rectangle(image, 2, -10, -10, 40, 40)  # clipped to the canvas: 0,0 30x30
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args(context_padding=0.5))
    top = image.layers[0]
    assert top.offsets == (-15, -15)
    sel = image.selection.pixels[..., 0]
    np.testing.assert_array_equal(image.composite()[sel == 0], before[sel == 0])


def test_no_selection_non_interactive_is_a_clear_error(g2, fake_engine):
    image, layer = make_image(g2)
    with pytest.raises(RuntimeError) as info:
        g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    assert "There is no selection" in str(info.value) and "Traceback" not in str(info.value)
    assert g2.gimp.state.messages and "whole_layer" in g2.gimp.state.messages[-1]
    assert len(image.layers) == 1 and image.undo_depth == 0 and image.undo_steps == []
    assert g2.gimp.state.context_depth == 0
    assert fake_engine() == []  # nothing was sent


def test_no_selection_interactive_offers_the_whole_layer_before_the_dialog(g2, fake_engine):
    image, layer = make_image(g2, 60, 40)
    events = []
    g2.plugin.ASK = lambda q: events.append(("asked", q)) or True

    def dialog(name, values):
        events.append(("dialog", values[-1]))  # whole_layer, as the dialog shows it
        return values[:2] + edit_args("sky")[:-1] + [values[-1]]

    g2.gimpfu.DIALOG = dialog
    g2.pdb.python_fu_openai_edit_selection(image, layer, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    # asked first, then the dialog opens with the answer ticked; the run does not ask again
    assert [e[0] for e in events] == ["asked", "dialog"] and "whole layer" in events[0][1] and events[1][1] is True
    assert image.layers[0].offsets == (0, 0) and image.layers[0].width == 60
    image2, layer2 = make_image(g2, 60, 40)
    g2.gimpfu._set_defaults("python-fu-openai-edit-selection", [None, None] + edit_args("sky"))  # whole_layer off
    events[:] = []
    g2.plugin.ASK = lambda q: events.append(("asked", q)) and False
    g2.pdb.python_fu_openai_edit_selection(image2, layer2, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert [e[0] for e in events] == ["asked"]  # "no": no dialog to fill in for nothing
    assert "Nothing was changed" in g2.gimp.state.messages[-1] and len(image2.layers) == 1


def test_a_channel_is_refused_before_the_dialog_opens(g2, fake_engine):
    image, layer = make_image(g2)
    channel = g2.gimp.Channel(image, "spot", 200, 150)
    opened = []
    g2.gimpfu.DIALOG = lambda name, values: opened.append(name) or values
    g2.pdb.python_fu_openai_edit_selection(image, channel, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert opened == [] and "channel, not a layer" in g2.gimp.state.messages[-1]
    assert fake_engine() == []


def test_a_failed_run_keeps_the_typed_prompt_for_the_next_dialog(g2, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "img-1")
    image, layer = make_image(g2)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 20, 20)
    g2.gimpfu.DIALOG = lambda name, values: values[:2] + edit_args("a lighthouse at dusk")
    g2.pdb.python_fu_openai_edit_selection(image, layer, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert "The server failed (500)" in g2.gimp.state.messages[-1]
    opened = []
    g2.gimpfu.DIALOG = lambda name, values: opened.append(list(values)) or values
    monkeypatch.delenv("FAKE_ENGINE_FAIL")
    g2.pdb.python_fu_openai_edit_selection(image, layer, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert opened[0][2] == "a lighthouse at dusk"
    assert image.layers[0].name == "OpenAI: a lighthouse at dusk (1/1)"


def test_indexed_and_group_are_refused_clearly(g2, fake_engine):
    image, layer = make_image(g2, base=2)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 20, 20)
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    assert "indexed" in g2.gimp.state.messages[-1] and "Image > Mode > RGB" in g2.gimp.state.messages[-1]
    image, layer = make_image(g2)
    group = g2.pdb.gimp_layer_group_new(image)
    image.insert_layer(group)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 20, 20)
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_edit_selection(image, group, *edit_args())
    assert "layer group" in g2.gimp.state.messages[-1]
    assert fake_engine() == []


def test_selection_outside_the_layer_is_refused(g2, fake_engine):
    image, layer = make_image(g2, 200, 150, layer_box=(0, 0, 50, 50))
    g2.pdb.gimp_image_select_rectangle(image, 2, 100, 100, 20, 20)
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    assert "does not touch" in g2.gimp.state.messages[-1]


def test_engine_failure_names_saved_files_and_never_the_key(g2, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "img-1")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    image, layer = make_image(g2)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 20, 20)
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    text = g2.gimp.state.messages[-1]
    assert "The server failed (500)" in text and "Try again in a minute." in text and "img-1-paid.png" in text
    assert FAKE_KEY not in text and len(image.layers) == 1 and image.undo_depth == 0
    assert fake_engine()[-1]["key"] == FAKE_KEY  # the engine got it, through the environment only
    assert all(FAKE_KEY not in json.dumps(c["argv"]) for c in fake_engine())


def test_engine_crash_is_a_message_not_a_traceback(g2, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_CRASH", "1")
    image, layer = make_image(g2)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 20, 20)
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
    assert "stopped without an answer" in g2.gimp.state.messages[-1]
    assert "gimp-openai doctor" in g2.gimp.state.messages[-1]


def test_variations_cover_the_selection_box_with_selection_mask(g2, fake_engine):
    image, layer = make_image(g2)
    g2.pdb.gimp_image_select_ellipse(image, 2, 50, 50, 40, 40)
    model, n, vprompt, quality, size_mode, add_mask, whole = "", 2, "vary", "auto", "auto", True, True
    g2.pdb.python_fu_openai_variations(image, layer, model, n, vprompt, quality, size_mode, add_mask, whole)
    group = image.layers[0]
    assert [layer.name for layer in group.layers] == ["OpenAI: variation [variation by edit] (1/2)",
                                              "OpenAI: variation [variation by edit] (2/2)"]
    first = group.layers[0]
    sel = image.selection.pixels[..., 0]
    x, y = first.offsets
    np.testing.assert_array_equal(first.mask.pixels[..., 0], sel[y:y + first.height, x:x + first.width])
    assert len(plugin_steps(image)) == 1


def test_generate_into_layers_and_into_a_new_image(g2, fake_engine):
    image, layer = make_image(g2, 100, 100)
    g2.pdb.python_fu_openai_generate(image, layer, "a lighthouse", "", 1, "auto", "auto", "auto", 0, "layers")
    top = image.layers[0]
    # the engine was asked for the canvas's shape and the layer covers the canvas
    assert top.name == "OpenAI: a lighthouse (1/1)" and top.offsets == (0, 0) and len(plugin_steps(image)) == 1
    assert (top.width, top.height) == (100, 100)
    count = len(g2.gimp.image_list())
    g2.pdb.python_fu_openai_generate(image, layer, "a lighthouse", "", 2, "auto", "auto", "auto", 0, "new image")
    new = g2.gimp.image_list()[-1]
    assert len(g2.gimp.image_list()) == count + 1 and (new.width, new.height) == (64, 48)
    assert new.layers[0].is_group and len(new.layers[0].layers) == 2
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_generate(image, layer, "  ", "", 1, "auto", "auto", "auto", 0, "layers")
    assert "prompt is empty" in g2.gimp.state.messages[-1]


def batch_args(**kw):
    values = dict(batch_operation="edit", prompt="snow", model="", n=1, quality="auto", size_mode="auto",
                  feather=0.0, context_padding=0.25, add_mask=True, align=True, tone_match=True, blend="feather",
                  no_selection="whole layer", variation_prompt="v", concurrency=4)
    values.update(kw)
    return [values[p["name"]] for p in next(q for q in MANIFEST["procedures"] if q["operation"] == "batch")["params"]]


def test_batch_one_failure_leaves_the_others_done(g2, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "img-2")
    images = [make_image(g2, 80, 60, name=f"{n}.png", seed=i)[0] for i, n in enumerate(["a", "b", "c", "d"])]
    g2.pdb.gimp_image_select_rectangle(images[0], 2, 5, 5, 20, 20)
    g2.pdb.gimp_image_select_rectangle(images[1], 2, 5, 5, 20, 20)
    images[3].base_type = 2  # an indexed one: refused, the rest go on
    images[3].layers[0].type = 4
    images[3].colormap = bytes(range(256)) * 3
    g2.pdb.python_fu_openai_batch(*batch_args())
    text = g2.gimp.state.messages[-1]
    assert "2 of 3 images done" in text
    assert "a.png" in text and "b.png" in text and "The server failed (500) for img-2" in text
    assert "d.png" in text and "indexed" in text
    assert len(images[0].layers) == 2 and len(images[1].layers) == 1 and len(images[2].layers) == 2
    assert images[2].layers[0].width == 80  # c had no selection: whole layer
    for img in images:
        assert img.undo_depth == 0 and len(plugin_steps(img)) <= 1
    assert sum(1 for c in fake_engine() if c["argv"][3] == "job") == 1  # one job for all


def test_batch_skip_images_without_selection(g2, fake_engine):
    a, _ = make_image(g2, 50, 50, name="a.png")
    b, _ = make_image(g2, 50, 50, name="b.png")
    g2.pdb.gimp_image_select_rectangle(a, 2, 5, 5, 20, 20)
    g2.pdb.python_fu_openai_batch(*batch_args(no_selection="skip"))
    assert "1 of 1 images done" in g2.gimp.state.messages[-1] and "skipped" in g2.gimp.state.messages[-1]
    assert len(b.layers) == 1


def test_batch_engine_dies_mid_batch(g2, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_CRASH", "1")
    a, _ = make_image(g2, 50, 50, name="a.png")
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_batch(*batch_args())
    assert "stopped without an answer" in g2.gimp.state.messages[-1]
    assert len(a.layers) == 1 and a.undo_depth == 0


def test_settings_key_via_hidden_field_never_in_shelf_or_argv(g2, fake_engine):
    g2.plugin.ASK_SECRET = lambda q: FAKE_KEY
    opened_with = []

    def dialog(name, values):
        opened_with.append(list(values))
        return ["http://127.0.0.1:9/v1", "gpt-image-2", "", True, True, 2.5]

    g2.shelf["python-fu-save--python-fu-openai-settings"] = ["http://old.example/v1", "", "/typed", True, False, 9.0]
    g2.gimpfu.DIALOG = dialog
    g2.pdb.python_fu_openai_settings(run_mode=g2.gimpfu.RUN_INTERACTIVE)
    # the dialog opened with what is saved (OpenAI's server as an empty field), not the last typed values,
    # and with the key option off
    assert opened_with == [["", "gpt-image-2", "/saved/history", False, False, 3.0]]
    text = g2.gimp.state.messages[-1]
    assert "API key stored in the system keyring." in text
    assert "Connected to http://127.0.0.1:9/v1. Image models offered: gpt-image-2, dall-e-2 (retires 2026-12-01)" \
        in text
    calls = fake_engine()
    key_call = [c for c in calls if c["argv"][3:6] == ["--json", "key", "set"]][0]
    assert key_call["stdin"] == FAKE_KEY
    settings_call = [c for c in calls if c["argv"][3:5] == ["config", "set"]][0]
    # every field as the dialog showed it: the emptied history folder means the default one
    assert settings_call["argv"][5:] == ["base_url=http://127.0.0.1:9/v1", "default_model=gpt-image-2",
                                         "history_dir=", "max_cost=2.5"]
    assert "ask first above $2.50" in text
    assert settings_call["key"] is None and not any(c["argv"][1] == "-c" for c in calls)
    assert all(FAKE_KEY not in json.dumps(c["argv"]) for c in calls)
    assert FAKE_KEY not in repr(dict(g2.shelf)) and FAKE_KEY not in text
    g2.plugin.ASK_SECRET = None


def test_the_cost_limit_is_a_plain_number_entry_and_checked(g2, fake_engine):
    """GIMP 2.10's cost limit: a slider from 0 to 100,000 in steps of 0.05 cannot be set to $2.50 by hand, so
    it is a number entry (PF_FLOAT) with the manifest's label; the small float ranges stay sliders. What the
    entry takes that is not a limit (negative, too large, not a number) is refused in one message, unsaved."""
    gf = g2.gimpfu
    settings = {p[1]: p for p in gf._registered_plugins_["python-fu-openai-settings"][8]}
    assert settings["max_cost"][0] == gf.PF_FLOAT and settings["max_cost"][2] == "_Ask first above this cost (US$)"
    edit = {p[1]: p for p in gf._registered_plugins_["python-fu-openai-edit-selection"][8]}
    assert edit["feather"][0] == edit["context_padding"][0] == gf.PF_SLIDER
    for typed, shown in ((-5.0, "-5.0"), (1e9, "1000000000.0"), (float("nan"), "nan"), (float("inf"), "inf")):
        g2.gimpfu.DIALOG = lambda name, values, typed=typed: ["", "", "", False, False, typed]
        g2.pdb.python_fu_openai_settings(run_mode=g2.gimpfu.RUN_INTERACTIVE)  # said in a message, not raised
        assert g2.gimp.state.messages[-1] == (f"The cost limit {shown} is not allowed: it must be a number from 0 "
                                              "to 100,000.\n\nWhat to do: Type a number of dollars, such as 1.50.")
    assert not [c for c in fake_engine() if c["argv"][3:5] == ["config", "set"]]  # nothing was saved
    g2.gimpfu.DIALOG = lambda name, values: ["", "", "", False, False, 2.5]
    g2.pdb.python_fu_openai_settings(run_mode=g2.gimpfu.RUN_INTERACTIVE)
    (saved,) = [c for c in fake_engine() if c["argv"][3:5] == ["config", "set"]]
    assert "max_cost=2.5" in saved["argv"] and "ask first above $2.50" in g2.gimp.state.messages[-1]
    with pytest.raises(RuntimeError):  # a script's value is checked the same way
        g2.pdb.python_fu_openai_settings("", "", "", False, False, -1.0)
    assert "The cost limit -1.0 is not allowed" in g2.gimp.state.messages[-1]


def test_settings_key_refused_non_interactively(g2, fake_engine):
    with pytest.raises(RuntimeError):
        g2.pdb.python_fu_openai_settings("", "", "", True, False, 1.0)
    assert "only be entered interactively" in g2.gimp.state.messages[-1]


def test_live_preview_shows_each_partial_composited_like_the_result_and_never_as_an_undo_step(g2, fake_engine):
    image, layer = make_image(g2, 200, 150, layer_box=(-20, 10, 240, 120))
    before = image.composite()
    g2.pdb.gimp_image_select_ellipse(image, 2, 60, 40, 50, 40)
    sel = image.selection.pixels[..., 0]
    image.undo_steps, image.dirty = [], False  # as opened from disk: a clean image with a selection
    seen = []
    real = g2.plugin.show_preview

    def watched(img, above, spec, shown=None):
        preview = real(img, above, spec, shown)
        seen.append({"names": [la.name for la in img.layers], "layer": preview, "offsets": preview.offsets,
                     "composite": img.composite(), "steps": len(img.undo_steps), "dirty": img.dirty,
                     "frozen": img.undo_frozen, "active": img.active_layer, "parasite":
                     json.loads(preview.parasite_find("gimp-openai-preview").data)})
        return preview
    g2.plugin.show_preview = watched
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args(n=1, partial_images=3))
    assert len(seen) == 3
    for j, s in enumerate(seen, 1):
        assert s["names"] == ["OpenAI preview (not a result)", "Background"]
        assert s["layer"] is seen[0]["layer"]  # replaced in place: the same layer, newer pixels
        assert s["parasite"]["preview"] is True and s["active"] is layer
        # nothing recorded, nothing dirtied, undo thawed again
        assert s["steps"] == 0 and not s["dirty"] and s["frozen"] == 0
        np.testing.assert_array_equal(s["composite"][sel == 0], before[sel == 0])  # masked like the result
        assert (s["composite"][sel == 255][:, :3] == j * 60).all()
    top = image.layers[0]
    assert top.name == "OpenAI: a red kite (1/1)" and top.offsets == seen[0]["offsets"]
    assert [la.name for la in image.layers] == [top.name, "Background"]  # the preview is gone
    assert len(plugin_steps(image)) == 1 and image.undo_frozen == 0 and g2.gimp.state.messages == []


def test_a_failed_run_removes_its_preview_and_the_next_run_removes_a_killed_run_s(g2, fake_engine, monkeypatch):
    image, layer = make_image(g2, 200, 150)
    g2.pdb.gimp_image_select_rectangle(image, 2, 60, 40, 50, 40)
    image.undo_steps, image.dirty = [], False
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "img-1")
    shown = []
    real = g2.plugin.show_preview
    monkeypatch.setattr(g2.plugin, "show_preview", lambda *a: shown.append(real(*a)) or shown[-1])
    with pytest.raises(RuntimeError, match="server failed"):  # a script's call fails like any PDB call
        g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args(partial_images=2))
    assert [la.name for la in image.layers] == ["Background"] and not image.dirty and image.undo_steps == []
    assert len(shown) == 2 and "server failed" in g2.gimp.state.messages[-1]
    # a run GIMP killed left its preview behind (saved with the image, even): the next run removes it
    monkeypatch.delenv("FAKE_ENGINE_FAIL")
    stale = g2.gimp.Layer(image, "OpenAI preview (not a result)", 20, 20, 1)
    image.insert_layer(stale)
    stale.attach_new_parasite("gimp-openai-preview", 1, "{}")
    image.undo_steps = []
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args(partial_images=0))
    assert [la.name for la in image.layers] == ["OpenAI: a red kite (1/1)", "Background"]
    assert len(plugin_steps(image)) == 1
