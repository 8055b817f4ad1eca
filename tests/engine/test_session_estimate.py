"""The session's ``estimate`` request: a dialog's cost figure without a plan file, answered like a plan, and the
cancelled-run notices left for the run itself."""

from __future__ import annotations

import io
import json

from gimp_openai import jobs

LAYER = {"x": 0, "y": 0, "width": 2000, "height": 1500}
SELECTION = {"x": 100, "y": 120, "width": 600, "height": 400}


def session(*requests: dict) -> list[dict]:
    out = io.StringIO()
    assert jobs.run_session(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def plan(**changes) -> dict:
    data = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": "a kite", "n": 1,
            "quality": "medium", "items": [{"id": "img-1", "layer": LAYER, "selection_bounds": SELECTION}]}
    data.update(changes)
    return data


def test_an_estimate_request_answers_like_a_plan_and_grows_with_n():
    one, four, high = session({"cmd": "estimate", "plan": plan()}, {"cmd": "estimate", "plan": plan(n=4)},
                              {"cmd": "estimate", "plan": plan(n=4, quality="high")})
    assert one["type"] == four["type"] == "estimate" and one["ok"] and one["model"] == "gpt-image-2"
    assert one["estimate"]["images"] == 1 and four["estimate"]["images"] == 4
    assert 3.5 < four["estimate"]["usd"] / one["estimate"]["usd"] <= 4.0  # the prompt and the upload once each
    assert high["estimate"]["usd"] > four["estimate"]["usd"] and high["estimate"]["max_cost"] == 1.0
    assert high["estimate"]["over_limit"] is (high["estimate"]["usd_upper"] > 1.0)


def test_a_generation_is_estimated_at_its_size_or_its_canvas():
    square, wide, canvas = session(
        {"cmd": "estimate", "plan": plan(operation="generate", items=[], size="1024x1024")},
        {"cmd": "estimate", "plan": plan(operation="generate", items=[], size="1536x1024")},
        {"cmd": "estimate", "plan": plan(operation="generate", items=[], canvas={"width": 3000, "height": 1000})})
    assert square["estimate"]["usd"] < wide["estimate"]["usd"]
    assert canvas["estimate"]["usd"] != square["estimate"]["usd"]  # the canvas's aspect, not a square


def test_estimates_leave_the_cancelled_run_notice_for_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv("GIMP_OPENAI_CACHE_DIR", str(tmp_path))
    jobs.remember_cancelled(["/history/kite.png"])
    (tmp_path / "plan.json").write_text(json.dumps(plan()))
    estimate, answer = session({"cmd": "estimate", "plan": plan()},
                               {"cmd": "plan", "path": str(tmp_path / "plan.json")})
    assert "notices" not in estimate
    assert answer["type"] == "plan" and "/history/kite.png" in answer["notices"][0]["message"]


def test_a_malformed_estimate_request_is_answered_not_fatal():
    bad, good = session({"cmd": "estimate", "plan": "plan.json"}, {"cmd": "estimate", "plan": plan()})
    assert bad["type"] == "session" and not bad["ok"] and '"estimate"' in bad["error"]["message"]
    assert good["ok"]
