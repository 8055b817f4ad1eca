"""Fixtures for the GIMP 2.10 host tests: the gimpfu stubs on sys.path, a fresh fake GIMP per test, the
plug-in loaded and registered through gimp.main like GIMP does, and an engine (fake or real)."""

import importlib.util
import json
import os
import stat
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUBS = os.path.join(ROOT, "tests", "stubs")
PLUGIN = os.path.join(ROOT, "plugin", "gimp2", "openai_gimp2.py")
if STUBS not in sys.path:
    sys.path.insert(0, STUBS)


class G2:
    """Handles for one test: the fake gimp, gimpfu, pdb, shelf and the loaded plug-in."""


@pytest.fixture
def g2():
    import gimp
    import gimpfu
    import gimpshelf

    gimp.reset()
    gimpfu._registered_plugins_.clear()
    gimpfu.DIALOG = None
    gimpshelf.shelf.clear()
    spec = importlib.util.spec_from_file_location("openai_gimp2", PLUGIN)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    plugin.register_all()
    plugin.main()
    h = G2()
    h.gimp, h.gimpfu, h.pdb, h.shelf, h.plugin = gimp, gimpfu, gimp.pdb, gimpshelf.shelf, plugin
    yield h
    plugin.ASK = None
    gimp.reset()


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """GIMP_OPENAI_PYTHON -> an executable that runs tests/gimp2/fake_engine.py; returns the call log reader."""
    script = tmp_path / "engine-python"
    script.write_text("#!/bin/sh\nexec {} {} \"$@\"\n".format(sys.executable, os.path.join(ROOT, "tests", "gimp2",
                                                                                  "fake_engine.py")))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "engine.log"
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", str(script))
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))

    def calls():
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return calls


def textured(h, w, channels=3, seed=0):
    """Detail everywhere, so any misplaced pixel shows."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)


def make_image(g2, width=200, height=150, base=0, layer_box=None, layer_type=None, name="photo.xcf", seed=0):
    """An image with one textured layer (optionally offset / larger than the canvas)."""
    gimp = g2.gimp
    image = gimp.Image(width, height, base)
    image.filename = "/pictures/" + name
    x, y, w, h = layer_box or (0, 0, width, height)
    ltype = layer_type if layer_type is not None else {0: 0, 1: 2, 2: 4}[base]
    layer = gimp.Layer(image, "Background", w, h, ltype)
    layer.pixels[...] = textured(h, w, layer.bpp, seed)
    if base == 2:
        image.colormap = bytes(range(256)) * 3
        layer.pixels[...] = layer.pixels % 200
    image.insert_layer(layer)
    layer.set_offsets(x, y)
    image.undo_steps = []
    return image, layer
