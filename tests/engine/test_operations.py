"""operations.py with an in-process client double: the order of steps, recoveries and outputs.

The double stands in for ImagesClient at its documented interface (edit/variation/generate -> ImagesResult),
so these tests pin the engine's own logic: history before anything else, the single size fallback, the
model-gone message, both variation paths, the checks before paying. End-to-end runs against the real local
server are in test_cli_e2e.py and test_jobs_e2e.py.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import operations
from gimp_openai.client import ImagesResult, ReturnedImage
from gimp_openai.errors import (
    InvalidInputError,
    MalformedResponseError,
    ModelNotFoundError,
    UnsupportedModelError,
    UnsupportedSizeError,
)
from gimp_openai.geometry import Rect
from gimp_openai.progress import Progress, Ticker, waiting_fraction
from gimp_openai.settings import Settings
from PIL import Image

from tests.conftest import FAKE_KEY


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def unpng(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


class FakeClient:
    """Answers like the API: returns the sent image with the masked area painted (one colour per result)."""

    def __init__(self, *, refuse_free_sizes=False, always_refuse=False, gone=False, problems=(), colours=None):
        self.calls: list[tuple[str, dict]] = []
        self.refuse_free_sizes = refuse_free_sizes
        self.always_refuse = always_refuse
        self.gone = gone
        self.problems = list(problems)
        self.colours = colours or [(0, 0, 255, 255), (255, 255, 0, 255), (0, 255, 0, 255)]
        self.lock = threading.Lock()

    def _record(self, kind, kwargs):
        with self.lock:
            self.calls.append((kind, kwargs))

    def _refuse(self, size):
        if self.gone:
            raise ModelNotFoundError("The model `gpt-image-1` has been deprecated", model="gpt-image-1", status=404)
        if self.always_refuse or (self.refuse_free_sizes and size not in ("1024x1024", "1536x1024", "1024x1536")):
            raise UnsupportedSizeError(f"Invalid size {size}", status=400, param="size")

    def edit(self, **kw):
        self._record("edit", kw)
        self._refuse(kw.get("size"))
        image = unpng(kw["image"])
        results = []
        for i in range(kw.get("n", 1)):
            out = image.copy()
            if kw.get("mask") is not None:
                edit_here = unpng(kw["mask"])[..., 3] == 0
                out[edit_here] = self.colours[i % len(self.colours)]
            else:
                out[..., 0] = 255 - out[..., 0]
            results.append(ReturnedImage(data=png(out), index=i))
        return ImagesResult(images=results, request_id="req_fake", problems=list(self.problems))

    def list_models(self):
        return [{"id": "gpt-image-2", "created": 1776729600}, {"id": "gpt-image-1", "created": 1745366400,
                                                                  "shutdown_date": "2026-10-23"}]

    def variation(self, **kw):
        self._record("variation", kw)
        image = unpng(kw["image"])
        return ImagesResult(images=[ReturnedImage(data=png(255 - image), index=i) for i in range(kw["n"])],
                            request_id="req_var")

    def generate(self, **kw):
        self._record("generate", kw)
        w, h = (int(v) for v in (kw["size"] if kw["size"] != "auto" else "1024x1024").split("x"))
        pix = np.zeros((h, w, 4), np.uint8)
        pix[..., 3] = 255
        return ImagesResult(images=[ReturnedImage(data=png(pix), index=i) for i in range(kw["n"])],
                            request_id="req_gen")


def photo(w=400, h=300, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    pix[..., 3] = 255
    return pix


def rect_selection(w, h, x, y, sw, sh) -> np.ndarray:
    sel = np.zeros((h, w), np.uint8)
    sel[y : y + sh, x : x + sw] = 255
    return sel


@pytest.fixture
def engine(tmp_path):
    from gimp_openai.history import History

    eng = operations.Engine(Settings(), FakeClient(), History(tmp_path / "history"))
    eng.tick_interval = 0.05
    return eng


def run_edit(engine, pixels, selection, **opts):
    options = operations.Options(model=opts.pop("model", "gpt-image-2"), prompt=opts.pop("prompt", "a blue patch"),
                                 align=False, tone_match=False, **opts)
    layer = Rect(0, 0, pixels.shape[1], pixels.shape[0])
    return operations.edit(engine, options, place_pixels=pixels, selection=selection, layer=layer)


def sidecars(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def test_edit_outside_selection_is_bit_identical_and_inside_is_the_result(engine, tmp_path):
    pixels = photo()
    sel = rect_selection(400, 300, 150, 100, 60, 40)
    outcome = run_edit(engine, pixels, sel, n=2)
    assert [o.name for o in outcome.outputs] == ["OpenAI: a blue patch (1/2)", "OpenAI: a blue patch (2/2)"]
    for out, colour in zip(outcome.outputs, [(0, 0, 255, 255), (255, 255, 0, 255)], strict=True):
        assert (out.x, out.y) == (outcome.plan.place.x, outcome.plan.place.y)
        assert out.pixels.shape[:2] == out.mask.shape == (outcome.plan.place.height, outcome.plan.place.width)
        full = full_composite(pixels, out)
        assert np.array_equal(full[sel == 0], pixels[sel == 0])
        # deep inside the selection the fake model's colour is there
        assert tuple(full[120, 180]) == colour
        assert out.path == "edit" and out.request_id == "req_fake"
        assert out.history_png.exists()


def test_every_returned_image_is_in_history_with_a_sidecar_and_no_key(engine, tmp_path):
    engine.client.problems = []
    run_edit(engine, photo(), rect_selection(400, 300, 10, 10, 50, 50), n=3)
    metas = sidecars(tmp_path / "history")
    assert len(metas) == 3
    assert sorted(m["k"] for m in metas) == [1, 2, 3] and all(m["n"] == 3 for m in metas)
    for m in metas:
        assert m["prompt"] == "a blue patch" and m["model"] == "gpt-image-2" and m["request_id"] == "req_fake"
        assert m["place"] and m["request"] and m["size"]
    for f in (tmp_path / "history").rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes()


def test_malformed_answer_keeps_the_valid_images_and_says_so(engine, tmp_path):
    engine.client.problems = ["data[1]: b64_json is not valid base64"]
    with pytest.raises(MalformedResponseError) as info:
        run_edit(engine, photo(), rect_selection(400, 300, 10, 10, 50, 50), n=1)
    assert len(info.value.saved) == 1 and Path(info.value.saved[0]).exists()
    assert "base64" in info.value.message
    assert f"was kept: {info.value.saved[0]}" in info.value.hint and "No image arrived" not in info.value.hint


def test_malformed_hint_depends_on_what_was_saved():
    """The hint never claims images were kept when none were, and names them when some were."""
    none = MalformedResponseError("The server's answer is not JSON")
    assert "kept" not in none.hint.replace("could be kept", "") and "No image arrived intact" in none.hint
    assert none.to_dict()["saved"] == [] and "No image arrived intact" in none.to_dict()["hint"]
    one = MalformedResponseError("bad", saved=["/h/a.png"])
    assert "The image that did arrive intact was kept: /h/a.png." in one.hint
    two = MalformedResponseError("bad", saved=["/h/a.png", "/h/b.png"])
    assert "The 2 images that did arrive intact were kept: /h/a.png, /h/b.png." in two.hint
    assert MalformedResponseError("bad", hint="mine", saved=["/h/a.png"]).hint == "mine"


def test_malformed_answer_without_images_says_nothing_was_kept(engine):
    engine.client.problems = ["data[0]: b64_json is not valid base64"]
    original = engine.client.edit

    def no_images(**kw):
        result = original(**kw)
        result.images = []
        return result

    engine.client.edit = no_images
    with pytest.raises(MalformedResponseError) as info:
        run_edit(engine, photo(), rect_selection(400, 300, 10, 10, 50, 50), n=1)
    assert info.value.saved == [] and "No image arrived intact" in info.value.hint


def test_free_size_refused_is_retried_once_at_a_standard_size_and_remembered(engine):
    engine.client = FakeClient(refuse_free_sizes=True)
    pixels = photo(900, 700)
    outcome = run_edit(engine, pixels, rect_selection(900, 700, 300, 200, 300, 200))
    sizes = [kw["size"] for _, kw in engine.client.calls]
    assert len(sizes) == 2
    assert sizes[0] not in ("1024x1024", "1536x1024", "1024x1536") and sizes[1] in ("1536x1024", "1024x1024")
    out = outcome.outputs[0]
    assert any("retried once" in n for n in out.notes)
    full = full_composite(pixels, out)
    sel = rect_selection(900, 700, 300, 200, 300, 200)
    assert np.array_equal(full[sel == 0], pixels[sel == 0])
    # the next plan for this model uses standard sizes at once
    assert engine.family("gpt-image-2").free_sizes is None or "gpt-image-2" in engine.settings.model_rules


def test_size_fallback_happens_only_once(engine):
    engine.client = FakeClient(always_refuse=True)
    with pytest.raises(UnsupportedSizeError):
        run_edit(engine, photo(900, 700), rect_selection(900, 700, 300, 200, 300, 200))
    assert len(engine.client.calls) == 2


def test_model_gone_is_not_retried_and_names_the_replacement(engine, monkeypatch):
    engine.client = FakeClient(gone=True)
    with pytest.raises(ModelNotFoundError) as info:
        run_edit(engine, photo(), rect_selection(400, 300, 10, 10, 50, 50), model="gpt-image-1")
    assert len(engine.client.calls) == 1
    assert info.value.message == (
        "The model `gpt-image-1` was shut down on 2026-10-23. Use `gpt-image-2` instead."
    )
    assert info.value.replacement == "gpt-image-2" and "gpt-image-2" in info.value.hint


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(prompt="   "), "prompt is empty"),
        (dict(prompt="x" * 32001), "32,000"),
        (dict(n=11), "n must be"),
        (dict(model="dall-e-3"), "does not serve /images/edits"),
    ],
)
def test_bad_input_is_refused_before_any_request(engine, kwargs, text):
    with pytest.raises((InvalidInputError, UnsupportedModelError)) as info:
        run_edit(engine, photo(), rect_selection(400, 300, 10, 10, 50, 50), **kwargs)
    assert text in info.value.message
    assert engine.client.calls == []


def test_empty_and_mismatched_selections_are_refused(engine):
    with pytest.raises(InvalidInputError, match="empty"):
        run_edit(engine, photo(), np.zeros((300, 400), np.uint8))
    with pytest.raises(InvalidInputError, match="same size"):
        run_edit(engine, photo(), np.zeros((30, 40), np.uint8))
    assert engine.client.calls == []


def test_variation_uses_the_endpoint_where_the_family_serves_it(engine):
    pixels = photo(300, 300)
    options = operations.Options(model="dall-e-2", n=2)
    outcome = operations.variation(engine, options, place_pixels=pixels, layer=Rect(0, 0, 300, 300))
    assert [c[0] for c in engine.client.calls] == ["variation"]
    assert outcome.path == "variation-endpoint"
    assert [o.name for o in outcome.outputs] == ["OpenAI: variation (1/2)", "OpenAI: variation (2/2)"]
    assert outcome.outputs[0].pixels.shape == (300, 300, 4)


def test_variation_with_a_gpt_model_is_an_edit_without_mask(engine):
    pixels = photo(400, 300)
    options = operations.Options(model="gpt-image-2", n=1, variation_prompt="")
    outcome = operations.variation(engine, options, place_pixels=pixels, layer=Rect(0, 0, 400, 300))
    (kind, kw), = engine.client.calls
    assert kind == "edit" and kw.get("mask") is None and kw["prompt"] == operations.DEFAULT_VARIATION_PROMPT
    assert outcome.path == "variation-edit"
    assert outcome.outputs[0].name == "OpenAI: variation via edit (1/1)"
    assert (outcome.outputs[0].x, outcome.outputs[0].y) == (0, 0)
    assert outcome.outputs[0].pixels.shape == (300, 400, 4)


def test_generate_returns_full_size_images(engine):
    outcome = operations.generate(engine, operations.Options(model="gpt-image-2", prompt="a kite", n=2,
                                                             size="1536x1024"))
    assert [o.pixels.shape for o in outcome.outputs] == [(1024, 1536, 4)] * 2
    assert outcome.outputs[1].name == "OpenAI: a kite (2/2)" and outcome.path == "generate"


def test_layer_name_is_short_and_says_k_of_n():
    name = operations.layer_name("a  very long prompt " * 10, 2, 3)
    assert name.startswith("OpenAI: a very long prompt") and name.endswith("… (2/3)")
    assert len(name) < 70


def test_layer_pixels_without_mask_carry_the_mask_in_alpha():
    out = operations.Output(index=1, count=1, name="x", pixels=np.full((2, 2, 4), 255, np.uint8),
                            mask=np.array([[0, 255], [128, 255]], np.uint8), x=0, y=0, history_png=Path("h"),
                            request_id=None, path="edit")
    assert out.layer_pixels(add_mask=False)[..., 3].tolist() == [[0, 255], [128, 255]]
    assert out.layer_pixels(add_mask=True)[..., 3].tolist() == [[255, 255], [255, 255]]


# --- the waiting ticker ----------------------------------------------------------------------------------


def test_ticker_reports_elapsed_time_against_the_expected_range():
    now = [100.0]
    events: list[Progress] = []
    got_two = threading.Event()

    def callback(event):
        events.append(event)
        now[0] += 30.0  # the fake clock advances 30 s per tick
        if len(events) >= 4:
            got_two.set()

    with Ticker(callback, model="gpt-image-2", expected=(60.0, 108.0), item="img-1", interval=0.001,
                clock=lambda: now[0]):
        assert got_two.wait(10)
    assert events[0].message == "Waiting for gpt-image-2 (0 s of ~60 s)"
    assert events[1].message == "Waiting for gpt-image-2 (30 s of ~60 s)"
    assert "usually ~60-108 s" in events[3].message
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] < 0.85
    assert all(e.item == "img-1" and e.expected == (60.0, 108.0) for e in events)


def test_waiting_fraction_keeps_moving_past_the_worst_case():
    values = [waiting_fraction(t, (60, 108)) for t in (0, 30, 60, 108, 300, 3000)]
    assert values == sorted(values) and len(set(values)) == len(values) and values[-1] < 0.85


def test_an_upload_over_the_family_limit_is_refused_before_sending(engine):
    from gimp_openai.errors import ImageTooLargeError

    pixels = np.random.default_rng(3).integers(0, 256, (1024, 1024, 4), dtype=np.uint8)
    pixels[..., 3] = np.maximum(pixels[..., 3], 1)  # RGBA noise sent at 1:1: its PNG is over dall-e-2's 4 MB
    with pytest.raises(ImageTooLargeError, match="at most 4 MB"):
        run_edit(engine, pixels, rect_selection(1024, 1024, 60, 60, 900, 900), model="dall-e-2", prompt="x")
    assert engine.client.calls == []


@pytest.mark.parametrize("mode, array", [
    ("I;16", np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50),
    ("P", None),
    ("L", np.full((30, 40), 128, np.uint8)),
])
def test_cli_converts_16_bit_indexed_and_grayscale_input_and_says_so(tmp_path, mode, array):
    from gimp_openai.cli import load_image

    path = tmp_path / f"in-{mode.replace(';', '')}.png"
    if mode == "P":
        Image.new("RGB", (40, 30), (200, 30, 30)).convert("P", palette=Image.ADAPTIVE).save(path)
    else:
        Image.fromarray(array).save(path)
    pixels, notes = load_image(str(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (30, 40, 4)
    assert notes and "converted from mode" in notes[0]


def test_extra_images_the_server_sent_unasked_are_said_as_a_warning(tmp_path):
    """The client drops images beyond n; the outcome carries that as a coded warning a host shows."""
    from gimp_openai.history import History

    from tests.engine._client_helpers import client_for, images_answer, png
    from tests.support.wire_server import Reply, WireServer

    with WireServer([Reply.json(images_answer(png(16, 16), png(16, 16), png(16, 16)))]) as server:
        eng = operations.Engine(Settings(), client_for(server.url), History(tmp_path / "history"))
        outcome = operations.generate(eng, operations.Options(model="gpt-image-2", prompt="a kite", n=1))
    assert len(outcome.outputs) == 1
    (warning,) = outcome.warnings
    assert warning.code == operations.ANSWER_ADJUSTED
    assert warning.message == "The server sent 3 images for the 1 requested; the 2 extra were dropped unread."


def full_composite(original: np.ndarray, output: operations.Output) -> np.ndarray:
    """The whole picture with ``output`` pasted in as the CLI writes it (cli.result_patch)."""
    from gimp_openai.cli import result_patch

    full = original.copy()
    full[output.y : output.y + output.height, output.x : output.x + output.width] = result_patch(original, output)
    return full


def test_generate_for_a_canvas_asks_its_aspect_and_covers_it(engine):
    outcome = operations.generate(engine, operations.Options(model="gpt-image-2", prompt="a kite", n=1,
                                                             canvas=(3000, 2000)))
    (kind, kw), = engine.client.calls
    assert kind == "generate" and kw["size"] == "1248x832"
    (out,) = outcome.outputs
    assert out.pixels.shape == (2000, 3000, 4) and (out.x, out.y) == (0, 0)
    assert "generated at 1248x832 and scaled to the 3000x2000 canvas" in out.notes
    from PIL import Image

    assert Image.open(out.history_png).size == (1248, 832)  # history keeps what was paid for, as returned


def test_generate_with_a_chosen_size_ignores_the_canvas(engine):
    outcome = operations.generate(engine, operations.Options(model="gpt-image-2", prompt="a kite", n=1,
                                                             size="1024x1024", canvas=(3000, 2000)))
    assert engine.client.calls[0][1]["size"] == "1024x1024" and outcome.outputs[0].pixels.shape[:2] == (1024, 1024)
