"""The OpenAI Batch API for image requests: half the price, results within 24 hours, and a restart in between.

Why requests are built by the synchronous code: a batch's results must be composited exactly as a synchronous
run does, so the request of each item is made by the same operations (planning, crop, mask, checks, estimate)
with a client that captures the request instead of sending it (:class:`CapturingClient`), and on collection
the same operations run again with a client that answers from the batch's output file (:class:`ReplayClient`):
the history save first, the size checks, alignment, tone match and compositing are the ones every run uses.

Wire format (tests/fixtures/openai_images_contract.yaml, ``batch_api``): ``POST /v1/files`` (multipart,
``purpose=batch``) with one JSON line per request, ``{"custom_id", "method": "POST", "url": "/v1/images/edits",
"body"}``; ``POST /v1/batches`` with ``input_file_id``, ``endpoint`` and ``completion_window: "24h"``. A line's
body is JSON, so edits use the API's JSON edit body (``EditImageBodyJsonParam``): ``images: [{"image_url":
"data:image/png;base64,..."}]`` and ``mask: {"image_url": ...}`` (``ImageRefParam``: a URL, a data URL or a
file id; data URLs keep the upload in one file and need no second upload). Markup edits have no JSON form and
are refused before anything is sent.

The submission is recorded (:class:`BatchState`, one 0600 JSON file per submission in the cache folder: the
batch id, the base URL, each item's source image and its SHA-256, its mask or rectangle, the output folder and
the options; never the key) before and after each step, so ``status`` and ``collect`` work after a restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import capabilities as caps
from . import errors as E
from .client import EventCallback, ImagesClient, ImagesResult, answer_limit, error_from_response
from .operations import Engine

STATE_VERSION = 1
#: The Batch API's limits for one input file (batch_create_params: 50,000 requests, 200 MB).
MAX_LINES = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
ENDPOINT_PATHS = {caps.ENDPOINT_EDITS: "/v1/images/edits", caps.ENDPOINT_GENERATIONS: "/v1/images/generations"}
FINISHED = ("completed", "failed", "expired", "cancelled")
_INT_FIELDS = ("n", "output_compression", "partial_images")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


# --- Requests: captured from the synchronous code, sent as JSON lines -------------------------------------------


class Captured(Exception):  # noqa: N818 - not an error: the request the operation was about to send
    """Raised by :class:`CapturingClient` where a request would be sent; carries it."""

    def __init__(self, endpoint: str, model: str, body: dict[str, Any], n: int) -> None:
        super().__init__(endpoint)
        self.endpoint, self.model, self.body, self.n = endpoint, model, body, n


class CapturingClient(ImagesClient):
    """Every check of a real request runs (the family's rules, sizes, uploads); then, instead of sending, the
    request is raised as :class:`Captured` with its JSON body."""

    def _images_call(self, endpoint: str, model: str, *, multipart: list[tuple[str, Any]] | None = None,
                     json_body: dict[str, Any] | None = None, n: int, on_event: EventCallback | None,
                     stream: Any = None) -> ImagesResult:
        if endpoint not in ENDPOINT_PATHS:
            raise E.InvalidInputError(f"The Batch API does not take {endpoint} requests.",
                                      hint="Variations of dall-e-2 cannot be batched; use a GPT image model.")
        raise Captured(endpoint, model, json_body if json_body is not None else json_edit_body(multipart or []), n)


def json_edit_body(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """A multipart edit as the API's JSON edit body: uploads as data URLs, numbers as numbers."""
    body: dict[str, Any] = {}
    images: list[dict[str, str]] = []
    for name, value in fields:
        if isinstance(value, tuple):
            _filename, data, ctype = value
            ref = {"image_url": f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"}
            if name in ("image", "image[]"):
                images.append(ref)
            elif name == "mask":
                body["mask"] = ref
            else:
                raise E.InvalidInputError(f"The Batch API's JSON edits cannot carry {name}.",
                                          hint="Markup edits have no batch form; run them without --async.")
        elif name in _INT_FIELDS and str(value).isdigit():
            body[name] = int(value)
        else:
            body[name] = value
    body["images"] = images
    return body


def jsonl(lines: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    """The input file: one ``{"custom_id", "method", "url", "body"}`` per (custom_id, endpoint, body)."""
    if len(lines) > MAX_LINES:
        raise E.InvalidInputError(f"A batch takes at most {MAX_LINES:,} requests; this one has {len(lines):,}.")
    out = b"".join(json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT_PATHS[endpoint], "body": body},
                              separators=(",", ":")).encode() + b"\n" for cid, endpoint, body in lines)
    if len(out) > MAX_INPUT_BYTES:
        raise E.InvalidInputError(
            f"The batch's input file would be {len(out) / 1e6:.0f} MB; the Batch API takes at most 200 MB.",
            hint="Split the images into several batches, or use smaller selections.")
    return out


# --- Results: answered from the output file ----------------------------------------------------------------------


class ReplayClient(ImagesClient):
    """Answers the operations' request with the batch line set for this thread (:meth:`use`), read with the same
    rules as a live answer (at most n images, sizes and formats checked, server text redacted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._line = threading.local()

    def use(self, record: Mapping[str, Any] | None) -> None:
        self._line.record = record

    def _images_call(self, endpoint: str, model: str, *, multipart: list[tuple[str, Any]] | None = None,
                     json_body: dict[str, Any] | None = None, n: int, on_event: EventCallback | None,
                     stream: Any = None) -> ImagesResult:
        record = getattr(self._line, "record", None)
        if record is None:
            raise E.GimpOpenAIError("Internal: no batch result for this request.")
        response = record.get("response") or {}
        request_id = response.get("request_id") if isinstance(response.get("request_id"), str) else None
        request_id = self._untrusted(request_id) if request_id else None
        payload = response.get("body")
        result = self._collect(payload, request_id, n, on_event)
        result.meta.update(endpoint=endpoint, model=model, requested=n, returned=len(result.images), attempts=1,
                           batch=True)
        if not result.images:
            problem = "; ".join(result.problems) or "the answer held no images"
            raise E.MalformedResponseError(f"The batch's answer could not be used: {problem}", request_id=request_id)
        return result


def line_error(record: Mapping[str, Any], model: str, secret: str | None) -> E.GimpOpenAIError:
    """The error of a failed line, as a live request's error would read (redacted, one class per cause)."""
    response = record.get("response")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        body = json.dumps(response.get("body")).encode()
        rid = str(response.get("request_id") or "")
        error = error_from_response(response["status_code"], body, {"x-request-id": rid}, model=model, secret=secret)
        error.hint = "This request of the batch failed (nothing was charged for it); submit its image again."
        return error
    found = record.get("error")
    details: Mapping[str, Any] = found if isinstance(found, dict) else {}
    message = E.redact(str(details.get("message") or "the batch did not answer this request"), secret)
    return E.APIError(message, server_code=E.redact(str(details.get("code") or ""), secret) or None,
                      hint="This request of the batch failed (nothing was charged for it); submit its image again.")


class BatchEngine(Engine):
    """An engine whose prices are the Batch API's: half of each token price (estimate, cost limit, costs)."""

    def price(self, model: str) -> Any:
        from . import pricing

        return pricing.batch_price(super().price(model))


# --- The Batch API's own endpoints -------------------------------------------------------------------------------


class BatchApi:
    """``/files`` and ``/batches`` through an ImagesClient's one request path (retries, deadlines, TLS, the key
    redacted from whatever the server says)."""

    def __init__(self, client: ImagesClient) -> None:
        self.client = client

    def _json(self, method: str, path: str, *, json_body: dict[str, Any] | None = None,
              multipart: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
        response, _ = self.client._request(  # noqa: SLF001 - the one request path, shared on purpose
            method, self.client._url(path), model=None, json_body=json_body, multipart=multipart,  # noqa: SLF001
            on_event=None, limit=1024 * 1024, what=path)
        try:
            payload = json.loads(response.content)
        except (UnicodeDecodeError, ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            raise E.MalformedResponseError(f"The server's answer to {path} is not a JSON object",
                                           request_id=response.headers.get("x-request-id"))
        return dict(self.client._untrusted(payload))  # noqa: SLF001

    def upload(self, data: bytes, filename: str) -> str:
        answer = self._json("POST", "files", multipart=[("purpose", "batch"),
                                                         ("file", (filename, data, "application/jsonl"))])
        return _checked_id(answer.get("id"), "file")

    def create(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> dict[str, Any]:
        answer = self._json("POST", "batches", json_body={"input_file_id": input_file_id, "endpoint": endpoint,
                                                           "completion_window": "24h", "metadata": metadata})
        _checked_id(answer.get("id"), "batch")
        return answer

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return self._json("GET", f"batches/{_checked_id(batch_id, 'batch')}")

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._json("POST", f"batches/{_checked_id(batch_id, 'batch')}/cancel")

    def content(self, file_id: str, limit: int) -> bytes:
        response, _ = self.client._request(  # noqa: SLF001
            "GET", self.client._url(f"files/{_checked_id(file_id, 'file')}/content"), model=None,  # noqa: SLF001
            on_event=None, limit=limit, what=f"the batch file {file_id}")
        return bytes(response.content)


def _checked_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise E.MalformedResponseError(f"The server answered without a usable {what} id")
    return value


def read_lines(data: bytes) -> dict[str, dict[str, Any]]:
    """An output or error file's records by custom_id (unreadable lines are skipped: they name no item)."""
    records: dict[str, dict[str, Any]] = {}
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
            records[record["custom_id"]] = record
    return records


def output_limit(model: str, model_rules: Mapping[str, str] | None, items: int, n: int) -> int:
    """The most bytes a batch's output file may have: every item's answer at the live answer's cap."""
    family = caps.family_for(model, model_rules)
    return max(1, items) * answer_limit(family, n) + 1024 * 1024


# --- The local record --------------------------------------------------------------------------------------------


def state_dir() -> Path:
    from .settings import cache_dir

    folder = cache_dir() / "batches"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_base_url(url: str) -> str:
    """The base URL without user info or query (nothing secret is recorded)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class BatchState:
    """One submission's record: ``data`` is what is written (no key ever); ``path`` its file."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def new(cls, **fields: Any) -> BatchState:
        local_id = "sub-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        data = {"version": STATE_VERSION, "local_id": local_id, "batch_id": None, "status": "preparing",
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields}
        return cls(state_dir() / f"{local_id}.json", data)

    def save(self) -> None:
        from .atomic import write_json_atomic

        write_json_atomic(self.path, self.data)
        os.chmod(self.path, 0o600)

    def update(self, **changes: Any) -> None:
        self.data.update(changes)
        self.save()

    @property
    def ident(self) -> str:
        return str(self.data.get("batch_id") or self.data["local_id"])

    @classmethod
    def load(cls, path: Path) -> BatchState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise E.GimpOpenAIError(f"The batch record {path} cannot be read ({type(exc).__name__}).") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise E.GimpOpenAIError(f"The batch record {path} is not one this version knows.")
        return cls(path, data)

    @classmethod
    def find(cls, ident: str) -> BatchState:
        """A submission by its batch id or its local id."""
        for state in all_states():
            if ident in (state.data.get("batch_id"), state.data.get("local_id")):
                return state
        raise E.InvalidInputError(f"No batch {ident!r} was submitted from this computer.",
                                  hint="`gimp-openai batch list` shows the known batches.")


def all_states() -> list[BatchState]:
    states = []
    for path in sorted(state_dir().glob("sub-*.json")):
        try:
            states.append(BatchState.load(path))
        except E.GimpOpenAIError:
            continue
    return states


def wait_until_finished(api: BatchApi, batch_id: str, *, poll: float, timeout: float | None,
                        on_status: Any = None) -> dict[str, Any]:
    """Poll the batch until it is finished (completed, failed, expired, cancelled) or ``timeout`` passes."""
    until = None if timeout is None else time.monotonic() + timeout
    while True:
        batch = api.retrieve(batch_id)
        if on_status is not None:
            on_status(batch)
        if batch.get("status") in FINISHED or (until is not None and time.monotonic() >= until):
            return batch
        time.sleep(poll)
