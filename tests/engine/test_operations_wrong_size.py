"""A returned image of the wrong size (the client does not check): saved to history first, then scaled back
when the aspect matches within 1% (with a note), else refused with a MalformedResponseError naming the saved
file. Against the REAL local server's ``wrong_size`` fault."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gimp_openai import operations
from gimp_openai.errors import MalformedResponseError
from gimp_openai.geometry import Rect
from gimp_openai.history import History
from gimp_openai.settings import Settings
from PIL import Image

from tests.conftest import FAKE_KEY

pytestmark = pytest.mark.slow


def photo(w=320, h=240, seed=3):
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    pix[..., 3] = 255
    return pix


def run(server, tmp_path, operation="edit", model="gpt-image-2"):
    settings = Settings(base_url=server.url)
    engine = operations.Engine.from_settings(settings, FAKE_KEY, history=History(tmp_path / "history"))
    pixels = photo()
    layer = Rect(0, 0, pixels.shape[1], pixels.shape[0])
    options = operations.Options(model=model, prompt="a red kite", align=False, tone_match=False)
    if operation == "edit":
        sel = np.zeros(pixels.shape[:2], np.uint8)
        sel[80:160, 100:200] = 255
        return pixels, sel, operations.edit(engine, options, place_pixels=pixels, selection=sel, layer=layer)
    return pixels, None, operations.variation(engine, options, place_pixels=pixels, layer=layer)


def history_pngs(tmp_path):
    return sorted(p for p in (tmp_path / "history").rglob("*.png") if not p.name.endswith(".mask.png"))


def test_same_aspect_is_scaled_back_with_a_note_and_composites_cleanly(start_local_server, tmp_path):
    server = start_local_server("--fault", "wrong_size")  # half the size asked for
    pixels, sel, outcome = run(server, tmp_path)
    (out,) = outcome.outputs
    tw, th = outcome.plan.target
    note = f"the server returned {tw // 2}x{th // 2} for a {tw}x{th} request; scaled back to {tw}x{th}"
    assert any(note in n for n in out.notes), out.notes
    (saved,) = history_pngs(tmp_path)
    assert saved == out.history_png and Image.open(saved).size == (tw // 2, th // 2)  # the raw answer, kept
    full = full_composite(pixels, out)
    np.testing.assert_array_equal(full[sel == 0], pixels[sel == 0])
    assert server.stats()["endpoints"].get("edits") == 1


@pytest.mark.parametrize("operation,model", [("edit", "gpt-image-2"), ("variation", "dall-e-2")])
def test_another_aspect_is_refused_and_names_the_saved_file(start_local_server, tmp_path, operation, model):
    server = start_local_server("--fault", "wrong_size;size=640x320")
    with pytest.raises(MalformedResponseError) as err:
        run(server, tmp_path, operation, model)
    (saved,) = history_pngs(tmp_path)
    assert Image.open(saved).size == (640, 320)
    exc = err.value
    assert exc.saved == [str(saved)] and str(saved) in exc.message
    assert "returned a 640x320 image" in exc.message and "not composited" in exc.message
    sidecar = [p for p in (tmp_path / "history").rglob("*.json")]
    assert sidecar and FAKE_KEY not in json.dumps([p.read_text() for p in sidecar])


def test_aspect_tolerance_is_one_percent(tmp_path):
    saved = [tmp_path / "a.png"]
    image = np.zeros((100, 201, 4), np.uint8)  # 0.5% off 2:1
    fitted, notes = operations._fit_returned(image, (400, 200), saved[0], saved, None)
    assert fitted.shape == (200, 400, 4) and notes
    with pytest.raises(MalformedResponseError):
        operations._fit_returned(np.zeros((100, 205, 4), np.uint8), (400, 200), saved[0], saved, None)
    same = np.zeros((200, 400, 4), np.uint8)
    assert operations._fit_returned(same, (400, 200), saved[0], saved, None) == (same, [])


def full_composite(original: np.ndarray, output: operations.Output) -> np.ndarray:
    """The whole picture with ``output`` pasted in as the CLI writes it (cli.result_patch)."""
    from gimp_openai.cli import result_patch

    full = original.copy()
    full[output.y : output.y + output.height, output.x : output.x + output.width] = result_patch(original, output)
    return full
