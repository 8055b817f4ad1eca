"""The GIMP 3 host inside a real, headless GIMP 3.0 (trixie) and 3.2 (forky): install, registration,
edit through the PDB against a real server on loopback, batch, errors as messages."""

from __future__ import annotations

import json
import stat

import pytest

from tests.conftest import FAKE_KEY
from tests.support.gimp3 import REPO
from tests.support.wire_server import Reply, WireServer

pytestmark = [pytest.mark.gimp3]
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
        assert d["menus"] == [MANIFEST["menu"]["gimp3"]]
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
    for tag, words in (("NOSEL", "Nothing is selected"), ("MULTI", "2 layers are selected"), ("INDEXED", "indexed")):
        res = json.loads(run.lines_with(tag + " ")[0])
        assert res["status"] == "execution-error", (tag, res)
        assert words in (res["error"] or "") + run.stdout + run.stderr, (tag, res)
