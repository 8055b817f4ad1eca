"""The live preview in the real GUI GIMP 3.0 and 3.2 under Xvfb: what the artist sees on the canvas while the
request runs, and that Undo never meets the preview.

The edit is started from the image window with its shortcut and the dialog's defaults (previews on); while
the plug-in waits, the batch script (a second plug-in) reports the image's layers as GIMP holds them, and the
canvas is photographed with the preview showing. Screenshots go to ``GIMP_OPENAI_SHOTS``.
"""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image, ImageChops

from tests.gimp3.test_artist_session import CODE, Artist, _names, _setup, _top
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]
PREVIEW = "OpenAI preview (not a result)"


def _canvas_change(before, after, window: dict) -> int:
    """How many pixels of the image window's middle (the canvas around the selection) changed."""
    with Image.open(before) as a, Image.open(after) as b:
        box = (window["X"] + window["WIDTH"] // 4, window["Y"] + window["HEIGHT"] // 4,
               window["X"] + 3 * window["WIDTH"] // 4, window["Y"] + 3 * window["HEIGHT"] // 4)
        diff = ImageChops.difference(a.convert("RGB").crop(box), b.convert("RGB").crop(box)).convert("L")
        return int(sum(diff.point(lambda v: 255 if v > 40 else 0).histogram()[255:]))


@pytest.mark.timeout(600)
def test_the_canvas_shows_the_preview_while_waiting_and_undo_never_meets_it(gimp, start_local_server):
    require_gui(gimp)
    server = start_local_server("--latency", "20")
    env = _setup(gimp)
    with GuiGimp(gimp, CODE, env=env, timeout=600, name="live-preview") as ui:
        artist = Artist(ui, gimp, env)
        artist.config(base_url=server.url)
        image = json.loads(ui.wait_mark("ready", timeout=90))["image"]
        window = ui.geometry(artist.image_window())
        before = ui.screenshot("preview-0-before")
        artist.edit("preview-1", prompt="a red kite")  # the dialog's defaults: previews on
        started = time.monotonic()
        while True:
            names = _names(_top(artist.state(), image))
            if PREVIEW in names:
                break
            assert time.monotonic() - started < 60, names
            time.sleep(0.3)
        # the layer was made (with its mask) while the request waited, out of the image: it goes in with the
        # first preview (5 s into the 20 s)
        assert names == [PREVIEW, "photo"], names  # over the photo, no result yet
        while True:
            time.sleep(0.5)  # the canvas repaints after the pixels are there
            showing = ui.screenshot("preview-2-showing")
            if _canvas_change(before, showing, window) > 500:  # the preview's pixels on the canvas
                break
            assert time.monotonic() - started < 60, "no preview on the canvas"
        assert artist.engines() and artist.plugin_running(), "the request is still running"
        assert _names(_top(artist.state(), image)) == [PREVIEW, "photo"]
        artist.wait_idle()
        done = _top(artist.state(), image)
        assert _names(done) == ["OpenAI: a red kite (1/1)", "photo"], done  # the preview gone, the result in
        ui.screenshot("preview-3-result")
        # Undo: the result goes in one step; the next step is the artist's own (the selection), never the
        # preview coming back
        artist.press_in_image("ctrl+z")
        time.sleep(1.0)
        assert _names(_top(artist.state(), image)) == ["photo"]
        artist.press_in_image("ctrl+z")
        time.sleep(1.0)
        assert _names(_top(artist.state(), image)) == ["photo"]
        ui.screenshot("preview-4-undone-twice")
        artist.quit()
