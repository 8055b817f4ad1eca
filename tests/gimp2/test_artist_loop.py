"""An artist's session in GIMP 2.10, through the gimpfu stubs, the REAL engine and the REAL local server: the
loop the GUI test walks in GIMP 3 (tests/gimp3/test_artist_session.py), with GIMP's Cancel played by what it
does to a plug-in: it kills it, so the host runs none of its own cleanup and the engine's input ends.

The settings round trip (the dialog seeded with what is saved, the key in a hidden field, never in the shelf
or argv) is tests/gimp2/test_plugin_fake_engine.py::test_settings_key_via_hidden_field_never_in_shelf_or_argv.
"""

import os
import pathlib
import sys
import tempfile
import time

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp2.conftest import make_image

pytestmark = pytest.mark.slow

LIBRARY_TEXT = ("HTTPConnectionPool", "Errno", "Max retries", "Traceback", "requests.", "urllib3")
EDIT = "python-fu-openai-edit-selection"


class Killed(BaseException):
    """GIMP's Cancel: the plug-in process is killed where it stands (no except clause of ours runs)."""


class Session:
    """The plug-in's GIMP for one test: dialogs answered, engines and job folders watched, Cancel played."""

    def __init__(self, g2, monkeypatch, tmp_path):
        self.g2, self.monkeypatch = g2, monkeypatch
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(self.tmp))  # the host's job folders
        monkeypatch.setenv("TMPDIR", str(self.tmp))  # the engine's (a rescue folder would show here)
        monkeypatch.setenv("GIMP_OPENAI_PYTHON", sys.executable)
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        self.host = sys.modules["gimp_openai_host"]
        self.engines = []
        start = self.host._start_engine

        def started(*args, **kwargs):
            proc = start(*args, **kwargs)
            self.engines.append(proc)
            return proc
        monkeypatch.setattr(self.host, "_start_engine", started)
        self.values = None
        g2.gimpfu.DIALOG = self.dialog
        self.on_text = None
        set_text = g2.pdb.gimp_progress_set_text
        monkeypatch.setattr(g2.pdb, "gimp_progress_set_text",
                            lambda text: (self.on_text and self.on_text(text), set_text(text))[1])
        self.on_end = None
        end = g2.pdb.gimp_progress_end
        monkeypatch.setattr(g2.pdb, "gimp_progress_end", lambda: (self.on_end and self.on_end(), end())[1])
        self.ended_before_undo = []
        undo = g2.pdb.gimp_image_undo_group_start

        def undo_start(image):
            self.ended_before_undo.append(g2.gimp.state.progress[-1:] == [("end", None)])
            return undo(image)
        monkeypatch.setattr(g2.pdb, "gimp_image_undo_group_start", undo_start)

    def dialog(self, name, values):
        names = [p[1] for p in self.g2.gimpfu._registered_plugins_[name][8]]
        values = list(values)
        for key, value in (self.values or {}).items():
            values[names.index(key)] = value
        return values

    def edit(self, image, drawable, **values):
        """Edit Selection from the menu: the dialog with ``values`` typed in, OK."""
        self.values = values
        self.g2.pdb.python_fu_openai_edit_selection(image, drawable, run_mode=self.g2.gimpfu.RUN_INTERACTIVE)

    def repeat(self, image, drawable):
        """Filters > Repeat: the last values, no dialog."""
        self.g2.pdb.python_fu_openai_edit_selection(image, drawable, run_mode=self.g2.gimpfu.RUN_WITH_LAST_VALS)

    def killed(self, run):
        """``run`` with the plug-in killed where a hook raises Killed: the host removes no folder of its own
        then (a killed process runs no cleanup), so a folder that goes, the engine removed."""
        cleanup = self.host.cleanup
        self.host.cleanup = lambda workdir: None
        try:
            with pytest.raises(Killed):
                run()
        finally:
            self.host.cleanup = cleanup
            self.on_text = self.on_end = None

    def folders(self):
        return sorted(p.name for p in self.tmp.iterdir())

    def messages(self):
        said = [str(m) for m in self.g2.gimp.state.messages]
        del self.g2.gimp.state.messages[:]
        return said


def _top(image):
    return [(layer.name, layer.visible) for layer in image.layers]


def _plain(text):
    for word in LIBRARY_TEXT:
        assert word not in text, f"library text {word!r} shown to the artist:\n{text}"
    assert FAKE_KEY not in text


def _wait_gone(procs, seconds=10):
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    return [p.poll() for p in procs]


def test_the_artists_loop_in_gimp_2_10(g2, start_local_server, monkeypatch, tmp_path):
    server = start_local_server("--latency", "2")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    s = Session(g2, monkeypatch, tmp_path)
    history = pathlib.Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])  # tests/conftest.py's, this test's own
    image, layer = make_image(g2, 200, 150)
    g2.pdb.gimp_image_select_ellipse(image, 2, 60, 40, 80, 60)

    # 1. Edit, then edit again at once with the first result's mask as the active drawable
    s.edit(image, layer, prompt="a red kite")
    first = image.layers[0]
    assert first.mask is not None and first.name == "OpenAI: a red kite (1/1)"
    s.edit(image, first.mask, prompt="a blue kite")
    # 2. Filters > Repeat with the last values, the mask of the newest result active
    s.repeat(image, image.layers[0].mask)
    assert _top(image) == [("OpenAI: a blue kite (1/1)", True), ("OpenAI: a blue kite (1/1)", True),
                           ("OpenAI: a red kite (1/1)", True), ("Background", True)], _top(image)
    # 3. n = 3: a group of three, only the first visible
    s.edit(image, image.layers[0].mask, prompt="a green kite", n=3)
    group = image.layers[0]
    assert group.is_group and group.name == "OpenAI: a green kite (3 results)"
    assert [(la.name, la.visible) for la in group.layers] == [
        (f"OpenAI: a green kite ({k}/3)", k == 1) for k in (1, 2, 3)]
    assert s.messages() == []
    assert s.ended_before_undo and all(s.ended_before_undo), "a Cancel could cut an insertion in half"
    assert image.undo_depth == 0 and len(image.layers) == 5
    assert s.folders() == [] and _wait_gone(s.engines) == [0] * len(s.engines)

    # 4. Cancel while the server works: the engine stops by itself at once, its folder goes, nothing is said
    def cancel_waiting(text):
        if text.startswith("Waiting"):
            raise Killed()
    s.on_text = cancel_waiting
    s.engines[:] = []
    s.killed(lambda: s.edit(image, layer, prompt="a paper boat", n=1))
    assert _wait_gone(s.engines) == [0], "the engine did not end by itself after the Cancel"
    assert s.folders() == [] and len(image.layers) == 5 and s.messages() == []

    # 5. Cancel when the paid image has arrived, just before the layers go in (where GIMP can still kill
    # the plug-in: the progress ends there, and with it GIMP's Cancel): nothing inserted, undo whole
    said = []

    def cancel_before_insert():
        if any(text.startswith("Waiting") for text in said):  # the job's progress, not an earlier one's end
            raise Killed()
    before = set(p for p in history.rglob("*.png") if not p.name.endswith(".mask.png")) if history.exists() else set()
    s.on_text, s.on_end = said.append, cancel_before_insert
    s.engines[:] = []
    s.killed(lambda: s.edit(image, layer, prompt="a paper plane", n=1))
    assert _wait_gone(s.engines) == [0]
    paid = sorted(set(p for p in history.rglob("*.png") if not p.name.endswith(".mask.png")) - before)
    assert len(paid) == 1 and s.folders() == [] and len(image.layers) == 5 and image.undo_depth == 0

    # 6. The server down: one message, plain words, with the paid image of the cancelled run, once
    gone = start_local_server()
    dead = gone.url
    gone.stop()
    monkeypatch.setenv("OPENAI_BASE_URL", dead)
    s.edit(image, layer, prompt="a paper boat", n=1)
    (text,) = s.messages()
    _plain(text)
    assert "127.0.0.1" in text and "cancelled run" in text and text.count(paid[0].name) == 1, text
    assert s.folders() == [] and len(image.layers) == 5

    # 7. The image closed while the request runs: the result opens as a new image, said once
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)

    def close_image(text):
        if text.startswith("Waiting") and image in g2.gimp.state.images:
            g2.gimp.delete_image(image)
    s.on_text = close_image
    s.edit(image, layer, prompt="a paper boat", n=1)
    s.on_text = None
    (text,) = s.messages()
    _plain(text)
    assert "was closed" in text and "new image" in text, text
    (new,) = [i for i in g2.gimp.image_list() if i is not image]
    assert [la.name for la in new.layers] == ["OpenAI: a paper boat (1/1)"] and new.undo_depth == 0
    assert new in [d.image for d in g2.gimp.state.displays]
    assert s.folders() == [] and _wait_gone(s.engines) == [0] * len(s.engines)
