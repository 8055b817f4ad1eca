"""The 2.10 host finds hostlib, the manifest and the engine record in every layout it is installed in:
the installed one (``plug-ins/openai_gimp2.py`` + ``plug-ins/gimp_openai_support/``), flat beside itself,
and the repository checkout (the g2 fixture)."""

import importlib.util
import json
import os
import shutil
import sys

import pytest

from tests.gimp2.conftest import PLUGIN, ROOT, make_image
from tests.gimp2.test_plugin_fake_engine import edit_args


def install(tmp_path, engine_python, support):
    plugins = tmp_path / "plug-ins"
    target = plugins / "gimp_openai_support" if support else plugins
    target.mkdir(parents=True)
    shutil.copy(PLUGIN, str(plugins / "openai_gimp2.py"))
    for name in ("gimp_openai_host.py", "gimp_openai_workflow.py"):
        shutil.copy(os.path.join(ROOT, "plugin", "hostlib", name), str(target))
    manifest = json.load(open(os.path.join(ROOT, "manifest", "procedures.json")))
    manifest["date"] = "layout-test"  # proves which manifest was registered
    (target / "procedures.json").write_text(json.dumps(manifest))
    (target / "gimp-openai-engine.json").write_text(json.dumps({"python": engine_python}))
    return plugins / "openai_gimp2.py", target


@pytest.mark.parametrize("support", [True, False], ids=["support-subfolder", "flat"])
def test_host_finds_hostlib_manifest_and_engine_record(g2, fake_engine, tmp_path, monkeypatch, support):
    engine_python = os.environ["GIMP_OPENAI_PYTHON"]
    monkeypatch.delenv("GIMP_OPENAI_PYTHON")  # only the record may say where the engine is
    monkeypatch.delenv("GIMP_OPENAI_MANIFEST", raising=False)
    script, target = install(tmp_path, engine_python, support)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "gimp_openai_host", raising=False)
    monkeypatch.delitem(sys.modules, "gimp_openai_workflow", raising=False)
    g2.gimpfu._registered_plugins_.clear()
    spec = importlib.util.spec_from_file_location("openai_gimp2_installed", str(script))
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert os.path.dirname(os.path.abspath(plugin.host.__file__)) == str(target)
    plugin.register_all()
    assert {reg[4] for reg in g2.gimpfu._registered_plugins_.values()} == {"layout-test"}
    assert plugin.host.find_engine_python(plugin.SUPPORT_DIRS) == engine_python
    plugin.main()
    image, layer = make_image(g2, 80, 60)
    g2.pdb.gimp_image_select_rectangle(image, 2, 10, 10, 30, 20)
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("a kite"))
    assert g2.gimp.state.messages == [] and image.layers[0].name == "OpenAI: a kite (1/1)"
    assert any(c["argv"][3] == "job" for c in fake_engine())
    monkeypatch.delitem(sys.modules, "gimp_openai_host", raising=False)
    monkeypatch.delitem(sys.modules, "gimp_openai_workflow", raising=False)


def test_support_folder_has_no_python_gimp_would_run(tmp_path):
    """The subfolder's only .py is the hostlib module, which does nothing when run (no registration)."""
    source = open(os.path.join(ROOT, "plugin", "hostlib", "gimp_openai_host.py")).read()
    assert "register(" not in source and "__main__" not in source
