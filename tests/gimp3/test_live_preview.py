"""The live preview in a real, headless GIMP 3.0 (trixie) and 3.2 (forky), against the local server streaming
its previews while a request of a few seconds runs.

A headless batch script waits inside the procedure call, so what GIMP holds while the previews show is read
by the host itself, from GIMP, right after each change (``GIMP_OPENAI_HOST_TIMINGS``: the preview layer's
pixels read back through a fresh buffer, its offsets, the image's layers, dirty state and undo state); the
GUI test (test_live_preview_gui.py) watches the same from a second plug-in and photographs the canvas.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.gimp3.test_gimp3_host import SETUP

pytestmark = [pytest.mark.gimp3]
PREVIEW = "OpenAI preview (not a result)"


def _timings(gimp):
    path = gimp.work / "timings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_previews_show_in_place_unrecorded_and_the_result_replaces_them(gimp, start_local_server):
    server = start_local_server("--latency", "4")
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_HOST_TIMINGS": "/gimp-openai-work/timings.jsonl", "GIMP_OPENAI_HOST_KEEP_WORKDIR": "1"}
    (gimp.work / "timings.jsonl").unlink(missing_ok=True)
    run = gimp.python(SETUP + r'''
def names(img):
    return [l.get_name() for l in img.get_layers()]

img, lay = make_image()
t0 = time.time()
status, err, secs = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a red kite", n=1,
                             partial_images=3)
result = img.get_layers()[0]
ok, rx, ry = result.get_offsets()
out("RES", {"status": status.value_nick, "error": err, "t0": t0, "t1": time.time(), "layers": names(img),
            "result": [rx, ry, result.get_width(), result.get_height()], "dirty": img.is_dirty(),
            "undo": img.undo_is_enabled(), "selected": [l.get_name() for l in img.get_selected_layers()]})

# a run GIMP killed (Cancel) left its preview, saved with a parasite: the next run removes it, unrecorded
img2, lay2 = make_image(seed=3)
stale = Gimp.Layer.new(img2, "OpenAI preview (not a result)", 20, 20, Gimp.ImageType.RGBA_IMAGE, 100,
                       Gimp.LayerMode.NORMAL)
img2.insert_layer(stale, None, 0)
stale.attach_parasite(Gimp.Parasite.new("gimp-openai-preview", Gimp.PARASITE_PERSISTENT, list(b"{}")))
img2.set_selected_layers([lay2])
img2.clean_all()
status, err, secs = run_proc("python-fu-openai-edit-selection", img2, [lay2], prompt="a red kite", n=1,
                             partial_images=0)
out("STALE", {"status": status.value_nick, "error": err, "layers": names(img2)})

# generate onto the open image: previews centred on top, like the result
img3, lay3 = make_image(seed=5, select=False)
status, err, secs = run_proc("python-fu-openai-generate", img3, [lay3], prompt="a kite", partial_images=2)
out("GEN", {"status": status.value_nick, "error": err, "layers": names(img3)})
''', env=env, timeout=400).check()
    res = json.loads(run.lines_with("RES ")[0])
    assert res["status"] == "success", res
    assert res["layers"] == ["OpenAI: a red kite (1/1)", "photo"], res  # the preview is gone
    assert res["undo"] and res["dirty"] and res["selected"] == ["OpenAI: a red kite (1/1)"], res
    entries = _timings(gimp)
    kinds = [e["what"] for e in entries]
    first_insert = kinds.index("insert")
    previews = [e for e in entries[:first_insert] if e["what"] == "preview"]
    assert len(previews) == 3, kinds  # every preview showed before the result went in
    # the layer and its mask were made while the model worked, before the first preview, and kept out of the
    # image until it came (a Cancel meanwhile leaves nothing behind)
    (ready,) = [e for e in entries[:first_insert] if e["what"] == "preview-ready"]
    assert kinds.index("preview-ready") < kinds.index("preview") and ready["at"] < previews[0]["at"] - 0.5, kinds
    assert [ready["x"], ready["y"], ready["width"], ready["height"]] == res["result"] and ready["mask"], ready
    assert ready["layers"] == ["photo"] and not ready["in_image"] and ready["transparent"], ready
    assert ready["selected"] == ["photo"] and not ready["dirty"], ready
    for p in previews:
        # in GIMP: the partial's pixels exactly, at the result's place, masked, over the photo, which stays
        # selected; the clean image still clean (nothing to save, no undo step), undo on; each one only changed
        # the pixels of the layer made ahead
        assert p["pixels_equal"] and p["mask"] and [p["x"], p["y"], p["width"], p["height"]] == res["result"], p
        assert p["layers"] == [PREVIEW, "photo"] and p["selected"] == ["photo"], p
        assert not p["dirty"] and p["undo_enabled"] and not p["fresh"], p
        assert res["t0"] < p["at"] < res["t1"]
        png = Image.open(gimp.outside(p["png"]))
        assert png.size == (p["width"], p["height"])
    assert previews[0]["at"] < previews[1]["at"] < previews[2]["at"]
    ends = [e for e in entries[:first_insert] if e["what"] == "end-preview"]
    assert len(ends) == 1 and ends[0]["removed"] == 1 and not ends[0]["dirty"], ends
    inserts = [e for e in entries if e["what"] == "insert"]
    assert inserts[0]["undo_groups"] == 1 and inserts[0]["layers"] == 1
    assert "inconsistent" not in run.stderr.lower() and "Traceback" not in run.stdout + run.stderr

    stale = json.loads(run.lines_with("STALE ")[0])
    assert stale["status"] == "success" and stale["layers"] == ["OpenAI: a red kite (1/1)", "photo"], stale

    gen = json.loads(run.lines_with("GEN ")[0])
    assert gen["status"] == "success" and gen["layers"] == ["OpenAI: a kite (1/1)", "photo"], gen
    gen_previews = [e for e in entries[first_insert:] if e["what"] == "preview"]
    assert len(gen_previews) == 2 and [p["fresh"] for p in gen_previews] == [True, False], gen_previews
    for p in gen_previews:  # the 200x150 canvas covered by the generated image, centred like the result
        assert p["pixels_equal"] and not p["mask"] and p["layers"][0] == PREVIEW, p
        assert p["x"] == (200 - p["width"]) // 2 and p["y"] == (150 - p["height"]) // 2, p
