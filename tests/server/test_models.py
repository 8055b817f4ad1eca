"""GET /models and /models/{id}, and what a shut-down model answers."""

from __future__ import annotations

import json

import requests

from tests.server.helpers import AUTH, error_of, post_generation

#: Today's line-up (the default), in release order; the aliases are listed a minute after their snapshots.
IMAGE_IDS = ["gpt-image-2-2026-04-21", "gpt-image-2", "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-flare",
             "gpt-image-2.6-sunburst-2026-11-04", "gpt-image-2.6-sunburst"]
RETIRED = ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"]


def listing(server):
    response = requests.get(server.url + "/models", headers=AUTH, timeout=10)
    assert response.status_code == 200
    return response.json()


def test_default_list_shape_and_order(start_local_server):
    body = listing(start_local_server(legacy_models=False))
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by", "shutdown_date"}
        assert model["object"] == "model" and model["shutdown_date"] is None
    assert set(IMAGE_IDS) <= set(by_id) and "gpt-4o" in by_id  # non-image models too: clients must filter
    assert "gpt-image-2.5-sunburst" in by_id and "gpt-image-2.6-flare" in by_id
    assert not set(RETIRED) & set(by_id)  # no longer served by OpenAI: not listed
    created = [by_id[i]["created"] for i in IMAGE_IDS]
    assert created == sorted(created) and len(set(created)) == len(created)  # newest: the 2.6 aliases


def test_retired_models_answer_like_the_real_api(start_local_server):
    """An id the server does not serve, on /images/*: 400 invalid_value on model, "The model 'X' does not exist."
    (the real API's answer; /models/{id} keeps its 404)."""
    server = start_local_server(legacy_models=False)
    for model in ("gpt-image-1", "dall-e-2", "gpt-image-9"):
        answer = post_generation(server, {"model": model, "prompt": "p"})
        assert error_of(answer) == (400, "invalid_value", "model")
        assert answer.json()["error"]["message"] == f"The model '{model}' does not exist."
    legacy = start_local_server("--legacy-models")
    assert set(RETIRED) <= {m["id"] for m in listing(legacy)["data"]}
    assert post_generation(legacy, {"model": "gpt-image-1", "prompt": "p", "quality": "low"}).status_code == 200


def test_retrieve_one(local_server):
    response = requests.get(local_server.url + "/models/gpt-image-2", headers=AUTH, timeout=10)
    assert response.json()["id"] == "gpt-image-2"
    missing = requests.get(local_server.url + "/models/gpt-image-9", headers=AUTH, timeout=10)
    assert error_of(missing) == (404, "model_not_found", None)
    assert "The model `gpt-image-9` does not exist or you do not have access to it." == missing.json()["error"][
        "message"]


def test_models_need_auth(local_server):
    assert error_of(requests.get(local_server.url + "/models", timeout=10))[0] == 401


def test_shutdown_flag(start_local_server):
    server = start_local_server("--today", "2026-11-25", "--shutdown", "gpt-image-1=2026-10-23",
                                "--shutdown", "gpt-image-1.5=2026-12-01", "--shutdown", "dall-e-3=2026-05-12")
    by_id = {m["id"]: m for m in listing(server)["data"]}
    assert by_id["gpt-image-1"]["shutdown_date"] == "2026-10-23"
    assert by_id["dall-e-3"]["shutdown_date"] == "2026-05-12"  # added to the list by --shutdown
    gone = post_generation(server, {"model": "dall-e-3", "prompt": "p"})
    assert error_of(gone) == (404, "model_not_found", None)
    assert gone.json()["error"]["message"].startswith("The model `dall-e-3` has been deprecated")
    assert gone.json()["error"]["type"] == "invalid_request_error"
    assert error_of(post_generation(server, {"model": "gpt-image-1", "prompt": "p"}))[:2] == (404, "model_not_found")
    retiring = post_generation(server, {"model": "gpt-image-1.5", "prompt": "p", "quality": "low"})
    assert retiring.status_code == 200  # shuts down in 6 days: still served
    assert server.stats()["endpoints"]["generations"] == 3


def test_models_file(start_local_server, tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps([
        {"id": "dall-e-3", "created": 1698785189, "shutdown_date": None},
        {"id": "gpt-image-2.5-sunburst", "created": 1790000000},
        {"id": "dall-e-2", "shutdown_date": "2026-05-12"},
    ]))
    server = start_local_server("--models", str(path), "--today", "2026-11-25")
    ids = [m["id"] for m in listing(server)["data"]]
    assert ids == ["dall-e-3", "gpt-image-2.5-sunburst", "dall-e-2"]
    body = post_generation(server, {"model": "dall-e-3", "prompt": "a fox", "response_format": "b64_json"}).json()
    assert body["data"][0]["revised_prompt"].startswith("a fox") and "usage" not in body
    assert error_of(post_generation(server, {"model": "dall-e-3", "prompt": "p", "n": 2}))[1] == \
        "integer_above_max_value"
    new = post_generation(server, {"model": "gpt-image-2.5-sunburst", "prompt": "p", "size": "1280x720",
                                   "quality": "xhigh"})
    assert new.status_code == 200 and new.json()["size"] == "1280x720"  # the 2.5 family: free sizes, xhigh
    variation = requests.post(server.url + "/images/variations", headers=AUTH, timeout=10,
                              files=[("image", ("p.png", b"x", "image/png"))], data={"model": "dall-e-2"})
    assert error_of(variation)[:2] == (404, "model_not_found")


def test_bad_models_file_exits_2(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "models.json"
    path.write_text('{"data": [{"name": "no id"}]}')
    done = subprocess.run([sys.executable, "-m", "gimp_openai.server", "--models", str(path)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "no string 'id'" in done.stderr and done.stdout == ""
