"""The dialogs artists use, in the real GUI GIMP 3.0 and 3.2 under Xvfb, driven from outside GIMP with xdotool.

A batch script inside GIMP builds an image (a layer at an offset, an ellipse selected) and calls the Edit
Selection procedure with ``Gimp.RunMode.INTERACTIVE``, so the plug-in's ``GimpUi.ProcedureDialog`` opens; the
test finds it by title, checks its defaults through screenshots (kept in /tmp/gimp-openai-dialogs), types a
prompt and presses OK; the script then reports the inserted layers, and a second call with
``RunMode.WITH_LAST_VALS`` reuses the typed prompt without a dialog. The shut-down model dialog is answered
the same way. The API key is only in GIMP's environment, never in argv, logs or screenshots.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import FAKE_KEY
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]

DIALOG = r"^Edit Selection$"

# A 200x150 image whose one layer (160x120, a colour ramp) sits at offset (30, 20), an ellipse selected,
# shown in a display (the GUI GIMP has one); layers described after each call.
IMAGE = r'''
import gi
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gegl, GLib
Gegl.init(None)
pdb = Gimp.get_pdb()

def make_image():
    img = Gimp.Image.new(200, 150, Gimp.ImageBaseType.RGB)
    lay = Gimp.Layer.new(img, "photo", 160, 120, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
    img.insert_layer(lay, None, 0)
    lay.set_offsets(30, 20)
    px = bytearray(160 * 120 * 4)
    for y in range(120):
        for x in range(160):
            i = (y * 160 + x) * 4
            px[i:i + 4] = bytes(((x * 3) % 256, (y * 2) % 256, (x + y) % 256, 255))
    buf = lay.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, 160, 120), "R'G'B'A u8", bytes(px))
    buf.flush()
    img.select_ellipse(Gimp.ChannelOps.REPLACE, 60, 50, 80, 60)
    img.clean_all()
    Gimp.Display.new(img)
    Gimp.displays_flush()
    return img, lay

def layers(img):
    res = []
    for l in img.get_layers():
        ok, x, y = l.get_offsets()
        d = {"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height()}
        m = l.get_mask()
        if m is not None:
            w, h = l.get_width(), l.get_height()
            data = m.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
            d["mask"] = {"centre": data[(h // 2) * w + w // 2], "corner": data[0]}
        p = l.get_parasite("gimp-openai")
        if p is not None:
            d["parasite"] = json.loads(bytes(p.get_data()).decode("utf-8"))
        res.append(d)
    return res

def call(img, lay, mode, **args):
    proc = pdb.lookup_procedure("python-fu-openai-edit-selection")
    config = proc.create_config()
    config.set_property("run-mode", mode)
    config.set_property("image", img)
    config.set_core_object_array("drawables", [lay])
    for k, v in args.items():
        config.set_property(k.replace("_", "-"), v)
    result = proc.run(config)
    return {"status": result.index(0).value_nick,
            "error": result.index(1) if result.length() > 1 else None, "layers": layers(img)}

def tree(img):
    """Every layer's name, size and offsets, depth first (layer groups' children after the group)."""
    res = []
    def walk(items, depth):
        for l in items:
            ok, x, y = l.get_offsets()
            res.append({"name": l.get_name(), "depth": depth, "x": x, "y": y, "w": l.get_width(),
                        "h": l.get_height(), "mask": l.get_mask() is not None})
            if l.is_group():
                walk(l.get_children(), depth + 1)
    walk(img.get_layers(), 0)
    return res

def run_proc(name, mode, img=None, drawables=None, **args):
    """Any of the plug-in's procedures (image ones get image + drawables); status, error and every image's tree."""
    proc = pdb.lookup_procedure(name)
    config = proc.create_config()
    config.set_property("run-mode", mode)
    if img is not None:
        config.set_property("image", img)
        config.set_core_object_array("drawables", list(drawables or []))
    for k, v in args.items():
        config.set_property(k.replace("_", "-"), v)
    result = proc.run(config)
    return {"status": result.index(0).value_nick,
            "error": result.index(1) if result.length() > 1 else None,
            "images": {str(i.get_id()): tree(i) for i in Gimp.get_images()}}
'''


def _json(text: str) -> dict:
    return json.loads(text) if text else {}


def _names(res: dict) -> list[str]:
    return [d["name"] for d in res["layers"]]


def test_edit_selection_dialog_then_last_values(gimp, local_server):
    require_gui(gimp)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    code = IMAGE + r'''
img, lay = make_image()
mark("dialog")
res = call(img, lay, Gimp.RunMode.INTERACTIVE)
mark("interactive", res)
Gimp.displays_flush()
wait_flag("shot-result")
img2, lay2 = make_image()
res2 = call(img2, lay2, Gimp.RunMode.WITH_LAST_VALS)
mark("last", res2)
'''
    with GuiGimp(gimp, code, env=env, timeout=240, name="edit") as ui:
        ui.wait_mark("dialog", timeout=90)
        wid = ui.wait_window(DIALOG, timeout=60)
        geo = ui.geometry(wid)
        ui.screenshot("1-dialog-defaults", window=wid)
        ui.focus(wid)
        ui.key("ctrl+a")  # GIMP fills the last values (kept across sessions): replace them
        ui.type("a red kite")
        ui.screenshot("2-dialog-typed", window=wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        res = _json(ui.wait_mark("interactive", timeout=120))
        ui.screenshot("3-result")
        ui.flag("shot-result")
        last = _json(ui.wait_mark("last", timeout=120))
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything
    assert "Traceback" not in everything, everything[-4000:]
    assert res["status"] == "success", res
    top = res["layers"]
    assert _names(res) == ["OpenAI: a red kite (1/1)", "photo"], top
    d = top[0]
    # inside the layer (30,20 160x120), covering the ellipse (60,50 80x60), with a mask from the selection
    assert 30 <= d["x"] <= 60 and 20 <= d["y"] <= 50, d
    assert d["x"] + d["w"] >= 140 and d["y"] + d["h"] >= 110, d
    assert d["mask"]["centre"] == 255 and d["mask"]["corner"] == 0, d
    assert d["parasite"]["prompt"] == "a red kite", d
    assert geo["WIDTH"] >= 400 and geo["HEIGHT"] >= 300, geo
    # WITH_LAST_VALS: the typed prompt again, no dialog
    assert last["status"] == "success", last
    assert _names(last) == ["OpenAI: a red kite (1/1)", "photo"], last


def test_shut_down_model_switch_dialog(gimp, start_local_server):
    """Model typed by hand is shut down: the host asks (yes/no dialog), the answer 'Use <replacement>' reruns
    the job with the replacement and saves it as the default model."""
    require_gui(gimp)
    server = start_local_server("--shutdown", "gpt-image-1.5=2026-11-01")
    config_dir = f"/gimp-openai-work/config-switch-{gimp.version}"
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY, "GIMP_OPENAI_CONFIG_DIR": config_dir}
    engine = ["/gimp-openai-work/venv/bin/python", "-m", "gimp_openai"]
    gimp.run([*engine, "config", "set", "default_model=gpt-image-1.5"], env=env).check()
    # the models the Settings connection test listed last time: the model field completes them
    cache = gimp.user_dir / "gimp-openai-models.json"
    cache.write_text(json.dumps({"models": ["gpt-image-2", "gpt-image-1.5"]}), encoding="utf-8")
    code = IMAGE + r'''
img, lay = make_image()
mark("dialog")
res = call(img, lay, Gimp.RunMode.INTERACTIVE)
mark("done", res)
'''
    try:
        with GuiGimp(gimp, code, env=env, timeout=240, name="switch") as ui:
            ui.wait_mark("dialog", timeout=90)
            wid = ui.wait_window(DIALOG, timeout=60)
            ui.focus(wid)
            ui.key("ctrl+a")  # the last values (kept across sessions) are filled in: replace them
            ui.type("a blue heron")
            ui.key("ctrl+Tab")  # out of the prompt (Tab would insert a tab) into the model field
            ui.key("ctrl+a")
            ui.type("gpt-image-1.5")
            ui.screenshot("1-dialog-model-typed", window=wid)
            ui.key("Return")  # takes the completion and closes its popup (which holds the keyboard)
            ui.focus(wid)
            ui.key("alt+o")
            ask = ui.wait_window(r"^OpenAI: model shut down$", timeout=90)
            ui.screenshot("2-switch-question", window=ask)
            ui.focus(ask)
            ui.key("alt+u")  # "_Use <replacement>"
            res = _json(ui.wait_mark("done", timeout=120))
            ui.screenshot("3-result", required=False)  # GIMP may already be quitting
            run = ui.wait(60)
    finally:
        cache.unlink(missing_ok=True)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert res["status"] == "success", res
    assert _names(res) == ["OpenAI: a blue heron (1/1)", "photo"], res
    used = res["layers"][0]["parasite"]["model"]
    assert used and used != "gpt-image-1.5", res
    shown = gimp.run([*engine, "config", "show", "--json"], env=env).check()
    assert json.loads(shown.stdout)["settings"]["default_model"] == used, shown.stdout


VARIATION = re.compile(r"^OpenAI: variation \[variation by edit\] \((\d+)/(\d+)\)$")


def test_variations_dialog(gimp, local_server):
    """Variations…: a selection and an automatic (GPT) model, so the edit path runs; one layer per variation,
    named for the path, over the selection's bounding box."""
    require_gui(gimp)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    code = IMAGE + r'''
img, lay = make_image()
mark("dialog", {"image": img.get_id()})
res = run_proc("python-fu-openai-variations", Gimp.RunMode.INTERACTIVE, img, [lay])
mark("done", res)
Gimp.displays_flush()
wait_flag("shot-result")
'''
    with GuiGimp(gimp, code, env=env, timeout=180, name="variations") as ui:
        image = _json(ui.wait_mark("dialog", timeout=90))["image"]
        wid = ui.wait_window(r"^Variations$", timeout=60)
        geo = ui.geometry(wid)
        ui.screenshot("1-dialog", window=wid)
        ui.focus(wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        res = _json(ui.wait_mark("done", timeout=120))
        ui.screenshot("2-result", required=False)  # GIMP may already be quitting
        ui.flag("shot-result")
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert res["status"] == "success", res
    layers = res["images"][str(image)]
    found = [VARIATION.match(d["name"]) for d in layers]
    made = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    n = made[0][1] if made else 0
    assert n >= 1 and made == [(k, n) for k in range(1, n + 1)], layers
    assert layers[-1]["name"] == "photo", layers
    for d, m in zip(layers, found):
        if m:  # over the selection's bounding box (60,50 80x60) with context, inside the layer (30,20 160x120)
            assert 30 <= d["x"] <= 60 and 20 <= d["y"] <= 50, d
            assert 140 <= d["x"] + d["w"] <= 190 and 110 <= d["y"] + d["h"] <= 140, d
    assert geo["WIDTH"] >= 400, geo


def test_generate_dialog(gimp, local_server):
    """Generate…: a prompt typed into the dialog; the result is a layer above the active one, centred."""
    require_gui(gimp)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    code = IMAGE + r'''
img, lay = make_image()
mark("dialog", {"image": img.get_id()})
res = run_proc("python-fu-openai-generate", Gimp.RunMode.INTERACTIVE, img, [lay])
mark("done", res)
Gimp.displays_flush()
wait_flag("shot-result")
'''
    with GuiGimp(gimp, code, env=env, timeout=180, name="generate") as ui:
        image = _json(ui.wait_mark("dialog", timeout=90))["image"]
        wid = ui.wait_window(r"^Generate$", timeout=60)
        ui.focus(wid)
        ui.key("ctrl+a")  # last values are filled in: replace them
        ui.type("a lighthouse at dusk")
        ui.screenshot("1-dialog-typed", window=wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        res = _json(ui.wait_mark("done", timeout=120))
        ui.screenshot("2-result", required=False)  # GIMP may already be quitting
        ui.flag("shot-result")
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert res["status"] == "success", res
    layers = res["images"][str(image)]
    names = [d["name"] for d in layers if d["depth"] == 0]
    assert names[-1] == "photo" and len(names) == 2, layers
    assert names[0].startswith("OpenAI: a lighthouse at dusk"), layers
    top = layers[0]
    if top["depth"] == 0 and not layers[0]["name"].endswith("results)"):
        # centred in the 200x150 image
        assert top["x"] == (200 - top["w"]) // 2 and top["y"] == (150 - top["h"]) // 2, top


BATCH_CODE = IMAGE + r'''
a, la = make_image()
b, lb = make_image()
b.select_rectangle(Gimp.ChannelOps.REPLACE, 40, 30, 60, 50)
mark("dialog", {"images": [a.get_id(), b.get_id()]})
res = run_proc("python-fu-openai-batch", Gimp.RunMode.INTERACTIVE)
mark("done", res)
Gimp.displays_flush()
wait_flag("shot-result")
'''


def _batch_layers(res: dict, images: list[int], prompt: str) -> None:
    assert res["status"] == "success", res
    for image in images:
        layers = res["images"][str(image)]
        top = [d["name"] for d in layers if d["depth"] == 0]
        assert top[-1] == "photo" and len(top) == 2, layers
        assert top[0].startswith(f"OpenAI: {prompt}"), layers


def _send_batch(ui, timeout: float = 90) -> None:
    """An interactive batch asks first what it will cost: the artist sends it."""
    cost = ui.wait_window(r"^OpenAI: batch cost$", timeout=timeout)
    ui.screenshot("1b-cost-question", window=cost)
    ui.focus(cost)
    ui.key("alt+s")
    ui.wait_window_gone(cost)


def test_batch_dialog_two_images(gimp, local_server):
    """Batch over Open Images…: two open images, each with its own selection; one OK edits both."""
    require_gui(gimp)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    with GuiGimp(gimp, BATCH_CODE, env=env, timeout=180, name="batch") as ui:
        images = _json(ui.wait_mark("dialog", timeout=90))["images"]
        wid = ui.wait_window(r"^Batch over Open Images$", timeout=60)
        ui.focus(wid)
        ui.key("ctrl+a")  # the prompt (focused): last values are filled in, replace them
        ui.type("a golden fox")
        ui.screenshot("1-dialog-typed", window=wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        _send_batch(ui)
        res = _json(ui.wait_mark("done", timeout=120))
        ui.screenshot("2-result", required=False)  # GIMP may already be quitting
        ui.flag("shot-result")
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    _batch_layers(res, images, "a golden fox")


def test_batch_shut_down_model_asks_once(gimp, start_local_server):
    """A batch whose typed model was shut down: the switch question comes ONCE for the whole batch, and
    'Use <replacement>' reruns every image with the replacement (a second question would block the run)."""
    require_gui(gimp)
    server = start_local_server("--shutdown", "gpt-image-1.5=2026-11-01")
    config_dir = f"/gimp-openai-work/config-batch-switch-{gimp.version}"
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY, "GIMP_OPENAI_CONFIG_DIR": config_dir}
    cache = gimp.user_dir / "gimp-openai-models.json"
    cache.write_text(json.dumps({"models": ["gpt-image-2", "gpt-image-1.5"]}), encoding="utf-8")
    try:
        with GuiGimp(gimp, BATCH_CODE, env=env, timeout=240, name="batch-switch") as ui:
            images = _json(ui.wait_mark("dialog", timeout=90))["images"]
            wid = ui.wait_window(r"^Batch over Open Images$", timeout=60)
            ui.focus(wid)
            ui.key("ctrl+a")
            ui.type("a silver owl")
            ui.key("ctrl+Tab")  # out of the prompt into the model field
            ui.key("ctrl+a")
            ui.type("gpt-image-1.5")
            ui.screenshot("1-dialog-model-typed", window=wid)
            ui.key("Return")  # takes the completion and closes its popup
            ui.focus(wid)
            ui.key("alt+o")
            _send_batch(ui)
            ask = ui.wait_window(r"^OpenAI: model shut down$", timeout=90)
            ui.screenshot("2-switch-question", window=ask)
            ui.focus(ask)
            ui.key("alt+u")
            ui.wait_window_gone(ask)
            try:  # the replacement's estimate is higher: the batch asks its price again, once
                _send_batch(ui, timeout=15)
            except AssertionError:
                pass
            res = _json(ui.wait_mark("done", timeout=90))  # a second question would hold the run here
            ui.screenshot("3-result", required=False)  # GIMP may already be quitting
            ui.flag("shot-result")
            run = ui.wait(60)
    finally:
        cache.unlink(missing_ok=True)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    _batch_layers(res, images, "a silver owl")
    engine = ["/gimp-openai-work/venv/bin/python", "-m", "gimp_openai"]
    shown = gimp.run([*engine, "config", "show", "--json"], env=env).check()
    used = json.loads(shown.stdout)["settings"]["default_model"]
    assert used and used != "gpt-image-1.5", shown.stdout


#: The menu's first entries, whose dialogs this test looks at (tests/gimp3/test_menu.py runs every entry, the
#: result pickers and Settings too, in en_US, and checks the whole order).
MENU_ORDER = ["Edit Selection", "Variations", "Generate", "Expand Canvas", "Batch over Open Images"]
LAYOUT_CODE = IMAGE + r'''
img, lay = make_image()
mark("menu", {"image": img.get_id()})
wait_flag("menu-done", timeout=300)
res = call(img, lay, Gimp.RunMode.INTERACTIVE)
mark("done", res)
'''


def _timings(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _open_openai_menu(ui: GuiGimp, image_window: str, down: int) -> None:
    """Filters (Alt+R) > the last entry, OpenAI (End), opened (Right), then ``down`` entries further."""
    ui.focus(image_window)
    ui.key("Escape", "alt+r")
    ui.key("End", "Right")
    for _ in range(down):
        ui.key("Down")


def test_dialog_layout_mnemonics_model_list_and_menu(gimp, start_local_server):
    """What an artist sees, read from the real GUI: Filters > OpenAI lists the actions in order, then
    Settings; Edit Selection opens with the prompt focused, four basic fields and the rest inside a collapsed
    Advanced expander; GIMP reports no field without a mnemonic; the model field offers the server's models
    with the retiring one's date. Screenshots of the menu and the dialog (collapsed, expanded, the model list)
    are kept in /tmp/gimp-openai-dialogs for people to look at."""
    require_gui(gimp)
    server = start_local_server("--shutdown", "gpt-image-1.5=2026-12-31")
    timings = gimp.work / f"layout-timings-{gimp.version}.jsonl"
    timings.unlink(missing_ok=True)
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_CONFIG_DIR": f"/gimp-openai-work/config-layout-{gimp.version}",
           "GIMP_OPENAI_CACHE_DIR": f"/gimp-openai-work/cache-layout-{gimp.version}",
           "GIMP_OPENAI_HOST_TIMINGS": gimp.inside(timings)}
    titles = {re.escape(t): t for t in MENU_ORDER}
    seen = []
    with GuiGimp(gimp, LAYOUT_CODE, env=env, timeout=420, name="layout") as ui:
        ui.wait_mark("menu", timeout=90)
        image_window = ui.wait_window(r"\[Untitled\].*GIMP", timeout=60)
        for k in range(len(MENU_ORDER)):
            _open_openai_menu(ui, image_window, k)
            if k == 0:
                ui.screenshot("1-menu")
            ui.key("Return")
            wid = ui.wait_window("^(" + "|".join(titles) + ")$", timeout=60)
            seen.append(ui.x("xdotool", "getwindowname", wid).stdout.strip())
            time.sleep(0.5)  # the model list may arrive and set the field's hint
            ui.screenshot(f"0-{k + 1}-{seen[-1].split()[0].lower()}", window=wid)
            ui.focus(wid)
            ui.key("Escape")  # Cancel: nothing runs
            ui.wait_window_gone(wid)
        ui.flag("menu-done")
        wid = ui.wait_window(DIALOG, timeout=60)
        collapsed = ui.geometry(wid)
        ui.screenshot("2-dialog-collapsed", window=wid)
        ui.focus(wid)
        ui.key("ctrl+a")  # the prompt has the focus: typing replaces the last values there
        ui.type("a red kite")
        ui.key("alt+m", "ctrl+a")
        ui.type("gpt")
        time.sleep(1.0)  # the engine's list arrives in the background; the popup follows the typing
        ui.key("BackSpace")
        ui.type("t")
        ui.screenshot("3-model-list")
        ui.key("Escape")  # closes the list, not the dialog
        ui.key("ctrl+a", "BackSpace")  # empty: automatic
        ui.key("alt+a")  # the Advanced expander
        time.sleep(0.5)
        expanded = ui.geometry(wid)
        ui.screenshot("4-dialog-advanced", window=wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        res = _json(ui.wait_mark("done", timeout=120))
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert "no mnemonic" not in everything and "duplicate mnemonic" not in everything, [
        line for line in everything.splitlines() if "mnemonic" in line]
    assert seen == MENU_ORDER, seen
    assert res["status"] == "success", res
    assert res["layers"][0]["parasite"]["prompt"] == "a red kite", res  # typed at once: the prompt had focus
    assert expanded["HEIGHT"] > collapsed["HEIGHT"] + 150, (collapsed, expanded)
    entries = _timings(timings)
    layout = next(e for e in entries if e["what"] == "dialog-layout")
    buttons = {"_Load Saved Settings", "_Save Settings"}  # GIMP's own, in the content area too
    basic = [f["label"] for f in layout["fields"] if not f["advanced"] and f["label"] not in buttons]
    advanced = [f["label"] for f in layout["fields"] if f["advanced"]]
    assert basic[:4] == ["_Prompt", "_Model (empty = automatic)", "_Number of results", "_Quality"], layout
    assert "_Advanced" in basic, layout
    assert {"_Working size", "_Blend", "Conte_xt around the selection (× its size)",
            "_Feather the mask edge (px)"} <= set(advanced), layout
    assert not any("kground" in f["label"] for f in layout["fields"]), layout  # no Background for a retouch
    assert layout["expanders"] == [False] and layout["focus"] == "TextView", layout
    keys = [f["key"] for f in layout["fields"]]
    assert None not in keys and len(set(keys)) == len(keys), layout
    rows = [e["rows"] for e in entries if e["what"] == "model-field"]
    assert any("gpt-image-2" in r and "gpt-image-1.5 \u2014 retires 2026-12-31" in r for r in rows), rows
