"""Expand Canvas… in the real GUI GIMP 3.0 and 3.2 under Xvfb: the dialog opens with its defaults (screenshots
in /tmp/gimp-openai-dialogs, for people to judge) and shows what the run should cost, as the other dialogs do
(the engine's estimate of the plan's tiles); OK with them grows the canvas by 256 px on every side and adds one
masked layer over the new area."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_cost_dialogs import _labels, _wait_label
from tests.gimp3.test_dialogs import IMAGE
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]


def test_expand_canvas_dialog(gimp, local_server):
    require_gui(gimp)
    timings = gimp.work / f"expand-timings-{gimp.version}.jsonl"
    timings.unlink(missing_ok=True)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_HOST_TIMINGS": gimp.inside(timings)}
    code = IMAGE + r'''
img, lay = make_image()
Gimp.Selection.none(img)
mark("dialog", {"image": img.get_id()})
res = run_proc("python-fu-openai-expand-canvas", Gimp.RunMode.INTERACTIVE, img, [lay], model="gpt-image-2")
res["canvas"] = [img.get_width(), img.get_height()]
mark("done", res)
Gimp.displays_flush()
wait_flag("shot-result")
'''
    with GuiGimp(gimp, code, env=env, timeout=240, name="expand") as ui:
        image = json.loads(ui.wait_mark("dialog", timeout=90))["image"]
        wid = ui.wait_window(r"^Expand Canvas$", timeout=60)
        # the estimate label: the engine's plan for these values (256 px on every side of 200x150: one tile)
        label = _wait_label(ui, timings, lambda t: t.startswith("Estimated cost: about $"))
        ui.screenshot("1-dialog", window=wid)
        ui.focus(wid)
        ui.key("alt+n")  # the amount per side: 2000 px needs several tiles, and the label follows
        ui.key("ctrl+a")
        ui.type("2000")
        ui.key("Tab")
        many = _wait_label(ui, timings, lambda t: "requests (tiles of the new area)" in t)
        ui.screenshot("1b-dialog-2000px", window=wid)
        ui.key("alt+n")
        ui.key("ctrl+a")
        ui.type("256")
        ui.key("Tab")
        deadline = time.monotonic() + 60
        while _labels(timings)[-1] != label and time.monotonic() < deadline:  # back to one request
            time.sleep(0.2)
        assert _labels(timings)[-1] == label, _labels(timings)
        ui.focus(wid)
        ui.key("alt+a")  # the Advanced expander
        ui.screenshot("2-dialog-advanced", window=wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        res = json.loads(ui.wait_mark("done", timeout=180))
        ui.screenshot("3-result", required=False)
        ui.flag("shot-result")
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert label.startswith("Estimated cost: about $0.") and "for 1 request of 880x816" in label, label
    assert "gpt-image-2, automatic quality" in label and "\nUp to $" in label, label
    tiles = int(many.split(" for ")[1].split()[0])
    assert tiles > 1 and float(many.split("about $")[1].split()[0]) > 2 * float(label.split("about $")[1].split()[0])
    assert res["status"] == "success", res
    assert res["canvas"] == [200 + 512, 150 + 512]
    layers = res["images"][str(image)]
    assert layers[0]["name"] == "OpenAI: expanded canvas" and layers[0]["mask"], layers
    assert layers[1]["name"] == "photo" and (layers[1]["x"], layers[1]["y"]) == (30 + 256, 20 + 256), layers
