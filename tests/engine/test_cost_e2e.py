"""Cost and the new models as a user and a host meet them: the CLI (estimate before, cost after, the limit, the
usage command), the job protocol (the plan's estimate, the result line's cost), markup edits, optional
parameters a server does not know, and a retired model. Real subprocesses and real HTTP against the local
server on 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import discovery as D
from gimp_openai import errors as E
from PIL import Image

from tests.engine._client_helpers import client_for
from tests.engine.test_cli_e2e import SAMPLE, SAMPLE_SEL, cli, history_dir, image_requests
from tests.engine.test_jobs_e2e import engine


def sidecars() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(history_dir().glob("*.json"))]


def test_cli_prints_the_estimate_then_the_cost(local_server, tmp_path):
    proc = cli("--json", "generate", "--prompt", "a lighthouse at dusk", "--model", "gpt-image-2", "--quality", "low",
               "-n", "2", "--size", "1536x1024", "--out", str(tmp_path), server=local_server)
    assert proc.returncode == 0, proc.stderr
    assert "estimate: 2 images of 1536x1024, gpt-image-2, quality low: about $0.0" in proc.stderr
    answer = json.loads(proc.stdout)
    (result,) = answer["results"]
    cost, estimate = result["cost"], result["estimate"]
    assert 0.75 <= cost["usd"] / estimate["usd"] <= 1.25
    assert answer["cost"]["usd"] == cost["usd"] and cost["price_as_of"] == "2026-04-21"
    assert cost["output_tokens"] > 0 and cost["text"].startswith("$")
    shares = [s["cost"]["usd"] for s in sidecars()]
    assert len(shares) == 2 and sum(shares) == pytest.approx(cost["usd"], rel=1e-6)
    plain = cli("generate", "--prompt", "a lighthouse", "--model", "gpt-image-2", "--quality", "low", "-q",
                "--out", str(tmp_path), server=local_server)
    assert plain.returncode == 0 and plain.stdout.splitlines()[-1].startswith("cost: $")
    assert "estimate" not in plain.stderr  # --quiet


def test_above_the_limit_nothing_is_sent_without_yes(local_server, tmp_path):
    """Not a terminal: above --max-cost the run is refused unpaid; --yes sends it; the setting is the default."""
    args = ("generate", "--prompt", "a kite", "--model", "gpt-image-2.6-sunburst", "--quality", "max", "-n", "3",
            "--out", str(tmp_path))
    refused = cli("--json", *args, "--max-cost", "0.5", server=local_server)
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "cost_limit" and "above your limit of $0.500" in error["message"]
    assert image_requests(local_server) == 0
    assert cli(*args, "--max-cost", "0.5", "--yes", "-q", server=local_server).returncode == 0
    assert image_requests(local_server) == 1
    # the default limit ($1) refuses the same run (3 x max at 1024^2 is about $1.27)
    assert cli(*args, "-q", server=local_server).returncode == 1
    assert cli("config", "set", "max_cost=5").returncode == 0
    assert cli(*args, "-q", server=local_server).returncode == 0
    assert image_requests(local_server) == 2


def test_usage_sums_what_history_holds(local_server, tmp_path):
    costs = []
    for model, quality in (("gpt-image-2", "low"), ("gpt-image-2.5-flare", "medium"), ("gpt-image-2", "high")):
        proc = cli("--json", "generate", "--prompt", "a kite", "--model", model, "--quality", quality, "-q",
                   "--out", str(tmp_path), server=local_server)
        assert proc.returncode == 0, proc.stderr
        costs.append((model, json.loads(proc.stdout)["cost"]["usd"]))
    usage = cli("usage", "--json")
    assert usage.returncode == 0, usage.stderr
    report = json.loads(usage.stdout)
    by_model = {r["model"]: r for r in report["rows"]}
    assert set(by_model) == {"gpt-image-2", "gpt-image-2.5-flare"} and by_model["gpt-image-2"]["images"] == 2
    assert by_model["gpt-image-2"]["usd"] == pytest.approx(sum(c for m, c in costs if m == "gpt-image-2"), rel=1e-5)
    assert report["total"]["usd"] == pytest.approx(sum(c for _m, c in costs), rel=1e-5)
    assert report["total"]["images"] == 3
    assert json.loads(cli("usage", "--json", "--since", "2999-01-01").stdout)["rows"] == []
    table = cli("usage")
    assert table.stdout.splitlines()[0].split()[:3] == ["DAY", "MODEL", "IMAGES"] and "total" in table.stdout
    bad = cli("usage", "--since", "last tuesday")
    assert bad.returncode == 2 and "not a date" in bad.stderr


def markup_file(folder: Path) -> Path:
    """A transparent layer the size of the sample, with a ring painted around the balloon."""
    sel = np.asarray(Image.open(SAMPLE_SEL).convert("L")) > 127
    ys, xs = np.nonzero(sel)
    cy, cx, r = ys.mean(), xs.mean(), max(np.ptp(ys), np.ptp(xs)) * 0.7
    yy, xx = np.mgrid[0 : sel.shape[0], 0 : sel.shape[1]]
    ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < 3
    layer = np.zeros(sel.shape + (4,), np.uint8)
    layer[ring] = (255, 0, 0, 255)
    path = folder / "marks.png"
    Image.fromarray(layer, "RGBA").save(path)
    return path


def test_markup_edit_on_2_6_and_refused_elsewhere(local_server, tmp_path):
    marks = markup_file(tmp_path)
    proc = cli("--json", "edit", str(SAMPLE), "--markup", str(marks), "--prompt", "remove the circled balloon",
               "--model", "gpt-image-2.6-sunburst", "--quality", "low", "--out", str(tmp_path / "out"),
               server=local_server)
    assert proc.returncode == 0, proc.stderr
    (output,) = json.loads(proc.stdout)["results"][0]["outputs"]
    original = np.asarray(Image.open(SAMPLE).convert("RGBA"))
    assert (output["width"], output["height"]) == (original.shape[1], original.shape[0])  # the whole image
    (request,) = [r for r in local_server.stats()["requests"] if r.get("endpoint") == "edits"]
    sent = {f.get("field") for f in request.get("files", [])} if request.get("files") else set(request["fields"])
    assert "mask" not in sent  # marks instead of a mask
    assert sidecars()[0]["markup"] is True
    refused = cli("edit", str(SAMPLE), "--markup", str(marks), "--prompt", "x", "--model", "gpt-image-2",
                  "--out", str(tmp_path / "out"), server=local_server)
    assert refused.returncode == 1 and "does not take markup edits" in refused.stderr
    assert "gpt-image-2.6" in refused.stderr  # names the family that does
    wrong = cli("edit", str(SAMPLE), "--markup", str(SAMPLE_SEL), "--prompt", "x", "--model", "gpt-image-2.6-flare",
                "--out", str(tmp_path / "out"), server=local_server)
    assert wrong.returncode == 1 and "no transparent pixels" in wrong.stderr  # a grey selection: not a layer
    assert image_requests(local_server) == 1


def test_an_unknown_optional_parameter_is_dropped_once_and_remembered(start_local_server, tmp_path):
    """A compatible server whose model does not know ``complexity``: the first request is refused, sent again
    without it (a coded note), and the next run leaves it out at once."""
    models = tmp_path / "models.json"
    models.write_text(json.dumps(["gpt-image-2-acme"]))
    server = start_local_server("--models", str(models))
    client = client_for(server.url, model_rules={"gpt-image-2-acme": "gpt-image-2.6"})
    result = client.generate(model="gpt-image-2-acme", prompt="a kite", quality="low", complexity="low")
    assert len(result.images) == 1
    assert [code for code, _text in result.notes] == ["param_dropped"]
    assert "complexity" in result.notes[0][1]
    statuses = [(r["status"], "complexity" in r.get("fields", {})) for r in server.stats()["requests"]
                if r.get("endpoint") == "generations"]
    assert statuses == [(400, True), (200, False)]
    assert D.refused_params(server.url, "gpt-image-2-acme") == {"complexity"}
    again = client.generate(model="gpt-image-2-acme", prompt="a kite", quality="low", complexity="low")
    assert [code for code, _text in again.notes] == ["param_dropped"] and "before" in again.notes[0][1]
    assert len([r for r in server.stats()["requests"] if r.get("endpoint") == "generations"]) == 3
    # a parameter the request cannot do without is never dropped: the refusal stands
    with pytest.raises(E.InvalidRequestError):
        client.generate(model="gpt-image-2-acme", prompt="a kite", quality="max")


def test_a_retired_model_is_answered_like_the_real_api_and_named_a_replacement(start_local_server, tmp_path):
    server = start_local_server(legacy_models=False)
    with pytest.raises(E.ModelNotFoundError) as info:
        client_for(server.url).generate(model="gpt-image-1", prompt="a kite", quality="low")
    assert info.value.status == 400 and info.value.param == "model"
    proc = cli("--json", "generate", "--prompt", "a kite", "--model", "gpt-image-1", "--out", str(tmp_path),
               server=server)
    error = json.loads(proc.stdout)["error"]
    assert proc.returncode == 1 and error["code"] == "model_not_found"
    assert error["message"] == ("The model `gpt-image-1` was shut down on 2026-10-23. "
                                "Use `gpt-image-2.6-sunburst` instead.")
    assert error["replacement"] == "gpt-image-2.6-sunburst"


def plan_and_job(server, tmp_path, plan_extra: dict, job_extra: dict) -> tuple[dict, dict]:
    pixels = np.asarray(Image.open(SAMPLE).convert("RGBA"))
    sel = np.asarray(Image.open(SAMPLE_SEL).convert("L"))
    ys, xs = np.nonzero(sel)
    layer = {"x": 0, "y": 0, "width": pixels.shape[1], "height": pixels.shape[0]}
    bounds = {"x": int(xs.min()), "y": int(ys.min()), "width": int(np.ptp(xs) + 1), "height": int(np.ptp(ys) + 1)}
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2", "items": [
        {"id": "a", "layer": layer, "selection_bounds": bounds}], **plan_extra}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, lines, err = engine("plan", str(tmp_path / "plan.json"), server=server)
    assert code == 0, err
    (answer,) = lines
    (item,) = answer["items"]
    place = item["place"]
    crop = pixels[place["y"] : place["y"] + place["height"], place["x"] : place["x"] + place["width"]]
    sel_crop = sel[place["y"] : place["y"] + place["height"], place["x"] : place["x"] + place["width"]]
    Image.fromarray(crop, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(sel_crop, "L").save(tmp_path / "a-sel.png")
    job = {"version": 1, "operation": "edit", "model": answer["model"], "prompt": "remove the balloon",
           "out_dir": "out", "items": [dict(item, layer=layer, image="a.png", selection="a-sel.png")], **job_extra}
    job["items"][0].pop("estimate")
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=server)
    assert code == 0, err
    return answer, lines[-1]


def test_the_plan_answer_estimates_and_the_result_line_costs(local_server, tmp_path):
    answer, result = plan_and_job(local_server, tmp_path, {"n": 2, "quality": "high", "prompt": "remove the balloon"},
                                  {"n": 2, "quality": "high"})
    estimate = answer["estimate"]
    assert answer["items"][0]["estimate"]["n"] == 2 and estimate["images"] == 2
    assert estimate["max_cost"] == 1.0 and estimate["over_limit"] is (estimate["usd_upper"] > 1.0)
    assert estimate["text"].startswith("about $")
    assert result["ok"] and result["items"][0]["cost"]["usd"] == result["cost"]["usd"]
    assert 0.75 <= result["cost"]["usd"] / estimate["usd"] <= 1.25
    assert "_cost" not in json.dumps(result)


def test_an_expensive_plan_says_so(local_server, tmp_path):
    env_dir = Path(os.environ["GIMP_OPENAI_CONFIG_DIR"])
    env_dir.mkdir(parents=True, exist_ok=True)
    (env_dir / "config.json").write_text(json.dumps({"max_cost": 0.01}))
    pixels = np.asarray(Image.open(SAMPLE).convert("RGBA"))
    layer = {"x": 0, "y": 0, "width": pixels.shape[1], "height": pixels.shape[0]}
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2", "n": 4, "quality": "auto",
            "items": [{"id": "a", "layer": layer, "selection_bounds": {"x": 10, "y": 10, "width": 300, "height": 200}}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, (answer,), err = engine("plan", str(tmp_path / "plan.json"), server=local_server)
    assert code == 0, err
    estimate = answer["estimate"]
    assert estimate["over_limit"] is True and estimate["max_cost"] == 0.01
    assert estimate["usd_upper"] > estimate["usd"]  # auto: up to high
    assert "if the model picks high" in estimate["text"]


def test_a_batch_is_held_to_the_limit_as_a_whole(local_server, tmp_path):
    """The limit is the run's: a batch's estimates add up; past the limit the remaining images are refused
    unpaid (not a terminal, no --yes), those already within it are done."""
    images = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.png"
        Image.open(SAMPLE).save(path)
        images.append(str(path))
    proc = cli("--json", "batch", *images, "--rect", "10,10,300,200", "--prompt", "clear sky", "--model",
               "gpt-image-2", "--quality", "high", "--concurrency", "1", "--max-cost", "0.3", "--out",
               str(tmp_path / "out"), server=local_server)
    answer = json.loads(proc.stdout)
    assert proc.returncode == 1
    done, failed = answer["results"], answer["failed"]
    uppers = [r["estimate"]["usd_upper"] for r in done]
    assert [r["source"] for r in done] == images[: len(done)] and 1 <= len(done) < 3  # in order: concurrency 1
    assert sum(uppers) <= 0.3 < sum(uppers) + uppers[0]  # the next one (the same size) would pass the limit
    assert [f["error"]["code"] for f in failed] == ["cost_limit"] * (3 - len(done))
    assert image_requests(local_server) == len(done)  # the refused ones were never sent
    assert answer["cost"]["usd"] == pytest.approx(sum(r["cost"]["usd"] for r in done))


def test_expand_prints_the_plan_s_estimate_and_asks_before_the_first_tile(local_server, tmp_path):
    """The whole plan's price (every tile's request) is printed once before anything is sent; above --max-cost
    not one tile is paid without --yes; the estimate is within 25 % of what the run then cost."""
    args = ("expand", str(SAMPLE), "--right", "4096", "--model", "gpt-image-2", "--quality", "high", "--out",
            str(tmp_path))
    refused = cli("--json", *args, "--max-cost", "0.05", server=local_server)
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "cost_limit" and "above your limit of $0.0500" in error["message"], error
    (line,) = [x for x in refused.stderr.splitlines() if "estimate:" in x]
    tiles = int(line.split()[1])
    assert tiles >= 2 and line.startswith(f"estimate: {tiles} requests (tiles of ") and \
        ", gpt-image-2, quality high: about $" in line, line
    assert image_requests(local_server) == 0  # not one tile was paid
    sent = cli("--json", *args, "--max-cost", "0.05", "--yes", server=local_server)
    assert sent.returncode == 0, sent.stderr
    answer = json.loads(sent.stdout)
    assert [x for x in sent.stderr.splitlines() if "estimate:" in x] == [line]  # once, not per tile
    assert answer["estimate"]["tiles"] == len(answer["tiles"]) == image_requests(local_server) == tiles
    assert 0.75 <= answer["cost"]["usd"] / answer["estimate"]["usd"] <= 1.25
    from gimp_openai.pricing import dollars

    assert line.endswith(f"about {dollars(answer['estimate']['usd'])}")
