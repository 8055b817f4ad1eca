"""The seamless preparation runs while the engine waits for the server, never while it is still sending.

Real client, real local server on loopback (gpt-like renders: shifted and re-toned like GPT's), in process, so
the order of events can be recorded: the upload's last "sending" event, the start of prepare_seamless, and the
arrays make_seamless was then handed.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from gimp_openai import operations
from gimp_openai.geometry import Rect
from gimp_openai.history import History
from gimp_openai.settings import Settings
from PIL import Image

from tests.engine._client_helpers import client_for
from tests.engine.test_jobs_e2e import DATA
from tests.support.local_server import LocalServerHandle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpt_like_server():
    handle = LocalServerHandle(("--render", "gpt-like", "--latency", "0.5"))
    yield handle
    handle.stop()


def test_prepare_starts_after_the_upload_and_its_answer_is_used(gpt_like_server, monkeypatch, tmp_path):
    import gimp_openai.seamless as seamless

    log: list[tuple[str, float, str]] = []
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            log.append((what, time.monotonic(), threading.current_thread().name))

    real_prepare, real_make = seamless.prepare_seamless, seamless.make_seamless
    handed: list[object] = []

    def prepare(*args, **kwargs):
        note("prepare")
        return real_prepare(*args, **kwargs)

    def make(original, result, selection, **kwargs):
        prepared = kwargs.get("prepared")
        handed.append(prepared is not None and prepared.fits(original, selection))
        return real_make(original, result, selection, **kwargs)

    monkeypatch.setattr(seamless, "prepare_seamless", prepare)
    monkeypatch.setattr(seamless, "make_seamless", make)

    class Recorder(operations._RetryReporter):
        """The client's events as the engine receives them (the per-request callback reports through this)."""

        def __call__(self, event) -> None:
            if event.kind in ("sending", "waiting"):
                note(f"{event.kind} {event.fraction}")
            super().__call__(event)

    monkeypatch.setattr(operations, "_RETRY_REPORTER", Recorder())
    engine = operations.Engine(Settings(), client_for(gpt_like_server.url), History(tmp_path / "history"))
    pixels = np.asarray(Image.open(DATA / "lake-balloon.png").convert("RGBA"))
    sel = np.asarray(Image.open(DATA / "lake-balloon-selection.png").convert("L"))
    options = operations.Options(model="gpt-image-2", prompt="a red balloon")
    outcome = operations.edit(engine, options, place_pixels=pixels, selection=sel,
                              layer=Rect(0, 0, pixels.shape[1], pixels.shape[0]))

    kinds = [what for what, _, _ in log]
    assert kinds.count("prepare") == 1, kinds
    last_sending = max(i for i, what in enumerate(kinds) if what.startswith("sending"))
    assert kinds.index("prepare") > last_sending, kinds            # not while the upload is being sent
    assert kinds[last_sending] == "sending 1.0"
    thread = next(name for what, _, name in log if what == "prepare")
    assert thread != threading.main_thread().name                 # off the thread that talks to the server
    assert handed == [True]                                       # made from the very arrays: used, not redone
    assert "shifted" in outcome.outputs[0].report, outcome.outputs[0].report
