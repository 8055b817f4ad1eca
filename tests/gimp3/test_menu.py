"""Filters > OpenAI as an artist opens it, in the real GUI GIMP 3.0 and 3.2 under Xvfb: the actions, then the
results, then Settings, in the manifest's order (plugin/hostlib menu_order), read from the GUI itself.

GIMP draws its menus with GTK in its own process and no accessibility bridge runs here, so the test reads the
menu the way an artist does: it opens Filters (Alt+R), the last entry, OpenAI (End, Right), goes down k entries
and presses Return, then notes which procedure GIMP ran for that entry (the host's record of each run, written
when GIMP_OPENAI_HOST_TIMINGS names a file) and which window it opened (its dialog, or GIMP's message when there
is nothing to work on: no results in the image, an empty history). Screenshots of the open menu and of each
window are kept in /tmp/gimp-openai-dialogs.

GIMP orders a plug-in's entries by the collation key of their menu path in the artist's locale, and most
locales skip punctuation where C compares bytes, so GIMP runs in en_US.UTF-8 when this machine has the locale
sources to build it (inside the chroot, into the test's own folder); otherwise in C.UTF-8, and the test says
so. GIMP 3 draws no separator inside a plug-in's own submenu (only sections of its menus/*.ui files get one;
see docs/architecture.md), so there is none to look for.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_dialogs import IMAGE, _open_openai_menu
from tests.support.gimp3 import REPO, GimpChroot
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]

import sys  # noqa: E402

sys.path.insert(0, str(REPO / "plugin" / "hostlib"))
import gimp_openai_host as host  # noqa: E402

MANIFEST = host.load_manifest(str(REPO / "manifest" / "procedures.json"))
I18N = Path("/usr/share/i18n")

CODE = IMAGE + r'''
img, lay = make_image()
mark("menu", {"image": img.get_id()})
wait_flag("menu-done", timeout=600)
'''


def _locale(chroot: GimpChroot) -> dict[str, str]:
    """en_US.UTF-8 built with the chroot's own localedef into its work folder, or C.UTF-8 without sources."""
    if not (I18N / "locales" / "en_US").exists() or not (I18N / "charmaps" / "UTF-8.gz").exists():
        return {}
    built = chroot.work / "locale" / "en_US.UTF-8"
    if not built.exists():
        sources = chroot.work / "i18n"
        if not sources.exists():
            shutil.copytree(I18N / "locales", sources / "locales")
            (sources / "charmaps").mkdir()
            shutil.copy(I18N / "charmaps" / "UTF-8.gz", sources / "charmaps")
        built.parent.mkdir(parents=True, exist_ok=True)
        chroot.run(["localedef", "-i", "en_US", "-f", "UTF-8", chroot.inside(built)],
                   env={"I18NPATH": chroot.inside(sources)}, timeout=120).check()
    return {"LOCPATH": chroot.inside(built.parent), "LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8"}


def _windows(ui: GuiGimp) -> dict[str, str]:
    run = ui.x("xdotool", "search", "--onlyvisible", "--name", ".")
    return {wid: ui.x("xdotool", "getwindowname", wid).stdout.strip() for wid in run.stdout.split()}


def _new_window(ui: GuiGimp, before: dict[str, str], timeout: float = 60) -> tuple[str, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        new = {w: n for w, n in _windows(ui).items() if w not in before and n}
        if new:
            time.sleep(0.5)  # a dialog may be followed by its own window (a message after the check)
            new = {w: n for w, n in _windows(ui).items() if w not in before and n}
            wid = sorted(new)[-1]
            return wid, new[wid]
        time.sleep(0.25)
    raise AssertionError(f"no new window after {timeout} s; visible: {_windows(ui)}")


#: What each entry opens on an image with a selection and no results, an empty history: the dialogs by their
#: titles, GIMP's message for the three that have nothing to work on.
WINDOWS = ["Edit Selection", "Variations", "Generate", "Expand Canvas", "Batch over Open Images",
           "GIMP Message", "GIMP Message", "GIMP Message", "Settings"]


def test_openai_menu_order(gimp, local_server):
    """The entries run, top to bottom: Edit Selection, Variations, Generate, Expand Canvas, Batch, then Pick
    Result, Show Next Result, History, then Settings."""
    require_gui(gimp)
    lang = _locale(gimp)
    timings = gimp.work / f"menu-timings-{time.monotonic_ns()}.jsonl"
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_HISTORY_DIR": f"/gimp-openai-work/history-menu-{time.monotonic_ns()}",
           "GIMP_OPENAI_HOST_TIMINGS": gimp.inside(timings), **lang}
    names = [n for _, group in host.menu_order(MANIFEST) for n in group]
    seen = []
    with GuiGimp(gimp, CODE, env=env, timeout=600, name="menu") as ui:
        ui.wait_mark("menu", timeout=90)
        image_window = ui.wait_window(r"\[Untitled\].*GIMP", timeout=60)
        for k in range(len(names)):
            before = _windows(ui)
            _open_openai_menu(ui, image_window, k)
            if k == 0:
                ui.screenshot("open")
            ui.key("Return")
            wid, title = _new_window(ui, before)
            seen.append(title)
            ui.screenshot(f"{k + 1}", window=wid)
            ui.focus(wid)
            ui.key("Escape")
            ui.wait_window_gone(wid)
        ui.flag("menu-done")
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    print(f"GIMP {gimp.version} in {lang.get('LC_ALL', 'C.UTF-8')}: {seen}")
    entries = [json.loads(line) for line in timings.read_text(encoding="utf-8").splitlines()]
    ran = [e["procedure"] for e in entries if e["what"] == "run"]
    assert ran == names, ran
    assert all(e["interactive"] for e in entries if e["what"] == "run"), entries
    assert seen == WINDOWS, seen
    errors = [e["text"] for e in entries if e["what"] == "message" and e["kind"] == "error"]
    assert len(errors) == 3 and "not a group of OpenAI results" in errors[0] and "holds no results" in errors[2], errors
