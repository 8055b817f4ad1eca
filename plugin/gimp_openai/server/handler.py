"""HTTP plumbing of the local server (standard library ``http.server``; one thread per connection).

Order of work for ``POST /v1/images/*`` (the same as the real service, as far as it shows): body size
(413 before reading anything over the limit), authentication, ``before`` faults, body parsing, model,
validation, ``after`` faults, the offline engine, then delivery (latency, reset, stall). Every request,
answered or refused, is recorded in ``/_stats``.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import time
import uuid
from base64 import b64decode
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from gimp_openai import capabilities as caps
from gimp_openai.server import apierror, engine, faults, multipart, render, rules
from gimp_openai.server.apierror import ApiError
from gimp_openai.server.stats import describe_file, sanitize_headers

if TYPE_CHECKING:
    from gimp_openai.server.app import LocalServer

MAX_BODY_BYTES = 50 * 1024 * 1024
IMAGE_PATH = re.compile(r"^/v1/images/(edits|variations|generations)$")
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/images/(edits|variations|generations)$")
MODEL_PATH = re.compile(r"^/v1/models/([^/]+)$")
FILE_PATH = re.compile(r"^/v1/_files/([A-Za-z0-9_\-]+\.(?:png|jpeg|webp))$")
DATA_URL = re.compile(r"^data:(image/[a-z+.\-]+)?(;base64)?,(.*)$", re.S)


class BodyTooLarge(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gimp-openai-local/1"
    sys_version = ""
    server: LocalServer

    # --- plumbing -------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        if self.server.config.verbose:
            super().log_message(format, *args)

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the connection was dropped on purpose (reset fault) or by the client

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None, delivery: list[faults.FaultSpec] | None = None) -> None:
        delivery = delivery or []
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

    def _read_body(self) -> bytes:
        """At most MAX_BODY_BYTES; refuses larger bodies from Content-Length before reading them."""
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise ApiError(400, "Invalid Content-Length header.") from None
            if size > MAX_BODY_BYTES:
                raise BodyTooLarge
            return self.rfile.read(size) if size > 0 else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        return b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BodyTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _auth(self) -> None:
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
        if config.required_key is not None:
            import hmac

            if not hmac.compare_digest(token.encode(), config.required_key.encode()):
                raise apierror.invalid_api_key()

    # --- routes ---------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self._path()
        if path == "/_stats":
            self._send_json(200, self.server.stats.snapshot(self.server.faults.snapshot()))
            return
        match = FILE_PATH.match(path)
        if match:
            found = self.server.files.get(match.group(1))
            if found is None:
                self._send_json(404, apierror.not_found_route("GET", path).to_dict())
            else:
                self._send(200, found[0], found[1])
            return
        self._handle(path, self._models)

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        if path == "/_reset":
            self.server.stats.reset()
            self.server.faults.reset()
            self._send_json(200, {"ok": True})
            return
        self._handle(path, self._images)

    def _handle(self, path: str, route: Any) -> None:
        started = time.monotonic()
        request_id = "req_" + uuid.uuid4().hex
        entry: dict[str, Any] = {
            "id": request_id,
            "time": time.time(),
            "method": self.command,
            "path": path,
            "query": urlsplit(self.path).query,
            "endpoint": None,
            "headers": sanitize_headers(list(self.headers.items())),
            "auth": {
                "authorization": "Authorization" in self.headers,
                "api_key": "api-key" in self.headers,
            },
        }
        delivery: list[faults.FaultSpec] = []
        status, body, content_type, headers = 500, b"", "application/json", {"x-request-id": request_id}
        try:
            status, body, delivery = route(path, entry)
        except BodyTooLarge:
            self.close_connection = True
            error = ApiError(413, f"Request body too large: the limit is {MAX_BODY_BYTES // (1024 * 1024)} MB.",
                             code="request_too_large")
            status, body = error.status, error.body()
            entry["body_bytes"] = 0
        except ApiError as error:
            status, body, content_type = error.status, error.body(), error.content_type
            headers.update(error.headers)
            entry["error"] = {"code": error.code, "param": error.param, "type": error.type}
            delivery = entry.pop("_delivery", [])
        entry["status"] = status
        entry["seconds"] = round(time.monotonic() - started, 4)
        self.server.stats.record({k: v for k, v in entry.items() if not k.startswith("_")})
        delay = self._latency(delivery)
        if delay > 0:
            self.server.stopping.wait(delay)
        headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        headers["openai-version"] = "2020-10-01"
        self._send(status, body, content_type, headers, delivery)

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

    def _images(self, path: str, entry: dict) -> tuple[int, bytes, list]:
        match, deployment = IMAGE_PATH.match(path), None
        if match is None:
            match = AZURE_PATH.match(path)
            if match is None:
                raise apierror.not_found_route("POST", path)
            deployment = match.group(1)
        endpoint = match.group(match.lastindex or 1)
        entry["endpoint"] = endpoint
        raw = self._read_body()
        entry["body_bytes"] = len(raw)
        self._auth()
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
        request = rules.validate(endpoint, model, family, {k: v for k, v in fields.items() if k != "model"}, files,
                                 multipart=is_multipart)
        kinds = {s.kind: s for s in firing}
        if "moderation_blocked" in kinds:
            raise faults.moderation_error()
        wrong = None
        if "wrong_size" in kinds:
            size = rules.output_size(request)
            wrong = caps.parse_size(kinds["wrong_size"].params.get("size", "")) or (size[0] // 2, size[1] // 2)
        outcome = engine.respond(request, spec=spec if endpoint == caps.ENDPOINT_EDITS else None,
                                 store_file=self._file_url, wrong_size=wrong)
        entry.update(outcome.notes)
        body = outcome.body
        if "truncated_b64" in kinds:
            index = int(kinds["truncated_b64"].params.get("index", "0"))
            items = body.get("data") or []
            if 0 <= index < len(items) and "b64_json" in items[index]:
                text = items[index]["b64_json"]
                items[index]["b64_json"] = text[: (len(text) // 2) // 4 * 4]
        encoded = json.dumps(body).encode()
        if "malformed_json" in kinds:
            encoded = encoded[: max(1, len(encoded) // 2)]
        entry.pop("_delivery", None)
        return 200, encoded, delivery

    def _file_url(self, data: bytes, ext: str) -> str:
        name = self.server.files.put(data, ext)
        address = self.server.server_address
        host = self.headers.get("Host") or f"{address[0]!s}:{address[1]}"
        return f"http://{host}/v1/_files/{name}"

    def _parse(self, raw: bytes, endpoint: str, entry: dict) -> tuple[dict[str, Any], list, bool]:
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            try:
                form = multipart.parse_multipart(raw, content_type)
            except multipart.MultipartError as exc:
                raise ApiError(400, f"Could not parse the multipart form: {exc}.") from None
            entry["fields"] = {k: (v[0] if len(v) == 1 else v) for k, v in form.fields.items()}
            entry["files"] = [describe_file(part) for part in form.files]
            for name, values in form.fields.items():
                if len(values) > 1:
                    raise apierror.invalid_value(name, values[-1], detail=f"'{name}' was sent {len(values)} times.")
            return {k: v[0] for k, v in form.fields.items()}, form.files, True
        if content_type.lower().startswith("application/x-www-form-urlencoded"):
            pairs = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=64)
            entry["fields"] = {k: v[0] for k, v in pairs.items()}
            entry["files"] = []
            return {k: v[0] for k, v in pairs.items()}, [], True
        try:
            fields = json.loads(raw or b"null")
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            )
        files = self._json_images(fields) if endpoint == caps.ENDPOINT_EDITS else []
        entry["fields"] = {k: v for k, v in fields.items() if k not in ("images", "mask")}
        entry["files"] = [describe_file(part) for part in files]
        fields = {k: v for k, v in fields.items() if v is not None}
        if endpoint != caps.ENDPOINT_GENERATIONS and not files and endpoint == caps.ENDPOINT_VARIATIONS:
            raise ApiError(400, "Variations take multipart/form-data.", param="image", code="invalid_value")
        return fields, files, False

    def _json_images(self, fields: dict[str, Any]) -> list[multipart.FilePart]:
        """JSON edits (``images: [{image_url}]``): only data URLs here; the local server fetches nothing."""
        parts = []
        refs = [("image", ref) for ref in fields.pop("images", None) or []]
        if fields.get("mask") is not None:
            refs.append(("mask", fields.pop("mask")))
        fields.pop("mask", None)
        for name, ref in refs:
            url = ref.get("image_url") if isinstance(ref, dict) else None
            match = DATA_URL.match(url or "")
            if not match or not match.group(2):
                raise apierror.invalid_value(name, "file_id or remote URL" if url is None else url[:40],
                                             detail="The local server takes base64 data URLs only.")
            try:
                data = b64decode(match.group(3), validate=False)
            except ValueError:
                raise apierror.invalid_value(name, url[:40] if url else "", detail="Bad base64 data URL.") from None
            parts.append(multipart.FilePart(name, f"{name}.bin", match.group(1) or "application/octet-stream", data))
        return parts
