"""What the client keeps of a hostile answer, against a real server on 127.0.0.1: at most n images (extras
dropped unread), an answer no larger than n images of the model can be, a whole attempt within its deadline
however slowly the bytes drip, and the configured key redacted from everything the server says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gimp_openai import capabilities as caps
from gimp_openai import errors as E
from gimp_openai.client import ClientConfig, _first_deadline, answer_limit

from tests.engine._client_helpers import b64, client_for, images_answer, png
from tests.support.wire_server import Reply, WireServer

ROOT = Path(__file__).resolve().parents[2]


# --- 1. at most n images; the answer's size bounded by n and the model ------------------------------------------


def test_ten_thousand_images_for_n1_keeps_the_first_and_never_touches_the_rest():
    good = png(4, 4)
    extras = [{"b64_json": "!!! not base64, would be a problem if decoded"}] * 4_999
    with WireServer() as server:
        extras += [{"url": server.origin + f"/x/{i}.png"} for i in range(5_000)]  # requests if downloaded
        server.push(Reply.json({"created": 1, "data": [{"b64_json": b64(good)}, *extras]}))
        started = time.monotonic()
        result = client_for(server.url).generate(model="gpt-image-2", prompt="x", n=1)
        seconds = time.monotonic() - started
        assert [image.data for image in result.images] == [good]
        assert result.problems == [] and result.ok  # no extra was decoded
        assert len(server.requests) == 1  # no extra was downloaded
    assert result.warnings == [
        "The server sent 10,000 images for the 1 requested; the 9,999 extra were dropped unread."]
    assert result.meta["dropped"] == 9_999 and result.meta["returned"] == 1
    assert seconds < 5  # was 356 s with every image decoded and kept


def test_extras_beyond_n_are_dropped_but_every_requested_image_is_kept():
    images = [png(4, 4, (i, 0, 0, 255)) for i in range(4)]
    with WireServer([Reply.json(images_answer(*images))]) as server:
        result = client_for(server.url).generate(model="gpt-image-2", prompt="x", n=3)
    assert [image.data for image in result.images] == images[:3]
    assert result.warnings == ["The server sent 4 images for the 3 requested; the 1 extra was dropped unread."]


def test_answer_cap_grows_with_n_and_the_models_largest_output():
    assert answer_limit(caps.FAMILIES["gpt-image-2"], 1) == pytest.approx(45.9e6, rel=0.01)
    assert answer_limit(caps.FAMILIES["dall-e-2"], 1) == pytest.approx(6.98e6, rel=0.01)
    assert answer_limit(caps.FAMILIES["gpt-image-2"], 10) > 10 * answer_limit(caps.FAMILIES["gpt-image-2"], 1) * 0.97


def padded_answer(size: int) -> bytes:
    """A valid answer with one image, padded to ``size`` bytes (what an honest but odd server could send)."""
    head = json.dumps(images_answer(png(4, 4)))[:-1] + ', "pad": "'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def test_an_answer_larger_than_n_images_can_be_is_refused_by_its_announced_size():
    body = padded_answer(8_000_000)  # dall-e-2, n=1: at most 6,98x,xxx bytes
    with WireServer([Reply(200, {"Content-Type": "application/json"}, body)] * 2) as server:
        with pytest.raises(E.ResponseTooLargeError) as info:
            client_for(server.url).generate(model="dall-e-2", prompt="x", n=1)
        assert len(server.requests) == 1  # not retried: it would be as large again
        limit = answer_limit(caps.FAMILIES["dall-e-2"], 1)
        assert info.value.message == (f"The server announced an answer of 8,000,000 bytes for 1 image of dall-e-2; "
                                      f"at most {limit:,} are accepted")
        assert info.value.hint == E.ResponseTooLargeError.default_hint and info.value.code == "response_too_large"
        # the same answer for two images is within the cap for two
        result = client_for(server.url).generate(model="dall-e-2", prompt="x", n=2)
        assert len(result.images) == 1


# --- 2. one deadline per attempt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action, close", [("drip", False), ("drip", True), ("drip_head", False)])
def test_a_dripping_server_ends_in_the_timeout_error_at_the_read_timeout(action, close):
    """With ``Connection: close`` http.client hands the socket to the response: the deadline must still find it."""
    headers = {"Content-Type": "application/json", **({"Connection": "close"} if close else {})}
    answer = Reply(200, headers, json.dumps(images_answer(png(4, 4))).encode(),
                   action=action, drip=0.05)  # ~250 bytes: 12 s at this pace; each recv well within 1 s
    with WireServer([answer]) as server:
        started = time.monotonic()
        with pytest.raises(E.RequestTimeoutError) as info:
            client_for(server.url, read_timeout=1.0, max_retries=0).generate(model="gpt-image-2", prompt="x")
        seconds = time.monotonic() - started
    if action == "drip":
        assert info.value.message == (f"No complete answer from {server.url}/images/generations within the read "
                                      "timeout of 1 s: it was still arriving, too slowly")
    else:  # the headers never completed: the same words as a server that sends nothing
        assert info.value.message == (f"No answer from {server.url}/images/generations within the read timeout "
                                      "of 1 s")
    assert "raise the read timeout" in info.value.hint
    assert 1.9 < seconds < 3.5  # the read timeout and the 1 s grace that lets a plain stall read as one


def test_the_deadline_is_per_attempt_and_a_dripped_attempt_is_retried():
    drip = Reply(200, {}, b'{"data": []}' * 40, action="drip", drip=0.05)
    sleeps: list[float] = []
    with WireServer([drip, Reply.json(images_answer(png(4, 4)))]) as server:
        result = client_for(server.url, sleeps=sleeps, read_timeout=1.0, max_retries=1).generate(
            model="gpt-image-2", prompt="x")
        assert len(result.images) == 1 and len(server.requests) == 2 and sleeps == [0.5]


def test_a_slow_but_steady_answer_within_the_deadline_is_kept():
    body = json.dumps(images_answer(png(4, 4))).encode()
    with WireServer([Reply(200, {"Content-Type": "application/json"}, body, action="drip", drip=0.002)]) as server:
        result = client_for(server.url, read_timeout=5.0, max_retries=0).generate(model="gpt-image-2", prompt="x")
    assert result.images[0].data == png(4, 4)


def test_the_first_deadline_gives_the_upload_its_own_time():
    """Until the upload is out: connect + read timeout + 1 s per 32 KiB sent (then a fresh read timeout)."""
    config = ClientConfig(base_url="http://127.0.0.1:1/v1", connect_timeout=2.0, read_timeout=5.0)
    assert _first_deadline(config, 0) == 7.0
    assert _first_deadline(config, 3_276_800) == 107.0


# --- 5. the key redacted from everything the server says ---------------------------------------------------------

KEY = "my-own-server-key-Z9y8X7w6V5u4"  # not sk-: the key pattern alone would not catch it


def test_a_key_echoed_in_headers_fields_and_errors_is_redacted():
    ok = Reply.json({"created": 1, "usage": {"note": f"billed to {KEY}"},
                     "data": [{"b64_json": b64(png(4, 4)), "revised_prompt": f"a fox, key {KEY}"}]},
                    headers={"x-request-id": f"req_{KEY}"})
    bad = Reply.error(400, f"bad key {KEY}", code=KEY, param=KEY, headers={"x-request-id": KEY})
    with WireServer([ok, bad]) as server:
        result = client_for(server.url, api_key=KEY).generate(model="gpt-image-2", prompt="x")
        with pytest.raises(E.GimpOpenAIError) as info:
            client_for(server.url, api_key=KEY).generate(model="gpt-image-2", prompt="x")
    assert result.request_id == "req_[redacted key]"
    assert result.images[0].revised_prompt == "a fox, key [redacted key]"
    assert result.meta["usage"] == {"note": "billed to [redacted key]"}
    error = info.value.to_dict()
    assert error["message"] == "bad key [redacted key]"
    assert (error["request_id"], error["param"], error["server_code"]) == ("[redacted key]",) * 3
    assert KEY not in repr(result) + repr(result.meta) + json.dumps(error) + str(info.value)


def test_the_cli_json_and_history_never_hold_an_echoed_key(tmp_path):
    """The reported case end to end: `generate --json` with a non-sk key echoed in x-request-id."""
    answer = Reply.json({"created": 1, "data": [{"b64_json": b64(png(64, 64)), "revised_prompt": KEY}]},
                        headers={"x-request-id": f"req_{KEY}"})
    history = tmp_path / "history"
    env = dict(os.environ, OPENAI_API_KEY=KEY, GIMP_OPENAI_HISTORY_DIR=str(history),
               PYTHONPATH=str(ROOT / "plugin"))
    with WireServer(default=answer) as server:
        run = subprocess.run(
            [sys.executable, "-m", "gimp_openai", "--json", "generate", "-p", "a fox", "--model", "gpt-image-2",
             "--base-url", server.url, "--out", str(tmp_path / "out"), "-q"],
            capture_output=True, text=True, env=env, timeout=120)
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was the key that was echoed
    assert run.returncode == 0, run.stderr
    assert "req_[redacted key]" in run.stdout
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in files) and any(p.parent == history for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in run.stdout + run.stderr
