"""The local server's Batch API works off ``/v1/images/generations`` lines as it does edits: each line through
the same rules and engine as a live request, answers in the output file, refusals in the error file, and a
line for another endpoint refuses the whole batch at creation (as the API validates the input file)."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
import requests
from PIL import Image

from tests.server.helpers import AUTH


def upload(server, lines: list[dict]) -> str:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    response = requests.post(server.url + "/files", headers=AUTH, data={"purpose": "batch"},
                              files={"file": ("in.jsonl", data, "application/jsonl")}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def line(custom_id: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/images/generations",
            "body": {"model": "gpt-image-2", **body}}


def finished(server, batch_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = requests.get(f"{server.url}/batches/{batch_id}", headers=AUTH, timeout=10).json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.1)
    raise AssertionError("the batch never finished")


def records(server, file_id: str) -> dict[str, dict]:
    data = requests.get(f"{server.url}/files/{file_id}/content", headers=AUTH, timeout=30).content
    return {r["custom_id"]: r for r in map(json.loads, data.splitlines())}


@pytest.mark.slow
def test_generation_lines_are_answered_like_live_generations(start_local_server):
    server = start_local_server("--batch-delay", "0.2")
    file_id = upload(server, [
        line("kite", prompt="a red kite", size="1024x1536", quality="low"),
        line("two", prompt="two moons", n=2, size="1024x1024", quality="low"),
        line("bad", prompt="too good", quality="ultra"),  # refused by the rules, as live
        line("edit-only", prompt="x", images=[{"image_url": "data:image/png;base64,AAAA"}]),  # not a generation field
    ])
    created = requests.post(server.url + "/batches", headers=AUTH, json={
        "input_file_id": file_id, "endpoint": "/v1/images/generations", "completion_window": "24h"}, timeout=10)
    assert created.status_code == 200, created.text
    batch = finished(server, created.json()["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    done = records(server, batch["output_file_id"])
    assert set(done) == {"kite", "two"}
    for custom_id, count, size in (("kite", 1, (1024, 1536)), ("two", 2, (1024, 1024))):
        body = done[custom_id]["response"]["body"]
        assert done[custom_id]["response"]["status_code"] == 200
        assert len(body["data"]) == count and body["usage"]["output_tokens"] > 0
        for item in body["data"]:
            assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == size
    failed = records(server, batch["error_file_id"])
    assert failed["bad"]["response"]["status_code"] == 400
    assert failed["bad"]["response"]["body"]["error"]["param"] == "quality"
    assert failed["edit-only"]["response"]["status_code"] == 400
    assert failed["edit-only"]["response"]["body"]["error"]["param"] == "images"


def test_a_generation_batch_with_an_edit_line_is_refused_whole(local_server):
    file_id = upload(local_server, [line("a", prompt="x"), {**line("b", prompt="y"), "url": "/v1/images/edits"}])
    created = requests.post(local_server.url + "/batches", headers=AUTH, json={
        "input_file_id": file_id, "endpoint": "/v1/images/generations", "completion_window": "24h"}, timeout=10)
    assert created.status_code == 400
    assert "Line 2 of the input file has url '/v1/images/edits'" in created.json()["error"]["message"]
