"""A bounded abuse run against the local server: what any local process could send it, over loopback only.

Every case sends real bytes to one real server subprocess (short deadlines: 1 s headers, 1 s body idle;
16 connections; 2 image workers, 2 s wait) and checks that the answer is the API's JSON error (or a close for
input that is not HTTP at all), that no answer takes longer than the deadlines allow, that the server still
answers afterwards, and that its peak RSS stays bounded. Every loop is bounded in count and in time; the whole
file takes well under 60 s on two cores. The table printed at the end (``-s``) is the one in
docs/hardening-server.md: case, inputs tried, held, peak RSS after the case (VmHWM), seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.server.raw import Answer, connect, exchange, read_answer, request
from tests.support.local_server import LocalServerHandle

HEADERS = {"Host": "127.0.0.1", "Authorization": f"Bearer {FAKE_KEY}"}
AUTH = {"Authorization": f"Bearer {FAKE_KEY}"}
GEN = {"model": "gpt-image-1", "prompt": "a kite", "quality": "low", "size": "1024x1024"}
PEAK_RSS_LIMIT_MB = 700  # the whole run; the old server needed 1608 MB for ONE 646 KB request
ROWS: list[tuple[str, int, str, float, float]] = []


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServerHandle]:
    handle = LocalServerHandle(("--header-timeout", "1", "--body-timeout", "1", "--max-connections", "16",
                                "--max-work", "2", "--work-wait", "2"))
    yield handle
    handle.stop()
    print("\n\n| input class | inputs tried | held | peak RSS (MB) | seconds |\n|---|---|---|---|---|")
    for name, count, held, peak, seconds in ROWS:
        print(f"| {name} | {count} | {held} | {peak:.0f} | {seconds:.2f} |")
    assert not any("Traceback" in line for line in handle.stderr_lines), "".join(handle.stderr_lines)


@contextlib.contextmanager
def case(server: LocalServerHandle, name: str, count: int) -> Iterator[None]:
    """Time a case, then check the server still answers and its peak RSS; add the row to the table."""
    started = time.monotonic()
    yield
    seconds = time.monotonic() - started
    alive = server.alive()
    peak = server.peak_rss_mb()
    ROWS.append((name, count, "yes" if alive and peak < PEAK_RSS_LIMIT_MB else "NO", peak, seconds))
    assert alive, f"{name}: the server stopped answering"
    assert peak < PEAK_RSS_LIMIT_MB, f"{name}: peak RSS {peak:.0f} MB"


def json_error(answer: Answer, *statuses: int) -> dict:
    assert answer.status in statuses, (answer.status, answer.body[:300])
    return answer.error()


def post(path: str, body: bytes, **headers: str) -> bytes:
    return request("POST", path, {**HEADERS, "Content-Length": str(len(body)), **headers}, body)


def test_framing(server):
    """Malformed request lines, lengths and chunked framing: each one a JSON 4xx, closed, within 3 s."""
    gen = "/v1/images/generations"
    te = {**HEADERS, "Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    inputs = [request("POST", gen, te) + size + b"\r\n" + b"x" * 100 for size in
              (b"-1", b"-0", b"ffffffffffffffffff", b"1g", b"\xff", b" ", b"0x1", b"1;" + b"e" * 2000)]
    inputs += [request("POST", gen, te) + b"2\r\n{}XX0\r\n\r\n",  # no CRLF after the chunk
               request("POST", gen, te) + b"2\r\n{}\r\n0\r\n" + b"T: v\r\n" * 50 + b"\r\n",
               request("POST", gen, {**HEADERS, "Content-Length": "5", "Content-Length ": "6"}) + b"{}",
               request("POST", gen, {**HEADERS, "Content-Length": "99999999999999999999999"}),
               request("POST", gen, {**HEADERS, "Content-Length": "0x10"}),
               request("POST", gen, {**HEADERS, "Transfer-Encoding": "chunked, gzip"}),
               b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
               b"GET /v1/models HTTP/9.9\r\n\r\n", b"GET\r\n\r\n", b"GET / \r\n\r\n", b"\r\n\r\n",
               b"G" * 9000 + b"\r\n\r\n"]
    with case(server, "framing: chunk sizes, lengths, request lines", len(inputs)):
        for data in inputs:
            answer = exchange(server.port, data, timeout=3)
            assert answer.status == 0 or 400 <= answer.status < 500, (data[:80], answer.status)
            if answer.status:
                assert answer.closed and answer.error()["type"] == "invalid_request_error"


def test_random_bytes_after_a_valid_start(server):
    """200 seeded random tails after a valid request start; a JSON answer or a close, never a hang."""
    rng = random.Random(20260613)
    starts = [b"POST /v1/images/generations HTTP/1.1\r\n", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n", b""]
    with case(server, "random bytes (seeded) after a valid start", 200):
        deadline = time.monotonic() + 20
        for _ in range(200):
            assert time.monotonic() < deadline, "the random run took too long"
            tail = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            answer = exchange(server.port, rng.choice(starts) + tail + b"\r\n\r\n", timeout=3)
            if answer.status:
                assert answer.error()
                assert answer.status < 500 or answer.status in (501, 505), answer.status


def test_slowloris_and_half_sent_bodies(server):
    """12 connections dripping header bytes and 12 with short bodies, at once: all cut by the deadlines."""
    with case(server, "slowloris headers + short bodies (24 at once)", 24):
        socks = [connect(server.port) for _ in range(24)]
        try:
            for index, sock in enumerate(socks[:12]):
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nX-%d: " % index)
            for sock in socks[12:]:
                sock.sendall(post("/v1/images/generations", b"{" * 10, **{"Content-Length": "100"})[:-5])
            for _ in range(6):  # drip for 1.2 s, past the 1 s header deadline
                for sock in socks[:12]:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"a")
                time.sleep(0.2)
            answers = [read_answer(sock, timeout=5) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        statuses = [a.status for a in answers]
        assert set(statuses) <= {408, 429}, statuses
        assert all(a.seconds < 4 for a in answers)
        for answer in answers:
            json_error(answer, 408, 429)


def test_oversized_headers(server):
    inputs = [b"GET /v1/models HTTP/1.1\r\nX: " + b"a" * 1_000_000 + b"\r\n\r\n",
              b"GET /v1/models HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n",
              b"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer " + b"k" * 60_000 + b"\r\n\r\n"]
    with case(server, "oversized headers (1 MB line, 500 headers, 60 KB key)", len(inputs)):
        answers = [exchange(server.port, data, timeout=5) for data in inputs]
        assert [a.status for a in answers[:2]] == [431, 431]
        json_error(answers[0], 431)
        json_error(answers[2], 401)


def test_wrong_content_types(server):
    body = json.dumps(GEN).encode()
    gen = "/v1/images/generations"
    lenient = exchange(server.port, post(gen, body, **{"Content-Type": "text/plain"}), timeout=30)
    assert lenient.status == 200  # any other content type is read as JSON, as before (and as clients expect)
    inputs = [
        post(gen, body, **{"Content-Type": "multipart/form-data"}),
        post(gen, body, **{"Content-Type": "multipart/form-data; boundary=" + "b" * 300}),
        post(gen, b"&".join(b"f%d=1" % i for i in range(100)), **{"Content-Type": "application/x-www-form-urlencoded"}),
        post(gen, b"\xff\xfe{\x00}", **{"Content-Type": "application/json"}),
        post(gen, b"[1, 2]", **{"Content-Type": "application/json"}),
        post(gen, b"1" * 10_000, **{"Content-Type": "application/json"}),
        post("/v1/images/edits", body, **{"Content-Type": "image/png"}),
    ]
    with case(server, "wrong content types and bodies", len(inputs)):
        for data in inputs:
            error = json_error(exchange(server.port, data, timeout=10), 400)
            assert len(error["message"]) < 500


def multipart_body(parts: list[tuple[str, bytes]], boundary: str = "bnd") -> tuple[bytes, str]:
    out = io.BytesIO()
    for name, value in parts:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_multipart_with_10000_parts(server):
    body, content_type = multipart_body([(f"f{i}", b"v") for i in range(10_000)])
    with case(server, "multipart with 10,000 parts", 1):
        answer = exchange(server.port, post("/v1/images/edits", body, **{"Content-Type": content_type}), timeout=10)
        assert "64 parts" in json_error(answer, 400)["message"] and answer.seconds < 2


def test_unicode_and_huge_field_names(server):
    names = ["prömpt", "🙂" * 10_000, "\u202eevil", "a\x00b", "image\r\nX-Injected: 1"]
    with case(server, "unicode / huge / control field names", len(names) * 2):
        for name in names:
            body, content_type = multipart_body([("model", b"gpt-image-1"), ("prompt", b"p"), (name, b"v")])
            error = json_error(exchange(server.port, post("/v1/images/edits", body, **{"Content-Type": content_type}),
                                        timeout=10), 400)
            assert len(error["message"]) < 400 and len(error["param"] or "") <= 100
            as_json = json.dumps({**GEN, name: "v"}).encode()
            answer = exchange(server.port, post("/v1/images/generations", as_json,
                                                **{"Content-Type": "application/json"}), timeout=10)
            error = json_error(answer, 400)
            assert error["code"] == "unknown_parameter" and len(answer.body) < 4000  # 100 characters echoed
            assert "X-Injected" not in answer.headers


def test_records_stay_small(server):
    """20 requests carrying a 1 MB unknown field and a 60 KB header: the /_stats records keep kilobytes."""
    server.reset()
    with case(server, "stats retention (20 x 1 MB fields)", 20):
        for _ in range(20):
            body = json.dumps({**GEN, "junk": "j" * 1_000_000, "nested": [[[[1]]]] * 1000}).encode()
            exchange(server.port, post("/v1/images/generations", body, **{"Content-Type": "application/json",
                                                                          "X-Big": "b" * 60_000}), timeout=10)
        size = len(json.dumps(server.stats()))
        assert size < 20 * 8 * 1024, size


def test_smuggled_request_in_a_refused_body_is_not_served(server):
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + FAKE_KEY.encode() + b"\r\n\r\n"
    inputs = [post("/v1/nope", smuggled), request("POST", "/v1/images/generations",
                                                  {**HEADERS, "Content-Length": "0", "Transfer-Encoding": "chunked"})
              + b"0\r\n\r\n" + smuggled, request("GET", "/v1/models", {**HEADERS, "Content-Length": str(len(smuggled))})
              + smuggled]
    with case(server, "request smuggling through bodies", len(inputs)):
        for data in inputs:
            with connect(server.port, timeout=5) as sock:
                sock.sendall(data)
                stream = b""
                sock.settimeout(2)
                with contextlib.suppress(OSError):
                    while piece := sock.recv(65536):
                        stream += piece
            assert stream.count(b"HTTP/1.1 ") == 1, stream[:400]


def rgba_png(side: int, alpha: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (0, 0, 0, alpha)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def test_decompression_amplification(server):
    """9000x9000 PNG + mask (646 KB), three at once, and a 20000x20000 JPEG header: refused from the headers."""
    big, mask = rgba_png(9000, 0), rgba_png(9000, 255)
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16)).save(jpeg, "JPEG")
    forged = jpeg.getvalue().replace(b"\x00\x10\x00\x10", b"\x4e\x20\x4e\x20", 1)  # SOF0: 20000x20000
    results: list[requests.Response] = []

    def send(files: list) -> None:
        results.append(requests.post(server.url + "/images/edits", headers=AUTH, files=files, timeout=30,
                                     data={"model": "gpt-image-1", "prompt": "p", "quality": "low"}))

    with case(server, "9000^2 PNG + mask x3 at once, 20000^2 JPEG header", 4):
        threads = [threading.Thread(target=send, args=([("image", ("i.png", big, "image/png")),
                                                        ("mask", ("m.png", mask, "image/png"))],)) for _ in range(3)]
        threads.append(threading.Thread(target=send, args=([("image", ("j.jpg", forged, "image/jpeg"))],)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
        assert len(results) == 4
        for response in results:
            assert response.status_code == 400 and response.json()["error"]["code"] in ("image_too_large",
                                                                                       "invalid_image_file")


def test_work_flood(server):
    """8 simultaneous real generations against 2 workers with a 2 s wait: each answered 200 or 429."""
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait(10)
        response = requests.post(server.url + "/images/generations", headers=AUTH, timeout=60,
                                 json={"model": "gpt-image-1", "prompt": "flood", "size": "1536x1024", "n": 2,
                                       "quality": "low"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "server_busy" and response.headers["retry-after"]

    with case(server, "8 heavy generations at once (2 workers)", 8):
        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(statuses) == 8 and set(statuses) <= {200, 429} and 200 in statuses, statuses


def test_connection_flood(server):
    """100 connections opened at once (16 allowed): the excess gets 429 immediately, none hangs."""
    with case(server, "100 idle connections at once (cap 16)", 100):
        socks: list[socket.socket] = []
        try:
            for _ in range(100):
                socks.append(connect(server.port, timeout=5))
            answers = [read_answer(sock, timeout=4) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        statuses = [a.status for a in answers]
        # 16 admitted, closed silently at the 1 s header deadline (nothing was sent); connections still in the
        # listen backlog then may take the freed places; every other one is turned away at once
        assert statuses.count(429) >= 50 and set(statuses) <= {0, 429}, statuses
        assert all(a.seconds < 2 for a in answers)
        time.sleep(1.2)
