"""Faults on demand: the same grammar for the ``--fault`` flag (every request) and the ``X-Fault`` header.

Grammar (whitespace around tokens is ignored)::

    X-Fault: SPEC [ , SPEC ... ]
    SPEC    = KIND [ "=" VALUE ] *( ";" NAME "=" VALUE )

KIND (what happens)                 phase      answer
--------------------------------    ---------  ----------------------------------------------------------
429                                 before     429 rate_limit_exceeded; ``retry-after`` / ``retry-after-ms``
500 | 502 | 503                     before     500 JSON server_error; 502 an HTML proxy page; 503 JSON overloaded
401                                 before     401 invalid_api_key
insufficient_quota                  before     429 insufficient_quota
moderation_blocked                  after      400 moderation_blocked (request was valid)
malformed_json                      after      200 with a JSON body cut in the middle
truncated_b64                       after      200 whose ``data[index].b64_json`` is cut (decodes to half a PNG)
wrong_size                          after      200 whose images have another size (``size=WxH``, default half)
latency=SECONDS                     delivery   sleep before answering
reset                               delivery   send headers and part of the body, then drop the connection (RST)
stall                               delivery   send headers and part of the body, then wait ``seconds`` (default
                                               30, at most 300) and close: the client's read timeout must fire
malformed_event                     delivery   streamed answers: the event after ``events`` whole events (default
                                               1) is not JSON (``data: {"type": "image_...`` cut), then the stream ends

Streamed answers (``stream: true``): ``reset`` and ``stall`` cut the stream after ``events`` whole events
(default 1: the first preview), not after ``after`` bytes; ``latency`` spreads the events over its seconds.

NAME=VALUE parameters: ``times=N`` (only the first N requests carrying this spec's key fault; later ones
succeed), ``key=K`` (the counter's name; default the spec's own text), ``retry-after=S``,
``retry-after-ms=MS``, ``should-retry=true|false`` (sends ``x-should-retry``), ``seconds=S`` (stall, latency),
``index=I`` (truncated_b64), ``size=WxH`` (wrong_size), ``after=BYTES`` (reset/stall: body bytes sent first),
``events=K`` (streams: reset/stall/malformed_event after K whole events).

Example: ``X-Fault: 503;times=2;key=test-abc`` -> the first two requests with that header get 503, the third
succeeds. Counting: a spec is counted (and its ``times`` used up) when a request carrying it passes
authentication, whatever phase the fault belongs to. ``/_stats`` shows ``seen`` and ``applied`` per key.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gimp_openai import capabilities as caps
from gimp_openai.server.apierror import ApiError
from gimp_openai.server.images import MAX_IMAGE_PIXELS

BEFORE = frozenset({"429", "500", "502", "503", "401", "insufficient_quota"})
AFTER = frozenset({"moderation_blocked", "malformed_json", "truncated_b64", "wrong_size"})
DELIVERY = frozenset({"latency", "reset", "stall", "malformed_event"})
KINDS = BEFORE | AFTER | DELIVERY
PARAMS = frozenset(
    {"times", "key", "retry-after", "retry-after-ms", "should-retry", "seconds", "index", "size", "after", "events"}
)
MAX_STALL_SECONDS = 300.0


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    value: str | None
    params: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    text: str = ""

    @property
    def key(self) -> str:
        return self.params.get("key") or self.text

    @property
    def times(self) -> int | None:
        return int(self.params["times"]) if "times" in self.params else None

    def seconds(self, default: float) -> float:
        raw = self.value if self.kind == "latency" and self.value else self.params.get("seconds")
        return min(MAX_STALL_SECONDS, float(raw)) if raw else default


class FaultSyntaxError(ValueError):
    pass


def parse_faults(text: str) -> list[FaultSpec]:
    specs = []
    for chunk in (text or "").split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        head, *rest = [piece.strip() for piece in chunk.split(";")]
        kind, _, value = head.partition("=")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise FaultSyntaxError(f"unknown fault {kind!r}; known: {', '.join(sorted(KINDS))}")
        params = {}
        for piece in rest:
            name, sep, param_value = piece.partition("=")
            name = name.strip().lower()
            if not sep or name not in PARAMS:
                raise FaultSyntaxError(f"fault parameter {piece!r}: expected one of {', '.join(sorted(PARAMS))}=VALUE")
            params[name] = param_value.strip()
        spec = FaultSpec(kind, value.strip() or None, params, chunk)
        _check_values(spec)
        specs.append(spec)
    return specs


def _check_values(spec: FaultSpec) -> None:
    """Numbers must be numbers, ``should-retry`` a boolean (it becomes a header), and ``size`` within the
    server's per-image pixel budget: the hooks must not be a way around the server's own limits."""
    try:
        _ = spec.times, spec.seconds(0.0)
        for number in ("retry-after", "retry-after-ms", "index", "after", "events"):
            if number in spec.params:
                float(spec.params[number])
    except ValueError as exc:
        raise FaultSyntaxError(f"fault {spec.text!r}: {exc}") from None
    if spec.params.get("should-retry", "true").lower() not in ("true", "false"):
        raise FaultSyntaxError(f"fault {spec.text!r}: should-retry must be true or false")
    if "size" in spec.params:
        size = caps.parse_size(spec.params["size"])
        if size is None or min(size) < 1 or size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise FaultSyntaxError(f"fault {spec.text!r}: size must be WxH with at most {MAX_IMAGE_PIXELS:,} pixels")


class FaultBook:
    """Thread-safe counters per fault key: how many requests carried it, and how many it hit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}

    def take(self, specs: list[FaultSpec]) -> list[FaultSpec]:
        """The specs that fire for this request (counting each one)."""
        firing = []
        with self._lock:
            for spec in specs:
                entry = self.counts.setdefault(spec.key, {"seen": 0, "applied": 0})
                entry["seen"] += 1
                if spec.times is None or entry["applied"] < spec.times:
                    entry["applied"] += 1
                    firing.append(spec)
        return firing

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {key: dict(value) for key, value in self.counts.items()}

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


def before_error(spec: FaultSpec, model: str) -> ApiError:
    """The error answer a ``before`` fault produces, worded like the real API's."""
    headers: dict[str, str] = {}
    if "should-retry" in spec.params:
        headers["x-should-retry"] = spec.params["should-retry"].lower()
    if spec.kind == "429":
        if "retry-after" in spec.params:
            headers["retry-after"] = spec.params["retry-after"]
        if "retry-after-ms" in spec.params:
            headers["retry-after-ms"] = spec.params["retry-after-ms"]
        wait = spec.params.get("retry-after", "1")
        return ApiError(
            429,
            f"Rate limit reached for {model or 'images'} in organization org-local on images per minute (IPM): "
            f"Limit 5, Used 5, Requested 1. Please try again in {wait}s.",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if spec.kind == "insufficient_quota":
        return ApiError(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more information on "
            "this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=headers,
        )
    if spec.kind == "401":
        return ApiError(
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
            headers=headers,
        )
    if spec.kind == "502":
        page = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>" \
               b"<hr><center>cloudflare</center></body></html>"
        return ApiError(502, "Bad Gateway", type="server_error", headers=headers, raw_body=page,
                        content_type="text/html")
    if spec.kind == "503":
        return ApiError(503, "The engine is currently overloaded, please try again later.", type="server_error",
                        headers=headers)
    return ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
        headers=headers,
    )


def moderation_error() -> ApiError:
    return ApiError(
        400,
        "Your request was rejected as a result of our safety system. Your request may contain content that is not "
        "allowed by our safety system.",
        type="image_generation_user_error",
        code="moderation_blocked",
    )
