"""Regression tests for the attack run's findings (docs/hardening-server.md): real bytes over a real loopback
socket to a real server subprocess. Each test asserts the status and the JSON error body on the wire, and
that the server still answers afterwards."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.server.helpers import AUTH, mask_png, object_hole, photo, png
from tests.server.raw import Answer, connect, exchange, read_answer, request
from tests.support.local_server import ROOT

GEN = {"model": "gpt-image-1", "prompt": "a kite", "quality": "low", "size": "1024x1024"}
TLS_CLIENT_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x02\x13\x01\x01\x00"


def post_head(path: str = "/v1/images/generations", **extra: str) -> dict[str, str]:
    return {"Host": "127.0.0.1", "Authorization": f"Bearer {FAKE_KEY}", "Content-Type": "application/json", **extra}


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def no_traceback(server) -> None:
    time.sleep(0.2)  # let the stderr reader catch up
    assert not any("Traceback" in line for line in server.stderr_lines), "".join(server.stderr_lines)


# --- 1. body framing and JSON types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_line",
    [b"-1", b"zz", b"0x10", b"1 2", b"+5", b"", b"f" * 2000],
    ids=["negative", "garbage", "0x prefix", "two numbers", "plus sign", "empty", "2000 hex digits"],
)
def test_chunk_sizes_must_be_hex(local_server, size_line):
    data = request("POST", "/v1/images/generations", post_head(**{"Transfer-Encoding": "chunked"}))
    answer = exchange(local_server.port, data + size_line + b"\r\n" + b"x" * 4096)
    assert answer.status == 400 and answer.closed
    assert answer.error()["code"] == "invalid_request"
    assert local_server.alive()
    no_traceback(local_server)


def test_chunked_total_counts_against_the_body_limit(local_server):
    """40 MB in one chunk, then a 20 MB chunk announced: 413 before the second chunk is read."""
    first = b"a" * (40 * 1024 * 1024)
    with connect(local_server.port, timeout=30) as sock:
        sock.sendall(request("POST", "/v1/images/generations", post_head(**{"Transfer-Encoding": "chunked"})))
        sock.sendall(b"%x\r\n" % len(first) + first + b"\r\n" + b"%x\r\n" % (20 * 1024 * 1024) + b"b" * 1000)
        answer = read_answer(sock, timeout=30)
    assert answer.status == 413 and answer.error()["code"] == "request_too_large"
    assert local_server.alive()


def test_one_huge_chunk_is_refused_before_reading(local_server):
    data = request("POST", "/v1/images/generations", post_head(**{"Transfer-Encoding": "chunked"}))
    answer = exchange(local_server.port, data + b"7fffffffffffffff\r\n" + b"x" * 1000)
    assert answer.status == 413 and answer.error()["code"] == "request_too_large" and answer.seconds < 2


def test_chunked_body_still_works_and_trailers_are_bounded(local_server):
    body = json.dumps(GEN).encode()
    head = request("POST", "/v1/images/generations", post_head(**{"Transfer-Encoding": "chunked"}))
    ok = exchange(local_server.port, head + chunked(body[:9], body[9:]), timeout=60)
    assert ok.status == 200 and json.loads(ok.body)["data"]
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(40))
    bad = exchange(local_server.port, request("POST", "/v1/images/generations",
                                              post_head(**{"Transfer-Encoding": "chunked"}))
                   + b"%x\r\n%s\r\n0\r\n" % (len(body), body) + trailers + b"\r\n")
    assert bad.status == 400 and "trailer" in bad.error()["message"]


@pytest.mark.parametrize(
    "headers",
    [{"Content-Length": "-5"}, {"Content-Length": "1_0"}, {"Content-Length": "10", "Transfer-Encoding": "chunked"},
     {"Transfer-Encoding": "gzip"}],
    ids=["negative length", "underscore length", "length and chunked", "gzip"],
)
def test_ambiguous_framing_is_refused(local_server, headers):
    answer = exchange(local_server.port, request("POST", "/v1/images/generations", post_head(**headers)) + b"{}")
    assert answer.status == 400 and answer.closed and answer.error()["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"model": "gpt-image-1", "prompt": "p", "images": 5}, "images", "invalid_type"),
        ({"model": "gpt-image-1", "prompt": "p", "images": [5]}, "images", "invalid_type"),
        ({"model": "gpt-image-1", "prompt": "p", "images": [{"image_url": 7}]}, "images.image_url", "invalid_type"),
        ({"model": "gpt-image-1", "prompt": "p", "images": "data:image/png;base64,AAAA"}, "images", "invalid_type"),
        ({"model": "gpt-image-1", "prompt": "p", "mask": 1.5}, "mask", "invalid_type"),
        ({"model": "gpt-image-1", "prompt": ["p"]}, "prompt", "invalid_type"),
        ({"model": 5, "prompt": "p"}, "model", "invalid_type"),
    ],
    ids=["images int", "images [int]", "image_url int", "images str", "mask float", "prompt list", "model int"],
)
def test_wrong_json_types_name_the_param(local_server, body, param, code):
    answer = exchange(local_server.port, request("POST", "/v1/images/edits", post_head(
        **{"Content-Length": str(len(json.dumps(body)))})) + json.dumps(body).encode())
    error = answer.error()
    assert answer.status == 400 and (error["param"], error["code"]) == (param, code), error
    no_traceback(local_server)


@pytest.mark.parametrize("depth", [100_000, 2_000_000])
def test_deep_json_nesting_is_400(local_server, depth):
    body = b"[" * depth + b"]" * depth
    answer = exchange(local_server.port, request("POST", "/v1/images/generations",
                                                 post_head(**{"Content-Length": str(len(body))})) + body, timeout=30)
    assert answer.status == 400 and answer.error()["type"] == "invalid_request_error"
    assert local_server.alive()
    no_traceback(local_server)


# --- 2. deadlines, non-HTTP input, connection cap --------------------------------------------------------------


@pytest.fixture
def quick(start_local_server):
    """A server whose header deadline and body idle timeout are 1 s, with 8 connections at most."""
    return start_local_server("--header-timeout", "1", "--body-timeout", "1", "--max-connections", "8")


def test_body_shorter_than_content_length_gets_408(quick):
    with connect(quick.port) as sock:
        sock.sendall(request("POST", "/v1/images/generations", post_head(**{"Content-Length": "1000"})) + b"{")
        answer = read_answer(sock, timeout=10)
    assert answer.status == 408 and answer.error()["code"] == "request_timeout" and answer.closed
    assert 0.8 < answer.seconds < 4


def test_slowloris_headers_are_cut_at_the_header_deadline(quick):
    """One header byte every 0.2 s never lets an idle timeout fire; the total deadline (1 s) still does."""
    with connect(quick.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        answered = None
        for _ in range(40):  # at most 8 s
            try:
                sock.sendall(b"X")
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                answered = sock.recv(65536)
                break
            except TimeoutError:
                continue
        seconds = time.monotonic() - started
        while answered and not answered.endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            answered += more
    assert answered is not None and answered.startswith(b"HTTP/1.1 408"), answered
    assert b'"request_timeout"' in answered and seconds < 3


@pytest.mark.parametrize(
    "data",
    [TLS_CLIENT_HELLO, b"GET /\r\n", b"\x00\x01\x02garbage", b"get / http/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\n"],
    ids=["tls hello", "http/0.9", "binary", "lower case", "http/2 preface"],
)
def test_non_http1_input_is_answered_400_and_closed(quick, data):
    answer = exchange(quick.port, data, timeout=5)
    assert answer.status == 400 and answer.closed and answer.seconds < 0.9  # before any deadline
    assert answer.error()["code"] == "invalid_request"


def test_half_sent_requests_do_not_hold_threads(quick):
    """15 half-sent requests (more than the 8-connection cap): the excess is answered 429 at once, the rest
    408 at the deadline, and a normal request is served afterwards."""
    socks = [connect(quick.port) for _ in range(15)]
    try:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nContent-Le")
        answers = [read_answer(sock, timeout=5) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    statuses = sorted(a.status for a in answers)
    assert statuses.count(408) == 8 and statuses.count(429) == 7, statuses
    busy = next(a for a in answers if a.status == 429)
    assert busy.error()["code"] == "server_busy" and busy.headers["retry-after"] == "1"
    assert quick.alive()


def test_connection_cap_frees_up(quick):
    idle = [connect(quick.port) for _ in range(8)]
    try:
        time.sleep(0.2)
        turned_away = exchange(quick.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        assert turned_away.status == 429 and turned_away.error()["code"] == "server_busy"
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert quick.alive()


# --- 3. amplification -------------------------------------------------------------------------------------------


def rgba_png(side: int, alpha: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (0, 0, 0, alpha)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def test_9000_squared_png_is_refused_from_its_header(start_local_server):
    server = start_local_server()
    image, mask = rgba_png(9000, 0), rgba_png(9000, 255)
    before = server.peak_rss_mb()
    started = time.monotonic()
    response = requests.post(server.url + "/images/edits", headers=AUTH, timeout=60,
                             files=[("image", ("i.png", image, "image/png")), ("mask", ("m.png", mask, "image/png"))],
                             data={"model": "gpt-image-1", "prompt": "p", "quality": "low"})
    seconds = time.monotonic() - started
    peak = server.peak_rss_mb()
    print(f"\n9000x9000 + mask ({len(image) + len(mask):,} B): {response.status_code} in {seconds:.2f} s, "
          f"peak RSS {before:.0f} -> {peak:.0f} MB")
    body = response.json()["error"]
    assert response.status_code == 400 and body["code"] == "image_too_large" and body["param"] == "image"
    assert peak < 250, peak  # was 1608 MB before the budget
    assert server.alive()


def test_request_pixel_budget_counts_all_images(local_server):
    """Four 3000x3000 images: each is under the per-image limit, together (36 MP) over the request's."""
    image = rgba_png(3000, 255)
    response = requests.post(local_server.url + "/images/edits", headers=AUTH, timeout=60,
                             files=[("image[]", (f"{i}.png", image, "image/png")) for i in range(4)],
                             data={"model": "gpt-image-1", "prompt": "p", "quality": "low"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "image_too_large" and "together" in error["message"]


def test_json_data_url_images_share_the_budget(local_server):
    url = "data:image/png;base64," + base64.b64encode(rgba_png(5000, 0)).decode()
    response = requests.post(local_server.url + "/images/edits", headers=AUTH, timeout=60,
                             json={"model": "gpt-image-1", "prompt": "p", "images": [{"image_url": url}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "image_too_large"


@pytest.mark.parametrize("fault", ["wrong_size;size=30000x30000", "wrong_size;size=0x5", "should-retry=x"])
def test_fault_hooks_are_bounded(local_server, fault):
    header = fault if fault.startswith("wrong") else "500;" + fault
    response = requests.post(local_server.url + "/images/generations", headers={**AUTH, "X-Fault": header},
                             json=GEN, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "X-Fault/X-Render"


def test_concurrent_heavy_work_beyond_the_cap_gets_429(start_local_server):
    """One worker, no waiting: of four simultaneous 1024x1024 n=3 edits, the ones that find the worker busy
    are answered 429 with retry-after in the API's shape; the server keeps answering."""
    server = start_local_server("--max-work", "1", "--work-wait", "0")
    pixels = photo(1024, 1024)
    files = [("image", ("p.png", png(pixels), "image/png")),
             ("mask", ("m.png", mask_png(object_hole(1024, 1024)), "image/png"))]
    barrier = threading.Barrier(4)
    results: list[requests.Response] = []

    def one() -> None:
        barrier.wait(10)
        results.append(requests.post(server.url + "/images/edits", headers=AUTH, files=files, timeout=120,
                                     data={"model": "gpt-image-1", "prompt": "p", "n": "3", "quality": "low"}))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    statuses = sorted(r.status_code for r in results)
    print(f"\nfour simultaneous heavy edits, one worker: {statuses}")
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
    busy = next(r for r in results if r.status_code == 429)
    assert busy.json()["error"]["code"] == "server_busy" and busy.headers["retry-after"] == "1"
    assert server.alive()


# --- 4. authentication and the test routes ---------------------------------------------------------------------


def test_a_key_is_generated_when_none_is_given(start_local_server):
    server = start_local_server(env={"GIMP_OPENAI_SERVER_KEY": ""})
    key = server.listening["key"]
    assert key.startswith("sk-local-") and len(key) > 30 and server.listening["auth"] == "generated key"
    time.sleep(0.2)
    assert any(key in line for line in server.stderr_lines)
    models = server.url + "/models"
    assert requests.get(models, timeout=10).status_code == 401
    assert requests.get(models, headers=AUTH, timeout=10).json()["error"]["code"] == "invalid_api_key"
    assert requests.get(models, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200


def test_a_key_from_the_environment_is_not_printed(start_local_server):
    server = start_local_server(env={"GIMP_OPENAI_SERVER_KEY": "sk-local-from-env-0123456789"})
    time.sleep(0.2)
    assert "key" not in server.listening and server.listening["auth"] == "key from GIMP_OPENAI_SERVER_KEY"
    assert not any("sk-local-from-env" in line for line in server.stderr_lines)


def test_test_routes_are_off_by_default(start_local_server):
    server = start_local_server(test_routes=False)
    assert requests.get(server.root + "/_stats", headers=AUTH, timeout=10).status_code == 404
    assert requests.post(server.root + "/_reset", headers=AUTH, timeout=10).status_code == 404


def test_test_routes_need_the_key(local_server):
    requests.post(local_server.url + "/images/generations", headers=AUTH, json={**GEN, "prompt": "secret plan"},
                  timeout=60)
    for response in (requests.get(local_server.root + "/_stats", timeout=10),
                     requests.get(local_server.root + "/_stats", headers={"Authorization": "Bearer other"}, timeout=10),
                     requests.post(local_server.root + "/_reset", timeout=10)):
        assert response.status_code == 401 and "secret plan" not in response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "secret plan" in json.dumps(local_server.stats())


# --- 5. the HTTP layer answers in JSON; bad serve options exit 2 -------------------------------------------------


@pytest.mark.parametrize(
    "data,status,code",
    [
        (b"GET /v1/models HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET /v1/models HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n", 431,
         "headers_too_large"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
        (b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method_not_supported"),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400, "invalid_request"),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400, "invalid_request"),
    ],
    ids=["header line 70 KB", "120 headers", "uri 9 KB", "unknown method", "space in path", "extra word"],
)
def test_http_layer_errors_are_json(local_server, data, status, code):
    answer: Answer = exchange(local_server.port, data)
    assert answer.status == status and answer.closed
    assert answer.error()["code"] == code
    assert b"<html" not in answer.body.lower()
    assert local_server.alive()


@pytest.mark.parametrize(
    "args,fragment",
    [(["--port", "99999"], "out of range"), (["--host", "no-such-host.invalid"], "no-such-host.invalid"),
     (["--port", "IN_USE"], "in use"), (["--header-timeout", "0"], "--header-timeout")],
    ids=["port 99999", "bad host", "port in use", "zero timeout"],
)
def test_bad_serve_options_exit_2_with_one_line(args, fragment):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        args = [str(taken.getsockname()[1]) if a == "IN_USE" else a for a in args]
        done = subprocess.run([sys.executable, "-m", "gimp_openai.server", *args], capture_output=True, text=True,
                              timeout=30, cwd=ROOT / "plugin")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
    assert lines[0].startswith("gimp-openai serve: ") and fragment in lines[0].lower()
    assert "Traceback" not in done.stderr


def test_no_traceback_after_all_of_this(local_server):
    """The shared server took every bad input above: still answering, and nothing on stderr is a traceback."""
    assert local_server.alive()
    no_traceback(local_server)
