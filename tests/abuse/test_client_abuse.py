"""A bounded abuse run: the real CLI (`gimp-openai generate --json`, a subprocess) against a hostile server on
127.0.0.1, one attack per case. Each case checks: the process ends (no hang, no crash), with one clear
error a person can read (never a library's exception text) or a result; its peak memory stays bounded
(ru_maxrss of the subprocess from os.wait4, minus a benign run's); paid images that arrived intact are on
disk; the key appears nowhere.

Bounded: every server answer ends with its generator, after 20 s, or when the server stops; every
subprocess is killed after 60 s; the drips use a 1 s read timeout. Loopback only.
Set ABUSE_REPORT=<file> to write the measured figures (docs/hardening-client.md is made from them).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gimp_openai.capabilities import FAMILIES
from gimp_openai.client import answer_limit

from tests.engine._client_helpers import png
from tests.support.malicious_server import Answer, MaliciousServer

ROOT = Path(__file__).resolve().parents[2]
KEY = "abuse-key-not-sk-Q1w2E3r4T5y6U7"  # not sk-: only the configured-key redaction can catch it
GEN = "/v1/images/generations"
MB = 1024 * 1024
MEMORY_LIMIT_MB = 200  # over a benign run; the answer cap for gpt-image-2, n=1 is 45.9 MB
LIBRARY_WORDS = ("Traceback", "HTTPConnectionPool", "HTTPSConnectionPool", "urllib3", "requests.exceptions",
                 "Max retries exceeded", "object at 0x", "[Errno", "Caused by")
GOOD = png(64, 64, (10, 120, 200, 255))
CAP = answer_limit(FAMILIES["gpt-image-2"], 1)
FIGURES: dict[str, dict] = {}


# --- answers ------------------------------------------------------------------------------------------------------


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def json_answer(obj: dict, **kw) -> Answer:
    body = json.dumps(obj).encode()
    return Answer(200, {"Content-Type": "application/json"}, lambda: [body], length=len(body), **kw)


def streamed(*parts: Callable[[], Iterable[bytes]]) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        for part in parts:
            yield from part()
    return chunks


def repeat(block: bytes, times: int) -> Callable[[], Iterator[bytes]]:
    return lambda: (block for _ in range(times))


def once(data: bytes) -> Callable[[], list[bytes]]:
    return lambda: [data]


def many_images(count: int) -> Callable[[], Iterator[bytes]]:
    """One good image, then ``count - 1`` more entries (each would be a file and a layer if kept)."""
    entry = b'{"b64_json": "' + b64(png(4, 4)) + b'"}'
    return streamed(once(b'{"created": 1, "data": [{"b64_json": "' + b64(GOOD) + b'"}'),
                    repeat(b", " + entry, count - 1), once(b"]}"))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 12_000) -> bytes:
    """A valid grayscale PNG of side x side pixels (144 MP: over the decoder's 100 MP limit) in ~150 KB."""
    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def gzip_bomb(megabytes: int = 256) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MB
    return b"".join(packer.compress(zeros) for _ in range(megabytes)) + packer.flush()


# --- the cases ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    what: str  # the inputs tried, for the report
    routes: Callable[[str], dict[str, Answer]]  # origin -> routes
    code: str | None  # expected error code; None = a result
    words: str = ""  # in the error message (or, for a result, on stderr)
    kept: int = 0  # images that must be on disk
    n: int = 1
    timeout: float = 0.0
    max_requests: int = 3


def bomb_routes(origin: str) -> dict[str, Answer]:
    return {GEN: json_answer({"created": 1, "data": [{"b64_json": b64(png_bomb()).decode()}]})}


def key_echo_routes(origin: str) -> dict[str, Answer]:
    body = json.dumps({"error": {"message": f"bad {KEY}", "param": KEY, "code": KEY}}).encode()
    return {GEN: Answer(400, {"Content-Type": "application/json", "x-request-id": f"req_{KEY}"}, once(body))}


CASES = [
    Case("benign", "one 64x64 PNG in b64_json", lambda o: {GEN: json_answer(
        {"created": 1, "data": [{"b64_json": b64(GOOD).decode()}]})}, None, kept=1),
    Case("many_images", "10,000 images for n=1 (1.5 MB of JSON)", lambda o: {GEN: Answer(
        200, {"Content-Type": "application/json"}, many_images(10_000))}, None,
        "The server sent 10,000 images for the 1 requested; the 9,999 extra were dropped unread.", kept=1),
    Case("huge_b64", "one 512 MB base64 string, no Content-Length", lambda o: {GEN: Answer(
        200, {}, streamed(once(b'{"data": [{"b64_json": "'), repeat(b"A" * MB, 512), once(b'"}]}')))},
        "response_too_large", f"is larger than the {CAP:,} bytes accepted; it was not kept"),
    Case("huge_announced", "Content-Length: 10 GB", lambda o: {GEN: Answer(
        200, {}, repeat(b"A" * MB, 10), length=10 * 1024 * MB)}, "response_too_large",
        "announced an answer of 10,737,418,240 bytes"),
    Case("invalid_b64", "b64_json that is not base64", lambda o: {GEN: json_answer(
        {"data": [{"b64_json": "%%% not base64 %%%"}]})}, "malformed_response", "base64"),
    Case("mixed", "n=3: one good image, one invalid base64, one truncated PNG", lambda o: {GEN: json_answer(
        {"data": [{"b64_json": b64(GOOD).decode()}, {"b64_json": "!!"}, {"b64_json": b64(GOOD[:60]).decode()}]})},
        "malformed_response", "truncated", kept=1, n=3),
    Case("png_bomb", "a 12000x12000 PNG (144 MP, 150 KB) in b64_json", bomb_routes, "malformed_response",
         "not decoded", kept=1),
    Case("wrong_type", "200, Content-Type text/html, an HTML page", lambda o: {GEN: Answer(
        200, {"Content-Type": "text/html"}, once(b"<html><body>Welcome to nginx</body></html>"))},
        "malformed_response", "not JSON (HTTP 200, text/html)"),
    Case("gzip_bomb", "Content-Encoding: gzip, 256 MB of zeros in 256 KB", lambda o: {GEN: Answer(
        200, {"Content-Encoding": "gzip", "Content-Type": "application/json"}, once(gzip_bomb()))},
        "response_too_large", "is larger than"),
    Case("deep_json", "200,000 nested arrays", lambda o: {GEN: Answer(
        200, {"Content-Type": "application/json"}, once(b"[" * 200_000))}, "malformed_response", "not JSON"),
    Case("error_body_200", "200 with an error body", lambda o: {GEN: json_answer(
        {"error": {"message": "internal failure", "type": "server_error"}})}, "malformed_response", "no `data`"),
    Case("redirect_loop", "an image URL that redirects to itself", lambda o: {
        GEN: json_answer({"data": [{"url": o + "/loop.png"}]}),
        "/loop.png": Answer(302, {"Location": "/loop.png"})},
        "malformed_response", "more than 5 redirects", max_requests=7),
    Case("ssrf_port", "an image URL on another local port (the server's own :22)", lambda o: {
        GEN: json_answer({"data": [{"url": "http://127.0.0.1:22/"}, {"url": "http://169.254.169.254/latest/"}]})},
        "malformed_response", "images are fetched only from its own address", max_requests=1),
    Case("drip_body", "body at 1 byte every 0.2 s, --timeout 1", lambda o: {GEN: Answer(
        200, {}, repeat(b" ", 10_000), pace=0.2)}, "timeout", "within the read timeout of 1 s", timeout=1.0),
    Case("drip_head", "status line and headers at 1 byte every 0.2 s, --timeout 1", lambda o: {GEN: Answer(
        200, {"X-Pad": "p" * 200}, once(b"{}"), head_pace=0.2)}, "timeout", "within the read timeout of 1 s",
        timeout=1.0),
    Case("key_echo", "the key echoed in x-request-id, the error message, param and code", key_echo_routes,
         "invalid_request", "bad [redacted key]", max_requests=1),
]


# --- running the CLI ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: dict
    stdout: str
    stderr: str
    peak_mb: float
    seconds: float


def run_cli(base_url: str, folder: Path, n: int, timeout: float) -> Run:
    """`generate --json` in a subprocess; its peak RSS from os.wait4 (this process's own memory not counted)."""
    out_path, err_path = folder / "stdout", folder / "stderr"
    env = dict(os.environ, OPENAI_API_KEY=KEY, PYTHONPATH=str(ROOT / "plugin"),
               GIMP_OPENAI_HISTORY_DIR=str(folder / "history"), GIMP_OPENAI_RESCUE_DIR=str(folder / "rescue"))
    args = [sys.executable, "-m", "gimp_openai", "--json", "generate", "-p", "a kite", "--model", "gpt-image-2",
            "-n", str(n), "--base-url", base_url, "--out", str(folder / "out"), "-q"]
    if timeout:
        args += ["--timeout", str(timeout)]
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=folder)
        killer = threading.Timer(60, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    stdout, stderr = out_path.read_text(), err_path.read_text()
    try:
        parsed = json.loads(stdout)
    except ValueError:
        parsed = {}
    return Run(proc.returncode, parsed, stdout, stderr, usage.ru_maxrss / 1024, seconds)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> float:
    with MaliciousServer(CASES[0].routes("")) as server:
        return run_cli(server.url, tmp_path_factory.mktemp("baseline"), 1, 0).peak_mb


def error_of(out: dict) -> dict:
    """The error object of the CLI's --json answer, wherever the command puts it."""
    if isinstance(out.get("error"), dict):
        return out["error"]
    for item in out.get("items", []) or out.get("results", []) or []:
        if isinstance(item, dict) and isinstance(item.get("error"), dict):
            return item["error"]
    return {}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_abuse(case: Case, baseline: float, tmp_path: Path) -> None:
    with MaliciousServer() as server:
        server.routes.update(case.routes(server.origin))
        run = run_cli(server.url, tmp_path, case.n, case.timeout)
        requests_seen = len(server.seen)
    everything = run.stdout + run.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("stdout", "stderr")]
    images = [p for p in files if p.suffix in (".png", ".jpg", ".webp") and "history" in p.parts]
    delta = run.peak_mb - baseline
    FIGURES[case.name] = {"what": case.what, "code": case.code or "ok", "peak_mb": round(run.peak_mb, 1),
                          "delta_mb": round(delta, 1), "seconds": round(run.seconds, 2), "requests": requests_seen}

    assert run.out, f"no JSON answer (exit {run.code}): {run.stderr[-2000:]}"
    if case.code is None:
        assert run.code == 0 and run.out.get("ok") is True, run.stdout
        assert case.words in run.stderr
    else:
        error = error_of(run.out)
        assert run.code != 0 and error.get("code") == case.code, run.stdout
        assert case.words in error.get("message", ""), error
        assert error.get("hint") or case.code == "invalid_request", error  # a 400 carries the server's words
    for word in LIBRARY_WORDS:
        assert word not in everything, (word, everything[-2000:])
    assert KEY not in everything
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    assert len(images) == case.kept, images  # every paid image that arrived intact, and nothing else
    if case.kept:
        assert any(p.read_bytes() == GOOD for p in images) or case.name == "png_bomb"
    assert requests_seen <= case.max_requests
    assert delta < MEMORY_LIMIT_MB, f"{case.name}: +{delta:.0f} MB"
    assert run.seconds < 20


def test_zz_report() -> None:
    """Write the figures when ABUSE_REPORT names a file (runs last: pytest keeps file order)."""
    target = os.environ.get("ABUSE_REPORT")
    if target and FIGURES:
        Path(target).write_text(json.dumps(FIGURES, indent=1))
    assert all(f["delta_mb"] < MEMORY_LIMIT_MB for f in FIGURES.values())
