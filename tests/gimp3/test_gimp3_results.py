"""Pick Result, Show Next Result and History inside real headless GIMP 3.0 and 3.2 (scripts' runs, through the
PDB), against the local server: the kept result takes the group's place with its mask and parasite, the
others and the group are gone; a history result goes back at its place with the run's pixels and mask, or
opens as a new image."""

from __future__ import annotations

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_gimp3_host import CHECK_EDIT, SETUP
from tests.gimp3.test_gimp3_operations import LAYERS, _res

pytestmark = [pytest.mark.gimp3]


def test_pick_next_and_history_in_real_gimp(gimp, local_server):
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    run = gimp.python(SETUP + CHECK_EDIT + LAYERS + r'''
img, lay = make_image()
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a red kite", n=3,
                          model="gpt-image-2")
group = img.get_layers()[0]
kids = group.get_children()
out("EDIT", {"status": status.value_nick, "error": err, "tree": tree(img)})
status, err, _ = run_proc("python-fu-openai-next-result", img, [kids[2]])
out("NEXT", {"status": status.value_nick, "error": err, "visible": [k.get_visible() for k in kids]})
status, err, _ = run_proc("python-fu-openai-pick-result", img, [lay], index=0)
out("NOT_RESULTS", {"status": status.value_nick, "error": err})
status, err, _ = run_proc("python-fu-openai-pick-result", img, [group], index=5)
out("PAST_END", {"status": status.value_nick, "error": err})
status, err, _ = run_proc("python-fu-openai-pick-result", img, [kids[0].get_mask()], index=0)
kept = img.get_layers()[0]
out("PICK", {"status": status.value_nick, "error": err, "tree": tree(img), "valid": group.is_valid(),
             "visible": kept.get_visible(), "selected": [l.get_name() for l in img.get_selected_layers()]})
# History: the kept result's own history image, back at its place in this image, then in a small one
hist = json.loads(bytes(kept.get_parasite("gimp-openai").get_data()).decode("utf-8"))["history_png"]
entry = os.path.splitext(os.path.basename(hist))[0]
kept_px = bytes(pixels(kept, 0, 0, kept.get_width(), kept.get_height()))
kept_mask = bytes(pixels(kept.get_mask(), 0, 0, kept.get_width(), kept.get_height(), "Y u8"))
status, err, _ = run_proc("python-fu-openai-history", img, [lay], entry=entry)
back = img.get_layers()[0]
same = {}
if back.get_mask() is not None and (back.get_width(), back.get_height()) == (kept.get_width(), kept.get_height()):
    same = {"pixels": bytes(pixels(back, 0, 0, back.get_width(), back.get_height())) == kept_px,
            "mask": bytes(pixels(back.get_mask(), 0, 0, back.get_width(), back.get_height(), "Y u8")) == kept_mask,
            "mask_soft": len(set(kept_mask)) > 2}
out("HISTORY", {"status": status.value_nick, "error": err, "tree": tree(img), "same": same})
small = Gimp.Image.new(40, 30, Gimp.ImageBaseType.RGB)
bg = Gimp.Layer.new(small, "bg", 40, 30, Gimp.ImageType.RGB_IMAGE, 100, Gimp.LayerMode.NORMAL)
small.insert_layer(bg, None, 0)
before = [i.get_id() for i in Gimp.get_images()]
status, err, _ = run_proc("python-fu-openai-history", small, [bg], entry=entry)
new = [i for i in Gimp.get_images() if i.get_id() not in before]
out("HISTORY_NEW", {"status": status.value_nick, "error": err, "small": len(small.get_layers()),
                    "new": [tree(i) for i in new]})
status, err, _ = run_proc("python-fu-openai-history", img, [lay], entry="../../etc/passwd")
out("HISTORY_BAD", {"status": status.value_nick, "error": err})
''', env=env)
    edit = _res(run, "EDIT")
    assert edit["status"] == "success", edit
    results = [d for d in edit["tree"] if d["depth"] == 1]
    assert [d["name"] for d in results] == [f"OpenAI: a red kite ({k}/3)" for k in (1, 2, 3)]
    nxt = _res(run, "NEXT")
    assert nxt["status"] == "success" and nxt["visible"] == [False, True, False], nxt
    for tag, words in (("NOT_RESULTS", "not a group of OpenAI results"), ("PAST_END", "there is no result 5")):
        refused = _res(run, tag)
        assert refused["status"] == "execution-error" and words in refused["error"], refused
    pick = _res(run, "PICK")
    assert pick["status"] == "success" and not pick["valid"] and pick["visible"], pick
    kept = results[1]
    top = pick["tree"][0]
    assert [d["name"] for d in pick["tree"]] == [kept["name"], "photo"]
    assert (top["x"], top["y"], top["w"], top["h"], top["depth"]) == (kept["x"], kept["y"], kept["w"], kept["h"], 0)
    assert top["mask"] and top["parasite"]["prompt"] == "a red kite" and pick["selected"] == [kept["name"]]
    hist = _res(run, "HISTORY")
    assert hist["status"] == "success", hist
    back = hist["tree"][0]
    assert back["name"].startswith(kept["name"]) and (back["x"], back["y"], back["w"], back["h"]) == \
        (kept["x"], kept["y"], kept["w"], kept["h"]) and back["mask"]
    # the layer the run inserted, again: its pixels (aligned, tone-matched) and its mask (the ellipse's soft
    # edge, value for value), from the history folder alone
    assert hist["same"] == {"pixels": True, "mask": True, "mask_soft": True}, hist["same"]
    assert back["parasite"]["notes"] == "from history" and [d["name"] for d in hist["tree"][1:]] == \
        [kept["name"], "photo"]
    new = _res(run, "HISTORY_NEW")
    assert new["status"] == "success" and new["small"] == 1 and len(new["new"]) == 1, new
    (layer,) = new["new"][0]
    assert (layer["x"], layer["y"], layer["w"], layer["h"]) == (0, 0, kept["w"], kept["h"]) and layer["mask"]
    bad = _res(run, "HISTORY_BAD")
    assert bad["status"] == "execution-error" and "is not a history id" in bad["error"]
    assert "Traceback" not in run.stderr and FAKE_KEY not in run.stdout + run.stderr
