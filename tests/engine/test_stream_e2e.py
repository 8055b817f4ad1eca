"""Previews end to end against the real local server: operations place them like the result, history never
holds them on success and keeps the last one (marked) when the run fails, the CLI writes them beside the
outputs, and a job emits one ``partial`` line per preview."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import operations
from gimp_openai.errors import RequestTimeoutError
from gimp_openai.geometry import Rect
from gimp_openai.history import History
from gimp_openai.settings import Settings
from PIL import Image

from tests.engine._client_helpers import client_for
from tests.engine.test_cli_e2e import SAMPLE, SAMPLE_SEL, cli, history_dir
from tests.engine.test_jobs_e2e import bounds, engine, export, layer_image


def engine_for(server, tmp_path: Path, fault: str | None = None, **overrides) -> operations.Engine:
    headers = {"X-Fault": f"{fault};key={uuid.uuid4().hex}"} if fault else {}
    client = client_for(server.url, extra_headers=headers, **overrides)
    return operations.Engine(Settings(base_url=server.url), client, History(tmp_path / "history"))


def history_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "history"
    return sorted(p for p in folder.glob("*.png") if not p.name.endswith(".mask.png")) if folder.exists() else []


def test_edit_previews_sit_where_the_result_goes_and_stay_out_of_history(local_server, tmp_path):
    pixels = np.asarray(Image.open(SAMPLE).convert("RGBA"))
    selection = np.asarray(Image.open(SAMPLE_SEL).convert("L"))
    previews: list[operations.Preview] = []
    options = operations.Options(model="gpt-image-1", prompt="remove the balloon", quality="low", partial_images=2)
    outcome = operations.edit(engine_for(local_server, tmp_path), options, place_pixels=pixels, selection=selection,
                              layer=Rect(0, 0, pixels.shape[1], pixels.shape[0]), on_preview=previews.append)
    (output,) = outcome.outputs
    assert [(p.index, p.sequence, p.image) for p in previews] == [(0, 1, 1), (1, 2, 1)]
    for preview in previews:
        assert (preview.x, preview.y, preview.width, preview.height) == (output.x, output.y, output.width,
                                                                         output.height)
        assert np.array_equal(preview.mask, output.mask) and preview.path == operations.PATH_EDIT
        assert not np.array_equal(preview.pixels, output.pixels)
    assert [p.name for p in history_files(tmp_path)] == [output.history_png.name]


def test_a_run_that_fails_after_a_preview_keeps_it_in_history_and_says_so(local_server, tmp_path):
    options = operations.Options(model="gpt-image-1", prompt="a kite", quality="low", size="1024x1024",
                                 partial_images=2)
    eng = engine_for(local_server, tmp_path, "stall;seconds=30", read_timeout=4.0, max_retries=0)
    with pytest.raises(RequestTimeoutError) as caught:
        operations.generate(eng, options)
    (kept,) = history_files(tmp_path)
    assert "partial1" in kept.name
    sidecar = json.loads(kept.with_suffix(".json").read_text())
    assert sidecar["partial"] is True and sidecar["partial_image_index"] == 0 and sidecar["prompt"] == "a kite"
    error = caught.value
    assert error.saved == [str(kept)] and f"The last preview (partial 1) was kept in {kept}" in error.message
    assert "a preview, not the finished image" in error.message


def test_the_cli_writes_each_preview_beside_the_outputs(local_server, tmp_path):
    out = tmp_path / "out"
    proc = cli("generate", "--model", "gpt-image-1", "-p", "a kite", "--size", "1024x1024", "--quality", "low",
               "--partial-images", "2", "--out", str(out), "-q", server=local_server)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == [f"partial 1 (preview of result 1): {out / 'generated-partial-1.png'}",
                         f"partial 2 (preview of result 1): {out / 'generated-partial-2.png'}"]
    assert sorted(p.name for p in out.iterdir()) == ["generated-1.png", "generated-partial-1.png",
                                                     "generated-partial-2.png"]
    assert len([p for p in history_dir().glob("*.png") if not p.name.endswith(".mask.png")]) == 1  # the result only

    proc = cli("edit", str(SAMPLE), "--mask", str(SAMPLE_SEL), "--model", "gpt-image-1", "-p", "remove it",
               "--quality", "low", "--partial-images", "1", "--out", str(out), "--json", "-q", server=local_server)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    (preview,) = [Path(p) for p in result["partials"]]
    assert preview.name == "lake-balloon-partial-1.png"
    original = np.asarray(Image.open(SAMPLE).convert("RGBA"))
    composed = np.asarray(Image.open(preview).convert("RGBA"))
    assert composed.shape == original.shape
    outside = np.asarray(Image.open(SAMPLE_SEL).convert("L")) == 0
    assert np.array_equal(composed[outside], original[outside])  # composited through the selection


@pytest.mark.slow
def test_a_job_emits_one_partial_line_per_preview(local_server, tmp_path):
    pixels, sel = layer_image()
    layer = {"x": 0, "y": 0, "width": pixels.shape[1], "height": pixels.shape[0]}
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-1", "size_mode": "auto", "context_padding": 0.25,
            "items": [{"id": "img 1", "layer": layer, "selection_bounds": bounds(sel)}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, (answer,), err = engine("plan", str(tmp_path / "plan.json"), server=local_server)
    assert code == 0, err
    (item,) = answer["items"]
    files = export(tmp_path, "img-1", pixels, sel, (0, 0), item["place"])
    job = {"version": 1, "operation": "edit", "model": "gpt-image-1", "prompt": "remove the balloon", "n": 1,
           "quality": "low", "out_dir": "out", "add_mask": True, "partial_images": 3,
           "items": [dict(item, id="img 1", layer=layer, **files)]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=local_server)
    assert code == 0, err
    partials = [line for line in lines if line["type"] == "partial"]
    result = lines[-1]
    assert result["type"] == "result" and result["ok"], result
    (output,) = result["items"][0]["outputs"]
    assert [p["index"] for p in partials] == [0, 1, 2] and all(p["id"] == "img 1" for p in partials)
    assert lines.index(partials[-1]) < len(lines) - 1
    for p in partials:
        assert {k: p[k] for k in ("x", "y", "width", "height")} == {k: output[k] for k in ("x", "y", "width",
                                                                                           "height")}
        assert Image.open(p["layer_png"]).size == (output["width"], output["height"])
        assert p["mask_png"] == partials[0]["mask_png"]
    assert np.array_equal(np.asarray(Image.open(partials[0]["mask_png"])), np.asarray(Image.open(output["mask_png"])))
    # before the first preview, once the request is sent: where they will go, with their mask, for the host to
    # make the layer ahead (one mask file for all)
    (ahead,) = [line for line in lines if line["type"] == "partial_place"]
    assert lines.index(ahead) < lines.index(partials[0])
    assert ahead == {"type": "partial_place", "id": "img 1", "x": output["x"], "y": output["y"],
                     "width": output["width"], "height": output["height"], "mask_png": partials[0]["mask_png"]}


def test_a_job_field_out_of_range_is_refused(local_server, tmp_path):
    job = {"version": 1, "operation": "generate", "model": "gpt-image-1", "prompt": "p", "out_dir": "out",
           "partial_images": 4}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=local_server)
    assert code == 2 and "'partial_images' in the job 4 is not allowed" in lines[-1]["error"]["message"]
