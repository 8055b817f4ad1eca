"""Expand Canvas… in the real GUI GIMP 3.0 and 3.2 under Xvfb: the dialog opens with its defaults (screenshots
in /tmp/gimp-openai-dialogs, for people to judge), OK with them grows the canvas by 256 px on every side and
adds one masked layer over the new area."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_dialogs import IMAGE
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]


def test_expand_canvas_dialog(gimp, local_server):
    require_gui(gimp)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
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
        ui.screenshot("1-dialog", window=wid)
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
    assert res["status"] == "success", res
    assert res["canvas"] == [200 + 512, 150 + 512]
    layers = res["images"][str(image)]
    assert layers[0]["name"] == "OpenAI: expanded canvas" and layers[0]["mask"], layers
    assert layers[1]["name"] == "photo" and (layers[1]["x"], layers[1]["y"]) == (30 + 256, 20 + 256), layers
