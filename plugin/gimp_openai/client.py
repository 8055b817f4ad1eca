"""HTTP client for the OpenAI Images API (and compatible servers): ``/images/*`` and ``/models``.

Why not the ``openai`` package: the engine must run with requests only, check every parameter against the
family table *before* anything is paid for, keep every valid image of a partly damaged answer, and report
honest progress. Retries follow openai-python's rules (408/409/429/5xx and connection errors, ``retry-after-ms``
/ ``retry-after`` / ``x-should-retry``, 0.5 s exponential backoff capped at 8 s with jitter, 2 retries), except
that a request that can never succeed (400/401/403/404, ``insufficient_quota``, ``model_not_found``) is never
retried, whatever the server says.

Security: TLS verification is always on (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` may
name the CA); redirects are not followed (a key must not travel to another host); the key is kept out of
repr, logs and every exception text; image URLs are fetched only over https or from a loopback host.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import os
import random
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from . import capabilities as caps
from . import errors as E
from .settings import DEFAULT_BASE_URL, Settings, check_base_url, is_loopback_url, resolve_api_key

log = logging.getLogger(__name__)

try:
    from importlib.metadata import version as _pkg_version

    _VERSION = _pkg_version("gimp-openai")
except Exception:  # noqa: BLE001 - running from a source tree without metadata
    _VERSION = "0"

USER_AGENT = f"gimp-openai/{_VERSION} python-requests/{requests.__version__}"
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # like openai-python: a longer retry-after is not trusted, backoff is used instead
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024 * 1024
_CHUNK = 64 * 1024

#: Server error codes that will fail again however often they are sent.
NEVER_RETRY_CODES = frozenset({"insufficient_quota", "model_not_found", "moderation_blocked", "invalid_api_key"})
NEVER_RETRY_STATUS = frozenset({400, 401, 403, 404, 413, 422})

EventCallback = Callable[["ClientEvent"], None]


@dataclass(frozen=True)
class ClientEvent:
    """Progress for honest UIs. ``kind``: sending | waiting | receiving | retry | downloading | done."""

    kind: str
    message: str
    attempt: int = 1
    fraction: float | None = None  # of the upload (sending) or download (receiving/downloading), when known
    delay: float | None = None  # seconds until the retry (retry)
    status: int | None = None


@dataclass
class ClientConfig:
    """How to reach the server. ``api_key`` never shows in repr; ``sleep``/``rand`` are injectable for tests."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    organization: str = ""
    project: str = ""
    azure_api_version: str = ""
    azure_deployment: str = ""
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    max_retries: int = 2
    model_rules: dict[str, str] = field(default_factory=dict)
    #: Sent with every API request (not downloads): a compatible server's own headers, or test fault headers.
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False)
    user_agent: str = USER_AGENT
    max_download_bytes: int = MAX_DOWNLOAD_BYTES
    max_response_bytes: int = MAX_RESPONSE_BYTES
    initial_retry_delay: float = INITIAL_RETRY_DELAY
    max_retry_delay: float = MAX_RETRY_DELAY
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url)

    @property
    def is_azure(self) -> bool:
        return bool(self.azure_api_version or self.azure_deployment)

    @classmethod
    def from_settings(cls, settings: Settings, *, api_key: str | None = None, **overrides: Any) -> ClientConfig:
        """The config for ``settings``; the key is resolved (env, keyring, file) unless given."""
        key = api_key if api_key is not None else resolve_api_key(settings)
        values: dict[str, Any] = dict(
            base_url=settings.base_url,
            api_key=key,
            organization=settings.organization,
            project=settings.project,
            azure_api_version=settings.azure_api_version,
            azure_deployment=settings.azure_deployment,
            connect_timeout=float(settings.connect_timeout),
            read_timeout=float(settings.read_timeout),
            max_retries=int(settings.max_retries),
            model_rules=dict(settings.model_rules),
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class ReturnedImage:
    data: bytes = field(repr=False)
    index: int = 0
    revised_prompt: str | None = None
    mimetype: str = "image/png"

    def __repr__(self) -> str:
        return f"ReturnedImage(index={self.index}, {len(self.data)} bytes, {self.mimetype})"


@dataclass
class ImagesResult:
    images: list[ReturnedImage]
    request_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- small helpers ----------------------------------------------------------------------------------------


def sniff_mimetype(data: bytes) -> str | None:
    """image/png, image/jpeg or image/webp from the first bytes; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, without decoding; None if not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _looks_complete(data: bytes, mimetype: str) -> bool:
    """Cheap truncation check: a PNG ends with IEND, a JPEG has an EOI marker near its end."""
    if mimetype == "image/png":
        return data.rstrip(b"\x00")[-8:-4] == b"IEND" or b"IEND" in data[-32:]
    if mimetype == "image/jpeg":
        return b"\xff\xd9" in data[-64:]
    if mimetype == "image/webp":
        return len(data) >= 12 and struct.unpack("<I", data[4:8])[0] + 8 <= len(data)
    return True


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return when.timestamp() - (time.time() if now is None else now)


def retry_delay(
    retries_done: int,
    headers: Mapping[str, str] | None,
    *,
    initial: float = INITIAL_RETRY_DELAY,
    maximum: float = MAX_RETRY_DELAY,
    rand: Callable[[], float] = random.random,
) -> float:
    """How long to wait before retry number ``retries_done + 1`` (openai-python's rule).

    A server-given wait between 0 and 60 s is honoured exactly; otherwise exponential backoff from
    ``initial`` doubling per retry, capped at ``maximum``, reduced by up to 25 % jitter.
    """
    after = parse_retry_after(headers or {})
    if after is not None and 0 < after <= MAX_RETRY_AFTER:
        return after
    backoff = min(initial * (2.0 ** min(retries_done, 1000)), maximum)
    return max(0.0, backoff * (1.0 - 0.25 * rand()))


def should_retry(status: int, headers: Mapping[str, str], server_code: str | None) -> bool:
    """Retry 408/409/429/5xx (or when ``x-should-retry: true``), never what cannot succeed."""
    if server_code in NEVER_RETRY_CODES or status in NEVER_RETRY_STATUS:
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    hint = (lowered.get("x-should-retry") or "").strip().lower()
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status in (408, 409, 429) or status >= 500


def ca_bundle() -> str | bool:
    """What requests should verify against: REQUESTS_CA_BUNDLE, SSL_CERT_FILE, SSL_CERT_DIR, else certifi.

    Never False: verification cannot be switched off.
    """
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "SSL_CERT_DIR"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return True


def _is_safe_download_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and is_loopback_url(url)


class _ProgressBody:
    """A file-like request body that reports upload progress (requests sends it with a Content-Length)."""

    def __init__(self, data: bytes, report: Callable[[float], None]) -> None:
        self._data = data
        self._pos = 0
        self._report = report
        self._last = -1.0
        self.len = len(data)

    def __len__(self) -> int:
        return len(self._data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._data) - self._pos
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        fraction = self._pos / len(self._data) if self._data else 1.0
        if fraction - self._last >= 0.1 or (fraction >= 1.0 and self._last < 1.0):
            self._last = fraction
            self._report(fraction)
        return chunk


def encode_multipart(fields: Sequence[tuple[str, Any]]) -> tuple[bytes, str]:
    """multipart/form-data body. A value is a string, or (filename, bytes, content type) for a file part:
    every file part carries a filename and a content type (the API refuses parts without them)."""
    boundary = "gimp-openai-" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            filename, data, ctype = value
            out += (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            out += data
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += str(value).encode("utf-8")
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# --- the client -------------------------------------------------------------------------------------------


_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ImagesClient:
    """One client per configuration; safe to share between threads (each thread gets its own Session)."""

    def __init__(
        self,
        config: ClientConfig,
        session: requests.Session | None = None,
        *,
        on_event: EventCallback | None = None,
    ) -> None:
        self.config = config
        self._session = session
        self._local = threading.local()
        self.on_event = on_event

    def __repr__(self) -> str:
        return f"ImagesClient(base_url={self.config.base_url!r})"

    # -- public API ----------------------------------------------------------------------------------------

    def edit(
        self,
        *,
        model: str,
        prompt: str,
        image: bytes,
        mask: bytes | None = None,
        extra_images: Sequence[bytes] = (),
        n: int = 1,
        size: str | None = None,
        quality: str | None = None,
        background: str | None = None,
        output_format: str | None = None,
        output_compression: int | None = None,
        input_fidelity: str | None = None,
        response_format: str | None = None,
        user: str | None = None,
        on_event: EventCallback | None = None,
    ) -> ImagesResult:
        family = self._family(model, caps.ENDPOINT_EDITS)
        _check_prompt(prompt, family)
        _check_n(n, family)
        _check_size(size, family)
        _check_quality(quality, family)
        images = [image, *extra_images]
        if len(images) > max(family.max_images, 1):
            raise E.InvalidInputError(
                f"{model} takes at most {family.max_images} input image(s) per edit; {len(images)} were given"
            )
        fields: list[tuple[str, Any]] = [("model", model), ("prompt", prompt)]
        image_field = "image" if len(images) == 1 else "image[]"
        for i, data in enumerate(images):
            what = "the image" if i == 0 else f"reference image {i}"
            ctype = _check_upload(data, family, what, model)
            fields.append((image_field, (f"image-{i}.{_EXT[ctype]}", data, ctype)))
        if mask is not None:
            if sniff_mimetype(mask) != "image/png":
                raise E.InvalidInputError("The mask must be a PNG image")
            _check_upload_size(mask, family, "the mask")
            mask_dims, image_dims = png_size(mask), png_size(image) if sniff_mimetype(image) == "image/png" else None
            if mask_dims and image_dims and mask_dims != image_dims:
                raise E.InvalidInputError(
                    f"The mask is {mask_dims[0]}x{mask_dims[1]} but the image is {image_dims[0]}x{image_dims[1]}; "
                    "they must be the same size"
                )
            fields.append(("mask", ("mask.png", mask, "image/png")))
        params = _common_params(
            model, family, n=n, size=size, quality=quality, background=background, output_format=output_format,
            output_compression=output_compression, response_format=response_format, user=user,
        )
        if input_fidelity is not None:
            if not caps.supports_input_fidelity(model, family):
                raise E.InvalidInputError(f"{model} does not take input_fidelity")
            _check_choice("input_fidelity", input_fidelity, ("low", "high"))
            params["input_fidelity"] = input_fidelity
        fields.extend(params.items())
        return self._images_call(caps.ENDPOINT_EDITS, model, multipart=fields, n=n, on_event=on_event)

    def variation(
        self,
        *,
        model: str,
        image: bytes,
        n: int = 1,
        size: str | None = None,
        response_format: str | None = None,
        user: str | None = None,
        on_event: EventCallback | None = None,
    ) -> ImagesResult:
        family = self._family(model, caps.ENDPOINT_VARIATIONS)
        _check_n(n, family)
        _check_size(size, family)
        ctype = _check_upload(image, family, "the image", model)
        fields: list[tuple[str, Any]] = [("model", model), ("image", (f"image.{_EXT[ctype]}", image, ctype))]
        params = _common_params(model, family, n=n, size=size, response_format=response_format, user=user)
        fields.extend(params.items())
        return self._images_call(caps.ENDPOINT_VARIATIONS, model, multipart=fields, n=n, on_event=on_event)

    def generate(
        self,
        *,
        model: str,
        prompt: str,
        n: int = 1,
        size: str | None = None,
        quality: str | None = None,
        background: str | None = None,
        output_format: str | None = None,
        output_compression: int | None = None,
        moderation: str | None = None,
        response_format: str | None = None,
        user: str | None = None,
        on_event: EventCallback | None = None,
    ) -> ImagesResult:
        family = self._family(model, caps.ENDPOINT_GENERATIONS)
        _check_prompt(prompt, family)
        _check_n(n, family)
        _check_size(size, family)
        _check_quality(quality, family)
        body: dict[str, Any] = {"model": model, "prompt": prompt}
        body.update(
            _common_params(
                model, family, n=n, size=size, quality=quality, background=background, output_format=output_format,
                output_compression=output_compression, response_format=response_format, user=user,
            )
        )
        if moderation is not None:
            if not family.gpt_params:
                raise E.InvalidInputError(f"{model} does not take moderation")
            _check_choice("moderation", moderation, ("low", "auto"))
            body["moderation"] = moderation
        if "n" in body:
            body["n"] = int(body["n"])
        if "output_compression" in body:
            body["output_compression"] = int(body["output_compression"])
        return self._images_call(caps.ENDPOINT_GENERATIONS, model, json_body=body, n=n, on_event=on_event)

    def list_models(self) -> list[dict[str, Any]]:
        """``GET /models``: the raw entries (``id``, ``created``, ``owned_by``, optional ``shutdown_date``)."""
        response, _ = self._request("GET", self._url("models"), model=None, on_event=None)
        payload = _json_or_raise(response)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise E.MalformedResponseError(
                "The server's model list has no `data` array", request_id=response.headers.get("x-request-id")
            )
        return [entry for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)]

    # -- plumbing ------------------------------------------------------------------------------------------

    def _family(self, model: str, endpoint: str) -> caps.Family:
        if not model or not model.strip():
            raise E.InvalidInputError("No model was given")
        family = caps.family_for(model, self.config.model_rules)
        if not caps.supports_endpoint(family, endpoint):
            raise E.UnsupportedModelError(
                f"{model} ({family.name} family) does not serve /images/{endpoint}",
                hint="Choose another model; variations with GPT image models run as an edit with a variation prompt.",
            )
        return family

    def _emit(self, on_event: EventCallback | None, event: ClientEvent) -> None:
        for callback in (on_event, self.on_event):
            if callback is not None:
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - a broken progress display must not cost a paid request
                    log.debug("progress callback failed", exc_info=True)
                break

    def _http(self) -> requests.Session:
        if self._session is not None:
            return self._session
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _url(self, path: str, model: str | None = None) -> str:
        base = self.config.base_url
        if self.config.is_azure:
            root = base[: -len("/openai")] if base.endswith("/openai") else base
            version = quote(self.config.azure_api_version or "2025-04-01-preview", safe="")
            if path == "models":
                return f"{root}/openai/models?api-version={version}"
            deployment = quote(self.config.azure_deployment or model or "", safe="")
            return f"{root}/openai/deployments/{deployment}/{path}?api-version={version}"
        return f"{base}/{path}"

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": self.config.user_agent, "Accept": "application/json"}
        key = self.config.api_key
        if key:
            if self.config.is_azure:
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        elif not is_loopback_url(self.config.base_url):
            raise E.MissingKeyError("No OpenAI API key is configured")
        if self.config.organization:
            headers["OpenAI-Organization"] = self.config.organization
        if self.config.project:
            headers["OpenAI-Project"] = self.config.project
        for name, value in self.config.extra_headers.items():
            if name.lower() not in ("authorization", "api-key"):
                headers[name] = value
        return headers

    def _images_call(
        self,
        endpoint: str,
        model: str,
        *,
        multipart: list[tuple[str, Any]] | None = None,
        json_body: dict[str, Any] | None = None,
        n: int,
        on_event: EventCallback | None,
    ) -> ImagesResult:
        url = self._url(f"images/{endpoint}", model)
        started = time.monotonic()
        response, attempts = self._request(
            "POST", url, model=model, multipart=multipart, json_body=json_body, on_event=on_event
        )
        request_id = response.headers.get("x-request-id")
        payload = _json_or_raise(response)
        result = self._collect(payload, request_id, on_event)
        result.meta.update(
            endpoint=endpoint, model=model, requested=n, returned=len(result.images), attempts=attempts,
            elapsed=round(time.monotonic() - started, 3),
        )
        if not result.images:
            problem = "; ".join(result.problems) or "the answer held no images"
            raise E.MalformedResponseError(f"The server's answer could not be used: {problem}", request_id=request_id)
        self._emit(on_event, ClientEvent("done", f"Received {len(result.images)} image(s)", attempt=attempts))
        return result

    def _collect(self, payload: Any, request_id: str | None, on_event: EventCallback | None) -> ImagesResult:
        """Every usable image of the answer; each unusable entry becomes a line in ``problems``."""
        result = ImagesResult(images=[], request_id=request_id)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            result.problems.append("the answer has no `data` list")
            return result
        for key in ("created", "size", "quality", "background", "output_format", "usage"):
            if key in payload:
                result.meta[key] = payload[key]
        for index, entry in enumerate(payload["data"]):
            label = f"image {index + 1}"
            if not isinstance(entry, dict):
                result.problems.append(f"{label}: not an object")
                continue
            revised = entry.get("revised_prompt") if isinstance(entry.get("revised_prompt"), str) else None
            try:
                if isinstance(entry.get("b64_json"), str):
                    data = _decode_b64(entry["b64_json"])
                elif isinstance(entry.get("url"), str):
                    data = self.download(entry["url"], on_event=on_event)
                else:
                    result.problems.append(f"{label}: neither b64_json nor url")
                    continue
            except E.APIError as exc:
                result.problems.append(f"{label}: {exc.message}")
                continue
            except ValueError as exc:
                result.problems.append(f"{label}: {exc}")
                continue
            mimetype = sniff_mimetype(data)
            if mimetype is None:
                result.problems.append(f"{label}: the data is not a PNG, JPEG or WebP image")
                continue
            if not _looks_complete(data, mimetype):
                result.problems.append(f"{label}: the image is truncated")
                continue
            result.images.append(ReturnedImage(data=data, index=index, revised_prompt=revised, mimetype=mimetype))
        return result

    def download(self, url: str, *, on_event: EventCallback | None = None) -> bytes:
        """Fetch an image URL from an answer: https (or loopback) only, size-limited, streamed, retried.

        The API key is never sent with it (the URL is pre-signed) and redirects are checked one by one.
        """
        for _hop in range(5):
            if not _is_safe_download_url(url):
                raise E.UnsafeURLError(f"Refused to download an image from {_safe_url_text(url)}: not https")
            response, _ = self._request("GET", url, model=None, on_event=on_event, authenticated=False, download=True)
            if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("location"):
                url = requests.compat.urljoin(url, response.headers["location"])
                continue
            return response.content
        raise E.UnsafeURLError("Too many redirects while downloading an image")

    def _request(
        self,
        method: str,
        url: str,
        *,
        model: str | None,
        multipart: list[tuple[str, Any]] | None = None,
        json_body: dict[str, Any] | None = None,
        on_event: EventCallback | None,
        authenticated: bool = True,
        download: bool = False,
    ) -> tuple[requests.Response, int]:
        """Send with retries. Returns a response whose body is fully read (``_content`` set), and attempts."""
        cfg = self.config
        headers = self._headers() if authenticated else {"User-Agent": cfg.user_agent}
        body: bytes | None = None
        if multipart is not None:
            body, headers["Content-Type"] = encode_multipart(multipart)
        elif json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        limit = cfg.max_download_bytes if download else cfg.max_response_bytes
        what = "image download" if download else urlsplit(url).path
        attempt = 0
        while True:
            attempt += 1
            retries_done = attempt - 1
            headers["X-Stainless-Retry-Count"] = str(retries_done)
            data: Any = None
            if body is not None:

                def report(fraction: float, attempt: int = attempt) -> None:
                    self._emit(on_event, ClientEvent("sending", f"Sending {fraction:.0%}", attempt, fraction))
                    if fraction >= 1.0:
                        self._emit(on_event, ClientEvent("waiting", "Waiting for the server", attempt))

                data = _ProgressBody(body, report)
                self._emit(on_event, ClientEvent("sending", f"Sending {len(body):,} bytes to {what}", attempt, 0.0))
            else:
                kind = "downloading" if download else "waiting"
                self._emit(on_event, ClientEvent(kind, f"Requesting {what}", attempt))
            error: E.APIError | None = None
            response: requests.Response | None = None
            try:
                response = self._http().request(
                    method, url, headers=headers, data=data, timeout=(cfg.connect_timeout, cfg.read_timeout),
                    verify=ca_bundle(), allow_redirects=False, stream=True,
                )
                self._read_body(response, limit, on_event, attempt, download)
            except E.ResponseTooLargeError:
                raise
            except requests.exceptions.SSLError as exc:
                raise E.TLSError(
                    f"TLS verification failed for {urlsplit(url).netloc}: {_ssl_reason(self._clean(exc))}"
                ) from None
            except OSError as exc:
                if not isinstance(exc, requests.exceptions.RequestException):
                    # e.g. requests could not open the CA bundle named in REQUESTS_CA_BUNDLE / SSL_CERT_FILE
                    raise E.TLSError(f"Cannot use the CA certificates: {self._clean(exc)}") from None
                error = self._transport_error(exc, url)
            if response is not None and error is None:
                status = response.status_code
                if status < 400 or (download and status in (301, 302, 303, 307, 308)):
                    if 300 <= status < 400 and not download:
                        raise E.InvalidRequestError(
                            f"The server redirected {what} to {_safe_url_text(response.headers.get('location', ''))}",
                            status=status, hint="Set the base URL to the server's real address.",
                        )
                    return response, attempt
                error = self._error_from_response(response, model)
                retry = should_retry(status, response.headers, error.server_code)
                wait_headers: Mapping[str, str] = response.headers
            else:
                retry = True
                wait_headers = {}
            assert error is not None
            if not retry or retries_done >= cfg.max_retries:
                error.retries = retries_done
                raise error
            delay = retry_delay(
                retries_done, wait_headers, initial=cfg.initial_retry_delay, maximum=cfg.max_retry_delay,
                rand=cfg.rand,
            )
            log.info("%s %s: %s; retry %d in %.1f s", method, what, error.code, attempt, delay)
            self._emit(
                on_event,
                ClientEvent("retry", f"{error.message.rstrip('. ')}. Retry in {delay:.0f} s (attempt {attempt + 1} "
                            f"of {cfg.max_retries + 1})", attempt + 1, delay=delay, status=error.status),
            )
            cfg.sleep(delay)

    def _read_body(
        self, response: requests.Response, limit: int, on_event: EventCallback | None, attempt: int, download: bool
    ) -> None:
        """Read the streamed body within ``limit`` bytes, reporting progress; leaves it in ``response._content``."""
        declared = response.headers.get("content-length")
        total = int(declared) if declared and declared.isdigit() else None
        if total is not None and total > limit:
            response.close()
            raise E.ResponseTooLargeError(f"The server announced {total:,} bytes; the limit is {limit:,}")
        kind = "downloading" if download else "receiving"
        buf = bytearray()
        last = -1.0
        for chunk in response.iter_content(_CHUNK):
            buf += chunk
            if len(buf) > limit:
                response.close()
                raise E.ResponseTooLargeError(f"The answer is larger than the limit of {limit:,} bytes")
            fraction = len(buf) / total if total else None
            if fraction is None or fraction - last >= 0.1:
                last = fraction if fraction is not None else last
                self._emit(on_event, ClientEvent(kind, f"Receiving {len(buf):,} bytes", attempt, fraction))
        response._content = bytes(buf)  # noqa: SLF001 - requests' documented way to hold a read body
        response._content_consumed = True  # type: ignore[attr-defined]  # noqa: SLF001

    def _clean(self, exc: BaseException) -> str:
        return E.redact(str(exc), self.config.api_key)

    def _transport_error(self, exc: OSError, url: str) -> E.APIError:
        text = self._clean(exc)
        if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text.lower():
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                return E.ConnectionFailedError(
                    f"Could not connect to {_safe_url_text(url)} within {self.config.connect_timeout:g} s"
                )
            return E.RequestTimeoutError(
                f"No answer from {_safe_url_text(url)} within the read timeout of {self.config.read_timeout:g} s"
            )
        return E.ConnectionFailedError(f"Connection to {_safe_url_text(url)} failed: {text}")

    def _error_from_response(self, response: requests.Response, model: str | None) -> E.APIError:
        return error_from_response(
            response.status_code, response.content, response.headers, model=model,
            model_rules=self.config.model_rules, secret=self.config.api_key,
        )


def _safe_url_text(url: str) -> str:
    """The URL without query string (pre-signed URLs carry tokens) for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else "(no URL)"


def _ssl_reason(text: str) -> str:
    """The OpenSSL sentence out of requests' nested SSLError text ("certificate verify failed: ...")."""
    match = re.search(r"\[SSL: [A-Z0-9_]+\] ([^()']+?)\s*(\(_ssl|'|$)", text)
    return match.group(1).strip() if match else text


def _decode_b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the base64 data is damaged") from None


def _json_or_raise(response: requests.Response) -> Any:
    try:
        return json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise E.MalformedResponseError(
            f"The server's answer is not JSON (HTTP {response.status_code}, "
            f"{response.headers.get('content-type', 'no content type')})",
            status=response.status_code, request_id=response.headers.get("x-request-id"),
        ) from None


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    model: str | None = None,
    model_rules: Mapping[str, str] | None = None,
    secret: str | None = None,
) -> E.APIError:
    """One exception per cause, carrying the server's message, status, request id, param and code."""
    message, param, code, etype = "", None, None, None
    try:
        payload = json.loads(body.decode("utf-8"))
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = str(err["code"]) if err.get("code") is not None else None
            etype = err.get("type") if isinstance(err.get("type"), str) else None
        elif isinstance(err, str):
            message = err
    except (UnicodeDecodeError, ValueError, AttributeError):
        message = body[:300].decode("utf-8", "replace").strip()
    message = E.redact(message, secret) or f"HTTP {status} from the server"
    kwargs: dict[str, Any] = dict(
        status=status, request_id=headers.get("x-request-id"), param=param, server_code=code or etype
    )
    lowered = message.lower()
    if code == "moderation_blocked" or "safety system" in lowered:
        return E.ModerationBlockedError(message, **kwargs)
    if code == "insufficient_quota":
        return E.QuotaExceededError(message, **kwargs)
    if status == 401 or code == "invalid_api_key":
        return E.AuthenticationError(message, **kwargs)
    if status == 403:
        return E.PermissionDeniedError(message, **kwargs)
    if code == "model_not_found" or (status == 404 and model and model in message):
        return E.ModelNotFoundError(message, model=model or "", **kwargs)
    if status == 404:
        return E.EndpointNotFoundError(message, **kwargs)
    if status == 413 or code in ("file_too_large", "image_too_large", "payload_too_large"):
        return E.FileTooLargeError(message, **kwargs)
    if status == 429:
        return E.RateLimitError(message, **kwargs)
    if status == 408:
        return E.RequestTimeoutError(message, **kwargs)
    if status >= 500:
        return E.ServerError(message, **kwargs)
    if param == "size" or code in ("invalid_size", "unsupported_size"):
        return E.UnsupportedSizeError(message, **kwargs)
    hint = None
    if param == "background" and model:
        family = caps.family_for(model, model_rules)
        if family.transparent_background != "yes":
            hint = f"Transparent backgrounds are {family.transparent_background} for {model}; use background 'auto'."
    return E.InvalidRequestError(message, hint=hint, **kwargs)


# --- local checks (before anything is sent or paid for) ---------------------------------------------------


def _check_prompt(prompt: str, family: caps.Family) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise E.InvalidInputError("The prompt is empty", hint="Describe what the selection should become.")
    if "\x00" in prompt:
        raise E.InvalidInputError("The prompt contains a NUL character",
                                  hint="Remove the invisible control character from the prompt and try again.")
    if len(prompt) > family.prompt_max:
        raise E.InvalidInputError(
            f"The prompt has {len(prompt):,} characters; {family.name} models take at most {family.prompt_max:,}"
        )


def _check_n(n: int, family: caps.Family) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= family.n_max:
        raise E.InvalidInputError(f"n must be a whole number from 1 to {family.n_max} for {family.name}; got {n!r}")


def _check_size(size: str | None, family: caps.Family) -> None:
    if size is None:
        return
    problem = family.check_size(size)
    if problem:
        raise E.InvalidInputError(problem, param="size")


def _check_quality(quality: str | None, family: caps.Family) -> None:
    if quality is not None and quality not in family.qualities:
        raise E.InvalidInputError(f"quality {quality!r} is not one of {', '.join(family.qualities)} for {family.name}")


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise E.InvalidInputError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _check_upload_size(data: bytes, family: caps.Family, what: str) -> None:
    if family.max_upload_bytes and len(data) > family.max_upload_bytes:
        raise E.ImageTooLargeError(
            f"{what.capitalize()} is {len(data) / 1048576:.1f} MB after encoding; {family.name} takes at most "
            f"{family.max_upload_bytes / 1048576:.0f} MB",
            hint="Select a smaller region, or use a model that accepts larger uploads.",
        )


def _check_upload(data: bytes, family: caps.Family, what: str, model: str) -> str:
    """Content type of an input image after checking it is one the family takes, within size and shape."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise E.UnreadableImageError(f"{what.capitalize()} is empty")
    ctype = sniff_mimetype(bytes(data[:16]))
    if ctype is None:
        raise E.UnreadableImageError(f"{what.capitalize()} is not a PNG, JPEG or WebP image")
    if ctype not in family.input_mimetypes:
        raise E.InvalidInputError(f"{model} takes {', '.join(family.input_mimetypes)} input, not {ctype}")
    _check_upload_size(data, family, what)
    if family.square_input:
        dims = png_size(data)
        if dims and dims[0] != dims[1]:
            raise E.InvalidInputError(f"{model} takes square images only; {what} is {dims[0]}x{dims[1]}")
    return ctype


def _common_params(
    model: str,
    family: caps.Family,
    *,
    n: int,
    size: str | None = None,
    quality: str | None = None,
    background: str | None = None,
    output_format: str | None = None,
    output_compression: int | None = None,
    response_format: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """Only the parameters this family accepts; a parameter it does not accept is an error, not dropped."""
    params: dict[str, Any] = {}
    if n != 1:
        params["n"] = str(n)
    if size is not None:
        params["size"] = size
    if quality is not None:
        params["quality"] = quality
    gpt_only = {"background": background, "output_format": output_format, "output_compression": output_compression}
    for name, value in gpt_only.items():
        if value is None:
            continue
        if not family.gpt_params:
            raise E.InvalidInputError(f"{model} does not take {name}")
        params[name] = value
    if background is not None:
        _check_choice("background", background, ("transparent", "opaque", "auto"))
    if output_format is not None:
        _check_choice("output_format", output_format, ("png", "jpeg", "webp"))
    if output_compression is not None:
        if isinstance(output_compression, bool) or not isinstance(output_compression, int) or not (
            0 <= output_compression <= 100
        ):
            raise E.InvalidInputError(f"output_compression must be 0 to 100; got {output_compression!r}")
        params["output_compression"] = str(output_compression)
    if response_format is not None:
        if not family.response_format:
            raise E.InvalidInputError(f"{model} always returns base64 images; response_format is not accepted")
        _check_choice("response_format", response_format, ("url", "b64_json"))
        params["response_format"] = response_format
    if user is not None:
        params["user"] = str(user)
    return params


def iter_event_messages(events: Sequence[ClientEvent]) -> Iterator[str]:
    """Messages of recorded events (for logs and tests)."""
    return (event.message for event in events)
