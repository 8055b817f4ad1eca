"""The Batch API, offline: ``/v1/files`` and ``/v1/batches`` as OpenAI serves them, for the images endpoints.

Contract (tests/fixtures/openai_images_contract.yaml, ``batch_api``): a JSONL file uploaded with purpose
``batch`` (``POST /v1/files``, multipart ``purpose`` + ``file``), one request a line
(``{"custom_id", "method": "POST", "url": "/v1/images/edits", "body": {...}}``); ``POST /v1/batches``
(``input_file_id``, ``endpoint``, ``completion_window: "24h"``) answers the batch object, ``GET
/v1/batches/{id}`` its status (validating -> in_progress -> finalizing -> completed; or cancelling ->
cancelled), ``POST /v1/batches/{id}/cancel``. When done, ``output_file_id`` holds one line per request that
worked (``{"id", "custom_id", "response": {"status_code": 200, "request_id", "body"}, "error": null}``) and
``error_file_id`` one per request that did not (the same shape with the error status and body). Edits take
JSON bodies with ``images: [{"image_url": data URL}]`` and ``mask: {"image_url": ...}``, as the API's JSON
edit body (``EditImageBodyJsonParam``) does; this server fetches nothing, so only data URLs.

Offline specifics: a batch is worked off ``--batch-delay`` seconds after it is created, one line at a time
under the same work cap as live requests (no rate limit: the Batch API has its own queue); ``--batch-fail-every
K`` sends every K-th line to the error file as a 500, to test partial failures. Files live in memory, bounded
(:data:`MAX_STORED_BYTES`); nothing is written to disk.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from gimp_openai import capabilities as caps
from gimp_openai.server import apierror, engine, rules
from gimp_openai.server.apierror import ApiError

if TYPE_CHECKING:
    from gimp_openai.server.app import LocalServer

#: What the files of all batches may hold in memory together; an upload beyond it is refused (413).
MAX_STORED_BYTES = 512 * 1024 * 1024
MAX_FILES = 256
MAX_LINES = 50_000  # the API's limit per batch
ENDPOINTS = {"/v1/images/edits": caps.ENDPOINT_EDITS, "/v1/images/generations": caps.ENDPOINT_GENERATIONS}
WINDOW_SECONDS = 24 * 3600


class BatchService:
    """Files and batches of one server; every method is thread-safe."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._files: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._contents: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._cancel: dict[str, threading.Event] = {}

    # --- files --------------------------------------------------------------------------------------------

    def add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        with self._lock:
            stored = sum(len(v) for v in self._contents.values())
            if stored + len(data) > MAX_STORED_BYTES or len(self._files) >= MAX_FILES:
                raise ApiError(413, "The server holds too many files; delete some or wait for batches to expire.",
                               code="file_storage_full")
            file_id = "file-" + secrets.token_hex(12)
            obj = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                   "filename": apierror.clip(filename or "file", 200), "purpose": purpose, "status": "processed",
                   "expires_at": None, "status_details": None}
            self._files[file_id] = obj
            self._contents[file_id] = data
            return dict(obj)

    def file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            obj = self._files.get(file_id)
            if obj is None:
                raise _no_such("file", file_id)
            return dict(obj)

    def content(self, file_id: str) -> bytes:
        with self._lock:
            data = self._contents.get(file_id)
            if data is None:
                raise _no_such("file", file_id)
            return data

    def upload(self, fields: dict[str, list[str]], files: list[Any]) -> dict[str, Any]:
        """``POST /v1/files``: multipart ``purpose`` and ``file``."""
        purpose = (fields.get("purpose") or [""])[0]
        if not purpose:
            raise apierror.missing_parameter("purpose")
        if purpose != "batch":
            raise apierror.invalid_value("purpose", purpose, ["batch"],
                                         detail="This server keeps files for the Batch API only.")
        parts = [p for p in files if p.field == "file"]
        if len(parts) != 1:
            raise apierror.missing_parameter("file")
        part = parts[0]
        if not part.filename.lower().endswith(".jsonl"):
            raise apierror.invalid_value("file", part.filename, detail="Batch input files must be .jsonl files.")
        return self.add_file(part.data, part.filename, purpose)

    # --- batches ------------------------------------------------------------------------------------------

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/batches``: checks the request and every line of the input file, then queues the batch."""
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not fields.get(name):
                raise apierror.missing_parameter(name)
        endpoint = fields["endpoint"]
        if endpoint not in ENDPOINTS:
            raise apierror.invalid_value("endpoint", endpoint, sorted(ENDPOINTS),
                                         detail="This server batches the images endpoints only.")
        if fields["completion_window"] != "24h":
            raise apierror.invalid_value("completion_window", fields["completion_window"], ["24h"])
        metadata = fields.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or any(
                not isinstance(v, str) or len(str(k)) > 64 or len(v) > 512 for k, v in metadata.items())):
            raise apierror.invalid_value("metadata", "...", detail="At most 16 string pairs (keys 64, values 512).")
        input_id = str(fields["input_file_id"])
        lines = _requests(self.content(input_id), endpoint)
        now = int(time.time())
        batch_id = "batch_" + uuid.uuid4().hex
        batch: dict[str, Any] = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": input_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + WINDOW_SECONDS, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": metadata, "model": None,
        }
        with self._lock:
            self._batches[batch_id] = batch
            self._cancel[batch_id] = threading.Event()
            answer = json.loads(json.dumps(batch))
        threading.Thread(target=self._work, args=(batch_id, lines), name=f"batch-{batch_id[-6:]}",
                         daemon=True).start()
        return answer

    def get(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise _no_such("batch", batch_id)
            return json.loads(json.dumps(batch))

    def listing(self) -> dict[str, Any]:
        with self._lock:
            data = [json.loads(json.dumps(b)) for b in reversed(list(self._batches.values()))]
        return {"object": "list", "data": data[:100], "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(data) > 100}

    def cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise _no_such("batch", batch_id)
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"] = "cancelling"
                batch["cancelling_at"] = int(time.time())
                self._cancel[batch_id].set()
            elif batch["status"] != "cancelling" and batch["status"] != "cancelled":
                raise ApiError(409, f"Cannot cancel a batch with status '{batch['status']}'.",
                               code="batch_not_cancellable")
            return json.loads(json.dumps(batch))

    def _set(self, batch_id: str, **changes: Any) -> None:
        with self._lock:
            batch = self._batches[batch_id]
            if batch["status"] in ("cancelling", "cancelled") and changes.get("status") not in (None, "cancelled"):
                changes.pop("status", None)
            batch.update(changes)

    def _work(self, batch_id: str, lines: list[tuple[int, dict[str, Any]]]) -> None:
        """Wait the configured delay, then answer each line in order; write the output and error files."""
        config = self.server.config
        cancel = self._cancel[batch_id]
        if cancel.wait(min(config.batch_delay / 2, 3600)) or self.server.stopping.is_set():
            self._finish(batch_id, [], [], cancelled=True)
            return
        self._set(batch_id, status="in_progress", in_progress_at=int(time.time()))
        if cancel.wait(config.batch_delay / 2) or self.server.stopping.is_set():
            self._finish(batch_id, [], [], cancelled=True)
            return
        done: list[bytes] = []
        failed: list[bytes] = []
        for number, (_line_no, request) in enumerate(lines, start=1):
            if cancel.is_set() or self.server.stopping.is_set():
                break
            custom_id = request["custom_id"]
            if config.batch_fail_every and number % config.batch_fail_every == 0:
                error = ApiError(500, "The server had an error while processing your request. Sorry about that!",
                                 type="server_error")
                status, body = error.status, error.to_dict()
            else:
                status, body = self._answer(ENDPOINTS[request["url"]], request["body"])
            record = {"id": "batch_req_" + uuid.uuid4().hex, "custom_id": custom_id,
                      "response": {"status_code": status, "request_id": "req_" + uuid.uuid4().hex, "body": body},
                      "error": None}
            (done if status == 200 else failed).append(json.dumps(record).encode() + b"\n")
            counts = {"total": len(lines), "completed": len(done), "failed": len(failed)}
            self._set(batch_id, request_counts=counts)
            self.server.stats.record({"id": record["response"]["request_id"], "time": time.time(),
                                      "method": "BATCH", "path": request["url"], "endpoint": "batch_line",
                                      "status": status, "model": body.get("model") if status != 200 else None})
        self._finish(batch_id, done, failed, cancelled=cancel.is_set())

    def _finish(self, batch_id: str, done: list[bytes], failed: list[bytes], *, cancelled: bool) -> None:
        self._set(batch_id, status="finalizing", finalizing_at=int(time.time()))
        changes: dict[str, Any] = {}
        if done:
            changes["output_file_id"] = self.add_file(b"".join(done), f"{batch_id}_output.jsonl",
                                                      "batch_output")["id"]
        if failed:
            changes["error_file_id"] = self.add_file(b"".join(failed), f"{batch_id}_error.jsonl",
                                                     "batch_output")["id"]
        now = int(time.time())
        if cancelled:
            changes.update(status="cancelled", cancelled_at=now)
        else:
            changes.update(status="completed", completed_at=now)
        with self._lock:
            self._batches[batch_id].update(changes)

    def _answer(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One line's request through the same rules and engine as a live request."""
        from gimp_openai.server.handler import json_edit_images

        try:
            fields = dict(body)
            if fields.get("stream") not in (None, False):
                raise apierror.unknown_parameter("stream", "Streaming is not available in the Batch API.")
            files = json_edit_images(fields) if endpoint == caps.ENDPOINT_EDITS else []
            fields = {k: v for k, v in fields.items() if v is not None}
            model = rules.model_of(endpoint, fields)
            family = self.server.registry.require_image_model(model, endpoint)
            gate = self.server.work_gate
            gate.acquire()
            try:
                request = rules.validate(endpoint, model, family, {k: v for k, v in fields.items() if k != "model"},
                                         files, multipart=False)
                spec = self.server.config.render if endpoint == caps.ENDPOINT_EDITS else None
                outcome = engine.respond(request, spec=spec, store_file=_no_urls)
            finally:
                gate.release()
            return 200, outcome.body
        except ApiError as error:
            return error.status, error.to_dict()
        except Exception as exc:  # noqa: BLE001 - one line's bug fails that line, not the batch
            bug = apierror.internal_error(type(exc).__name__)
            return bug.status, bug.to_dict()


def _no_urls(data: bytes, ext: str) -> str:
    raise ApiError(400, "response_format 'url' is not available in the Batch API; use b64_json.",
                   param="response_format", code="invalid_value")


def _no_such(what: str, ident: str) -> ApiError:
    return ApiError(404, f"No such {what}: {apierror.clip(ident, 100)}", param="id" if what == "batch" else "file_id",
                    code=None)


def _requests(data: bytes, endpoint: str) -> list[tuple[int, dict[str, Any]]]:
    """The input file's lines, each checked for the Batch API's frame (not its body: that is each line's own
    answer). A frame error refuses the whole batch, as the API does at validation."""
    out: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            request = json.loads(raw)
        except (ValueError, RecursionError):
            raise _line_error(line_no, "is not valid JSON") from None
        if not isinstance(request, dict):
            raise _line_error(line_no, "is not a JSON object")
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise _line_error(line_no, "has no custom_id")
        if custom_id in seen:
            raise _line_error(line_no, f"repeats custom_id {apierror.clip(custom_id, 64)!r}")
        seen.add(custom_id)
        if request.get("method") != "POST":
            raise _line_error(line_no, "must use method POST")
        if request.get("url") != endpoint:
            raise _line_error(line_no, f"has url {apierror.clip(str(request.get('url')), 64)!r}, not the batch's "
                                       f"endpoint {endpoint}")
        if not isinstance(request.get("body"), dict):
            raise _line_error(line_no, "has no body object")
        out.append((line_no, request))
        if len(out) > MAX_LINES:
            raise ApiError(400, f"A batch takes at most {MAX_LINES} requests.", code="too_many_requests")
    if not out:
        raise ApiError(400, "The input file holds no requests.", param="input_file_id", code="empty_file")
    return out


def _line_error(line_no: int, what: str) -> ApiError:
    return ApiError(400, f"Line {line_no} of the input file {what}.", param="input_file_id",
                    code="invalid_batch_line")
