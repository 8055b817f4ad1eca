"""HTTP client for the OpenAI Images API (and compatible servers): ``/images/*`` and ``/models``.

Why not the ``openai`` package: the engine must run with requests only, check every parameter against the
family table *before* anything is paid for, keep every valid image of a partly damaged answer, and report
honest progress. Retries follow openai-python's rules (408/409/429/5xx and connection errors, ``retry-after-ms``
/ ``retry-after`` / ``x-should-retry``, 0.5 s exponential backoff capped at 8 s with jitter, 2 retries), except
that a request that can never succeed (400/401/403/404, ``insufficient_quota``, ``model_not_found``) is never
retried, whatever the server says.

Security (docs/hardening-client.md has the attack run behind each rule): TLS verification is always on
(``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` may name the CA); the key is never sent over
plain http to a host that is not this computer unless the user allows it (``allow_insecure_http``);
redirects are not followed (a key must not travel to another host); the key is redacted from everything a
server says before the engine keeps it (:meth:`ImagesClient._untrusted`), and kept out of repr, logs and
every exception text; image URLs are fetched only from the API's own origin or, for a remote API, from
public https hosts (:mod:`urlpolicy`), connecting to the checked address. An answer is read within a size
cap derived from n and the model's largest output, and within a deadline per attempt
(:mod:`transport`); at most the n requested images are kept.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import math
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
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3

from . import capabilities as caps
from . import errors as E
from . import ratelimit, sse, transport, urlpolicy
from .request_checks import (
    check_choice,
    check_endpoint,
    check_n,
    check_prompt,
    check_quality,
    check_size,
    check_upload,
    check_upload_size,
    png_size,
    sniff_mimetype,
)
from .settings import DEFAULT_BASE_URL, Settings, check_base_url, resolve_api_key
from .urlpolicy import is_loopback

__all__ = [
    "ClientConfig", "ClientEvent", "ImagesClient", "ImagesResult", "PartialImage", "ReturnedImage", "is_loopback",
]

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
MAX_REDIRECTS = 5
#: Sending is given this many bytes a second at least before the attempt's deadline (see _first_deadline).
MIN_UPLOAD_RATE = 32 * 1024
#: The answer's deadline is the read timeout plus this: a server that sends nothing at all meets requests'
#: own read timeout first ("No answer ..."); only one that keeps dripping meets the deadline.
DEADLINE_GRACE = 1.0
_CHUNK = 64 * 1024

#: Server error codes that will fail again however often they are sent.
NEVER_RETRY_CODES = frozenset({"insufficient_quota", "model_not_found", "moderation_blocked", "invalid_api_key"})
NEVER_RETRY_STATUS = frozenset({400, 401, 403, 404, 413, 422})

EventCallback = Callable[["ClientEvent"], None]
PartialCallback = Callable[["PartialImage"], None]

#: The event types of a streamed answer (contract: ImageEditStreamEvent, ImageGenStreamEvent). Either endpoint's
#: names are accepted on both: what matters is partial or completed, and the content is checked strictly.
PARTIAL_EVENTS = frozenset({"image_edit.partial_image", "image_generation.partial_image"})
COMPLETED_EVENTS = frozenset({"image_edit.completed", "image_generation.completed"})


@dataclass(frozen=True)
class ClientEvent:
    """Progress for honest UIs. ``kind``: pacing (waiting for the rate limit, before sending) | sending | waiting
    | receiving | retry | downloading | done."""

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
    #: Send the key over plain http to a host that is not this computer (the user's explicit choice).
    allow_insecure_http: bool = False
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    #: host, port -> addresses; the image-URL policy checks them all and the download connects to one.
    resolve: Callable[[str, int], list[str]] = field(default=urlpolicy.resolve_host, repr=False, compare=False)

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
            allow_insecure_http=bool(getattr(settings, "allow_insecure_http", False)),
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
class PartialImage:
    """A preview streamed before the result: NOT a paid image (the completed one is), so it never goes to history
    unless the request fails for good after it (then the operation keeps the last one, marked as partial)."""

    data: bytes = field(repr=False)
    index: int  # partial_image_index as the server numbered it (0-based)
    image: int  # which of the n images it previews, 0-based: the completed images that came before it
    sequence: int  # 1-based count of previews delivered by this call (retries included)
    mimetype: str = "image/png"
    attempt: int = 1

    def __repr__(self) -> str:
        return f"PartialImage(index={self.index}, image={self.image}, {len(self.data)} bytes, {self.mimetype})"


@dataclass
class ImagesResult:
    """``problems``: entries that could not be used (the operation reports them as an error, after keeping the
    good images); ``warnings``: what was done about an odd answer that cost the user nothing (extra images
    the server sent beyond n were dropped unread)."""

    images: list[ReturnedImage]
    request_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: coded notes for the artist, (code, sentence): e.g. an optional parameter the server refused was left out
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- small helpers ----------------------------------------------------------------------------------------


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


def max_output_pixels(family: caps.Family) -> int:
    """The most pixels one image of ``family`` can have: its free-size rule's cap, else its largest fixed size
    (gpt-image-2's cap when a family lists neither, so nothing real is ever cut off)."""
    if family.free_sizes is not None:
        return family.free_sizes.max_pixels
    sizes = [caps.parse_size(size) for size in family.sizes]
    areas = [w * h for w, h in (s for s in sizes if s is not None)]
    return max(areas) if areas else caps.FreeSizeRule().max_pixels


#: JSON around one image (revised_prompt: up to 32,000 characters, each at most 6 bytes escaped) and the answer.
_ENTRY_SLACK = 256 * 1024
_ANSWER_SLACK = 1024 * 1024


def answer_limit(family: caps.Family, n: int) -> int:
    """The largest JSON answer an honest server can send for ``n`` images of ``family``: per image, the
    worst case file (an uncompressed 8-bit RGBA PNG: 4 bytes a pixel, 1 % framing, 64 KiB of chunks) in base64,
    plus room for its JSON; plus 1 MiB for the rest. gpt-image-2, n=1: 45 MB."""
    worst_file = max_output_pixels(family) * 4 * 1.01 + 64 * 1024
    per_image = math.ceil(worst_file / 3) * 4 + _ENTRY_SLACK
    return n * per_image + _ANSWER_SLACK


def _first_deadline(config: ClientConfig, upload_bytes: int) -> float:
    """Seconds one attempt may last until its upload has gone out: connecting, sending at ``MIN_UPLOAD_RATE``
    at least, and a full read timeout in case the server answers without reading everything. Once the upload
    is out, the deadline restarts at the read timeout (plus ``DEADLINE_GRACE``): the whole answer, headers and
    body, must arrive within it (requests' own read timeout only bounds each recv)."""
    return config.connect_timeout + config.read_timeout + upload_bytes / MIN_UPLOAD_RATE


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
        self._no_streaming: bool | None = None  # this base URL refused ``stream`` (read from discovery once)
        #: The process's one pacer for this base URL: every images request waits for room in the budgets the
        #: server announces (ratelimit.py); tests may give a client its own.
        self.pacer = ratelimit.pacer_for(config.base_url)

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
        partial_images: int | None = None,
        on_partial: PartialCallback | None = None,
        markup: bytes | None = None,
        complexity: str | None = None,
    ) -> ImagesResult:
        """``partial_images`` (0 to the family's ``max_partial_images``): stream the answer, handing each preview
        to ``on_partial`` as it arrives; ignored for a family that does not stream (see :meth:`_images_call`)."""
        family = self._family(model, caps.ENDPOINT_EDITS)
        check_prompt(prompt, family)
        check_n(n, family)
        check_size(size, family)
        check_quality(quality, family)
        images = [image, *extra_images]
        if len(images) > max(family.max_images, 1):
            raise E.InvalidInputError(
                f"{model} takes at most {family.max_images} input image(s) per edit; {len(images)} were given"
            )
        fields: list[tuple[str, Any]] = [("model", model), ("prompt", prompt)]
        image_field = "image" if len(images) == 1 else "image[]"
        for i, data in enumerate(images):
            what = "the image" if i == 0 else f"reference image {i}"
            ctype = check_upload(data, family, what, model)
            fields.append((image_field, (f"image-{i}.{_EXT[ctype]}", data, ctype)))
        if mask is not None:
            if sniff_mimetype(mask) != "image/png":
                raise E.InvalidInputError("The mask must be a PNG image")
            check_upload_size(mask, family, "the mask")
            mask_dims, image_dims = png_size(mask), png_size(image) if sniff_mimetype(image) == "image/png" else None
            if mask_dims and image_dims and mask_dims != image_dims:
                raise E.InvalidInputError(
                    f"The mask is {mask_dims[0]}x{mask_dims[1]} but the image is {image_dims[0]}x{image_dims[1]}; "
                    "they must be the same size"
                )
            fields.append(("mask", ("mask.png", mask, "image/png")))
        if markup is not None:
            fields.append(("markup", ("markup.png", check_markup(markup, image, mask, family, model), "image/png")))
        params = _common_params(
            model, family, n=n, size=size, quality=quality, background=background, output_format=output_format,
            output_compression=output_compression, response_format=response_format, user=user,
            complexity=complexity,
        )
        if input_fidelity is not None:
            if not caps.supports_input_fidelity(model, family):
                raise E.InvalidInputError(f"{model} does not take input_fidelity")
            check_choice("input_fidelity", input_fidelity, ("low", "high"))
            params["input_fidelity"] = input_fidelity
        fields.extend(params.items())
        return self._images_call(caps.ENDPOINT_EDITS, model, multipart=fields, n=n, on_event=on_event,
                                 stream=self._stream_plan(family, model, partial_images, on_partial, n))

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
        check_n(n, family)
        check_size(size, family)
        ctype = check_upload(image, family, "the image", model)
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
        partial_images: int | None = None,
        on_partial: PartialCallback | None = None,
        complexity: str | None = None,
    ) -> ImagesResult:
        """``partial_images``/``on_partial``: as for :meth:`edit`."""
        family = self._family(model, caps.ENDPOINT_GENERATIONS)
        check_prompt(prompt, family)
        check_n(n, family)
        check_size(size, family)
        check_quality(quality, family)
        body: dict[str, Any] = {"model": model, "prompt": prompt}
        body.update(
            _common_params(
                model, family, n=n, size=size, quality=quality, background=background, output_format=output_format,
                output_compression=output_compression, response_format=response_format, user=user,
                complexity=complexity,
            )
        )
        if moderation is not None:
            if not family.gpt_params:
                raise E.InvalidInputError(f"{model} does not take moderation")
            check_choice("moderation", moderation, ("low", "auto"))
            body["moderation"] = moderation
        if "n" in body:
            body["n"] = int(body["n"])
        if "output_compression" in body:
            body["output_compression"] = int(body["output_compression"])
        return self._images_call(caps.ENDPOINT_GENERATIONS, model, json_body=body, n=n, on_event=on_event,
                                 stream=self._stream_plan(family, model, partial_images, on_partial, n))

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

    def _refused_before(self, model: str) -> set[str]:
        from . import discovery

        return discovery.refused_params(self.config.base_url, model)

    def _remember_refusal(self, model: str, name: str) -> None:
        from . import discovery

        discovery.remember_refused_param(self.config.base_url, model, name)

    def _family(self, model: str, endpoint: str) -> caps.Family:
        if not model or not model.strip():
            raise E.InvalidInputError("No model was given")
        family = caps.family_for(model, self.config.model_rules)
        check_endpoint(model, family, endpoint)
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
        """This thread's session, with the deadline/pinning adapter mounted (also on an injected session)."""
        if self._session is not None:
            return transport.mount(self._session)
        session = getattr(self._local, "session", None)
        if session is None:
            session = transport.mount(requests.Session())
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
        refusal = urlpolicy.insecure_key_refusal(
            self.config.base_url, has_key=bool(key), allow_insecure_http=self.config.allow_insecure_http
        )
        if refusal:
            raise E.InsecureTransportError(refusal)
        if key:
            if self.config.is_azure:
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        elif not is_loopback(self.config.base_url):
            raise E.MissingKeyError("No OpenAI API key is configured")
        if self.config.organization:
            headers["OpenAI-Organization"] = self.config.organization
        if self.config.project:
            headers["OpenAI-Project"] = self.config.project
        for name, value in self.config.extra_headers.items():
            if name.lower() not in ("authorization", "api-key"):
                headers[name] = value
        return headers

    def _stream_plan(
        self, family: caps.Family, model: str, partial_images: int | None, on_partial: PartialCallback | None, n: int
    ) -> _StreamReader | None:
        """The reader of a streamed answer, or None for a plain request: the caller asked for previews, the
        family streams (the table's ``streams`` fact), and this base URL has not refused ``stream`` before."""
        if partial_images is None or not family.streams:  # previews are a courtesy: without streams, none
            return None
        if isinstance(partial_images, bool) or not isinstance(partial_images, int) or not (
            0 <= partial_images <= family.max_partial_images
        ):
            raise E.InvalidInputError(
                f"partial_images must be 0 to {family.max_partial_images} for {model}; got {partial_images!r}"
            )
        if self._streaming_refused():
            return None
        return _StreamReader(self, family, n, partial_images, on_partial)

    def _streaming_refused(self) -> bool:
        if self._no_streaming is None:
            from . import discovery

            self._no_streaming = discovery.streaming_refused(self.config.base_url)
        return self._no_streaming

    def _images_call(
        self,
        endpoint: str,
        model: str,
        *,
        multipart: list[tuple[str, Any]] | None = None,
        json_body: dict[str, Any] | None = None,
        n: int,
        on_event: EventCallback | None,
        stream: _StreamReader | None = None,
    ) -> ImagesResult:
        """One images request. With ``stream``, the request asks for server-sent events and its reader hands the
        previews on as they come; a server that refuses ``stream`` (400 naming it) gets the same request once
        more without it, and its base URL is remembered (discovery) so later requests go plain at once.
        An error after previews carries the last one (``partial_preview``): the caller decides to keep it."""
        try:
            return self._images_once(endpoint, model, multipart, json_body, n, on_event, stream)
        except E.APIError as exc:
            if stream is None or not _refuses_streaming(exc):
                raise self._with_preview(exc, stream) from None
        from . import discovery

        self._no_streaming = True
        discovery.remember_streaming_refused(self.config.base_url)
        log.info("%s refused stream; sent again without it (remembered for this base URL)", self.config.base_url)
        try:  # the same fields: the stream fields are added per send, by _images_once
            result = self._images_once(endpoint, model, multipart, json_body, n, on_event, None)
        except E.GimpOpenAIError as exc:
            raise self._with_preview(exc, stream) from None
        result.warnings.append(
            f"The server at {_safe_url_text(self.config.base_url)} does not stream; no previews were shown, and "
            "later requests to it are sent without streaming."
        )
        result.meta["streamed"] = False
        return result

    @staticmethod
    def _with_preview(exc: E.GimpOpenAIError, stream: _StreamReader | None) -> E.GimpOpenAIError:
        if stream is not None and stream.last_partial is not None and exc.partial_preview is None:
            exc.partial_preview = stream.last_partial
        return exc

    def _images_once(
        self,
        endpoint: str,
        model: str,
        multipart: list[tuple[str, Any]] | None,
        json_body: dict[str, Any] | None,
        n: int,
        on_event: EventCallback | None,
        stream: _StreamReader | None,
    ) -> ImagesResult:
        url = self._url(f"images/{endpoint}", model)
        started = time.monotonic()
        family = caps.family_for(model, self.config.model_rules)
        limit = min(self.config.max_response_bytes, answer_limit(family, n))
        if stream is not None:
            if multipart is not None:
                multipart = [*multipart, ("stream", "true"), ("partial_images", str(stream.partial_images))]
            if json_body is not None:
                json_body = {**json_body, "stream": True, "partial_images": stream.partial_images}
        notes: list[tuple[str, str]] = []
        for name in sorted(_sent_names(multipart, json_body) & self._refused_before(model)):
            multipart, json_body = _without(name, multipart, json_body)
            notes.append((PARAM_DROPPED, f"{name} was not sent: this server refused it for {model} before, as a "
                                         "parameter it does not know."))
        while True:
            try:
                response, attempts = self._request(
                    "POST", url, model=model, multipart=multipart, json_body=json_body, on_event=on_event,
                    limit=limit, what=f"{n} image{'s' if n != 1 else ''} of {model}", stream=stream,
                    pace={"requests": 1, "images": n, "tokens": max(1, _request_tokens(family, multipart, json_body))},
                )
                break
            except E.InvalidRequestError as exc:
                refused = refused_parameter(exc, _sent_names(multipart, json_body))
                if refused is None:
                    raise self._with_preview(exc, stream) from None
                # The request means the same without it: once, left out and remembered for this server.
                multipart, json_body = _without(refused, multipart, json_body)
                self._remember_refusal(model, refused)
                notes.append((PARAM_DROPPED, f"The server does not know the parameter {refused} for {model}; it was "
                                             "left out and the request sent again (remembered for this server)."))
            except E.GimpOpenAIError as exc:
                raise self._with_preview(exc, stream) from None
        request_id = response.headers.get("x-request-id")
        if stream is not None and stream.response is response and stream.result is not None:
            result = stream.result
            result.meta["streamed"] = True
        else:
            payload = _json_or_raise(response)
            del response  # the raw answer (up to the limit) is not needed once parsed
            result = self._collect(payload, request_id, n, on_event)
        result.notes.extend(notes)
        result.meta.update(
            endpoint=endpoint, model=model, requested=n, returned=len(result.images), attempts=attempts,
            elapsed=round(time.monotonic() - started, 3),
        )
        if not result.images:
            problem = "; ".join(result.problems) or "the answer held no images"
            raise self._with_preview(
                E.MalformedResponseError(f"The server's answer could not be used: {problem}", request_id=request_id),
                stream,
            )
        self._emit(on_event, ClientEvent("done", f"Received {len(result.images)} image(s)", attempt=attempts))
        return result

    def _collect(
        self, payload: Any, request_id: str | None, n: int, on_event: EventCallback | None
    ) -> ImagesResult:
        """Every usable image among the first ``n`` entries; each unusable one becomes a line in ``problems``.

        Entries beyond ``n`` were not asked for: they are dropped without being decoded or downloaded (one
        attack answer carried 10,000 images for n=1), and a warning says so.
        """
        result = ImagesResult(images=[], request_id=request_id)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            result.problems.append("the answer has no `data` list")
            return result
        for key in ("created", "size", "quality", "background", "output_format", "usage"):
            if key in payload:
                result.meta[key] = self._untrusted(payload[key])
        entries = payload["data"]
        if len(entries) > n:
            dropped = len(entries) - n
            result.meta["dropped"] = dropped
            result.warnings.append(
                f"The server sent {len(entries):,} images for the {n} requested; the {dropped:,} extra "
                f"{'was' if dropped == 1 else 'were'} dropped unread."
            )
            log.warning("%s", result.warnings[-1])
        for index, entry in enumerate(entries[:n]):
            label = f"image {index + 1}"
            if not isinstance(entry, dict):
                result.problems.append(f"{label}: not an object")
                continue
            revised = entry.get("revised_prompt") if isinstance(entry.get("revised_prompt"), str) else None
            revised = self._untrusted(revised) if revised is not None else None
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
        """Fetch an image URL from an answer, size-limited, streamed, retried, never with the key.

        Every hop (redirects are followed by hand, at most ``MAX_REDIRECTS``) must pass :mod:`urlpolicy`: the
        API's own origin, or for a remote API a public https host, whose every resolved address is checked
        and one of them connected to (so a second DNS answer cannot point the request elsewhere).
        """
        for _hop in range(MAX_REDIRECTS + 1):
            address = self._checked_address(url)
            response, _ = self._request(
                "GET", url, model=None, on_event=on_event, authenticated=False, download=True, address=address
            )
            if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("location"):
                url = requests.compat.urljoin(url, response.headers["location"])
                continue
            return response.content
        raise E.UnsafeURLError(f"Refused to follow more than {MAX_REDIRECTS} redirects while downloading an image")

    def _checked_address(self, url: str) -> str | None:
        """The address to connect to for ``url`` (None: the API's own origin, connected as every request);
        UnsafeURLError naming the URL and the reason when the policy refuses it."""
        base = self.config.base_url
        reason = urlpolicy.image_url_refusal(url, base)
        if reason is None and urlpolicy.needs_address_check(url, base):
            _scheme, host, port = urlpolicy.origin(url) or ("", "", 0)
            literal = urlpolicy.host_address(host)
            try:
                addresses = [str(literal)] if literal is not None else self.config.resolve(host, port)
            except (OSError, UnicodeError):
                addresses = []
            reason = urlpolicy.addresses_refusal(host, addresses)
            if reason is None:
                return addresses[0]
        if reason is not None:
            raise E.UnsafeURLError(f"Refused to download an image from {_safe_url_text(url)}: {reason}")
        return None

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
        limit: int | None = None,
        what: str | None = None,
        address: str | None = None,
        stream: _StreamReader | None = None,
        pace: Mapping[str, int] | None = None,
    ) -> tuple[requests.Response, int]:
        """Send with retries. Returns a response whose body is fully read (``_content`` set), and attempts.

        ``limit``: the most bytes the answer may have (default: the config's cap); ``what`` names the answer
        in the too-large error; ``address``: connect there instead of resolving the URL's host (a download
        checked by the URL policy), naming the host for TLS and in ``Host``; ``stream``: a 200 answer of type
        ``text/event-stream`` is read by it, event by event, under the same deadline and byte limits (its body
        is not kept); a stream cut before its first completed image fails the attempt like any cut answer.
        ``pace``: the units each attempt takes from the server's rate-limit budgets (:mod:`ratelimit`): the
        attempt waits for room first, and its answer's headers update the budgets, whatever its status.
        """
        cfg = self.config
        headers = self._headers() if authenticated else {"User-Agent": cfg.user_agent}
        body: bytes | None = None
        if multipart is not None:
            body, headers["Content-Type"] = encode_multipart(multipart)
        elif json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if limit is None:
            limit = cfg.max_download_bytes if download else cfg.max_response_bytes
        target, server_hostname = _pinned(url, address, headers)
        label = what or ("the image" if download else urlsplit(url).path)
        shown = "image download" if download else urlsplit(url).path
        attempt = 0
        while True:
            attempt += 1
            retries_done = attempt - 1
            headers["X-Stainless-Retry-Count"] = str(retries_done)
            sent = self._pace(pace, on_event, attempt)
            deadline = transport.Deadline(_first_deadline(cfg, len(body or b"")))
            data: Any = None
            if body is not None:

                def report(fraction: float, attempt: int = attempt, deadline: transport.Deadline = deadline,
                           number: int | None = sent) -> None:
                    self._emit(on_event, ClientEvent("sending", f"Sending {fraction:.0%}", attempt, fraction))
                    if fraction >= 1.0:
                        if number is not None:  # the server may count it from now on (ratelimit.Pacer.observe)
                            self.pacer.uploaded(number)
                        deadline.restart(cfg.read_timeout + DEADLINE_GRACE)
                        self._emit(on_event, ClientEvent("waiting", "Waiting for the server", attempt))

                data = _ProgressBody(body, report)
                self._emit(on_event, ClientEvent("sending", f"Sending {len(body):,} bytes to {shown}", attempt, 0.0))
            else:
                kind = "downloading" if download else "waiting"
                self._emit(on_event, ClientEvent(kind, f"Requesting {shown}", attempt))
            error: E.APIError | None = None
            response: requests.Response | None = None
            answered = False  # the headers were complete before the deadline
            try:
                with deadline, transport.attempt(deadline, server_hostname):
                    response = self._http().request(
                        method, target, headers=headers, data=data,
                        timeout=(cfg.connect_timeout, cfg.read_timeout), verify=ca_bundle(), allow_redirects=False,
                        stream=True,
                    )
                    answered = not deadline.expired  # a cut head ends like an empty line: headers "done"
                    response.headers = self._untrusted_headers(response.headers)
                    if sent is not None:
                        self.pacer.observe(sent, response.headers, response.status_code)
                        sent = None
                    if stream is not None and response.status_code == 200 and _is_event_stream(response):
                        stream.read(response, deadline, attempt)
                    else:
                        self._read_body(response, limit, label, on_event, attempt, download, deadline)
            except E.ResponseTooLargeError:
                raise
            except OSError as exc:
                error = self._failure(exc, url, deadline, answered=answered)
            finally:
                if sent is not None:  # no answer came: the send is no longer outstanding
                    self.pacer.release(sent)
            if error is None and deadline.expired:  # the answer ended early because the deadline shut it
                error = self._deadline_error(url, answered=answered)
            if error is not None and response is not None:
                response.close()
            if response is not None and error is None:
                status = response.status_code
                if status < 400 or (download and status in (301, 302, 303, 307, 308)):
                    if 300 <= status < 400 and not download:
                        raise E.InvalidRequestError(
                            f"The server redirected {shown} to {_safe_url_text(response.headers.get('location', ''))}",
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
            log.info("%s %s: %s; retry %d in %.1f s", method, shown, error.code, attempt, delay)
            self._emit(
                on_event,
                ClientEvent("retry", f"{error.message.rstrip('. ')}. Retry in {delay:.0f} s (attempt {attempt + 1} "
                            f"of {cfg.max_retries + 1})", attempt + 1, delay=delay, status=error.status),
            )
            cfg.sleep(delay)

    def _pace(self, pace: Mapping[str, int] | None, on_event: EventCallback | None, attempt: int) -> int | None:
        """Wait for room in the rate-limit budgets (saying so in the progress), then count the attempt as sent."""
        if pace is None:
            return None

        def waiting(seconds: float, kind: str) -> None:
            log.info("rate limit (%s) spent; waiting %.1f s", ratelimit.describe(kind), seconds)
            self._emit(on_event, ClientEvent(
                "pacing", f"Waiting {math.ceil(seconds):.0f} s for the server's rate limit "
                          f"({ratelimit.describe(kind)})", attempt, delay=seconds))

        return self.pacer.acquire(pace, waiting)

    def _failure(self, exc: OSError, url: str, deadline: transport.Deadline, *, answered: bool) -> E.APIError:
        """The error for an attempt that raised: the deadline's timeout when it fired (its shut socket is the
        cause, whatever requests calls it), a TLS error (raised: never retried), else a transport error."""
        if deadline.expired:
            return self._deadline_error(url, answered=answered)
        if isinstance(exc, requests.exceptions.SSLError):
            raise E.TLSError(
                f"TLS verification failed for {urlsplit(url).netloc}: {_ssl_reason(self._clean(exc))}"
            ) from None
        if not isinstance(exc, requests.exceptions.RequestException):
            # e.g. requests could not open the CA bundle named in REQUESTS_CA_BUNDLE / SSL_CERT_FILE
            raise E.TLSError(f"Cannot use the CA certificates: {self._clean(exc)}") from None
        return self._transport_error(exc, url)

    def _read_body(
        self,
        response: requests.Response,
        limit: int,
        what: str,
        on_event: EventCallback | None,
        attempt: int,
        download: bool,
        deadline: transport.Deadline,
    ) -> None:
        """Read the streamed body within ``limit`` bytes and the deadline, reporting progress; leaves it in
        ``response._content``. Too large: ResponseTooLargeError (not retried: it would be as large again)."""
        declared = response.headers.get("content-length")
        total = int(declared) if declared and declared.isdigit() else None
        if total is not None and total > limit:
            response.close()
            raise E.ResponseTooLargeError(
                f"The server announced an answer of {total:,} bytes for {what}; at most {limit:,} are accepted",
                status=response.status_code, request_id=response.headers.get("x-request-id"),
            )
        kind = "downloading" if download else "receiving"
        buf = bytearray()
        last = -1.0
        for chunk in response.iter_content(_CHUNK):
            buf += chunk
            if len(buf) > limit:
                response.close()
                raise E.ResponseTooLargeError(
                    f"The server's answer for {what} is larger than the {limit:,} bytes accepted; it was not kept",
                    status=response.status_code, request_id=response.headers.get("x-request-id"),
                )
            if deadline.overdue():
                deadline.expire()
                return
            fraction = len(buf) / total if total else None
            if fraction is None or fraction - last >= 0.1:
                last = fraction if fraction is not None else last
                self._emit(on_event, ClientEvent(kind, f"Receiving {len(buf):,} bytes", attempt, fraction))
        response._content = bytes(buf)  # noqa: SLF001 - requests' documented way to hold a read body
        response._content_consumed = True  # type: ignore[attr-defined]  # noqa: SLF001

    def _untrusted(self, value: Any) -> Any:
        """The one redaction applied where server text enters the engine: the configured key (whatever its
        form: not every key starts with ``sk-``) and anything key-like become "[redacted key]", in strings
        nested at any depth. Whatever the client returns or an error carries passes through here first."""
        if isinstance(value, str):
            return E.redact(value, self.config.api_key)
        if isinstance(value, dict):
            return {self._untrusted(str(k)): self._untrusted(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._untrusted(v) for v in value]
        return value

    def _untrusted_headers(self, headers: Mapping[str, str]) -> requests.structures.CaseInsensitiveDict[str]:
        return requests.structures.CaseInsensitiveDict({k: self._untrusted(v) for k, v in headers.items()})

    def _clean(self, exc: BaseException) -> str:
        return str(self._untrusted(str(exc)))

    def _deadline_error(self, url: str, *, answered: bool) -> E.RequestTimeoutError:
        """The timeout when the deadline ended the attempt: before the headers were complete it reads like
        requests' own read timeout (a stalled server meets both at the same moment)."""
        if not answered:
            return E.RequestTimeoutError(
                f"No answer from {_safe_url_text(url)} within the read timeout of {self.config.read_timeout:g} s"
            )
        return E.RequestTimeoutError(
            f"No complete answer from {_safe_url_text(url)} within the read timeout of "
            f"{self.config.read_timeout:g} s: it was still arriving, too slowly"
        )

    def _transport_error(self, exc: OSError, url: str) -> E.APIError:
        """A plain sentence for a network failure; the library's own text (pool reprs, nested causes) never
        reaches the user."""
        text = self._clean(exc)
        if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text.lower():
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                return E.ConnectionFailedError(
                    f"Could not connect to {_safe_url_text(url)} within {self.config.connect_timeout:g} s"
                )
            return E.RequestTimeoutError(
                f"No answer from {_safe_url_text(url)} within the read timeout of {self.config.read_timeout:g} s"
            )
        return E.ConnectionFailedError(f"Connection to {_safe_url_text(url)} failed: {_network_reason(exc, text)}")

    def _error_from_response(self, response: requests.Response, model: str | None) -> E.APIError:
        return error_from_response(
            response.status_code, response.content, response.headers, model=model,
            model_rules=self.config.model_rules, secret=self.config.api_key,
        )


def _safe_url_text(url: str) -> str:
    """The URL without query string (pre-signed URLs carry tokens) for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else "(no URL)"


def _pinned(url: str, address: str | None, headers: dict[str, str]) -> tuple[str, str | None]:
    """The URL to request and the TLS server name. Unpinned: ``url`` itself. Pinned to a checked ``address``:
    the URL with that address as its host (no second DNS answer can move it), ``Host`` set to the real host,
    whose name TLS sends and verifies the certificate against."""
    if address is None:
        return url, None
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc)), host


#: Plain words for what the network libraries report, matched in their (lower-cased) text; first match wins.
_NETWORK_REASONS = (
    (("connection refused", "errno 111"), "the connection was refused (is the server running?)"),
    (("name or service not known", "failed to resolve", "name resolution", "getaddrinfo failed",
      "nodename nor servname"), "the host name could not be resolved"),
    (("network is unreachable", "no route to host"), "the network is unreachable"),
    (("connection reset", "errno 104"), "the server reset the connection"),
    (("remote end closed", "remotedisconnected", "incompleteread", "connection broken", "connection aborted",
      "response ended prematurely"), "the server closed the connection before the answer was complete"),
)


def _network_reason(exc: BaseException, text: str) -> str:
    """Why a request failed, in a sentence: the libraries' text (pool reprs, nested causes) is not for people."""
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return "the server's compressed answer could not be decompressed"
    lowered = text.lower()
    for needles, reason in _NETWORK_REASONS:
        if any(needle in lowered for needle in needles):
            return reason
    return f"a network error ({type(exc).__name__})"


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
        return json.loads(response.content)  # bytes: no second, decoded copy of an answer of up to the cap
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise E.MalformedResponseError(
            f"The server's answer is not JSON (HTTP {response.status_code}, "
            f"{response.headers.get('content-type', 'no content type')})",
            status=response.status_code, request_id=response.headers.get("x-request-id"),
        ) from None


_STREAM_FIELDS = frozenset({"stream", "partial_images"})


def _is_event_stream(response: requests.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def _refuses_streaming(exc: E.APIError) -> bool:
    """A compatible server's "no streams here": 400 (or 422) naming ``stream`` or ``partial_images``, as the
    parameter or in the message (unknown parameter, unsupported value). Any other refusal is about the request."""
    if exc.status not in (400, 422):
        return False
    if (exc.param or "") in _STREAM_FIELDS:
        return True
    return re.search(r"\b(stream|streaming|partial_images)\b", exc.message.lower()) is not None


def _arriving(response: requests.Response) -> Iterator[bytes]:
    """The body's bytes as they arrive (at most ``_CHUNK`` at a time), whatever the framing: requests'
    ``iter_content`` waits for whole chunks of its size on a close-delimited or Content-Length body, which
    would hold a preview's last bytes back until the next event, and drops what came before a cut. The
    network libraries' exceptions become requests' own, so the attempt's error handling words them."""
    raw = response.raw
    while True:
        try:
            chunk = raw.read1(_CHUNK, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError:
            raise requests.exceptions.ReadTimeout("the read timed out") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.exceptions.ChunkedEncodingError(f"response ended prematurely: {exc}") from None
        if not chunk:
            return
        yield chunk


class _StreamReader:
    """Reads one streamed images answer (server-sent events) as it arrives, for one client call (all attempts).

    Bounds: one event at most the size of one image's answer for the family (a preview is as large as a
    result), the whole stream at most the answer of ``n`` results and their previews; previews beyond
    ``partial_images`` per image are dropped undecoded, and reading stops at the n-th completed image (the
    n-image cap). A completed event is a paid image: once one has arrived, a cut or an early end keeps it and
    reports the missing ones as problems (sending again would pay for them all again); before that, a cut,
    an end without ``completed`` or a stall fails the attempt like any cut answer, retried as usual."""

    def __init__(self, client: ImagesClient, family: caps.Family, n: int, partial_images: int,
                 on_partial: PartialCallback | None) -> None:
        self.client = client
        self.n = n
        self.partial_images = partial_images
        self.on_partial = on_partial
        self.event_limit = answer_limit(family, 1)
        self.total_limit = min(client.config.max_response_bytes, answer_limit(family, n * (1 + partial_images)))
        self.last_partial: PartialImage | None = None
        self.delivered = 0
        self.response: requests.Response | None = None
        self.result: ImagesResult | None = None
        self._completed = 0
        self._previews = 0
        self._events = 0
        self._attempt = 1
        self._decoder = sse.Decoder(self.event_limit)

    def read(self, response: requests.Response, deadline: transport.Deadline, attempt: int) -> None:
        self.response, self._attempt = response, attempt
        self.result = result = ImagesResult(images=[], request_id=response.headers.get("x-request-id"))
        self._completed = self._previews = self._events = 0
        self._decoder = sse.Decoder(self.event_limit)
        received = 0
        try:
            for chunk in _arriving(response):
                received += len(chunk)
                if received > self.total_limit:
                    response.close()
                    raise E.ResponseTooLargeError(
                        f"The server's event stream is larger than the {self.total_limit:,} bytes accepted for "
                        f"{self.n} image(s) and their previews; it was not kept",
                        status=200, request_id=result.request_id,
                    )
                for event in self._decoder.feed(chunk):
                    if self._event(event):
                        response.close()
                        return
                if deadline.overdue():
                    response.close()
                    if not self._keep_what_came("the answer did not complete within the read timeout"):
                        deadline.expire()
                    return
            self._decoder.finish()
        except sse.SSEError as exc:
            response.close()
            raise E.MalformedResponseError(
                f"The server's event stream is malformed: {exc}", status=200, request_id=result.request_id
            ) from None
        except OSError:
            if self._keep_what_came("the connection was cut"):
                return
            raise
        if not self._keep_what_came("the stream ended early"):
            # a clean end before any completed image is a cut answer: the attempt fails and is retried
            raise requests.exceptions.ChunkedEncodingError("response ended prematurely")

    def _keep_what_came(self, why: str) -> bool:
        """After the stream stopped short: True (and the missing images noted) when a completed image came."""
        assert self.result is not None
        if not self._completed:
            return False
        if self._completed < self.n:
            self.result.problems.append(f"{why} after {self._completed} of the {self.n} images")
        return True

    def _event(self, event: sse.Event) -> bool:
        """Handle one event; True when the answer is complete (n completed images, or ``[DONE]``)."""
        assert self.result is not None
        self._events += 1
        number = self._events
        if event.data.strip() == "[DONE]":
            return True
        try:
            payload = json.loads(event.data)
        except (ValueError, RecursionError):
            raise E.MalformedResponseError(
                f"The server's event stream is malformed: event {number} is not JSON", status=200,
                request_id=self.result.request_id,
            ) from None
        if not isinstance(payload, dict):
            raise E.MalformedResponseError(
                f"The server's event stream is malformed: event {number} is not a JSON object", status=200,
                request_id=self.result.request_id,
            )
        if event.name == "error" or payload.get("type") == "error" or payload.get("error") is not None:
            raise self._stream_error(payload)
        kind = payload.get("type") if isinstance(payload.get("type"), str) else event.name
        if kind in PARTIAL_EVENTS:
            self._partial(payload)
            return False
        if kind in COMPLETED_EVENTS:
            self._completed += 1
            self._completed_image(payload)
            return self._completed >= self.n
        log.debug("ignored stream event of type %r", self.client._untrusted(str(kind))[:80])
        return False

    def _stream_error(self, payload: dict[str, Any]) -> E.APIError:
        """An error event in the stream (openai-python raises it as an API error; it is not retried)."""
        found = payload.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else payload
        etype = str(error.get("type") or "")
        status = 500 if "server" in etype or str(error.get("code") or "") == "server_error" else 400
        assert self.result is not None
        exc = error_from_response(
            status, json.dumps({"error": error}).encode(), {"x-request-id": self.result.request_id or ""},
            model=None, model_rules=self.client.config.model_rules, secret=self.client.config.api_key,
        )
        exc.message = f"The server reported an error during the stream: {exc.message}"
        exc.status = 200
        return exc

    def _image_bytes(self, payload: dict[str, Any]) -> tuple[bytes, str]:
        text = payload.get("b64_json")
        if not isinstance(text, str):
            raise ValueError("no b64_json")
        data = _decode_b64(text)
        mimetype = sniff_mimetype(data)
        if mimetype is None:
            raise ValueError("the data is not a PNG, JPEG or WebP image")
        if not _looks_complete(data, mimetype):
            raise ValueError("the image is truncated")
        return data, mimetype

    def _completed_image(self, payload: dict[str, Any]) -> None:
        assert self.result is not None
        result, label = self.result, f"image {self._completed}"
        for key, name in (("created_at", "created"), ("size", "size"), ("quality", "quality"),
                          ("background", "background"), ("output_format", "output_format"), ("usage", "usage")):
            if key in payload:
                result.meta[name] = self.client._untrusted(payload[key])
        try:
            data, mimetype = self._image_bytes(payload)
        except ValueError as exc:
            result.problems.append(f"{label}: {exc}")
            return
        revised = payload.get("revised_prompt") if isinstance(payload.get("revised_prompt"), str) else None
        result.images.append(ReturnedImage(data=data, index=self._completed - 1, mimetype=mimetype,
                                           revised_prompt=self.client._untrusted(revised) if revised else None))

    def _partial(self, payload: dict[str, Any]) -> None:
        assert self.result is not None
        self._previews += 1
        if self._previews > self.partial_images * self.n:  # not asked for: dropped undecoded
            return
        try:
            data, mimetype = self._image_bytes(payload)
        except ValueError as exc:
            note = f"A preview from the server was skipped ({exc}); previews are not results, nothing is lost."
            if note not in self.result.warnings:
                self.result.warnings.append(note)
            return
        index = payload.get("partial_image_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 100 else (
            self._previews - 1)
        self.delivered += 1
        self.last_partial = PartialImage(data=data, index=index, image=self._completed, sequence=self.delivered,
                                         mimetype=mimetype, attempt=self._attempt)
        if self.on_partial is not None:
            try:
                self.on_partial(self.last_partial)
            except Exception:  # noqa: BLE001 - a broken preview display must not cost a paid request
                log.debug("preview callback failed", exc_info=True)


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
    param, code, etype, request_id = (
        E.redact(value, secret) if value else None for value in (param, code, etype, headers.get("x-request-id"))
    )
    kwargs: dict[str, Any] = dict(status=status, request_id=request_id, param=param, server_code=code or etype)
    lowered = message.lower()
    if code == "moderation_blocked" or "safety system" in lowered:
        return E.ModerationBlockedError(message, **kwargs)
    if code == "insufficient_quota":
        return E.QuotaExceededError(message, **kwargs)
    if status == 401 or code == "invalid_api_key":
        return E.AuthenticationError(message, **kwargs)
    if status == 403:
        return E.PermissionDeniedError(message, **kwargs)
    if code == "model_not_found" or (status == 404 and model and model in message) or _no_such_model(
        status, code, param, message
    ):
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


def _no_such_model(status: int, code: str | None, param: str | None, message: str) -> bool:
    """The real API's answer on /images/* for a model id it does not know (or no longer serves): 400
    ``invalid_value`` on ``model``, "The model 'X' does not exist." (the 404 ``model_not_found`` is /models')."""
    return status == 400 and code == "invalid_value" and param == "model" and "does not exist" in message.lower()


#: Notice code: an optional parameter the server refused as unknown was left out (capabilities.OPTIONAL_PARAMS).
PARAM_DROPPED = "param_dropped"

_UNKNOWN_PARAM_CODES = frozenset({"unknown_parameter", "unsupported_parameter", "unrecognized_parameter"})
_UNKNOWN_PARAM_TEXT = re.compile(
    r"(?:unknown|unrecognized|unsupported|invalid)\s+(?:request\s+)?(?:parameter|param|argument|field)s?"
    r"(?:\s+supplied)?\s*:?\s*['\"`]?([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


def refused_parameter(exc: E.APIError, sent: set[str]) -> str | None:
    """The optional parameter a 400 refuses as unknown, when it is one this request sent; None otherwise (the
    refusal is about something else, or names a parameter the request cannot do without)."""
    if exc.status != 400:
        return None
    named: str | None = None
    if exc.server_code in _UNKNOWN_PARAM_CODES:
        named = exc.param
    match = _UNKNOWN_PARAM_TEXT.search(exc.message or "")
    if named is None and match:
        named = match.group(1)
    if named in caps.OPTIONAL_PARAMS and named in sent:
        return named
    return None


def _sent_names(multipart: list[tuple[str, Any]] | None, json_body: dict[str, Any] | None) -> set[str]:
    return {name for name, _value in multipart} if multipart is not None else set(json_body or {})


def _without(name: str, multipart: list[tuple[str, Any]] | None,
             json_body: dict[str, Any] | None) -> tuple[list[tuple[str, Any]] | None, dict[str, Any] | None]:
    if multipart is not None:
        return [(k, v) for k, v in multipart if k != name], json_body
    return multipart, {k: v for k, v in (json_body or {}).items() if k != name}


def _request_tokens(family: caps.Family, multipart: list[tuple[str, Any]] | None,
                    json_body: dict[str, Any] | None) -> int:
    """What this request takes from a tokens-per-minute budget (pricing.request_tokens, the one rule), read off
    the fields about to be sent: the pacer then waits until that many are back, not until none are left."""
    from . import pricing

    fields: dict[str, Any] = {}
    uploads: list[bytes] = []
    for name, value in multipart or []:
        if isinstance(value, tuple):
            if name in pricing.IMAGE_FIELDS:
                uploads.append(value[1])
        else:
            fields.setdefault(name, value)
    for name, value in (json_body or {}).items():
        if not isinstance(value, (dict, list)):
            fields.setdefault(name, value)
    return pricing.request_tokens(family, fields, uploads)


def check_markup(markup: bytes, image: bytes, mask: bytes | None, family: caps.Family, model: str) -> bytes:
    """A markup edit's layer, checked before paying: a model that takes markup, no mask beside it, a PNG the
    size of the image."""
    if not family.markup:
        takers = ", ".join(name for name, f in caps.FAMILIES.items() if f.markup)
        raise E.InvalidInputError(
            f"{model} does not take markup edits (a painted layer as instructions)",
            hint=f"Choose a model of the {takers} family, or edit with a selection instead.",
        )
    if mask is not None:
        raise E.InvalidInputError("A markup edit is sent without a mask: the painted marks say where to edit",
                                  hint="Leave out the selection (mask), or the markup layer.")
    if sniff_mimetype(markup) != "image/png":
        raise E.InvalidInputError("The markup layer must be a PNG image (transparent, with the marks painted on it)")
    check_upload_size(markup, family, "the markup layer")
    dims, image_dims = png_size(markup), png_size(image) if sniff_mimetype(image) == "image/png" else None
    if dims and image_dims and dims != image_dims:
        raise E.InvalidInputError(
            f"The markup layer is {dims[0]}x{dims[1]} but the image is {image_dims[0]}x{image_dims[1]}; "
            "they must be the same size"
        )
    return markup


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
    complexity: str | None = None,
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
        check_choice("background", background, ("transparent", "opaque", "auto"))
    if output_format is not None:
        check_choice("output_format", output_format, family.output_formats)
    if output_compression is not None:
        if isinstance(output_compression, bool) or not isinstance(output_compression, int) or not (
            0 <= output_compression <= 100
        ):
            raise E.InvalidInputError(f"output_compression must be 0 to 100; got {output_compression!r}")
        params["output_compression"] = str(output_compression)
    if response_format is not None:
        if not family.response_format:
            raise E.InvalidInputError(f"{model} always returns base64 images; response_format is not accepted")
        check_choice("response_format", response_format, ("url", "b64_json"))
        params["response_format"] = response_format
    if user is not None:
        params["user"] = str(user)
    if complexity is not None:
        if not family.complexities:
            raise E.InvalidInputError(f"{model} does not take complexity",
                                      hint="complexity is a setting of the gpt-image-2.6 models; leave it out.")
        check_choice("complexity", complexity, family.complexities)
        params["complexity"] = complexity
    return params

