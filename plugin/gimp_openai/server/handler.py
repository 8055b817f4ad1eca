"""HTTP plumbing of the local server (standard library ``http.server``; one thread per connection).

Order of work for ``POST /v1/images/*`` (the same as the real service, as far as it shows): body size
(413 before reading anything over the limit), authentication, ``before`` faults, body parsing, model,
validation, ``after`` faults, the offline engine, then delivery (latency, reset, stall). Every request,
answered or refused, is recorded in ``/_stats`` (served only with ``--test-routes``).

Hardening (docs/hardening-server.md): the request line must be HTTP/1.x (anything else, such as a TLS
ClientHello or an HTTP/0.9 line, is answered 400 and closed); the request line and headers have one deadline
and the body an idle timeout and a total deadline (:mod:`~gimp_openai.server.deadlines`); chunked bodies are
validated and counted against the same body limit as Content-Length; every refusal, the HTTP layer's included,
is the API's JSON error (``send_error`` is overridden); a bug answers 500 in that shape, never a traceback.
"""

from __future__ import annotations

import contextlib
import email.errors
import hmac
import io
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from base64 import b64decode
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from gimp_openai import capabilities as caps
from gimp_openai.server import apierror, engine, faults, multipart, render, rules
from gimp_openai.server.apierror import ApiError
from gimp_openai.server.deadlines import BODY_DEADLINE_FACTOR, DeadlineReader
from gimp_openai.server.stats import describe_file, sanitize_headers, summarize_fields

if TYPE_CHECKING:
    from gimp_openai.server.app import LocalServer

MAX_BODY_BYTES = 50 * 1024 * 1024
MAX_REQUEST_LINE = 8 * 1024
MAX_CHUNK_LINE = 1024
MAX_TRAILER_LINES = 32
READ_PIECE = 1024 * 1024
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 1.0
IMAGE_PATH = re.compile(r"^/v1/images/(edits|variations|generations)$")
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/images/(edits|variations|generations)$")
MODEL_PATH = re.compile(r"^/v1/models/([^/]+)$")
FILE_PATH = re.compile(r"^/v1/_files/([A-Za-z0-9_\-]+\.(?:png|jpeg|webp))$")
API_FILE_PATH = re.compile(r"^/v1/files/(file-[A-Za-z0-9]{1,64})$")
API_FILE_CONTENT_PATH = re.compile(r"^/v1/files/(file-[A-Za-z0-9]{1,64})/content$")
BATCH_PATH = re.compile(r"^/v1/batches/(batch_[A-Za-z0-9]{1,64})$")
BATCH_CANCEL_PATH = re.compile(r"^/v1/batches/(batch_[A-Za-z0-9]{1,64})/cancel$")
DATA_URL = re.compile(r"^data:(image/[a-z+.\-]+)?(;base64)?,(.*)$", re.S)
#: METHOD SP request-target SP HTTP/1.x: the only request lines this server parses.
REQUEST_LINE = re.compile(rb"^[A-Z]{1,32} [\x21-\x7e]+ HTTP/1\.[0-9]\r?\n$")
CHUNK_SIZE_LINE = re.compile(rb"^([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n$")
DECIMAL = re.compile(r"^[0-9]{1,20}$")
TEST_ROUTES = ("/_stats", "/_reset")
HEADER_DEFECTS = (email.errors.MissingHeaderBodySeparatorDefect, email.errors.FirstHeaderLineIsContinuationDefect)


class StreamAnswer:
    """A validated streamed answer whose images are being painted (``painting``, on its own thread): its events
    are timed from the request's arrival and written by :meth:`Handler._send_stream` as their images are ready."""

    def __init__(self, painting: engine.Painting, endpoint: str) -> None:
        self.painting = painting
        self.endpoint = endpoint


def raw_answer(error: ApiError) -> bytes:
    """A complete HTTP/1.1 answer for ``error``, for the accept loop (no handler exists for a turned-away
    connection). The body is still :meth:`ApiError.body`: one builder for every error body."""
    body = error.body()
    head = [f"HTTP/1.1 {error.status} Error", f"Content-Type: {error.content_type}",
            f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in error.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gimp-openai-local/1"
    sys_version = ""
    server: LocalServer

    # --- connection plumbing --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Read through a :class:`DeadlineReader`, so every read of this connection has a deadline."""
        super().setup()
        self.rfile.close()  # the stdlib's file object: replaced, and closed so the socket can close
        self._reader = DeadlineReader(self.connection)
        self._buffered = io.BufferedReader(self._reader, 64 * 1024)
        self.rfile = self._buffered
        self._unread_body = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        if self.server.config.verbose:
            super().log_message(format, *args)

    def handle_one_request(self) -> None:
        """One request under the header deadline. Replaces the stdlib's loop body so that a non-HTTP/1.x
        line is refused before parsing (the stdlib would wait forever for headers of an HTTP/0.9 line) and a
        timed-out partial request is answered 408 instead of being dropped."""
        config = self.server.config
        self._reader.begin(config.header_timeout, config.header_timeout)
        self._responding = False
        self._unread_body = False
        self.requestline, self.command, self.request_version = "", "", "HTTP/1.1"
        try:
            if not self._read_request_line() or not self.parse_request():
                return
            if _malformed_headers(self.headers):
                self._refuse(apierror.http_layer(400, "malformed header line"))
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, repr(self.command))
                return
            self._unread_body = self._has_body()
            method()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True
            if self._reader.received and not self._responding:
                self._refuse(apierror.request_timeout("headers", config.header_timeout))
        except OSError:
            self.close_connection = True  # the client went away: nobody to answer

    def _read_request_line(self) -> bool:
        """Read the request line; refuse (400/414) anything that is not an HTTP/1.x request line."""
        first = self._buffered.peek(1)[:1]
        if not first:
            self.close_connection = True  # an idle keep-alive connection closed by the client
            return False
        if not first.isupper():  # TLS ClientHello (0x16), binary, lower-case junk: no line to wait for
            self._refuse(apierror.http_layer(400, "this server speaks plain HTTP/1.x only"))
            return False
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self._refuse(apierror.http_layer(414))
            return False
        if not REQUEST_LINE.match(self.raw_requestline):
            self._refuse(apierror.http_layer(400, "the request line must be 'METHOD /path HTTP/1.1'"))
            return False
        return True

    def _has_body(self) -> bool:
        length = (self.headers.get("Content-Length") or "0").strip()
        return "Transfer-Encoding" in self.headers or length not in ("", "0")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's refusals (431, 414, 501, 505, 400 ...) in the API's JSON shape, then close."""
        self._refuse(apierror.http_layer(int(code), message))

    def _refuse(self, error: ApiError) -> None:
        """Answer ``error`` and close the connection (the rest of the request, if any, is not read)."""
        self.close_connection = True
        self._unread_body = True
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.1"  # so the status line and headers are written
        with contextlib.suppress(OSError):
            self._send(error.status, error.body(), error.content_type, error.headers)

    def finish(self) -> None:
        try:
            super().finish()
            if self._unread_body:
                self._drain()
        except (OSError, ValueError):
            pass  # the connection was dropped on purpose (reset fault) or by the client

    def _drain(self) -> None:
        """Half-close, then read and drop what the client is still sending (briefly, bounded): closing a
        socket with unread input sends a reset, and the client could lose the answer it was just sent."""
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(DRAIN_SECONDS / 4)
        until, dropped = time.monotonic() + DRAIN_SECONDS, 0
        while dropped < DRAIN_BYTES and time.monotonic() < until:
            piece = self.connection.recv(64 * 1024)
            if not piece:
                return
            dropped += len(piece)

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None, delivery: list[faults.FaultSpec] | None = None) -> None:
        delivery = delivery or []
        self._responding = True
        self.connection.settimeout(self.server.config.body_timeout)  # a client that never reads: bounded too
        if self._unread_body:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        cut = next((spec for spec in delivery if spec.kind in ("reset", "stall")), None)
        if cut is None:
            self.wfile.write(body)
            return
        after = int(float(cut.params.get("after", len(body) // 2 if cut.kind == "reset" else 0)))
        self.wfile.write(body[: max(0, min(after, len(body) - 1))])
        self.wfile.flush()
        self.close_connection = True
        if cut.kind == "stall":
            self.server.stopping.wait(cut.seconds(30.0))
            return  # close without sending the rest: Content-Length is never satisfied
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _send_json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    # --- the body ---------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        """The whole body, at most MAX_BODY_BYTES however it is framed, under the body deadlines."""
        config = self.server.config
        self._reader.begin(config.body_timeout, config.body_timeout * BODY_DEADLINE_FACTOR)
        try:
            body = self._framed_body()
        except TimeoutError:
            raise apierror.request_timeout("body", config.body_timeout) from None
        self._unread_body = False
        return body

    def _framed_body(self) -> bytes:
        """Content-Length (decimal, refused over the limit before reading) or chunked; never both."""
        encoding = self.headers.get("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length") or []
        if encoding is not None:
            if lengths:
                raise ApiError(400, "Send Content-Length or Transfer-Encoding, not both.", code="invalid_request")
            if encoding.strip().lower() != "chunked":
                raise ApiError(400, f"Transfer-Encoding {encoding[:40]!r} is not supported: use chunked.",
                               code="invalid_request")
            return self._read_chunked()
        if not lengths:
            return b""
        if len(lengths) > 1 or not DECIMAL.match(lengths[0].strip()):
            raise ApiError(400, "Invalid Content-Length header.", code="invalid_request")
        size = int(lengths[0].strip())
        if size > MAX_BODY_BYTES:
            raise apierror.request_too_large(MAX_BODY_BYTES)
        return self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes:
        """``size`` bytes, read in pieces (memory grows with what arrives, not with what was promised)."""
        pieces: list[bytes] = []
        missing = size
        while missing > 0:
            piece = self.rfile.read(min(READ_PIECE, missing))
            if not piece:
                raise ApiError(400, f"The body ended after {size - missing} of {size} bytes.", code="invalid_request")
            pieces.append(piece)
            missing -= len(piece)
        return b"".join(pieces)

    def _read_chunked(self) -> bytes:
        """RFC 9112 chunked framing: hex sizes only, each chunk followed by CRLF, the total counted against the
        body limit before the chunk is read, at most MAX_TRAILER_LINES trailer lines."""
        chunks: list[bytes] = []
        total = 0
        while True:
            size = self._chunk_size()
            if size == 0:
                self._skip_trailers()
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise apierror.request_too_large(MAX_BODY_BYTES)
            chunks.append(self._read_exactly(size))
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _bad_chunked("a chunk is not followed by CRLF")

    def _chunk_size(self) -> int:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        match = CHUNK_SIZE_LINE.match(line)
        if match is None:
            raise _bad_chunked(f"chunk size line {line[:40]!r} is not a hexadecimal size")
        return int(match.group(1), 16)

    def _skip_trailers(self) -> None:
        for _ in range(MAX_TRAILER_LINES + 1):
            line = self.rfile.readline(MAX_CHUNK_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise _bad_chunked("a trailer line is too long or the body ended")
        raise _bad_chunked(f"more than {MAX_TRAILER_LINES} trailer lines")

    def _auth(self) -> None:
        """Bearer or ``api-key``: the server's key is required unless it was started with ``--no-auth``."""
        config = self.server.config
        if config.no_auth:
            return
        token = ""
        authorization = self.headers.get("Authorization")
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
        elif self.headers.get("api-key"):
            token = self.headers.get("api-key", "").strip()
        if not token:
            raise apierror.missing_api_key()
        if not hmac.compare_digest(token.encode(), (config.required_key or "").encode()) or not config.required_key:
            raise apierror.invalid_api_key()

    # --- routes ---------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self._path()
        if path in TEST_ROUTES:
            self._test_route(path)
            return
        match = FILE_PATH.match(path)
        if match:
            found = self.server.files.get(match.group(1))
            if found is None:
                self._send_json(404, apierror.not_found_route("GET", path).to_dict())
            else:
                self._send(200, found[0], found[1])
            return
        if path.startswith(("/v1/files", "/v1/batches")):
            self._handle(path, self._batch_api)
            return
        self._handle(path, self._models)

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        if path in TEST_ROUTES:
            self._test_route(path)
            return
        if path.startswith(("/v1/files", "/v1/batches")):
            self._handle(path, self._batch_api)
            return
        self._handle(path, self._images)

    def _test_route(self, path: str) -> None:
        """``GET /_stats`` and ``POST /_reset``: only with ``--test-routes``, and behind the key like the API
        (the records hold other clients' prompts). Not recorded in the statistics they serve."""
        try:
            if not self.server.config.test_routes or (self.command, path) not in (("GET", "/_stats"),
                                                                                   ("POST", "/_reset")):
                raise apierror.not_found_route(self.command, path)
            self._auth()
        except ApiError as error:
            self._send(error.status, error.body(), error.content_type, error.headers)
            return
        if path == "/_reset":
            self.server.stats.reset()
            self.server.faults.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(200, self.server.stats.snapshot(self.server.faults.snapshot()))

    def _handle(self, path: str, route: Any) -> None:
        started = time.monotonic()
        request_id = "req_" + uuid.uuid4().hex
        entry: dict[str, Any] = {
            "id": request_id,
            "time": time.time(),
            "method": self.command,
            "path": path,
            "query": urlsplit(self.path).query[:256],
            "endpoint": None,
            "headers": sanitize_headers(list(self.headers.items())),
            "auth": {
                "authorization": "Authorization" in self.headers,
                "api_key": "api-key" in self.headers,
            },
        }
        delivery: list[faults.FaultSpec] = []
        status, content_type, headers = 500, "application/json", {"x-request-id": request_id}
        body: bytes | StreamAnswer = b""
        try:
            status, body, delivery = route(path, entry)
        except ApiError as error:
            status, body, content_type = error.status, error.body(), error.content_type
            headers.update(error.headers)
            entry["error"] = {"code": error.code, "param": error.param, "type": error.type}
            delivery = entry.pop("_delivery", [])
        except Exception as exc:  # noqa: BLE001 - a bug must still answer in the API's shape, not drop the client
            bug = apierror.internal_error(type(exc).__name__)
            status, body = bug.status, bug.body()
            entry["error"] = {"code": bug.code, "param": bug.param, "type": bug.type}
            delivery = []
            _report_bug(exc)
        limits = entry.pop("_ratelimit", None) or {}
        headers.update(limits)
        fresh = status == 200 and bool(limits)  # admitted under the limits
        arrived = entry.pop("_arrived", started)
        entry["status"] = status
        entry["seconds"] = round(time.monotonic() - started, 4)
        record = {k: v for k, v in entry.items() if not k.startswith("_")}
        self.server.stats.record(record)
        # A model's time: only the images routes have one (listing models or a batch's files answers at once),
        # counted from the request's arrival, so what this server spends painting is inside it as a model's is.
        delay = self._latency(delivery) if route == self._images else 0.0
        headers["openai-version"] = "2020-10-01"
        if isinstance(body, StreamAnswer):  # the latency is spread over the events, not waited up front
            if fresh:
                headers.update(self.server.limiter.current())
            # what the painting learns (render records) still reaches /_stats
            body.painting.report_to(record, self.server.stats.update)
            headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
            self._send_stream(body, arrived, delay, headers, delivery)
            return
        wait = arrived + delay - time.monotonic()
        if wait > 0:
            self.server.stopping.wait(wait)
        if fresh:  # the budgets as they are when the answer goes, not as they were when the request came
            headers.update(self.server.limiter.current())
        headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        self._send(status, body, content_type, headers, delivery)

    def _send_stream(self, answer: StreamAnswer, arrived: float, latency: float, headers: dict[str, str],
                     delivery: list[faults.FaultSpec]) -> None:
        """Server-sent events in chunked framing, each at its due second from the request's arrival
        (``arrived``, monotonic; engine.stream_events) and once its image is painted; the delivery faults cut
        the stream after ``events`` whole events: ``reset`` (RST), ``stall`` (silence, then close),
        ``malformed_event`` (an event that is not JSON, then the end of the stream). Painting that fails (a bug)
        ends the stream cut short, as a dropped connection would."""
        self._responding = True
        self.connection.settimeout(self.server.config.body_timeout)
        if self._unread_body:
            self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        cut = next((spec for spec in delivery if spec.kind in ("reset", "stall", "malformed_event")), None)
        cut_after = int(float(cut.params.get("events", "1"))) if cut is not None else -1
        events = engine.stream_events(answer.painting, answer.endpoint, latency,
                                      lambda: time.monotonic() - arrived)
        number = 0
        while True:
            try:
                due, event = next(events)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - a painting bug: the stream ends short, the bug is reported
                _report_bug(exc)
                self.close_connection = True
                return
            wait = arrived + due - time.monotonic()
            if wait > 0 and self.server.stopping.wait(wait):
                return
            if cut is not None and number == cut_after:
                self._cut_stream(cut, str(event["type"]))
                return
            self._chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            number += 1
        self._chunk(b"")

    def _cut_stream(self, cut: faults.FaultSpec, kind: str) -> None:
        self.close_connection = True
        if cut.kind == "malformed_event":
            self._chunk(f'event: {kind}\ndata: {{"type": "{kind}", "b64_json": "iVBORw0K\n\n'.encode())
            self._chunk(b"")
            return
        if cut.kind == "stall":
            self.server.stopping.wait(cut.seconds(30.0))
            return
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _chunk(self, data: bytes) -> None:
        """One chunk of a chunked body (an empty one ends the body)."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if data else b"0\r\n\r\n")
        self.wfile.flush()

    def _latency(self, delivery: list[faults.FaultSpec]) -> float:
        config = self.server.config
        delay = config.latency + (random.uniform(0, config.latency_jitter) if config.latency_jitter else 0.0)
        for spec in delivery:
            if spec.kind == "latency":
                delay += spec.seconds(0.0)
        return delay

    def _models(self, path: str, entry: dict) -> tuple[int, bytes, list]:
        entry["endpoint"] = "models"
        if path not in ("/v1/models",) and not MODEL_PATH.match(path):
            raise apierror.not_found_route("GET", path)
        self._auth()
        registry = self.server.registry
        if path == "/v1/models":
            return 200, json.dumps(registry.listing()).encode(), []
        model_id = MODEL_PATH.match(path).group(1)  # type: ignore[union-attr]
        model = registry.get(model_id)
        if model is None:
            raise apierror.model_not_found(model_id)
        return 200, json.dumps(model.to_json()).encode(), []

    def _images(self, path: str, entry: dict) -> tuple[int, bytes | StreamAnswer, list]:
        match, deployment = IMAGE_PATH.match(path), None
        if match is None:
            match = AZURE_PATH.match(path)
            if match is None:
                raise apierror.not_found_route("POST", path)
            deployment = match.group(1)
        endpoint = match.group(match.lastindex or 1)
        entry["endpoint"] = endpoint
        entry["body_bytes"] = 0
        self._auth()  # before the body: without the key, nobody makes this server buffer 50 MB
        raw = self._read_body()
        entry["_arrived"] = time.monotonic()  # the whole request is here: the model's clock starts
        entry["body_bytes"] = len(raw)
        try:
            specs = self.server.config.faults + faults.parse_faults(self.headers.get("X-Fault", ""))
            spec = self.server.config.render
            if "X-Render" in self.headers:
                spec = render.parse_render(self.headers["X-Render"])
        except (faults.FaultSyntaxError, render.RenderSyntaxError) as exc:
            raise ApiError(400, f"Bad test header: {exc}", param="X-Fault/X-Render", code="invalid_value") from None
        firing = self.server.faults.take(specs)
        entry["faults"] = [s.text for s in firing]
        entry["_delivery"] = delivery = [s for s in firing if s.kind in faults.DELIVERY]
        fields, files, is_multipart = self._parse(raw, endpoint, entry)
        model = deployment or rules.model_of(endpoint, fields)
        entry["model"] = model
        before = next((s for s in firing if s.kind in faults.BEFORE), None)
        if before is not None:
            raise faults.before_error(before, model)
        family = self.server.registry.require_image_model(model, endpoint)
        entry["_ratelimit"] = {}
        tokens = _request_tokens(family, fields, files) if self.server.limiter.counts_tokens else 1
        if self.server.limiter.counts_tokens:
            entry["rate_tokens"] = tokens  # what the request took from the budget (tests hold pacing to it)
        entry["_ratelimit"] = self.server.limiter.admit(model, _requested_n(fields), tokens)
        with self._heavy_work() as work:
            encoded = self._produce(endpoint, model, family, fields, files, is_multipart, firing, spec, entry)
            if isinstance(encoded, StreamAnswer):  # the painting thread holds the work gate until it is done
                encoded.painting.start(done=work.hand_over())
        entry.pop("_delivery", None)
        return 200, encoded, delivery

    @contextlib.contextmanager
    def _heavy_work(self) -> Iterator[_Gate]:
        """At most ``--max-work`` requests decode and paint at once (each can take hundreds of MB); the others
        wait up to ``--work-wait`` seconds, then get 429 with retry-after instead of exhausting memory. A
        streamed answer's painting thread takes the gate over (``hand_over``) and releases it when it ends."""
        gate, config = self.server.work_gate, self.server.config
        if not gate.acquire(timeout=config.work_wait):
            raise apierror.server_busy("all image workers are in use", retry_after=max(1, round(config.work_wait)))
        held = _Gate(gate)
        try:
            yield held
        finally:
            held.release_here()

    def _produce(self, endpoint: str, model: str, family: caps.Family, fields: dict[str, Any], files: list,
                 is_multipart: bool, firing: list[faults.FaultSpec], spec: render.RenderSpec | None,
                 entry: dict) -> bytes | StreamAnswer:
        """Validate (decoding the uploads), run the engine, apply the ``after`` faults: the heavy part."""
        if self.server.config.no_streaming and fields.get("stream") not in (None, False, "false"):
            raise apierror.unknown_parameter("stream", "This server does not stream.")
        request = rules.validate(endpoint, model, family, {k: v for k, v in fields.items() if k != "model"}, files,
                                 multipart=is_multipart)
        kinds = {s.kind: s for s in firing}
        if "moderation_blocked" in kinds:
            raise faults.moderation_error()
        wrong = None
        if "wrong_size" in kinds:
            size = rules.output_size(request)
            wrong = caps.parse_size(kinds["wrong_size"].params.get("size", "")) or (size[0] // 2, size[1] // 2)
        truncate = int(kinds["truncated_b64"].params.get("index", "0")) if "truncated_b64" in kinds else None

        def finish(index: int, item: dict) -> None:
            if index == truncate and "b64_json" in item:
                text = item["b64_json"]
                item["b64_json"] = text[: (len(text) // 2) // 4 * 4]

        painting = engine.Painting(request, spec=spec if endpoint == caps.ENDPOINT_EDITS else None,
                                   store_file=self._file_url, wrong_size=wrong, finish=finish)
        if request.stream:  # painted on its own thread while the latency runs (StreamAnswer)
            entry.update(painting.notes)
            entry["stream"] = {"partial_images": request.partial_images}
            return StreamAnswer(painting, endpoint)
        outcome = engine.respond_with(painting)
        entry.update(outcome.notes)
        body = outcome.body
        encoded = json.dumps(body).encode()
        if "malformed_json" in kinds:
            encoded = encoded[: max(1, len(encoded) // 2)]
        return encoded

    def _file_url(self, data: bytes, ext: str) -> str:
        name = self.server.files.put(data, ext)
        address = self.server.server_address
        host = self.headers.get("Host") or f"{address[0]!s}:{address[1]}"
        return f"http://{host}/v1/_files/{name}"

    def _parse(self, raw: bytes, endpoint: str, entry: dict) -> tuple[dict[str, Any], list, bool]:
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            return self._parse_multipart(raw, content_type, entry)
        if content_type.lower().startswith("application/x-www-form-urlencoded"):
            try:
                pairs = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=64)
            except ValueError:
                raise ApiError(400, "Too many form fields (at most 64).", code="invalid_request") from None
            entry["fields"] = summarize_fields({k: v[0] for k, v in pairs.items()})
            entry["files"] = []
            return {k: v[0] for k, v in pairs.items()}, [], True
        fields = _json_object(raw)
        files = self._json_images(fields) if endpoint == caps.ENDPOINT_EDITS else []
        entry["fields"] = summarize_fields({k: v for k, v in fields.items() if k not in ("images", "mask")})
        entry["files"] = [describe_file(part) for part in files]
        fields = {k: v for k, v in fields.items() if v is not None}
        if endpoint != caps.ENDPOINT_GENERATIONS and not files and endpoint == caps.ENDPOINT_VARIATIONS:
            raise ApiError(400, "Variations take multipart/form-data.", param="image", code="invalid_value")
        return fields, files, False

    def _parse_multipart(self, raw: bytes, content_type: str, entry: dict) -> tuple[dict[str, Any], list, bool]:
        try:
            form = multipart.parse_multipart(raw, content_type)
        except multipart.MultipartError as exc:
            raise ApiError(400, f"Could not parse the multipart form: {exc}.") from None
        entry["fields"] = summarize_fields({k: (v[0] if len(v) == 1 else v) for k, v in form.fields.items()})
        entry["files"] = [describe_file(part) for part in form.files]
        for name, values in form.fields.items():
            if len(values) > 1:
                raise apierror.invalid_value(name, values[-1], detail=f"'{name}' was sent {len(values)} times.")
        return {k: v[0] for k, v in form.fields.items()}, form.files, True

    def _json_images(self, fields: dict[str, Any]) -> list[multipart.FilePart]:
        return json_edit_images(fields)

    def _batch_api(self, path: str, entry: dict) -> tuple[int, bytes, list]:
        """``/v1/files`` and ``/v1/batches`` (server/batches.py), behind the key like every API route."""
        entry["endpoint"] = "files" if path.startswith("/v1/files") else "batches"
        self._auth()
        service = self.server.batches
        method = self.command
        if method == "POST":
            raw = self._read_body()
            entry["body_bytes"] = len(raw)
        if (method, path) == ("POST", "/v1/files"):
            content_type = self.headers.get("Content-Type", "")
            if not content_type.lower().startswith("multipart/form-data"):
                raise ApiError(400, "Upload files as multipart/form-data (purpose, file).", code="invalid_request")
            try:
                form = multipart.parse_multipart(raw, content_type)
            except multipart.MultipartError as exc:
                raise ApiError(400, f"Could not parse the multipart form: {exc}.") from None
            answer: object = service.upload(form.fields, form.files)
        elif (method, path) == ("POST", "/v1/batches"):
            answer = service.create(_json_object(raw))
        elif method == "POST" and BATCH_CANCEL_PATH.match(path):
            answer = service.cancel(BATCH_CANCEL_PATH.match(path).group(1))  # type: ignore[union-attr]
        elif (method, path) == ("GET", "/v1/batches"):
            answer = service.listing()
        elif method == "GET" and BATCH_PATH.match(path):
            answer = service.get(BATCH_PATH.match(path).group(1))  # type: ignore[union-attr]
        elif method == "GET" and API_FILE_CONTENT_PATH.match(path):
            data = service.content(API_FILE_CONTENT_PATH.match(path).group(1))  # type: ignore[union-attr]
            return 200, data, []
        elif method == "GET" and API_FILE_PATH.match(path):
            answer = service.file(API_FILE_PATH.match(path).group(1))  # type: ignore[union-attr]
        else:
            raise apierror.not_found_route(method, path)
        return 200, json.dumps(answer).encode(), []


def json_edit_images(fields: dict[str, Any]) -> list[multipart.FilePart]:
    """JSON edits (``images: [{image_url}]``, ``mask: {image_url}``): taken out of ``fields`` as uploaded files;
    only data URLs here, the local server fetches nothing."""
    images = fields.pop("images", None)
    if images is not None and not isinstance(images, list):
        raise apierror.invalid_type("images", "an array", _json_type(images))
    refs = [("images", ref) for ref in images or []]
    mask = fields.pop("mask", None)
    if mask is not None:
        refs.append(("mask", mask))
    return [_data_url_part(name, ref) for name, ref in refs]


def _requested_n(fields: dict[str, Any]) -> int:
    """How many images a request asks for, for the rate limit (validation refuses a bad ``n`` later)."""
    try:
        return min(10, max(1, int(str(fields.get("n", 1)).strip())))
    except ValueError:
        return 1


def _request_tokens(family: caps.Family, fields: dict[str, Any], files: list) -> int:
    """The tokens a request takes from ``--rate-limit-tokens``: the engine's rule (pricing.request_tokens) on
    the fields and the image and markup uploads as received (their headers only; nothing is decoded yet)."""
    from gimp_openai import pricing

    uploads = [part.data for part in files if part.field in pricing.IMAGE_FIELDS]
    return pricing.request_tokens(family, fields, uploads)


def _json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else (bad JSON, another type, nesting too deep to parse)."""
    try:
        fields = json.loads(raw or b"null")
    except RecursionError:
        raise ApiError(400, "The JSON body is nested too deeply.", code="invalid_json") from None
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        )
    return fields


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for ``invalid_type`` messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _data_url_part(name: str, ref: object) -> multipart.FilePart:
    """One ``{"image_url": "data:image/png;base64,..."}`` reference as an uploaded file."""
    field = "image" if name == "images" else name
    if not isinstance(ref, dict):
        raise apierror.invalid_type(name, "an object with 'image_url'", _json_type(ref))
    url = ref.get("image_url")
    if url is not None and not isinstance(url, str):
        raise apierror.invalid_type(f"{name}.image_url", "a string", _json_type(url))
    match = DATA_URL.match(url or "")
    if not match or not match.group(2):
        raise apierror.invalid_value(field, "file_id or remote URL" if url is None else url[:40],
                                     detail="The local server takes base64 data URLs only.")
    try:
        data = b64decode(match.group(3), validate=False)
    except ValueError:
        raise apierror.invalid_value(field, (url or "")[:40], detail="Bad base64 data URL.") from None
    return multipart.FilePart(field, f"{field}.bin", match.group(1) or "application/octet-stream", data)


def _malformed_headers(headers: Any) -> bool:
    """A line that is not ``Name: value`` (the stdlib would silently drop every header after it) or a folded
    value (obsolete line folding: RFC 9112 lets a server refuse it, and a CR/LF must never reach an answer)."""
    if any(isinstance(defect, HEADER_DEFECTS) for defect in headers.defects):
        return True
    return any("\r" in value or "\n" in value for value in headers.values())


def _bad_chunked(detail: str) -> ApiError:
    return ApiError(400, f"Malformed chunked body: {detail}.", code="invalid_request")


class _Gate:
    """The work gate as one request holds it: released where it was taken, unless handed over to a thread."""

    def __init__(self, gate: threading.Semaphore | threading.BoundedSemaphore) -> None:
        self.gate, self.handed = gate, False

    def hand_over(self) -> Callable[[], None]:
        self.handed = True
        return self.gate.release

    def release_here(self) -> None:
        if not self.handed:
            self.gate.release()


def _report_bug(exc: BaseException) -> None:
    """One line on stderr for a server bug: where it happened and the exception's type (not its message,
    which may quote request data), never a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    sys.stderr.write(f"gimp-openai serve: internal error {type(exc).__name__} at {where}\n")
    sys.stderr.flush()
