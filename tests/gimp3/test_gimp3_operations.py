"""Generate, Variations (both paths), Settings, a shut-down model and GPT-like (re-rendered) results, through
the GIMP 3 host inside real headless GIMP 3.0 and 3.2, against the local server (a real subprocess).

Several procedure calls share one GIMP launch (a launch costs seconds); each prints one JSON line per check.
"""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.conftest import FAKE_KEY
from tests.gimp3.test_gimp3_host import CHECK_EDIT, SETUP

pytestmark = [pytest.mark.gimp3]

LAYERS = r'''
def tree(img):
    res = []
    def walk(items, depth):
        for l in items:
            ok, x, y = l.get_offsets()
            d = {"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(), "depth": depth,
                 "group": l.is_group(), "mask": (not l.is_group()) and l.get_mask() is not None}
            p = l.get_parasite("gimp-openai") if not l.is_group() else None
            if p is not None:
                d["parasite"] = json.loads(bytes(p.get_data()).decode("utf-8"))
            res.append(d)
            if l.is_group():
                walk(l.get_children(), depth + 1)
    walk(img.get_layers(), 0)
    return res
'''


def _res(run, tag):
    lines = run.lines_with(tag + " ")
    assert lines, f"no {tag} line:\n{run.stdout}\n{run.stderr[-3000:]}"
    return json.loads(lines[0])


def test_generate_variations_and_settings(gimp, local_server):
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    run = gimp.python(SETUP + CHECK_EDIT + LAYERS + r'''
# Generate into the open image: new layers centred, above the active layer, nothing else touched
img, lay = make_image(select=False)
original, rect = snapshot(img, lay)
status, err, _ = run_proc("python-fu-openai-generate", img, [lay], prompt="a lighthouse at dusk", n=2,
                          size="1024x1024", model="gpt-image-2")
out("GEN_LAYERS", {"status": status.value_nick, "error": err, "layers": tree(img),
                   "photo_same": snapshot(img, lay)[0] == original, "size": [img.get_width(), img.get_height()]})
# Generate as a new image
before = [i.get_id() for i in Gimp.get_images()]
status, err, _ = run_proc("python-fu-openai-generate", img, [lay], prompt="a lighthouse at dusk", n=1,
                          size="1024x1024", model="gpt-image-2", target="new image")
new = [i for i in Gimp.get_images() if i.get_id() not in before]
out("GEN_NEW", {"status": status.value_nick, "error": err, "new": len(new),
                "size": [new[0].get_width(), new[0].get_height()] if new else None,
                "layers": tree(new[0]) if new else None, "old_layers": len(img.get_layers())})
# Variations through /images/variations (dall-e-2), over the ellipse, with a mask: outside unchanged
img2, lay2 = make_image(seed=3)
o2, r2 = snapshot(img2, lay2)
status, err, _ = run_proc("python-fu-openai-variations", img2, [lay2], model="dall-e-2", n=2, add_mask=True)
d = describe(img2, lay2, o2, r2)
out("VAR_ENDPOINT", {"status": status.value_nick, "error": err, "layers": tree(img2), "outside_diff": d["outside_diff"],
                     "inside_changed": d["inside_changed"], "selected": d["selected"]})
# Variations with a GPT model: an edit with the variation prompt, whole layer (no selection)
img3, lay3 = make_image(seed=4, select=False)
status, err, _ = run_proc("python-fu-openai-variations", img3, [lay3], model="gpt-image-2", n=1)
out("VAR_EDIT", {"status": status.value_nick, "error": err, "layers": tree(img3)})
# Settings, non-interactive: base URL and default model saved through `gimp-openai config set`
status, err, _ = run_proc("python-fu-openai-settings", None, [], base_url=URL, default_model="gpt-image-2",
                          test_connection=True)
out("SETTINGS", {"status": status.value_nick, "error": err})
'''.replace("URL", repr(local_server.url)), env=env).check()
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything

    gen = _res(run, "GEN_LAYERS")
    assert gen["status"] == "success", gen
    top = gen["layers"]
    assert top[0]["group"] and top[0]["name"] == "OpenAI: a lighthouse at dusk (2 results)", top
    kids = [d for d in top if d["depth"] == 1]
    assert [d["name"] for d in kids] == ["OpenAI: a lighthouse at dusk (1/2)", "OpenAI: a lighthouse at dusk (2/2)"]
    for d in kids:  # 1024x1024 centred on the 200x150 canvas, no mask, parasite says generate
        assert (d["w"], d["h"]) == (1024, 1024) and (d["x"], d["y"]) == ((200 - 1024) // 2, (150 - 1024) // 2), d
        assert not d["mask"] and d["parasite"]["path"] == "generate" and d["parasite"]["model"] == "gpt-image-2"
    assert top[-1]["name"] == "photo" and gen["photo_same"] and gen["size"] == [200, 150]

    new = _res(run, "GEN_NEW")
    assert new["status"] == "success" and new["new"] == 1 and new["size"] == [1024, 1024], new
    assert [d["name"] for d in new["layers"]] == ["OpenAI: a lighthouse at dusk (1/1)"]
    assert (new["layers"][0]["x"], new["layers"][0]["y"]) == (0, 0) and new["old_layers"] == 2, new

    ve = _res(run, "VAR_ENDPOINT")
    assert ve["status"] == "success", ve
    kids = [d for d in ve["layers"] if d["depth"] == 1]
    assert len(kids) == 2 and [d["name"] for d in kids] == [
        f"OpenAI: variation [variations endpoint] ({k}/2)" for k in (1, 2)], ve["layers"]
    for d in kids:
        assert d["mask"] and d["parasite"]["path"] == "variation-endpoint" and d["parasite"]["model"] == "dall-e-2"
        assert 30 <= d["x"] <= 60 and 20 <= d["y"] <= 50 and d["x"] + d["w"] >= 140 and d["y"] + d["h"] >= 110, d
    assert ve["outside_diff"] == 0 and ve["inside_changed"] > ve["selected"] // 2, ve

    vg = _res(run, "VAR_EDIT")
    assert vg["status"] == "success", vg
    assert [d["name"] for d in vg["layers"]][-1] == "photo"
    d = vg["layers"][0]
    assert d["name"] == "OpenAI: variation [variation by edit] (1/1)", d
    assert not d["mask"], d  # whole layer: nothing to mask
    assert d["parasite"]["path"] == "variation-edit" and d["parasite"]["model"] == "gpt-image-2", d
    assert (d["x"], d["y"], d["w"], d["h"]) == (30, 20, 160, 120), d  # the whole layer, in place

    st = _res(run, "SETTINGS")
    assert st["status"] == "success", st
    assert f"Connected to {local_server.url}. Image models offered:" in everything, everything
    assert f"Settings saved: server {local_server.url}; model gpt-image-2." in everything  # empty kept
    # what the engine now has on file (read without the environment override)
    show = gimp.run(["/gimp-openai-work/venv/bin/python", "-m", "gimp_openai", "config", "show", "--json"])
    assert show.returncode == 0, show.stderr
    settings = json.loads(show.stdout)["settings"]
    assert settings["base_url"] == local_server.url and settings["default_model"] == "gpt-image-2", settings
    assert FAKE_KEY not in show.stdout + show.stderr


def test_shut_down_model_and_gpt_like_results(gimp, start_local_server):
    server = start_local_server("--shutdown", "gpt-image-1.5=2026-11-01", "--render", "gpt-like")
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY}
    run = gimp.python(SETUP + CHECK_EDIT + LAYERS + r'''
import random
def textured(seed):
    img = Gimp.Image.new(320, 256, Gimp.ImageBaseType.RGB)
    lay = Gimp.Layer.new(img, "photo", 320, 256, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
    img.insert_layer(lay, None, 0)
    rnd = random.Random(seed)
    W, H, S = 320, 256, 8
    grid = [[[rnd.randrange(256) for c in range(3)] for gx in range(W // S + 2)] for gy in range(H // S + 2)]
    px = bytearray(W * H * 4)
    for y in range(H):
        gy, fy = divmod(y, S)
        fy /= S
        for x in range(W):
            gx, fx = divmod(x, S)
            fx /= S
            a, b, c, d = grid[gy][gx], grid[gy][gx + 1], grid[gy + 1][gx], grid[gy + 1][gx + 1]
            i = (y * W + x) * 4
            for k in range(3):
                top = a[k] + (b[k] - a[k]) * fx
                bot = c[k] + (d[k] - c[k]) * fx
                px[i + k] = int(top + (bot - top) * fy)
            px[i + 3] = 255
    buf = lay.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, W, H), "R'G'B'A u8", bytes(px))
    buf.flush()
    img.select_ellipse(Gimp.ChannelOps.REPLACE, 120, 88, 80, 80)
    img.clean_all()
    return img, lay

# a shut-down model, non-interactive: the engine's text (model + live replacement), nothing changed
img, lay = make_image()
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a red kite", model="gpt-image-1.5")
out("GONE", {"status": status.value_nick, "error": err, "layers": [l.get_name() for l in img.get_layers()],
             "dirty": img.is_dirty()})

def misfit(align):
    img, lay = textured(7)
    original = pixels(lay, 0, 0, 320, 256)
    status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a small bird", align=align,
                              tone_match=align)
    res = [l for l in img.get_layers() if l.get_name().startswith("OpenAI:")]
    if status.value_nick != "success" or not res:
        return {"status": status.value_nick, "error": err}
    r = res[0]
    ok, ox, oy = r.get_offsets()
    w, h = r.get_width(), r.get_height()
    got = pixels(r, 0, 0, w, h)
    m = pixels(r.get_mask(), 0, 0, w, h, "Y u8")
    diffs = []
    for y in range(6, h - 6):  # inside the crop, outside the selection (mask 0), away from the crop's border
        for x in range(6, w - 6):
            if m[y * w + x] == 0:
                i, j = (y * w + x) * 4, ((y + oy) * 320 + x + ox) * 4
                diffs.append(sum(abs(got[i + k] - original[j + k]) for k in range(3)) / 3)
    diffs.sort()
    p = r.get_parasite("gimp-openai")
    return {"status": "success", "mean": sum(diffs) / len(diffs), "median": diffs[len(diffs) // 2], "n": len(diffs),
            "notes": json.loads(bytes(p.get_data()).decode("utf-8"))["notes"], "rect": [ox, oy, w, h]}

out("ALIGNED", misfit(True))
out("RAW", misfit(False))
''', env=env).check()
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything
    gone = _res(run, "GONE")
    assert gone["status"] == "execution-error", gone
    found = re.search(r"`gpt-image-1\.5` was shut down.*Use `([^`]+)` instead", gone["error"], re.S)
    assert found, gone  # the model and its live replacement, in the engine's words
    listing = requests.get(server.url + "/models", timeout=10, headers={"Authorization": f"Bearer {FAKE_KEY}"})
    live = {m["id"]: m.get("shutdown_date") for m in listing.json()["data"]}
    assert found.group(1) in live and found.group(1) != "gpt-image-1.5", (found.group(1), live)
    assert gone["layers"] == ["photo"] and not gone["dirty"], gone  # nothing changed, nothing lost
    assert "gpt-image-1.5" in everything  # the same text reached Gimp.message
    # a model_not_found is never retried
    calls = [r for r in server.stats().get("requests", []) if "gpt-image-1.5" in json.dumps(r)]
    assert len(calls) <= 1, calls

    aligned, raw = _res(run, "ALIGNED"), _res(run, "RAW")
    assert aligned["status"] == "success" and raw["status"] == "success", (aligned, raw)
    print(f"\nGIMP {gimp.version}: context error with correction {aligned['mean']:.2f} (median {aligned['median']:.2f})"
          f", without {raw['mean']:.2f} (median {raw['median']:.2f}); report: {aligned['notes']}")
    assert aligned["n"] > 1000, aligned
    assert aligned["median"] <= 4 and aligned["mean"] <= 8, aligned  # the engine re-aligned and re-toned it
    assert raw["mean"] > 3 * aligned["mean"], (aligned, raw)  # and without the correction it would not be
    assert "shift" in aligned["notes"], aligned  # the job report is on the layer (parasite)


def test_image_types(gimp, local_server):
    """16-bit linear, 32-bit float, grayscale, a layer without alpha, a layer partly off the canvas: the result is
    inserted in the image's own precision and mode, its pixels and mask are the engine's (within the precision
    of the image), and the composite outside the selection is unchanged (compared in float). Indexed images are
    refused with a clear message (test_refusals_are_clear)."""
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_HOST_TIMINGS": "/gimp-openai-work/types.jsonl", "GIMP_OPENAI_HOST_KEEP_WORKDIR": "1"}
    (gimp.work / "types.jsonl").unlink(missing_ok=True)
    run = gimp.python(SETUP + r'''
import glob
from PIL import Image

def canvas(img, fmt="R'G'B'A float"):
    vis = Gimp.Layer.new_from_visible(img, img, "vis")
    data = pixels(vis, 0, 0, img.get_width(), img.get_height(), fmt)
    vis.delete()
    return data

def case(name, img, lay):
    img.clean_all()
    W, H = img.get_width(), img.get_height()
    sel = img.get_selection().get_buffer().get(Gegl.Rectangle.new(0, 0, W, H), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
    before = canvas(img)
    status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a stone", feather=2.0)
    res = {"status": status.value_nick, "error": err, "source_alpha": lay.has_alpha(),
           "precision": [n for n in ("U8_NON_LINEAR", "U16_LINEAR", "FLOAT_LINEAR")
                         if int(img.get_precision()) == int(getattr(Gimp.Precision, n))],
           "gray": int(img.get_base_type()) == int(Gimp.ImageBaseType.GRAY)}
    if status.value_nick == "success":
        after = canvas(img)
        px = 16  # R'G'B'A float: 16 bytes a pixel
        differs = [before[i * px:i * px + px] != after[i * px:i * px + px] for i in range(len(sel))]
        res["outside_diff"] = sum(1 for i, s in enumerate(sel) if s == 0 and differs[i])
        res["inside_changed"] = sum(1 for i, s in enumerate(sel) if s == 255 and differs[i])
        r = [l for l in img.get_layers() if l.get_name().startswith("OpenAI:")][0]
        ok, x, y = r.get_offsets()
        w, h = r.get_width(), r.get_height()
        workdir = [json.loads(l)["path"] for l in open("/gimp-openai-work/types.jsonl") if '"workdir"' in l][-1]
        png = [p for p in glob.glob(workdir + "/out/*.png") if not p.endswith("-mask.png") and "partial" not in p][0]
        want = Image.open(png).convert("RGBA")
        if img.get_base_type() == Gimp.ImageBaseType.GRAY:
            got = pixels(r, 0, 0, w, h, "Y'A u8")
            want_b = None
        else:
            got = pixels(r, 0, 0, w, h)
            want_b = want.tobytes()
        want_mask = Image.open(png[:-4] + "-mask.png").convert("L").tobytes()
        got_mask = pixels(r.get_mask(), 0, 0, w, h, "Y u8")
        res.update({"name": r.get_name(), "rect": [x, y, w, h], "want_size": list(want.size),
                    "max_pixel_diff": max(abs(a - b) for a, b in zip(got, want_b)) if want_b else None,
                    "mask_max_diff": max(abs(a - b) for a, b in zip(got_mask, want_mask)),
                    "layer_has_alpha": r.has_alpha(), "selected": sum(1 for s in sel if s == 255)})
    out("CASE", dict(res, case=name))

for name in ("u16", "float", "gray", "noalpha", "offcanvas"):
    img, lay = make_image()
    if name == "u16":
        img.convert_precision(Gimp.Precision.U16_LINEAR)
    elif name == "float":
        img.convert_precision(Gimp.Precision.FLOAT_LINEAR)
    elif name == "gray":
        img.convert_grayscale()
    elif name == "noalpha":
        lay.flatten()  # removes the alpha channel
    elif name == "offcanvas":
        lay.set_offsets(-40, -30)  # the layer spans -40..120 x -30..90; select across the canvas corner
        img.select_ellipse(Gimp.ChannelOps.REPLACE, 0, 0, 70, 50)
    case(name, img, img.get_selected_layers()[0])
''', env=env).check()
    assert FAKE_KEY not in run.stdout + run.stderr
    cases = {c["case"]: c for c in map(json.loads, run.lines_with("CASE "))}
    assert set(cases) == {"u16", "float", "gray", "noalpha", "offcanvas"}, run.stdout
    for name, c in cases.items():
        assert c["status"] == "success", c
        assert c["name"] == "OpenAI: a stone (1/1)", c
        assert c["rect"][2:] == c["want_size"], c
        assert c["outside_diff"] == 0, c  # bit-identical in float outside the selection
        assert c["inside_changed"] > c["selected"] // 2, c
        assert c["mask_max_diff"] == 0, c  # masks are coverage: exact in every precision
        if c["max_pixel_diff"] is not None:  # 8-bit result in a 16/32-bit image: back to 8 bits it is the same
            assert c["max_pixel_diff"] <= (0 if name in ("noalpha", "offcanvas") else 1), c
    assert cases["offcanvas"]["rect"][0] < 0 or cases["offcanvas"]["rect"][1] < 0, cases["offcanvas"]
    assert [n for n, c in cases.items() if not c["source_alpha"]] == ["noalpha"], cases
    assert all(c["layer_has_alpha"] for c in cases.values())  # results carry alpha (the engine's RGBA)
    assert cases["u16"]["precision"] == ["U16_LINEAR"] and cases["float"]["precision"] == ["FLOAT_LINEAR"], cases
    assert [n for n, c in cases.items() if c["gray"]] == ["gray"], cases
