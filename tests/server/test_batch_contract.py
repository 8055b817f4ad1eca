"""The Batch API and rate-limit facts (tests/fixtures/openai_images_contract.yaml, ``batch_api`` and
``rate_limit_headers``) against what the client sends and reads and what the local server serves."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml
from gimp_openai import batchapi
from gimp_openai.ratelimit import read_headers
from gimp_openai.server import batches as server_batches
from gimp_openai.server.ratelimit import RateLimiter

CONTRACT = Path(__file__).resolve().parents[1] / "fixtures" / "openai_images_contract.yaml"


def facts() -> dict:
    return yaml.safe_load(CONTRACT.read_text())


def test_batch_endpoints_and_limits_are_the_api_s():
    batch = facts()["batch_api"]
    assert set(batchapi.ENDPOINT_PATHS.values()) <= set(batch["create"]["endpoint"])
    assert set(server_batches.ENDPOINTS) <= set(batch["create"]["endpoint"])
    assert batchapi.MAX_LINES == server_batches.MAX_LINES == batch["create"]["max_requests"]
    assert batchapi.MAX_INPUT_BYTES == batch["create"]["max_input_bytes"]
    assert set(batchapi.FINISHED) <= set(batch["status"])


def test_edit_lines_use_the_json_edit_body_with_image_refs():
    batch = facts()["batch_api"]
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    body = batchapi.json_edit_body([("model", "gpt-image-2"), ("prompt", "x"), ("image", ("i.png", png, "image/png")),
                                    ("mask", ("m.png", png, "image/png")), ("n", "2"), ("size", "1024x1024")])
    assert set(body) - {"model", "prompt", "n", "size"} == {"images", "mask"}
    assert 1 <= len(body["images"]) <= batch["EditImageBodyJsonParam"]["images"]["maxItems"]
    for ref in [*body["images"], body["mask"]]:
        assert set(ref) == {"image_url"}  # exactly one of image_url / file_id
        assert ref["image_url"].startswith("data:image/png;base64,")
        assert base64.b64decode(ref["image_url"].split(",", 1)[1]) == png
    assert body["n"] == 2
    line = json.loads(batchapi.jsonl([("item-1", "edits", body)]))
    assert set(line) == set(batch["request_line"]) and line["method"] == "POST"
    assert line["url"] == "/v1/images/edits"


def test_the_client_reads_the_documented_headers_and_the_server_writes_them():
    fields = facts()["rate_limit_headers"]["fields"]
    readings = read_headers(fields)
    assert readings["requests"].limit == 60 and readings["requests"].remaining == 59
    assert readings["requests"].reset == 1.0 and readings["tokens"].reset == 360.0
    served = RateLimiter(images_per_min=5, requests_per_min=60).admit("gpt-image-2", 1)
    names = set(facts()["rate_limit_headers"]["image_variant"])
    assert names <= set(served) and {n for n in fields if n.endswith("-requests")} <= set(served)
