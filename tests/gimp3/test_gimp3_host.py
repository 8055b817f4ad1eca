"""The GIMP 3 host inside a real, headless GIMP 3.0 (trixie) and 3.2 (forky): install, registration,
edit through the PDB against a real server on loopback, batch, errors as messages."""

from __future__ import annotations

import json
import stat
import sys

import pytest

from tests.conftest import FAKE_KEY
from tests.support.gimp3 import REPO
from tests.support.wire_server import Reply, WireServer

pytestmark = [pytest.mark.gimp3]
sys.path.insert(0, str(REPO / "plugin" / "hostlib"))
import gimp_openai_host as host  # noqa: E402

MANIFEST = json.loads((REPO / "manifest" / "procedures.json").read_text(encoding="utf-8"))

# Builds, inside GIMP, a 200x150 image whose one layer (160x120, a colour ramp) sits at offset (30, 20),
# with an ellipse selected; helpers to read pixels back.
SETUP = r'''
import json, os, sys, time
import gi
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gegl, Gio, GLib
Gegl.init(None)
pdb = Gimp.get_pdb()

def out(tag, obj):
    print(tag + " " + json.dumps(obj), flush=True)

def make_image(seed=0, select=True):
    img = Gimp.Image.new(200, 150, Gimp.ImageBaseType.RGB)
    lay = Gimp.Layer.new(img, "photo", 160, 120, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
    img.insert_layer(lay, None, 0)
    lay.set_offsets(30, 20)
    px = bytearray(160 * 120 * 4)
    for y in range(120):
        for x in range(160):
            i = (y * 160 + x) * 4
            px[i:i + 4] = bytes(((x * 3 + seed) % 256, (y * 2) % 256, (x + y + seed * 7) % 256, 255))
    buf = lay.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, 160, 120), "R'G'B'A u8", bytes(px))
    buf.flush()
    if select:
        img.select_ellipse(Gimp.ChannelOps.REPLACE, 60, 50, 80, 60)
    img.clean_all()
    return img, lay

def pixels(drawable, x, y, w, h, fmt="R'G'B'A u8"):
    return drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE)

def run_proc(name, img, drawables, **args):
    proc = pdb.lookup_procedure(name)
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    if img is not None:
        config.set_property("image", img)
        config.set_core_object_array("drawables", drawables)
    for k, v in args.items():
        config.set_property(k.replace("_", "-"), v)
    t0 = time.time()
    result = proc.run(config)
    status = result.index(0)
    err = result.index(1) if result.length() > 1 else None
    return status, err, time.time() - t0
'''


def test_installer_put_the_host_in_the_gimp_folder(gimp):
    folder = gimp.user_dir / "plug-ins" / "gimp-openai"
    host = folder / "gimp-openai.py"
    assert host.exists() and host.stat().st_mode & stat.S_IXUSR, gimp.install_log
    for name in ("gimp_openai_host.py", "procedures.json", "gimp-openai-engine.json"):
        assert (folder / name).exists(), name
    record = json.loads((folder / "gimp-openai-engine.json").read_text())
    assert record["python"] == "/gimp-openai-work/venv/bin/python"
    assert FAKE_KEY not in gimp.install_log


def test_registers_every_manifest_procedure(gimp):
    run = gimp.python(SETUP + r'''
for name in %r:
    proc = pdb.lookup_procedure(name)
    if proc is None:
        out("PROC", {"name": name, "missing": True}); continue
    out("PROC", {"name": name, "args": [a.name for a in proc.get_arguments()],
                 "label": proc.get_menu_label(), "menus": list(proc.get_menu_paths()),
                 "types": proc.get_image_types() if hasattr(proc, "get_image_types") else None})
''' % [p["name"] for p in MANIFEST["procedures"]]).check()
    got = {d["name"]: d for d in map(json.loads, run.lines_with("PROC "))}
    assert set(got) == {p["name"] for p in MANIFEST["procedures"]}
    for p in MANIFEST["procedures"]:
        d = got[p["name"]]
        assert not d.get("missing"), d
        expected = ["run-mode"] + (["image", "drawables"] if p.get("image_params") else [])
        expected += [q["name"].replace("_", "-") for q in p["params"] if not q.get("secret")]
        assert d["args"] == expected
        assert d["label"] == p["label"]
        # the place (section number, position, section) orders the menu: tests/gimp3/test_menu.py opens it
        assert d["menus"] == [f"{MANIFEST['menu']['gimp3']}/[{host.menu_place(MANIFEST, p['name'])}]"]
        assert "api-key" not in d["args"]  # the key is never a PDB argument


def test_server_error_becomes_a_message_not_a_crash(gimp):
    answers = [Reply.error(401, "Incorrect API key provided: sk-te****cdef.", "invalid_api_key",
                           etype="invalid_request_error")] * 40
    with WireServer(answers) as server:
        env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": FAKE_KEY}
        run = gimp.python(SETUP + r'''
img, lay = make_image()
before = [l.get_name() for l in img.get_layers()]
status, err, secs = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a red kite",
                             model="gpt-image-2")
out("RES", {"status": status.value_nick, "error": err, "layers": [l.get_name() for l in img.get_layers()],
            "before": before})
''', env=env).check()
    res = json.loads(run.lines_with("RES ")[0])
    assert res["status"] == "execution-error", res  # EXECUTION_ERROR, returned, not a crash
    assert res["layers"] == res["before"]
    everything = run.stdout + run.stderr
    assert "Traceback" not in everything
    assert "API key" in everything or "api key" in everything.lower()
    assert FAKE_KEY not in everything


def test_refusals_are_clear(gimp):
    run = gimp.python(SETUP + r'''
img, lay = make_image(select=False)
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="x", model="gpt-image-2")
out("NOSEL", {"status": status.value_nick, "error": err})
img2, lay2 = make_image()
lay3 = Gimp.Layer.new(img2, "second", 10, 10, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
img2.insert_layer(lay3, None, 0)
status, err, _ = run_proc("python-fu-openai-edit-selection", img2, [lay2, lay3], prompt="x", model="gpt-image-2")
out("MULTI", {"status": status.value_nick, "error": err})
img3, lay4 = make_image()
img3.convert_indexed(Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 16, False, False, "")
status, err, _ = run_proc("python-fu-openai-edit-selection", img3, img3.get_selected_layers(), prompt="x")
out("INDEXED", {"status": status.value_nick, "error": err})
''').check()
    for tag, words in (("NOSEL", "There is no selection"), ("MULTI", "2 layers are selected"), ("INDEXED", "indexed")):
        res = json.loads(run.lines_with(tag + " ")[0])
        assert res["status"] == "execution-error", (tag, res)
        assert words in (res["error"] or "") + run.stdout + run.stderr, (tag, res)


CHECK_EDIT = r'''
def snapshot(img, lay):
    ok, ox, oy = lay.get_offsets()
    return pixels(lay, 0, 0, lay.get_width(), lay.get_height()), (ox, oy, lay.get_width(), lay.get_height())

def visible(img, rect):
    vis = Gimp.Layer.new_from_visible(img, img, "vis")
    data = pixels(vis, *rect)
    vis.delete()
    return data

def describe(img, lay, original, rect, timings_path=None):
    sel = img.get_selection().get_buffer().get(Gegl.Rectangle.new(*rect), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
    comp = visible(img, rect)
    differs = [comp[4 * i:4 * i + 4] != original[4 * i:4 * i + 4] for i in range(len(sel))]
    outside_diff = sum(1 for i, s in enumerate(sel) if s == 0 and differs[i])
    inside_changed = sum(1 for i, s in enumerate(sel) if s == 255 and differs[i])
    layers = []
    def walk(items, depth):
        for l in items:
            ok, x, y = l.get_offsets()
            d = {"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(), "depth": depth,
                 "group": l.is_group()}
            m = l.get_mask() if not l.is_group() else None
            if m is not None:
                mw, mh = m.get_width(), m.get_height()
                md = pixels(m, 0, 0, mw, mh, "Y u8")
                d["mask"] = {"min": min(md), "max": max(md)}
                # mask at the ellipse centre (image 100,80) and at the image point (61, 51) just outside it
                for tag, (px, py) in (("centre", (100, 80)), ("outside", (61, 51))):
                    lx, ly = px - x, py - y
                    d["mask"][tag] = md[ly * mw + lx] if 0 <= lx < mw and 0 <= ly < mh else None
            p = l.get_parasite("gimp-openai")
            if p is not None:
                d["parasite"] = json.loads(bytes(p.get_data()).decode("utf-8"))
            layers.append(d)
            if l.is_group():
                walk(l.get_children(), depth + 1)
    walk(img.get_layers(), 0)
    return {"layers": layers, "outside_diff": outside_diff, "inside_changed": inside_changed,
            "selected": sum(1 for s in sel if s == 255)}
'''


EXACT = r'''
def exact_check(img, timings_path):
    """Every inserted layer == the engine's layer_png, its mask == mask_png (byte for byte), from the
    workdir the host kept (GIMP_OPENAI_HOST_KEEP_WORKDIR=1)."""
    from PIL import Image
    import glob
    entries = [json.loads(l) for l in open(timings_path)]
    workdir = [e["path"] for e in entries if e["what"] == "workdir"][-1]
    result = json.load(open(os.path.join(workdir, "job.json")))
    layers = {}
    def walk(items):
        for l in items:
            if l.is_group():
                walk(l.get_children())
            else:
                layers[l.get_name()] = l
    walk(img.get_layers())
    pngs = sorted(p for p in glob.glob(os.path.join(workdir, "out", "*.png"))
                  if not p.endswith("-mask.png") and "partial" not in os.path.basename(p))  # previews: not results
    checks = []
    for png in pngs:
        want = Image.open(png).convert("RGBA")
        want_mask = Image.open(png[:-4] + "-mask.png").convert("L")
        index = int(png[:-4].rsplit("-", 1)[1])
        cands = [l for n, l in layers.items() if n.startswith("OpenAI:") and n.endswith("/%d)" % len(pngs))
                 and "(%d/" % index in n]
        lay = cands[0]
        got = pixels(lay, 0, 0, lay.get_width(), lay.get_height())
        m = lay.get_mask()
        got_mask = pixels(m, 0, 0, m.get_width(), m.get_height(), "Y u8") if m is not None else None
        checks.append({"png": os.path.basename(png), "size": [lay.get_width(), lay.get_height()],
                       "want_size": list(want.size), "pixels_equal": got == want.tobytes(),
                       "mask_equal": got_mask == want_mask.tobytes(),
                       "mask_partial": sum(1 for v in want_mask.tobytes() if 0 < v < 255)})
    return checks
'''


def _timings(gimp):
    path = gimp.work / "timings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_edit_selection_inserts_masked_layers_in_place(gimp, local_server):
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_HOST_TIMINGS": "/gimp-openai-work/timings.jsonl", "GIMP_OPENAI_HOST_KEEP_WORKDIR": "1"}
    (gimp.work / "timings.jsonl").unlink(missing_ok=True)
    run = gimp.python(SETUP + CHECK_EDIT + EXACT + r'''
img, lay = make_image()
Gimp.Selection.feather(img, 6)  # partial mask values too
img.clean_all()
original, rect = snapshot(img, lay)
undo_on, dirty_before = img.undo_is_enabled(), img.is_dirty()
status, err, secs = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a red kite in the sky", n=2)
res = describe(img, lay, original, rect)
res.update({"status": status.value_nick, "error": err, "seconds": secs, "undo_enabled": undo_on,
            "dirty_before": dirty_before, "dirty_after": img.is_dirty(),
            "exact": exact_check(img, "/gimp-openai-work/timings.jsonl")})
out("RES", res)
# WITH_LAST_VALS: no dialog, values from the last interactive run (none here)
proc = pdb.lookup_procedure("python-fu-openai-edit-selection")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.WITH_LAST_VALS)
config.set_property("image", img)
config.set_core_object_array("drawables", [lay])
result = proc.run(config)
out("LAST", {"status": result.index(0).value_nick, "layers": len(img.get_layers()),
            "error": result.index(1) if result.length() > 1 else None})
''', env=env).check()
    res = json.loads(run.lines_with("RES ")[0])
    assert res["status"] == "success", res.get("error") or res
    top = res["layers"]
    group = top[0]
    assert group["group"] and group["depth"] == 0, top
    results = [d for d in top if d["depth"] == 1]
    assert [d["name"] for d in results] == [f"OpenAI: a red kite in the sky ({k}/2)" for k in (1, 2)]
    assert top[-1]["name"] == "photo"  # inserted above the active layer
    for d in results:
        # inside the layer (30,20 160x120) and covering the ellipse (60,50 80x60)
        assert 30 <= d["x"] <= 60 and 20 <= d["y"] <= 50, d
        assert d["x"] + d["w"] >= 140 and d["y"] + d["h"] >= 110 and d["x"] + d["w"] <= 190, d
        assert d["mask"]["centre"] == 255 and d["mask"]["outside"] == 0, d
        assert d["parasite"]["prompt"] == "a red kite in the sky" and d["parasite"]["model"], d
        assert "request_id" in d["parasite"]
    assert res["outside_diff"] == 0, res  # the composite equals the original outside the selection
    assert res["inside_changed"] > res["selected"] // 2, res  # and the edit shows inside it
    # inserted straight from the engine's PNGs into GEGL buffers: byte-exact layers and masks
    assert len(res["exact"]) == 2, res["exact"]
    for c in res["exact"]:
        assert c["size"] == c["want_size"] and c["pixels_equal"] and c["mask_equal"], c
        assert c["mask_partial"] > 0, c  # the feathered edge (values between 0 and 255) survives unchanged
    # undo: libgimp cannot count undo steps. Evidence: undo enabled, the image was clean and is dirty now,
    # the host opened and closed exactly one undo group for it, and GIMP did not have to close a group the
    # plug-in left open (it warns "left image's undo in inconsistent state" when that happens)
    assert res["undo_enabled"] and not res["dirty_before"] and res["dirty_after"], res
    inserts = [e for e in _timings(gimp) if e["what"] == "insert"]
    assert inserts and inserts[0]["undo_groups"] == 1 and inserts[0]["layers"] == 2, inserts
    assert "inconsistent" not in run.stderr.lower()
    last = json.loads(run.lines_with("LAST ")[0])
    if last["status"] == "success":
        # GIMP keeps last values per user profile: an earlier interactive run in this session's profile (the
        # dialog tests) left a prompt, so WITH_LAST_VALS reran the edit with it, without a dialog: one more
        # insert of one layer, in its own undo group
        assert len(inserts) == 2 and inserts[1]["layers"] == 1 and inserts[1]["undo_groups"] == 1, inserts
    else:
        # no interactive run yet: WITH_LAST_VALS runs on the defaults (empty prompt) and says so plainly
        # instead of hanging or crashing, and inserts nothing
        assert last["status"] == "execution-error" and "prompt is empty" in last["error"], last
        assert len(inserts) == 1, inserts
    assert FAKE_KEY not in run.stdout + run.stderr
    t = _timings(gimp)
    export = [e["seconds"] for e in t if e["what"] == "export"]
    insert = [e["seconds"] for e in t if e["what"] == "insert"]
    print(f"\nGIMP {gimp.version}: host export {export[0] * 1000:.1f} ms, insert (2 layers + masks) "
          f"{insert[0] * 1000:.1f} ms, whole procedure {res['seconds']:.2f} s")


def test_batch_over_two_open_images(gimp, local_server):
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    run = gimp.python(SETUP + CHECK_EDIT + r'''
a, la = make_image(seed=1)
b, lb = make_image(seed=2)
oa, ra = snapshot(a, la)
ob, rb = snapshot(b, lb)
proc = pdb.lookup_procedure("python-fu-openai-batch")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
config.set_property("prompt", "a small boat")
result = proc.run(config)
out("RES", {"status": result.index(0).value_nick, "a": describe(a, la, oa, ra), "b": describe(b, lb, ob, rb)})
''', env=env).check()
    res = json.loads(run.lines_with("RES ")[0])
    assert res["status"] == "success", res.get("error") or res
    for key in ("a", "b"):
        names = [d["name"] for d in res[key]["layers"]]
        assert names == ["OpenAI: a small boat (1/1)", "photo"], (key, names)
        assert res[key]["outside_diff"] == 0
    assert "2 of 2 images done" in run.stdout + run.stderr


def test_run_again_with_the_mask_or_the_group_active(gimp, local_server):
    """What an artist does next: run again at once (GIMP leaves the result's mask active), and again with the
    results' group active (n=2): each works and each new result lands on top, visible."""
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    run = gimp.python(SETUP + r'''
img, lay = make_image()
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="one", model="gpt-image-2")
top = img.get_layers()[0]
mask = top.get_mask()
out("FIRST", {"status": status.value_nick, "error": err, "mask": mask is not None})
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [mask], prompt="two", model="gpt-image-2", n=2)
out("MASK", {"status": status.value_nick, "error": err, "names": [l.get_name() for l in img.get_layers()]})
group = img.get_layers()[0]
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [group], prompt="three", model="gpt-image-2")
out("GROUP", {"status": status.value_nick, "error": err, "names": [l.get_name() for l in img.get_layers()]})
''', env=env).check()
    first = json.loads(run.lines_with("FIRST ")[0])
    assert first["status"] == "success" and first["mask"], first
    again = json.loads(run.lines_with("MASK ")[0])
    assert again["status"] == "success", again  # the mask stood for its layer
    assert again["names"][0] == "OpenAI: two (2 results)" and again["names"][1] == "OpenAI: one (1/1)", again
    group = json.loads(run.lines_with("GROUP ")[0])
    assert group["status"] == "success", group  # the group stood for the layer its results were made for
    assert group["names"][:3] == ["OpenAI: three (1/1)", "OpenAI: two (2 results)", "OpenAI: one (1/1)"], group
    assert group["names"][-1] == "photo"
    everything = run.stdout + run.stderr
    assert "Traceback" not in everything and "is a channel or a layer mask" not in everything
