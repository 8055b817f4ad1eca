"""Per-minute rate limits the way OpenAI announces them, so clients can be tested against a budget offline.

``--rate-limit IMAGES_PER_MIN`` (and ``--rate-limit-requests REQUESTS_PER_MIN``, ``--rate-limit-tokens
TOKENS_PER_MIN``) give the server token buckets
that start full and refill continuously (limit / 60 per second), as OpenAI's do: ``x-ratelimit-reset-*`` is the
time until the bucket is full again ("the time until the rate limit resets to its initial state"), written as a
Go duration (``1s``, ``6m0s``, ``120ms``). Every images answer carries ``x-ratelimit-limit-*``,
``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` for each configured limit; a request that does not fit is
answered 429 ``rate_limit_exceeded`` with ``retry-after`` (seconds until it would fit) and takes nothing; an answer
that was admitted carries the budgets as they stand when it is sent. A request's
tokens are counted when it arrives (pricing.request_tokens: its prompt, uploads, and n images at the size and
quality asked), as OpenAI counts them against TPM before the answer's ``usage`` is known.
``--rate-window SECONDS`` shortens the minute for tests (4 per 2 s: the rate of 120 a minute, a bucket of 4).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from gimp_openai.server.apierror import ApiError

WINDOW = 60.0


def go_duration(seconds: float) -> str:
    """``0.12`` -> ``120ms``, ``1`` -> ``1s``, ``360`` -> ``6m0s``, ``3723.5`` -> ``1h2m3.5s`` (Go's format)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs = round(secs, 3)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


class Bucket:
    """``limit`` units per ``window`` seconds, refilled continuously, full at start."""

    def __init__(self, kind: str, limit: int, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind, self.limit, self._clock = kind, limit, clock
        self.rate = limit / window
        self.tokens = float(limit)
        self.at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(float(self.limit), self.tokens + (now - self.at) * self.rate)
        self.at = now

    def short_by(self, units: int) -> float:
        """Seconds until ``units`` fit (0: they fit now). Call with the limiter's lock held."""
        self._refill()
        need = min(units, self.limit)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, units: int) -> None:
        self.tokens -= min(units, self.limit)

    def headers(self) -> dict[str, str]:
        self._refill()
        full_in = (self.limit - self.tokens) / self.rate if self.tokens < self.limit else 0.0
        return {
            f"x-ratelimit-limit-{self.kind}": str(self.limit),
            f"x-ratelimit-remaining-{self.kind}": str(max(0, math.floor(self.tokens))),
            f"x-ratelimit-reset-{self.kind}": go_duration(full_in),
        }


class RateLimiter:
    """The server's buckets (one per configured kind); thread-safe."""

    def __init__(self, images_per_min: int = 0, requests_per_min: int = 0, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic, tokens_per_min: int = 0) -> None:
        self._lock = threading.Lock()
        self.buckets = [Bucket(kind, limit, window, clock)
                        for kind, limit in (("requests", requests_per_min), ("images", images_per_min),
                                            ("tokens", tokens_per_min)) if limit > 0]

    @property
    def counts_tokens(self) -> bool:
        return any(bucket.kind == "tokens" for bucket in self.buckets)

    @property
    def active(self) -> bool:
        return bool(self.buckets)

    def admit(self, model: str, images: int, tokens: int = 1) -> dict[str, str]:
        """Take one request, ``images`` images and ``tokens`` tokens, returning the headers to send; 429
        (carrying the same headers) when any does not fit, taking nothing."""
        if not self.buckets:
            return {}
        units = {"requests": 1, "images": max(1, images), "tokens": max(1, tokens)}
        with self._lock:
            waits = [(bucket.short_by(units[bucket.kind]), bucket) for bucket in self.buckets]
            wait, bucket = max(waits, key=lambda pair: pair[0])
            if wait <= 0:
                for b in self.buckets:
                    b.take(units[b.kind])
                return self._headers()
            headers = self._headers()
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        per = {"images": "images per min (IPM)", "tokens": "tokens per min (TPM)"}.get(bucket.kind,
                                                                                    "requests per min (RPM)")
        used = bucket.limit - max(0, math.floor(bucket.tokens))
        raise ApiError(
            429,
            f"Rate limit reached for {model[:64]} in organization org-local on {per}: Limit {bucket.limit}, "
            f"Used {used}, Requested {units[bucket.kind]}. Please try again in {go_duration(wait)}.",
            type="requests", code="rate_limit_exceeded", headers=headers,
        )

    def current(self) -> dict[str, str]:
        """The headers as the budgets stand now: an answer that took a while to paint says what is left when it
        is sent (a client paces from the moment it reads them)."""
        with self._lock:
            return self._headers()

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for bucket in self.buckets:
            headers.update(bucket.headers())
        return headers
