"""The Flatpak layout inside real GIMP 3, minus the sandbox itself.

Flatpak GIMP reads its user folder from ``~/.var/app/org.gimp.GIMP/config/GIMP/<ver>`` (the sandbox sets
XDG_CONFIG_HOME to ``~/.var/app/org.gimp.GIMP/config``) and runs plug-ins with the sandbox's own Python.
Here: the installer writes that layout (``--gimp-dir`` into the Flatpak folder, ``--flatpak-python``,
``--skip-engine``: the engine copied into the site folder stands in for ``pip --target``, which would
download manylinux wheels), GIMP runs with XDG_CONFIG_HOME set as the sandbox sets it, and an edit goes
through the wrapper (``/usr/bin/python3`` with the site folder on PYTHONPATH) to the local server.
What this does not test: the sandbox's mounts and permissions, and the wheels for its Python.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_gimp3_host import SETUP
from tests.support.gimp3 import REPO, REPO_INSIDE, all_versions, make_chroot

pytestmark = [pytest.mark.gimp3]
FLATPAK_CONFIG = ".var/app/org.gimp.GIMP/config"


@pytest.mark.parametrize("version", all_versions(), ids=lambda v: f"gimp{v}")
def test_flatpak_layout_runs_an_edit_through_the_wrapper(version, tmp_path, local_server):
    chroot = make_chroot(version, tmp_path / "work")
    plugins_inside = f"{chroot.home_inside}/{FLATPAK_CONFIG}/GIMP/{version}/plug-ins"
    (chroot.home / FLATPAK_CONFIG / "GIMP" / version).mkdir(parents=True)
    run = chroot.run(["python3", f"{REPO_INSIDE}/scripts/install.py", "--gimp-dir", plugins_inside,
                      "--skip-engine", "--flatpak-python", "3.12"], timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    folder = chroot.home / FLATPAK_CONFIG / "GIMP" / version / "plug-ins" / "gimp-openai"
    record = json.loads((folder / "gimp-openai-engine.json").read_text())
    site_inside = f"{chroot.home_inside}/.var/app/org.gimp.GIMP/data/gimp-openai/site"
    assert record["kind"] == "flatpak" and record["pythonpath"] == [site_inside], record
    assert record["python"] == f"{chroot.home_inside}/.var/app/org.gimp.GIMP/data/gimp-openai/python3"
    shutil.copytree(REPO / "plugin" / "gimp_openai", chroot.outside(site_inside) / "gimp_openai",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"XDG_CONFIG_HOME": f"{chroot.home_inside}/{FLATPAK_CONFIG}",
           "XDG_DATA_HOME": f"{chroot.home_inside}/.var/app/org.gimp.GIMP/data",
           "OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY}
    gimp_run = chroot.python(SETUP + r'''
img, lay = make_image()
status, err, _ = run_proc("python-fu-openai-edit-selection", img, [lay], prompt="a kite", model="gpt-image-2")
out("RES", {"status": status.value_nick, "error": err, "layers": [l.get_name() for l in img.get_layers()]})
''', env=env).check()
    res = json.loads(gimp_run.lines_with("RES ")[0])
    assert res["status"] == "success", res
    assert res["layers"] == ["OpenAI: a kite (1/1)", "photo"], res
    # GIMP registered it from the Flatpak folder (its pluginrc lives in the Flatpak user folder)
    assert "gimp-openai.py" in (chroot.home / FLATPAK_CONFIG / "GIMP" / version / "pluginrc").read_text(
        errors="replace")
    assert FAKE_KEY not in gimp_run.stdout + gimp_run.stderr
