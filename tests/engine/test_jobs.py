"""Job and plan files: validation messages, and fuzzing that no file can crash the engine (always a clean result)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import jobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

GOOD_ITEM = {
    "id": "img-1",
    "image": "img-1.png",
    "selection": "img-1-sel.png",
    "layer": {"x": 0, "y": 0, "width": 400, "height": 300},
    "place": {"x": 50, "y": 40, "width": 200, "height": 150},
    "request": {"x": 50, "y": 40, "width": 200, "height": 150},
    "target": [1024, 768],
}


def good_job(**changes):
    job = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": "a red kite", "n": 1,
           "out_dir": "out", "items": [dict(GOOD_ITEM)]}
    job.update(changes)
    return job


def run(tmp_path: Path, data, name="job.json") -> tuple[int, list[dict]]:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    out = io.StringIO()
    code = jobs.run_job(str(path), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return code, lines


def test_a_good_job_parses(tmp_path):
    job = jobs.parse_job(good_job(), tmp_path)
    assert job.operation == "edit" and job.options.prompt == "a red kite" and job.concurrency == 4
    assert job.items[0].image == tmp_path / "img-1.png" and job.items[0].plan.target == (1024, 768)
    assert job.out_dir == tmp_path / "out"


@pytest.mark.parametrize(
    "change, text",
    [
        (dict(operation="paint"), "Unknown operation 'paint'"),
        (dict(n="2"), "'n' in the job must be a whole number, not str"),
        (dict(n=True), "'n' in the job must be a whole number, not true/false"),
        (dict(items=[]), "no items"),
        (dict(items=[dict(GOOD_ITEM), dict(GOOD_ITEM)]), "Two items have the id 'img-1'"),
        (dict(items=[dict(GOOD_ITEM, image="../../etc/passwd")]), "outside the job folder"),
        (dict(items=[dict(GOOD_ITEM, selection="/tmp/x.png")]), "outside the job folder"),
        (dict(items=[dict(GOOD_ITEM, place={"x": 450, "y": 0, "width": 200, "height": 10})]), "not inside its layer"),
        (dict(items=[dict(GOOD_ITEM, target=[0, 5])]), "'target' of item 'img-1' must be [width, height]"),
        (dict(items=[dict(GOOD_ITEM, layer={"x": 0, "y": 0, "width": 0, "height": 3})]), "must have pixels"),
        (dict(blend="smudge"), "Unknown blend 'smudge'"),
        (dict(concurrency=0), "'concurrency' in the job 0 is not allowed: the number of requests sent at once must be "
                              "a whole number from 1 to 16"),
        (dict(feather=float("nan")), "'feather' in the job nan is not allowed"),
        (dict(feather=1e9), "must be a number from 0 to 200 px"),
        (dict(context_padding=float("inf")), "'context_padding' in the job inf is not allowed"),
        (dict(n=11), "'n' in the job 11 is not allowed"),
        (dict(version=7), "protocol version 7"),
        (dict(api_key="sk-should-not-be-here"), "an API key never goes into a job file"),
    ],
)
def test_bad_jobs_get_a_clear_message_and_exit_2(tmp_path, change, text):
    code, lines = run(tmp_path, good_job(**change))
    assert code == 2
    (result,) = lines
    assert result["type"] == "result" and result["ok"] is False and result["items"] == []
    assert text in result["error"]["message"]
    assert result["error"]["code"] == "invalid_job"


def test_unreadable_and_non_object_files(tmp_path):
    code, (result,) = run(tmp_path, "{not json")
    assert code == 2 and "not valid JSON" in result["error"]["message"]
    code, (result,) = run(tmp_path, "[1, 2]")
    assert code == 2 and "one JSON object" in result["error"]["message"]
    out = io.StringIO()
    assert jobs.run_job(str(tmp_path / "missing.json"), out) == 2
    assert "does not exist" in json.loads(out.getvalue())["error"]["message"]


def _png(path: Path, w: int, h: int, mode="RGBA"):
    Image.fromarray(np.zeros((h, w, 4 if mode == "RGBA" else 1), np.uint8).squeeze(), mode).save(path)


def test_an_item_whose_png_is_not_the_planned_size_fails_alone(tmp_path, monkeypatch):
    """Sizes are checked per item (before any request); the other items are unaffected."""
    _png(tmp_path / "img-1.png", 10, 10)
    _png(tmp_path / "img-1-sel.png", 200, 150, "L")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing is sent: the item fails first
    code, lines = run(tmp_path, good_job())
    result = lines[-1]
    assert code == 0 and result["ok"] is False
    (item,) = result["items"]
    assert item["ok"] is False and "is 10x10 but the planned region is 200x150" in item["error"]["message"]


def test_an_unwritable_out_dir_stops_the_job_before_any_request(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    code, lines = run(tmp_path, good_job(out_dir="file/out"))
    assert code == 0 and lines[-1]["error"]["code"] == "output_not_writable"


def test_missing_key_for_a_remote_server_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    code, lines = run(tmp_path, good_job())
    assert code == 0 and lines[-1]["error"]["code"] == "missing_key"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)

job_like = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 1, 2, "1", None]),
        "operation": st.sampled_from(["edit", "variation", "generate", "x", 3]),
        "model": st.sampled_from(["gpt-image-2", "", 5]),
        "prompt": st.text(max_size=20) | json_values,
        "n": st.integers(-2, 12) | json_values,
        "out_dir": st.sampled_from(["out", "", "../x", 3]),
        "feather": json_values,
        "concurrency": json_values,
        "items": st.lists(
            st.fixed_dictionaries({}, optional={k: json_values | st.just(v) for k, v in GOOD_ITEM.items()}),
            max_size=3,
        ) | json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=job_like | json_values)
def test_fuzzed_jobs_never_crash_parsing(tmp_path, data):
    try:
        jobs.parse_job(data, tmp_path) if isinstance(data, dict) else None
    except jobs.JobError as exc:
        assert exc.message and exc.code == "invalid_job"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=job_like)
def test_fuzzed_job_files_always_end_with_one_result_line(tmp_path, monkeypatch, data):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a closed port: nothing real is reached
    data = dict(data)
    if data.get("out_dir") == "out":
        data["out_dir"] = str(tmp_path / "out")
    code, lines = run(tmp_path, data)
    assert code in (0, 2)
    assert lines[-1]["type"] == "result" and isinstance(lines[-1]["ok"], bool)
    if not lines[-1]["ok"]:
        error = lines[-1]["error"] or lines[-1]["items"][0]["error"]
        assert error["message"]


def test_plan_answers_with_regions(tmp_path):
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-1", "context_padding": 0.25,
            "items": [{"id": "a", "layer": {"x": 10, "y": -5, "width": 4000, "height": 3000},
                       "selection_bounds": {"x": 100, "y": 120, "width": 300, "height": 200}}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = io.StringIO()
    assert jobs.run_plan(str(tmp_path / "plan.json"), out) == 0
    answer = json.loads(out.getvalue())
    assert answer["ok"] and answer["model"] == "gpt-image-1"
    (item,) = answer["items"]
    assert item["id"] == "a" and tuple(item["target"]) in ((1024, 1024), (1536, 1024), (1024, 1536))
    place = item["place"]
    assert place["x"] <= 100 and place["y"] <= 120
    assert place["x"] + place["width"] >= 400 and place["y"] + place["height"] >= 320


def test_plan_refuses_an_empty_selection_for_edit(tmp_path):
    plan = {"operation": "edit", "model": "gpt-image-2",
            "items": [{"id": "a", "layer": {"x": 0, "y": 0, "width": 40, "height": 30}, "selection_bounds": None}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = io.StringIO()
    assert jobs.run_plan(str(tmp_path / "plan.json"), out) == 0
    answer = json.loads(out.getvalue())
    assert answer["ok"] is False and "empty" in answer["error"]["message"]
