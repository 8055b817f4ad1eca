"""Every fault mode, seen with raw requests: statuses, headers, broken bodies, dropped and stalled connections."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from tests.server.helpers import AUTH, error_of, post_edit, post_generation

GEN = {"model": "gpt-image-1", "prompt": "a kite", "quality": "low"}


def gen(server, fault: str, body=None, **kwargs):
    return post_generation(server, body or GEN, headers={"X-Fault": fault}, **kwargs)


@pytest.mark.parametrize(
    "fault,status,code,kind",
    [
        ("500", 500, None, "server_error"),
        ("503", 503, None, "server_error"),
        ("401", 401, "invalid_api_key", "invalid_request_error"),
        ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
        ("moderation_blocked", 400, "moderation_blocked", "image_generation_user_error"),
    ],
)
def test_error_faults(local_server, fault, status, code, kind):
    response = gen(local_server, fault)
    assert error_of(response)[:2] == (status, code)
    assert response.json()["error"]["type"] == kind
    assert response.headers["x-request-id"].startswith("req_")


def test_429_headers(local_server):
    response = gen(local_server, "429;retry-after=2;retry-after-ms=1500;should-retry=true")
    assert error_of(response)[:2] == (429, "rate_limit_exceeded")
    assert response.headers["retry-after"] == "2" and response.headers["retry-after-ms"] == "1500"
    assert response.headers["x-should-retry"] == "true"


def test_502_is_an_html_page(local_server):
    response = gen(local_server, "502")
    assert response.status_code == 502 and response.headers["content-type"].startswith("text/html")
    assert b"Bad Gateway" in response.content


def test_times_and_key_then_success(local_server):
    statuses = [gen(local_server, "503;times=2;key=test-abc").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    stats = local_server.stats()
    assert stats["faults"]["test-abc"] == {"seen": 3, "applied": 2}
    assert stats["endpoints"]["generations"] == 3
    assert [r["faults"] for r in stats["requests"]] == [["503;times=2;key=test-abc"]] * 2 + [[]]


def test_malformed_json(local_server):
    response = gen(local_server, "malformed_json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_truncated_b64(local_server):
    body = gen(local_server, "truncated_b64", body={**GEN, "n": 2}).json()
    broken = base64.b64decode(body["data"][0]["b64_json"])  # valid base64 ...
    with pytest.raises(Exception):  # noqa: B017 - ... of half a PNG
        Image.open(io.BytesIO(broken)).load()
    Image.open(io.BytesIO(base64.b64decode(body["data"][1]["b64_json"]))).load()  # the other image is fine


def test_wrong_size(local_server):
    body = gen(local_server, "wrong_size", body={**GEN, "size": "1536x1024"}).json()
    assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (768, 512)
    body = gen(local_server, "wrong_size;size=1024x1024", body={**GEN, "size": "1536x1024"}).json()
    assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (1024, 1024)


def test_reset_drops_the_connection_mid_body(local_server):
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)) as caught:
        gen(local_server, "reset")
    assert "reset" in str(caught.value).lower() or "broken" in str(caught.value).lower()
    assert local_server.stats()["requests"][-1]["status"] == 200  # the answer was ready; delivery was cut


def test_stall_makes_the_client_time_out(local_server):
    with pytest.raises((requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)) as caught:
        gen(local_server, "stall;seconds=3", timeout=(5, 0.5))
    assert "timed out" in str(caught.value).lower()


def test_latency_fault_still_answers(local_server):
    assert gen(local_server, "latency=0.2").status_code == 200


def test_faults_apply_to_edits_and_combine(local_server):
    response = post_edit(local_server, headers={"X-Fault": "latency=0.1, 429;retry-after=1"})
    assert error_of(response)[:2] == (429, "rate_limit_exceeded")


def test_bad_fault_header(local_server):
    assert error_of(gen(local_server, "explode"))[:2] == (400, "invalid_value")


def test_fault_flag_applies_to_every_request(start_local_server):
    server = start_local_server("--fault", "500;times=1")
    assert post_generation(server, GEN).status_code == 500
    assert post_generation(server, GEN).status_code == 200


def test_auth_comes_before_faults(local_server):
    response = requests.post(local_server.url + "/images/generations", json=GEN, headers={"X-Fault": "503"},
                             timeout=10)
    assert error_of(response)[0] == 401
    assert AUTH  # the shared header is what other tests use
