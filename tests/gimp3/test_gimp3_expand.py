"""Past-the-edge edits, ``ref:`` references and Expand Canvas through the GIMP 3 host inside real headless GIMP
3.0 and 3.2, against the local server: the result layer covers a selection that runs past its layer (which
stays as it was), references named ``ref:`` reach the engine, and Expand Canvas grows the canvas with one
masked layer, in one undo group."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_gimp3_host import SETUP

pytestmark = [pytest.mark.gimp3]

CODE = r'''
def textured(img, name, w, h, x=0, y=0, seed=0):
    lay = Gimp.Layer.new(img, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
    img.insert_layer(lay, None, 0)
    lay.set_offsets(x, y)
    px = bytearray(w * h * 4)
    for yy in range(h):
        for xx in range(w):
            i = (yy * w + xx) * 4
            px[i:i + 4] = bytes(((xx * 5 + seed) % 256, (yy * 3) % 256, (xx + yy * 2) % 256, 255))
    lay.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", bytes(px))
    lay.get_buffer().flush()
    return lay

def info(l):
    ok, x, y = l.get_offsets()
    return {"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(),
            "mask": l.get_mask() is not None}

def mask_at(l, px, py):
    ok, x, y = l.get_offsets()
    m = l.get_mask()
    return pixels(m, px - x, py - y, 1, 1, "Y u8")[0]

def timings():
    return [json.loads(line) for line in open("/gimp-openai-work/timings.jsonl")]

# 1. past the edge: layer 100x100 at (0,0) in a 200x150 image, the selection 60..160 x 20..80
img = Gimp.Image.new(200, 150, Gimp.ImageBaseType.RGB)
photo = textured(img, "photo", 100, 100)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 60, 20, 100, 60)
img.clean_all()
before = pixels(photo, 0, 0, 100, 100)
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [photo], prompt="the wall goes on",
                          model="gpt-image-2")
top = img.get_layers()[0]
vis = Gimp.Layer.new_from_visible(img, img, "vis")
past = pixels(vis, 150, 50, 1, 1)
vis.delete()
out("EDGE", {"status": status.value_nick, "error": err, "top": info(top), "photo": info(photo),
             "photo_same": pixels(photo, 0, 0, 100, 100) == before, "layers": len(img.get_layers()),
             "mask_past": mask_at(top, 150, 50),
             "visible_alpha_past": past[3], "dirty": img.is_dirty(), "undo": img.undo_is_enabled(),
             "inserts": [t for t in timings() if t["what"] == "insert"][-1:]})

# 2. references: a ref: layer in another open image (hidden), and one in this image
other = Gimp.Image.new(300, 200, Gimp.ImageBaseType.RGB)
ref = textured(other, "ref: kite", 300, 200, seed=9)
ref.set_visible(False)
img2 = Gimp.Image.new(160, 120, Gimp.ImageBaseType.RGB)
lay2 = textured(img2, "photo", 160, 120, seed=3)
textured(img2, "ref: sky", 40, 30, seed=5)
img2.select_rectangle(Gimp.ChannelOps.REPLACE, 40, 30, 60, 40)
status, err, _ = run_proc("python-fu-openai-edit-selection", img2, [lay2], prompt="a red kite", model="gpt-image-2")
messages = [t["text"] for t in timings() if t["what"] == "message"]
out("REFS", {"status": status.value_nick, "error": err, "message": messages[-1] if messages else None,
             "ref_hidden": not ref.get_visible(), "layers": [l.get_name() for l in img2.get_layers()]})

# 3. expand canvas: 120x90 grown by 32 px left and right
img3 = Gimp.Image.new(120, 90, Gimp.ImageBaseType.RGB)
lay3 = textured(img3, "photo", 120, 90, seed=1)
img3.clean_all()
before3 = pixels(lay3, 0, 0, 120, 90)
status, err, _ = run_proc("python-fu-openai-expand-canvas", img3, [lay3], sides="left-right", amount=32,
                          model="gpt-image-2")
top3 = img3.get_layers()[0]
vis3 = Gimp.Layer.new_from_visible(img3, img3, "vis")
old_view = pixels(vis3, 32, 0, 120, 90)
new_alpha = [pixels(vis3, x, y, 1, 1)[3] for x, y in ((0, 0), (10, 45), (183, 89), (170, 10))]
vis3.delete()
ok, tx, ty = top3.get_offsets()
mw, mh = top3.get_width(), top3.get_height()
m = pixels(top3.get_mask(), 0, 0, mw, mh, "Y u8") if top3.get_mask() is not None else b""
new_vals, old_vals = set(), set()
for yy in range(mh):
    for xx in range(mw):
        ix, iy = tx + xx, ty + yy
        (old_vals if 32 <= ix < 152 else new_vals).add(m[yy * mw + xx])
out("EXPAND", {"status": status.value_nick, "error": err, "canvas": [img3.get_width(), img3.get_height()],
               "photo": info(lay3), "photo_same": pixels(lay3, 0, 0, 120, 90) == before3,
               "old_view_same": old_view == before3, "new_alpha": new_alpha, "top": info(top3),
               "mask_new": sorted(new_vals), "mask_old": sorted(old_vals), "layers": len(img3.get_layers()),
               "dirty": img3.is_dirty(), "undo": img3.undo_is_enabled(),
               "expands": [t for t in timings() if t["what"] == "expand"],
               "parasite": json.loads(bytes(top3.get_parasite("gimp-openai").get_data()).decode("utf-8"))})
'''


def test_past_the_edge_references_and_expand_canvas(gimp, local_server):
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_HOST_TIMINGS": "/gimp-openai-work/timings.jsonl"}
    (gimp.work / "timings.jsonl").unlink(missing_ok=True)
    run = gimp.python(SETUP + CODE, env=env, timeout=400).check()
    assert FAKE_KEY not in run.stdout + run.stderr

    edge = json.loads(run.lines_with("EDGE ")[0])
    assert edge["status"] == "success", edge
    top, photo = edge["top"], edge["photo"]
    assert top["name"].startswith("OpenAI: the wall goes on") and top["mask"], edge
    assert top["x"] <= 60 and top["x"] + top["w"] >= 160 and top["y"] <= 20 and top["y"] + top["h"] >= 80, edge
    assert top["x"] + top["w"] > 100  # the result layer grows past the old layer's edge
    assert photo == {"name": "photo", "x": 0, "y": 0, "w": 100, "h": 100, "mask": False} and edge["photo_same"]
    assert edge["mask_past"] == 255 and edge["visible_alpha_past"] == 255  # painted past the layer, shown
    assert edge["layers"] == 2 and edge["dirty"] and edge["undo"]
    assert edge["inserts"] and edge["inserts"][0]["undo_groups"] == 1, edge

    refs = json.loads(run.lines_with("REFS ")[0])
    assert refs["status"] == "success", refs
    assert "References sent: ref: sky, ref: kite (" in refs["message"], refs
    assert refs["ref_hidden"]

    exp = json.loads(run.lines_with("EXPAND ")[0])
    assert exp["status"] == "success", exp
    assert exp["canvas"] == [184, 90]
    assert exp["photo"] == {"name": "photo", "x": 32, "y": 0, "w": 120, "h": 90, "mask": False}, exp
    assert exp["photo_same"] and exp["old_view_same"]  # old pixels unchanged, in the layer and in the view
    assert exp["new_alpha"] == [255, 255, 255, 255]  # the new area is painted
    assert exp["top"]["name"] == "OpenAI: expanded canvas" and exp["top"]["mask"] and exp["layers"] == 2
    assert exp["mask_new"] == [255] and exp["mask_old"] == [0], exp
    assert exp["top"]["x"] == 0 and exp["top"]["x"] + exp["top"]["w"] == 184
    assert exp["dirty"] and exp["undo"] and len(exp["expands"]) == 1 and exp["expands"][0]["undo_groups"] == 1
    assert exp["parasite"]["model"] == "gpt-image-2"
