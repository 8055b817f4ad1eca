"""Body limit (413 without buffering), concurrency, what /_stats records, and that keys never leak."""

from __future__ import annotations

import json
import socket
import threading
import time

import requests

from tests.conftest import FAKE_KEY
from tests.server.helpers import AUTH, mask_png, object_hole, photo, png, post_edit, post_generation


def test_413_before_reading_the_body(local_server):
    declared = 60 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", local_server.port), timeout=10) as sock:
        head = (
            "POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {FAKE_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 65536)  # 64 KB of the 60 MB promised, then wait for the answer
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413")
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_too_large"
    record = local_server.stats()["requests"][-1]
    assert record["status"] == 413 and record["body_bytes"] == 0


def test_just_under_the_limit_is_read(local_server):
    """A 50 MB-limit sanity check at small cost: a normal body is read completely and counted."""
    response = post_edit(local_server)
    assert response.status_code == 200
    assert local_server.stats()["requests"][-1]["body_bytes"] == int(response.request.headers["Content-Length"])


def test_eight_requests_in_parallel(start_local_server):
    server = start_local_server("--latency", "1.0")
    results: list[int] = []

    def one() -> None:
        body = {"model": "dall-e-2", "prompt": "a kite", "size": "256x256", "response_format": "b64_json"}
        results.append(post_generation(server, body, timeout=30).status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    print(f"\n8 concurrent requests with 1.0 s latency each: {wall:.2f} s wall")
    assert results == [200] * 8
    assert wall < 2.0


def test_stats_record_what_was_sent(local_server):
    hole = object_hole(256, 256)
    post_edit(local_server, data={"model": "gpt-image-1", "prompt": "remove the rock", "n": "2"},
              files=[("image[]", ("photo.png", png(photo()), "image/png")),
                     ("mask", ("mask.png", mask_png(hole), "image/png"))])
    stats = local_server.stats()
    record = stats["requests"][-1]
    assert stats["endpoints"] == {"edits": 1}
    assert record["method"] == "POST" and record["path"] == "/v1/images/edits" and record["status"] == 200
    assert record["fields"] == {"model": "gpt-image-1", "prompt": "remove the rock", "n": "2"}
    image, mask = record["files"]
    assert image["field"] == "image[]" and image["filename"] == "photo.png" and image["content_type"] == "image/png"
    assert image["image"] == {"width": 256, "height": 256, "mode": "RGBA", "format": "PNG", "has_alpha": True}
    assert mask["image"]["has_alpha"] is True and mask["bytes"] > 0
    assert record["headers"]["authorization"] == "[redacted]" and record["auth"]["authorization"] is True
    local_server.reset()
    assert local_server.stats()["total"] == 0


def test_key_never_appears_anywhere(start_local_server):
    server = start_local_server("--verbose")
    post_generation(server, {"model": "gpt-image-1", "prompt": "p", "quality": "low"})
    post_generation(server, {"model": "nope", "prompt": "p"})
    requests.post(server.url + "/images/edits", headers={"api-key": FAKE_KEY}, timeout=10,
                  files=[("image", ("p.png", b"junk", "image/png"))], data={"model": "gpt-image-1", "prompt": "p"})
    stats_text = json.dumps(server.stats())
    server.stop()
    assert FAKE_KEY not in stats_text
    assert FAKE_KEY not in "".join(server.stderr_lines)
    assert any("POST /v1/images/generations" in line for line in server.stderr_lines)


def test_unknown_route(local_server):
    response = requests.get(local_server.url + "/images/edits", headers=AUTH, timeout=10)
    assert response.status_code == 404 and response.json()["error"]["message"] == "Invalid URL (GET /v1/images/edits)"


def test_startup_time_is_printed(start_local_server):
    server = start_local_server()
    print(f"\nstartup to listening line: {server.startup_seconds:.2f} s")
    assert server.listening["host"] == "127.0.0.1" and server.listening["port"] > 0
