"""The picker (Pick Result…) and the history browser (History…) in the real GUI GIMP 3.0 and 3.2 under Xvfb:
screenshots of both (kept in /tmp/gimp-openai-dialogs), the choice made with the keyboard as an artist would
(Alt+2 picks the second result, Alt+K keeps it; Down then Alt+I inserts the second history entry)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_dialogs import IMAGE
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]


def test_pick_and_history_dialogs(gimp, local_server):
    require_gui(gimp)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    code = IMAGE + r'''
img, lay = make_image()
r = run_proc("python-fu-openai-edit-selection", Gimp.RunMode.NONINTERACTIVE, img, [lay], prompt="a red kite",
             n=3, model="gpt-image-2")
mark("edited", r)
group = img.get_layers()[0]
res = run_proc("python-fu-openai-pick-result", Gimp.RunMode.INTERACTIVE, img, [group])
mark("picked", res)
Gimp.displays_flush()
wait_flag("history")
res2 = run_proc("python-fu-openai-history", Gimp.RunMode.INTERACTIVE, img, [img.get_layers()[0]])
mark("history", res2)
'''
    with GuiGimp(gimp, code, env=env, timeout=300, name="results") as ui:
        edited = json.loads(ui.wait_mark("edited", timeout=150))
        assert edited["status"] == "success", edited
        wid = ui.wait_window(r"^Pick Result$", timeout=60)
        ui.screenshot("pick-1-results-side-by-side", window=wid)
        ui.focus(wid)
        ui.key("alt+2")
        ui.screenshot("pick-2-second-chosen", window=wid)
        ui.key("alt+k")
        ui.wait_window_gone(wid)
        picked = json.loads(ui.wait_mark("picked", timeout=60))
        ui.screenshot("pick-3-kept")
        ui.flag("history")
        wid = ui.wait_window(r"^OpenAI History$", timeout=90)
        ui.screenshot("history-1-list", window=wid)
        ui.focus(wid)
        ui.key("Down")
        ui.key("alt+i")
        ui.wait_window_gone(wid)
        history = json.loads(ui.wait_mark("history", timeout=60))
        ui.screenshot("history-2-inserted", required=False)  # after the last mark: GIMP may be quitting
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert picked["status"] == "success", picked
    (tree,) = [t for t in picked["images"].values() if t and t[-1]["name"] == "photo"]
    assert [d["name"] for d in tree] == ["OpenAI: a red kite (2/3)", "photo"] and tree[0]["mask"], tree
    assert history["status"] == "success", history
    (tree,) = [t for t in history["images"].values() if t and t[-1]["name"] == "photo"]
    # the newest entry is the 3rd result (saved last); Down chose the one before it: the 2nd
    # with the mask the run gave it (kept beside the image in history)
    assert tree[0]["name"].startswith("OpenAI: a red kite (2/3)") and tree[0]["mask"], tree
    assert (tree[0]["x"], tree[0]["y"], tree[0]["w"], tree[0]["h"]) == (tree[1]["x"], tree[1]["y"], tree[1]["w"],
                                                                        tree[1]["h"])
