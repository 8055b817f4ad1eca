"""What the dialog opens with, in the real GUI GIMP 3.0 and 3.2 under Xvfb: a failed run's typed values come
back (GIMP itself saves last values only after a success), and the checks that need no server come before
the dialog, not after the artist filled it in. Screenshots go to /tmp/gimp-openai-dialogs.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_dialogs import DIALOG, IMAGE
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]


def _json(text: str) -> dict:
    return json.loads(text) if text else {}


def test_a_failed_run_keeps_the_prompt_and_a_channel_is_refused_before_the_dialog(gimp, start_local_server):
    require_gui(gimp)
    # the first two edits are refused by the server (not retried: moderation), the third one works
    server = start_local_server("--fault", "moderation_blocked;times=2")
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY}
    code = IMAGE + r'''
img, lay = make_image()
mark("dialog-1")
mark("first", call(img, lay, Gimp.RunMode.INTERACTIVE))
mark("dialog-2")
mark("second", call(img, lay, Gimp.RunMode.INTERACTIVE))
mark("repeat", call(img, lay, Gimp.RunMode.WITH_LAST_VALS))
channel = Gimp.Channel.new(img, "spot", 200, 150, 50.0, Gegl.Color.new("black"))
img.insert_channel(channel, None, 0)
t0 = time.time()
res = call(img, channel, Gimp.RunMode.INTERACTIVE)
res["seconds"] = time.time() - t0
mark("channel", res)
'''
    with GuiGimp(gimp, code, env=env, timeout=300, name="values") as ui:
        ui.wait_mark("dialog-1", timeout=90)
        wid = ui.wait_window(DIALOG, timeout=60)
        ui.focus(wid)
        ui.key("ctrl+a")
        ui.type("a lighthouse at dusk")
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        first = _json(ui.wait_mark("first", timeout=120))
        ui.wait_mark("dialog-2", timeout=30)
        wid = ui.wait_window(DIALOG, timeout=60)
        ui.screenshot("values-1-dialog-after-a-failed-run", window=wid)
        ui.focus(wid)
        ui.key("alt+o")  # nothing typed: what the dialog opened with is sent
        ui.wait_window_gone(wid)
        second = _json(ui.wait_mark("second", timeout=120))
        repeat = _json(ui.wait_mark("repeat", timeout=120))
        channel = _json(ui.wait_mark("channel", timeout=60))
        windows = ui.window_names()
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert first["status"] == "execution-error" and "safety system" in first["error"], first
    assert second["status"] == "execution-error", second
    # the prompt typed for the failed first run came back in the second dialog and in Filters > Repeat
    assert repeat["status"] == "success", repeat
    assert repeat["layers"][0]["name"] == "OpenAI: a lighthouse at dusk (1/1)", repeat
    assert server.stats()["endpoints"]["edits"] == 3
    # a channel: refused at once with what to do, no dialog opened
    assert channel["status"] == "execution-error" and "channel, not a layer" in json.dumps(channel["error"]), channel
    assert channel["seconds"] < 20 and not [w for w in windows if w == "Edit Selection"], windows
