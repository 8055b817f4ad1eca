"""Expand jobs refused in words before anything is paid, and generation from references on the wire.

A job file is written by a host; a wrong one is the host's bug, so it is refused whole (exit 2, code
``invalid_job``) with a message naming what is wrong. What only the picture can tell (an aspect it already has,
a side on the wrong axis) fails the item, still before any request."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import imaging, jobs, operations
from gimp_openai.history import History
from gimp_openai.settings import Settings
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import client_for, images_answer, png
from tests.support.wire_server import Reply, WireServer


def _expand_job(**changes):
    job = {"version": 1, "operation": "expand", "model": "gpt-image-2", "out_dir": "out",
           "margins": {"right": 64}, "items": [{"id": "img-1", "image": "img-1.png"}]}
    job.update(changes)
    return {k: v for k, v in job.items() if v is not None}


def _run(folder: Path, data: dict) -> tuple[int, list[dict]]:
    Image.fromarray(np.full((30, 40, 4), 200, np.uint8)).save(folder / "img-1.png")  # 40x30: 4:3
    path = folder / "job.json"
    path.write_text(json.dumps(data))
    out = io.StringIO()
    code = jobs.run_job(str(path), out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("change, message", [
    (dict(margins={"left": -5}), "The left margin must be a whole number of pixels from 0 to 20000; got -5."),
    (dict(margins={"right": 10**6}),
     "The right margin must be a whole number of pixels from 0 to 20000; got 1000000."),
    (dict(margins={"right": "5"}), "The right margin must be a whole number of pixels from 0 to 20000; got '5'."),
    (dict(margins={"right": True}), "The right margin must be a whole number of pixels from 0 to 20000; got True."),
    (dict(margins={"up": 5}), "Margins are an object with left, top, right and bottom; got {'up': 5}."),
    (dict(margins=[1]), "'margins' in the job must be an object, not list."),
    (dict(margins=None), "The job has no 'margins'."),
    (dict(margins={}), "Nothing to expand: every margin is 0."),
    (dict(margins={"left": 0, "top": 0, "right": 0, "bottom": 0}), "Nothing to expand: every margin is 0."),
    (dict(margins=None, aspect="wide"), "Aspect ratio 'wide' is not W:H (e.g. 16:9) or a number (e.g. 1.5)."),
    (dict(margins=None, aspect="0:1"), "Aspect ratio '0:1' must be positive and at most 100:1."),
    (dict(margins=None, aspect="1000:1"), "Aspect ratio '1000:1' must be positive and at most 100:1."),
    (dict(aspect="16:9"), "Give either 'margins' or 'aspect', not both."),
    (dict(margins=None, aspect="16:9", sides=["up"]), "'sides' must name left, top, right or bottom; got ['up']."),
    (dict(margins=None, aspect="16:9", sides="left"), "'sides' in the job must be a list, not str."),
    (dict(band=300), "'band' must be 0 to 256 px, not 300."),
    (dict(band=-1), "'band' must be 0 to 256 px, not -1."),
    (dict(band="x"), "'band' in the job must be a whole number, not str."),
    (dict(items=[{"id": "a", "image": "img-1.png"}, {"id": "b", "image": "img-1.png"}]),
     "An expand job has exactly one item: the picture whose canvas grows."),
    (dict(items=[{"id": "a", "image": "../img-1.png"}]), None),  # outside the job folder: its own wording
])
def test_bad_expand_jobs_are_refused_whole_with_the_exact_message(tmp_path, change, message):
    code, lines = _run(tmp_path, _expand_job(**change))
    assert code == 2
    (result,) = lines
    assert result["ok"] is False and result["items"] == [] and result["error"]["code"] == "invalid_job"
    if message is None:
        assert "outside the job folder" in result["error"]["message"]
    else:
        assert result["error"]["message"] == message
    assert result["error"]["hint"]


@pytest.fixture
def pointed(monkeypatch, local_server):
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    return local_server


@pytest.mark.parametrize("change, message", [
    (dict(margins=None, aspect="4:3"), "The picture (40x30 px) is already 4:3: nothing to expand."),
    (dict(margins=None, aspect="16:9", sides=["top"]),
     "The canvas must grow wider for 16:9, but only top may grow."),
])
def test_an_expansion_the_picture_cannot_take_fails_its_item_before_any_request(tmp_path, pointed, change,
                                                                                 message):
    code, lines = _run(tmp_path, _expand_job(**change))
    assert code == 0
    (item,) = lines[-1]["items"]
    assert item["ok"] is False and item["error"]["message"] == message and item["error"]["hint"]
    assert not any("edits" in k or "generations" in k for k in pointed.stats()["endpoints"])


# --- generation from references: the edits endpoint, no mask -------------------------------------------------


def test_generate_with_references_posts_them_to_edits_without_a_mask(tmp_path):
    big = png(1600, 1200, (10, 200, 30, 255))
    small = png(40, 30, (200, 10, 30, 255))
    with WireServer(default=Reply.json(images_answer(png(1024, 1024)))) as server:
        engine = operations.Engine(Settings(), client_for(server.url), History(tmp_path / "history"))
        options = operations.Options(model="gpt-image-2", prompt="a lighthouse", size="1024x1024",
                                     extra_images=[big, small], reference_names=["ref: style", "ref: sky"])
        outcome = operations.generate(engine, options)
    (request,) = server.requests
    assert request.method == "POST" and request.path == "/v1/images/edits"
    parts = request.parts()
    files = [p for p in parts if p.filename]
    assert [p.name for p in files] == ["image[]", "image[]"]  # both references, and nothing else
    assert not any(p.name == "mask" for p in parts)
    sizes = [imaging.image_size_of(p.data) for p in files]
    assert max(sizes[0]) <= 1024 and sizes[0][0] * 3 == sizes[0][1] * 4  # scaled down to the output, aspect kept
    assert sizes[1] == (40, 30)  # never scaled up
    fields = {p.name: p.data.decode() for p in parts if p.filename is None}
    assert fields["model"] == "gpt-image-2" and fields["prompt"] == "a lighthouse" and fields["size"] == "1024x1024"
    assert outcome.references == {"sent": ["ref: style", "ref: sky"], "left_out": []}
    (output,) = outcome.outputs
    assert output.path == "generate"


@pytest.mark.slow
def test_a_generate_job_with_named_references_reaches_the_server_as_an_edit_without_mask(tmp_path, pointed):
    Image.fromarray(np.full((600, 800, 4), 90, np.uint8)).save(tmp_path / "r1.png")
    job = {"version": 1, "operation": "generate", "model": "gpt-image-2", "prompt": "a kite", "n": 1,
           "size": "1024x1024", "out_dir": "out",
           "items": [{"id": "generate", "references": [{"path": "r1.png", "name": "ref: kite"}]}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = io.StringIO()
    assert jobs.run_job(str(tmp_path / "job.json"), out) == 0
    result = json.loads(out.getvalue().splitlines()[-1])
    (item,) = result["items"]
    assert item["ok"], item
    assert item["references"] == {"sent": ["ref: kite"], "left_out": []}
    stats = pointed.stats()
    (request,) = [r for r in stats["requests"] if r.get("endpoint", "").endswith(("edits", "generations"))]
    assert request["endpoint"].endswith("edits")
    assert [f["field"] for f in request["files"]] == ["image"]  # one reference, no mask
    assert request["files"][0]["image"]["width"] == 800  # under the output size: sent as it is


# --- the plan of an expansion: its tiles and their estimate ---------------------------------------------------

def _plan(folder: Path, data: dict) -> dict:
    path = folder / "plan.json"
    path.write_text(json.dumps({"version": 1, "operation": "expand", "model": "gpt-image-2", "quality": "low",
                                **data}))
    out = io.StringIO()
    assert jobs.run_plan(str(path), out) == 0
    return json.loads(out.getvalue())


def test_the_expand_plan_estimates_every_tile_including_the_pictures_transparent_pixels(tmp_path):
    from gimp_openai import capabilities, expand, pricing

    pixels = np.full((600, 3200, 4), 200, np.uint8)
    pixels[:, 1200:1300, 3] = 0  # a transparent column: beyond the strips' reach, it needs tiles of its own
    Image.fromarray(pixels).save(tmp_path / "img-1.png")
    base = {"canvas": {"width": 3200, "height": 600}, "margins": {"top": 64}}
    opaque = _plan(tmp_path, base)  # a dialog's estimate: the pixels are not read
    seen = _plan(tmp_path, dict(base, image="img-1.png"))  # a run's: the exported picture beside the plan
    assert opaque["ok"] and seen["ok"], (opaque, seen)
    family = capabilities.FAMILIES["gpt-image-2"]
    for answer, shown in ((opaque, None), (seen, pixels[..., 3] > 0)):
        planned = expand.estimate("gpt-image-2", family, pricing.price_for("gpt-image-2"), width=3200, height=600,
                                  margins=expand.Margins(top=64), quality="low", shown=shown)
        assert answer["estimate"]["tiles"] == len(answer["tiles"]) == len(planned.tiles)
        assert answer["estimate"]["usd"] == pytest.approx(planned.usd)
        assert answer["estimate"]["text"] == planned.text() and answer["items"] == []
    assert seen["estimate"]["tiles"] > opaque["estimate"]["tiles"] == 2  # two pieces of the top strip
    assert seen["margins"] == {"left": 0, "top": 64, "right": 0, "bottom": 0}
    aspect = _plan(tmp_path, {"canvas": {"width": 3200, "height": 600}, "aspect": "16:3", "sides": []})
    assert aspect["estimate"]["tiles"] == 0 and aspect["estimate"]["usd"] == 0  # 3200x600 is already 16:3


@pytest.mark.parametrize("data, message", [
    ({"margins": {"top": 64}}, "An expand plan needs 'canvas' (the picture's width and height)."),
    ({"canvas": {"width": 100, "height": 80}}, "Nothing to expand: every margin is 0."),
    ({"canvas": {"width": 100, "height": 80}, "margins": {"top": 0}}, "Nothing to expand: every margin is 0."),
    ({"canvas": {"width": 100, "height": 80}, "margins": {"top": 8}, "image": "img-1.png"},
     "The plan's picture is 40x30 px, not the canvas 100x80."),
    ({"canvas": {"width": 40, "height": 30}, "margins": {"top": 8}, "image": "../x.png"}, "outside the job folder"),
])
def test_a_bad_expand_plan_is_refused_in_words(tmp_path, data, message):
    Image.fromarray(np.full((30, 40, 4), 200, np.uint8)).save(tmp_path / "img-1.png")
    answer = _plan(tmp_path, data)
    assert answer["ok"] is False and message in answer["error"]["message"], answer
