"""Pace requests to the rate limit a server announces, instead of running into 429s.

OpenAI answers every request with its budget (https://platform.openai.com/docs/guides/rate-limits, "Rate limits
in headers"): ``x-ratelimit-limit-requests: 60``, ``x-ratelimit-remaining-requests: 59``,
``x-ratelimit-reset-requests: 1s`` (the time until the budget is back to its initial state, a Go duration such
as ``1s``, ``6m0s``, ``12ms``, ``1h2m3.5s``) and the same three for ``-tokens``; image models also carry
``-images`` (images per minute). A batch sent at full concurrency spends the budget in its first seconds and then
collects 429s, each retried after ``retry-after`` with no regard for the other items.

One :class:`Pacer` per base URL in the process (:func:`pacer_for`), shared by every item of a batch: before a
request is sent it takes its units (1 request, n images, and its estimated tokens: pricing.request_tokens, the
prompt, the uploads and n images at the size and quality asked) from what the last answer said remains, less
what was sent since; when a budget has less than the request needs it waits until the units it needs are back
(at the rate the answer implies, or at the reset for a server that refills all at once), then goes on: a
request of 4,000 tokens does not go with 3,000 left only to be answered 429. An answer read out of order
(an older request's) never overwrites newer knowledge. Without headers nothing is paced, and a
429 with ``retry-after`` is still retried by the client as before: the pacer only makes it rare.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

KINDS = ("requests", "images", "tokens")
#: A reset longer than this is not waited for: the request goes, and a 429 is handled by the retry rules.
MAX_WAIT = 300.0
#: Waits shorter than this are not waited (the clock's resolution; a rounding step must not loop).
MIN_WAIT = 0.001
#: With a budget spent, its reset passed and answers still outstanding, wait this long at most for one of them.
OUTSTANDING_WAIT = 1.0

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | None) -> float | None:
    """Seconds from a reset value: a Go duration (``1s``, ``6m0s``, ``12ms``, ``1h2m3.5s``) or a bare number of
    seconds (``20``, ``0.5``); None for anything else (a negative, empty, or unknown value)."""
    if text is None:
        return None
    value = text.strip().lower()
    if not value or len(value) > 64:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    total, at = 0.0, 0
    for match in _DURATION.finditer(value):
        if match.start() != at:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        at = match.end()
    return total if at == len(value) and at > 0 else None


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if not value.isdigit() or len(value) > 18:
        return None
    return int(value)


@dataclass(frozen=True)
class Reading:
    """What one answer said about one budget (any part may be missing)."""

    limit: int | None
    remaining: int | None
    reset: float | None


def read_headers(headers: Mapping[str, str]) -> dict[str, Reading]:
    """The budgets an answer announces, by kind (requests, images, tokens); kinds it does not mention are absent."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    found: dict[str, Reading] = {}
    for kind in KINDS:
        reading = Reading(
            _count(lowered.get(f"x-ratelimit-limit-{kind}")),
            _count(lowered.get(f"x-ratelimit-remaining-{kind}")),
            parse_duration(lowered.get(f"x-ratelimit-reset-{kind}")),
        )
        if reading != Reading(None, None, None):
            found[kind] = reading
    return found


@dataclass
class _Budget:
    limit: int | None = None
    remaining: int | None = None  # as the newest answer said, less what was sent after that answer's request
    reset_at: float = 0.0
    seen: int = -1  # the send number of the request whose answer set this
    at: float = 0.0  # when that answer was read
    rate: float | None = None  # units regained per second, read from the answer (continuous refill)
    window: bool = False  # a 429 came although the refill said there was room: wait for the whole reset


class Pacer:
    """The shared budgets of one server. ``acquire`` before each attempt, then ``observe`` its answer's headers
    (or ``release`` when there was none). Thread-safe; ``clock`` and ``waiter`` (how a wait is spent, with the
    lock's condition) are injectable, so tests assert waits without sleeping.

    OpenAI's budgets refill continuously ("60 requests a minute, 59 left, reset 1s" is one request a second),
    so the rate is read from the answer, ``(limit - remaining) / reset``, and a spent budget waits for just the
    units it needs. A server whose budget comes back only at the end of its window shows up as a 429 that came
    although the rate said there was room: that budget then waits for its whole reset."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_wait: float = MAX_WAIT,
                 waiter: Callable[[threading.Condition, float], object] | None = None) -> None:
        self._clock = clock
        self._waiter = waiter or (lambda cond, seconds: cond.wait(seconds))
        self._cond = threading.Condition()
        self._budgets: dict[str, _Budget] = {}
        self._sent = 0
        self._outstanding: dict[int, dict[str, int]] = {}
        self._uploaded: dict[int, int] = {}  # send number -> the order its request body was fully sent in
        self._uploads = 0
        self.max_wait = max_wait
        self.waited = 0.0  # seconds spent waiting in total (figures, tests)

    def acquire(self, units: Mapping[str, int], on_wait: Callable[[float, str], None] | None = None) -> int:
        """Wait until the budgets have room for ``units`` (or until waiting makes no sense), then count them as
        sent. Returns the send number to hand to :meth:`observe` / :meth:`release`."""
        with self._cond:
            told = False
            while True:
                wait, kind = self._wait_for(units)
                if wait < MIN_WAIT or wait > self.max_wait:
                    break
                if on_wait is not None and not told:
                    told = True
                    self._cond.release()
                    try:
                        on_wait(wait, kind)
                    finally:
                        self._cond.acquire()
                    continue  # the budgets may have changed meanwhile
                started = self._clock()
                self._waiter(self._cond, wait)
                self.waited += max(0.0, self._clock() - started)
            self._sent += 1
            number = self._sent
            self._outstanding[number] = dict(units)
            for name, budget in self._budgets.items():
                if budget.remaining is not None:
                    budget.remaining -= units.get(name, 0)
            return number

    def observe(self, number: int, headers: Mapping[str, str], status: int = 200) -> None:
        """An answer to send ``number`` arrived with ``headers``: adopt what it says unless a later send's answer
        was seen already, less the units of the requests still outstanding that the server may not have counted
        yet (sent after it, or sent before it but whose body was not all sent before its own)."""
        readings = read_headers(headers)
        with self._cond:
            self._outstanding.pop(number, None)
            mine = self._uploaded.pop(number, None)
            # what the server may not have counted when it answered: the sends after this one, and those before
            # it whose body was not all sent before this one's (threads race; a server counts a request once it
            # has read it). A body sent earlier was counted: counting it again would wait for nothing.
            pending = {kind: sum(u.get(kind, 0) for n, u in self._outstanding.items()
                                 if n > number or mine is None or self._uploaded.get(n, mine + 1) > mine)
                       for kind in readings}
            now = self._clock()
            for kind, reading in readings.items():
                budget = self._budgets.setdefault(kind, _Budget())
                if status == 429 and reading.remaining == 0 and budget.rate:
                    budget.window = True
                if number < budget.seen:
                    continue
                budget.seen, budget.at = number, now
                if reading.limit is not None:
                    budget.limit = reading.limit
                if reading.remaining is not None:
                    budget.remaining = reading.remaining - pending[kind]
                if reading.reset is not None:
                    budget.reset_at = now + reading.reset
                budget.rate = None
                if (budget.limit is not None and reading.remaining is not None and reading.reset
                        and reading.remaining < budget.limit):
                    budget.rate = (budget.limit - reading.remaining) / reading.reset
            self._cond.notify_all()

    def uploaded(self, number: int) -> None:
        """Send ``number``'s request body is all sent: from now on the server may count it (see observe)."""
        with self._cond:
            if number in self._outstanding:
                self._uploads += 1
                self._uploaded[number] = self._uploads

    def delay(self, units: Mapping[str, int]) -> float:
        """Seconds a request of ``units`` would wait now (nothing is sent or counted)."""
        with self._cond:
            return self._wait_for(units)[0]

    def release(self, number: int) -> None:
        """Send ``number`` ended without an answer (a connection error): it no longer counts as outstanding.
        Its units stay spent: the server may have counted it."""
        with self._cond:
            self._outstanding.pop(number, None)
            self._uploaded.pop(number, None)
            self._cond.notify_all()

    def _wait_for(self, units: Mapping[str, int]) -> tuple[float, str]:
        """Seconds to wait before ``units`` fit (0: send now), and the kind that is short."""
        now = self._clock()
        longest, short = 0.0, ""
        for kind, need in units.items():
            budget = self._budgets.get(kind)
            if budget is None or budget.remaining is None or need <= 0:
                continue
            if budget.limit is not None:
                need = min(need, budget.limit)  # a request larger than the whole budget waits for a full one only
            if budget.rate and not budget.window:
                have = budget.remaining + (now - budget.at) * budget.rate
                if have >= need - 1e-6:
                    continue
                wait = (need - have) / budget.rate
            elif budget.remaining >= need:
                continue
            elif now < budget.reset_at:
                wait = budget.reset_at - now
            else:
                # The budget is back to its initial state, less what was sent since the answer that said so.
                if budget.limit is None:
                    budget.remaining = None
                    continue
                sent_since = sum(u.get(kind, 0) for n, u in self._outstanding.items() if n > budget.seen)
                budget.remaining = budget.limit - sent_since
                budget.reset_at = now
                if budget.remaining >= need or not self._outstanding:
                    continue  # room, or nobody will tell us more: send, and let the server answer
                wait = OUTSTANDING_WAIT
            if wait > longest:
                longest, short = wait, kind
        return longest, short

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """The budgets as known now (for logs and tests)."""
        with self._cond:
            now = self._clock()
            return {kind: {"limit": b.limit, "remaining": b.remaining, "reset_in": max(0.0, b.reset_at - now)}
                    for kind, b in self._budgets.items()}


_PACERS: dict[str, Pacer] = {}
_LOCK = threading.Lock()


def pacer_for(base_url: str) -> Pacer:
    """The process's one pacer for ``base_url`` (trailing slashes ignored)."""
    key = base_url.rstrip("/")
    with _LOCK:
        pacer = _PACERS.get(key)
        if pacer is None:
            pacer = _PACERS[key] = Pacer()
        return pacer


def describe(kind: str) -> str:
    return {"requests": "requests per minute", "images": "images per minute", "tokens": "tokens per minute"}.get(
        kind, kind)
