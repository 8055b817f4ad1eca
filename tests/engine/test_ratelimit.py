"""Pacing to the rate-limit headers: the header formats OpenAI sends, read off the wire, and the waits they imply.

Waits are asserted through a fake clock (the pacer's ``waiter`` advances it), never slept. The headers and their
formats are OpenAI's (platform.openai.com/docs/guides/rate-limits, "Rate limits in headers": reset ``1s``,
``6m0s``; the community-reported ``12ms``), plus the ``-images`` variant image models carry.
"""

from __future__ import annotations

import threading

import pytest
from gimp_openai import errors as E
from gimp_openai.ratelimit import Pacer, Reading, parse_duration, read_headers
from gimp_openai.server.ratelimit import Bucket, RateLimiter, go_duration

from tests.engine._client_helpers import client_for, images_answer, png
from tests.support.wire_server import Reply, WireServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def pacer(clock: FakeClock) -> Pacer:
    return Pacer(clock=clock, waiter=clock.wait)


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("12ms", 0.012), ("1h2m3.5s", 3723.5), ("0s", 0.0), ("20", 20.0),
    ("0.5", 0.5), ("1.5s", 1.5), ("250us", 0.00025), ("2m", 120.0), (" 3s ", 3.0), ("1d", 86400.0),
    ("", None), ("soon", None), ("-1", None), ("1x", None), ("s", None), ("1s2", None), ("nan", None),
    ("inf", None), (None, None), ("9" * 70, None),
])
def test_reset_durations(text, seconds):
    got = parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("headers, expected", [
    ({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"},
     {"requests": Reading(60, 59, 1.0)}),
    ({"X-RateLimit-Limit-Tokens": "150000", "X-RateLimit-Remaining-Tokens": "149984",
      "X-RateLimit-Reset-Tokens": "6m0s"}, {"tokens": Reading(150000, 149984, 360.0)}),
    ({"x-ratelimit-limit-images": "20", "x-ratelimit-remaining-images": "0", "x-ratelimit-reset-images": "56.5s"},
     {"images": Reading(20, 0, 56.5)}),
    ({"x-ratelimit-remaining-requests": "-3", "x-ratelimit-reset-requests": "later"},
     {}),  # nothing usable: not a budget
    ({"x-ratelimit-remaining-requests": "4"}, {"requests": Reading(None, 4, None)}),
    ({"retry-after": "3"}, {}),
])
def test_headers_read(headers, expected):
    assert read_headers(headers) == expected


# --- the waits, on the wire -----------------------------------------------------------------------------------

OK = images_answer(png(4, 4))


@pytest.mark.parametrize("first_headers, n, expected_wait", [
    ({}, 1, None),  # a server without the headers: nothing is paced
    ({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "5",
      "x-ratelimit-reset-requests": "55s"}, 1, None),  # room left
    ({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "1s"}, 1, 1 / 60),  # 60 a second back: one request's worth
    ({"x-ratelimit-limit-images": "5", "x-ratelimit-remaining-images": "0",
      "x-ratelimit-reset-images": "12s"}, 1, 2.4),  # 5 images over 12 s: one image every 2.4 s
    ({"x-ratelimit-limit-images": "5", "x-ratelimit-remaining-images": "1",
      "x-ratelimit-reset-images": "8s"}, 2, 2.0),  # n=2 needs one more image: 4 over 8 s
    ({"x-ratelimit-limit-images": "20", "x-ratelimit-remaining-images": "0",
      "x-ratelimit-reset-images": "6m0s"}, 1, 18.0),
    ({"x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "0",
      "x-ratelimit-reset-tokens": "6m0s"}, 1, 1768 * 360 / 150000),  # the request's own tokens (prompt + medium)
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "120ms"}, 1, 0.12),  # no limit: reset
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20"}, 1, 20.0),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1h0m0s"}, 1, None),  # over max_wait
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, 1, None),  # unreadable
])
def test_second_request_waits_what_the_first_answer_implies(first_headers, n, expected_wait):
    clock = FakeClock()
    with WireServer([Reply.json(OK, headers=first_headers), Reply.json(images_answer(png(4, 4), png(4, 4)))]) as server:
        client = client_for(server.url)
        client.pacer = pacer(clock)
        client.generate(model="gpt-image-2", prompt="x")
        assert clock.waits == []
        client.generate(model="gpt-image-2", prompt="x", n=n)
        assert len(server.requests) == 2
    if expected_wait is None:
        assert clock.waits == []
    else:
        assert clock.waits == [pytest.approx(expected_wait, rel=1e-3)]


# --- tokens: a request waits for its own estimated tokens, not until the budget is spent -----------------------

@pytest.mark.parametrize("limit, remaining, reset, need, expected", [
    (10000, 10000, "0s", 4000, 0.0),  # a full budget
    (10000, 5000, "30s", 4000, 0.0),  # 5000 left: it fits
    (10000, 4000, "36s", 4000, 0.0),  # exactly what it needs
    (10000, 3000, "42s", 4000, 6.0),  # 1000 short at 10000 a minute (166.7 a second): 6 s
    (10000, 0, "1m0s", 4000, 24.0),  # spent: 4000 back at 166.7 a second
    (10000, 2000, "48s", 1, 0.0),  # one token's worth (before this change every request was 1)
    (10000, 0, "1m0s", 25000, 60.0),  # larger than the whole budget: waits for a full one, then goes
    (None, 100, "10s", 500, 10.0),  # no limit given, so no rate: the reset
    (None, 600, "10s", 500, 0.0),
])
def test_a_request_waits_until_its_own_tokens_are_back(limit, remaining, reset, need, expected):
    clock = FakeClock()
    p = pacer(clock)
    first = p.acquire({"requests": 1, "tokens": 1})
    headers = {"x-ratelimit-remaining-tokens": str(remaining), "x-ratelimit-reset-tokens": reset}
    if limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(limit)
    p.observe(first, headers)
    assert p.delay({"requests": 1, "tokens": need}) == pytest.approx(expected, abs=1e-3)
    p.acquire({"requests": 1, "tokens": need})
    assert sum(clock.waits) == pytest.approx(expected, abs=1e-3)


#: (request, tokens as pricing.request_tokens counts them): 1 text token for the prompt "x"; output per
#: 1024x1024 image 200 (low), 1767 (medium, also what auto is counted as), 7033 (high), scaled by pixels;
#: an upload of 512x512 is 65 + 129 (one 512 tile).
SPENT = {"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0s"}


@pytest.mark.parametrize("call, tokens", [
    (dict(kind="generate", quality="low"), 1 + 200),
    (dict(kind="generate", quality="low", n=3), 1 + 3 * 200),
    (dict(kind="generate", quality="low", size="1024x1536"), 1 + 300),
    (dict(kind="generate", quality="auto"), 1 + 1767),
    (dict(kind="generate", quality="medium", prompt="a red kite over the sea"), 5 + 1767),
    (dict(kind="generate", quality="high"), 1 + 7033),
    (dict(kind="edit", quality="low"), 1 + 194 + 50),  # auto size: the upload's, 512x512
    (dict(kind="edit", quality="low", size="1024x1024"), 1 + 194 + 200),
])
def test_the_client_paces_each_request_by_its_estimated_tokens(call, tokens):
    """The server's budget is spent (6000 tokens a minute: 100 a second); the next request waits for exactly its
    own tokens (capped at the whole budget), read off the request it is about to send."""
    clock = FakeClock()
    with WireServer([Reply.json(OK, headers=SPENT), Reply.json(OK)]) as server:
        client = client_for(server.url)
        client.pacer = pacer(clock)
        client.generate(model="gpt-image-2", prompt="x", quality="low")
        assert clock.waits == []
        kind = call.pop("kind")
        call.setdefault("prompt", "x")
        if kind == "generate":
            client.generate(model="gpt-image-2", **call)
        else:
            client.edit(model="gpt-image-2", image=png(512, 512), **call)
    assert clock.waits == [pytest.approx(min(tokens, 6000) / 100.0, rel=1e-3)]


def test_429_with_budget_headers_waits_for_the_reset_and_retries_once():
    """A 429 carrying the budget: the client's retry-after sleep as before, and the next send also waits for
    the budget; a 429 that came although the refill rate said there was room switches to waiting for the
    whole reset (a server that refills at the end of its window)."""
    clock = FakeClock()
    spent = {"x-ratelimit-limit-images": "10", "x-ratelimit-remaining-images": "0",
             "x-ratelimit-reset-images": "30s", "retry-after": "3"}
    sleeps: list[float] = []
    with WireServer([Reply.error(429, "Rate limit reached", code="rate_limit_exceeded", headers=spent),
                     Reply.json(OK)]) as server:
        client = client_for(server.url, sleeps=sleeps)
        client.pacer = pacer(clock)
        result = client.generate(model="gpt-image-2", prompt="x")
        assert result.images and len(server.requests) == 2
    assert sleeps == [3.0]
    assert clock.waits == [pytest.approx(3.0)]  # 10 over 30 s: one image back in 3 s


def test_a_429_despite_the_rate_means_the_server_refills_at_the_reset():
    clock = FakeClock()
    p = pacer(clock)
    first = p.acquire({"images": 1})
    p.observe(first, {"x-ratelimit-limit-images": "10", "x-ratelimit-remaining-images": "0",
                      "x-ratelimit-reset-images": "30s"})
    clock.now += 3.0  # the rate says one image is back
    assert p.delay({"images": 1}) == 0
    second = p.acquire({"images": 1})
    p.observe(second, {"x-ratelimit-limit-images": "10", "x-ratelimit-remaining-images": "0",
                       "x-ratelimit-reset-images": "27s"}, status=429)
    assert p.delay({"images": 1}) == pytest.approx(27.0)


def test_concurrent_sends_count_against_the_budget_and_old_answers_do_not_overwrite_new_ones():
    clock = FakeClock()
    p = pacer(clock)
    numbers = [p.acquire({"requests": 1}) for _ in range(3)]
    # the first answer says 3 left (the server counted the first only); two more were sent after it
    p.observe(numbers[0], {"x-ratelimit-limit-requests": "4", "x-ratelimit-remaining-requests": "3",
                           "x-ratelimit-reset-requests": "15s"})
    assert p.snapshot()["requests"]["remaining"] == 1
    fourth = p.acquire({"requests": 1})
    assert p.snapshot()["requests"]["remaining"] == 0
    assert p.delay({"requests": 1}) == pytest.approx(15.0)  # 1 a 15 s: a whole interval for the next
    # the third's answer (newer) arrives, then the second's (older) must not raise the budget again
    p.observe(numbers[2], {"x-ratelimit-limit-requests": "4", "x-ratelimit-remaining-requests": "1",
                           "x-ratelimit-reset-requests": "45s"})
    # 1 left, less the fourth (sent later) and the second (sent earlier, but its body is not known to have
    # reached the server before the third's: threads race), both still outstanding
    assert p.snapshot()["requests"]["remaining"] == -1
    p.observe(numbers[1], {"x-ratelimit-limit-requests": "4", "x-ratelimit-remaining-requests": "2",
                           "x-ratelimit-reset-requests": "30s"})
    assert p.snapshot()["requests"]["remaining"] == -1  # an older answer: nothing adopted
    p.release(fourth)
    assert p.snapshot()["requests"]["remaining"] == -1  # released units stay spent (the server may count them)


@pytest.mark.parametrize("uploads, remaining", [
    ((), 0),  # no body known sent: #1, #2 and #4 may all be uncounted
    ((3,), 0),  # only the answered one's
    ((1, 2, 3), 200),  # #1 and #2 were all sent before #3: the server counted them; #4 not
    ((1, 3, 2), 100),  # #2's body went after #3's: perhaps not counted
    ((1, 2, 4, 3), 200),  # #4 was sent after #3: never counted in #3's answer, whatever its upload
])
def test_an_earlier_send_counts_as_spent_unless_its_body_went_before(uploads, remaining):
    """Four sends of 100 tokens race to a budget of 400; #3's answer says 300 left. What the server had
    counted then depends on which bodies it had read: those all sent before #3's were counted."""
    clock = FakeClock()
    p = pacer(clock)
    numbers = [p.acquire({"tokens": 100}) for _ in range(4)]
    for k in uploads:
        p.uploaded(numbers[k - 1])
    p.observe(numbers[2], {"x-ratelimit-limit-tokens": "400", "x-ratelimit-remaining-tokens": "300",
                           "x-ratelimit-reset-tokens": "15s"})
    assert p.snapshot()["tokens"]["remaining"] == remaining


def test_one_pacer_per_base_url_shared_by_clients():
    from gimp_openai import ratelimit

    a = ratelimit.pacer_for("http://127.0.0.1:9/v1")
    assert ratelimit.pacer_for("http://127.0.0.1:9/v1/") is a
    assert ratelimit.pacer_for("http://127.0.0.1:10/v1") is not a
    with WireServer([Reply.json(OK)]) as server:
        assert client_for(server.url).pacer is client_for(server.url).pacer


def test_progress_says_the_client_waits_for_the_rate_limit():
    clock = FakeClock()
    events: list = []
    spent = {"x-ratelimit-limit-images": "6", "x-ratelimit-remaining-images": "0", "x-ratelimit-reset-images": "60s"}
    with WireServer([Reply.json(OK, headers=spent), Reply.json(OK)]) as server:
        client = client_for(server.url, events=events)
        client.pacer = pacer(clock)
        client.generate(model="gpt-image-2", prompt="x")
        client.generate(model="gpt-image-2", prompt="x")
    pacing = [e for e in events if e.kind == "pacing"]
    assert len(pacing) == 1 and "10 s" in pacing[0].message and "images per minute" in pacing[0].message


def test_a_request_error_without_an_answer_is_released():
    clock = FakeClock()
    with WireServer([Reply(action="close")] * 3) as server:
        client = client_for(server.url, max_retries=2)
        client.pacer = pacer(clock)
        with pytest.raises(E.GimpOpenAIError):
            client.generate(model="gpt-image-2", prompt="x")
    assert client.pacer._outstanding == {}  # noqa: SLF001 - the bookkeeping is what is tested


# --- the local server's side ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [(0, "0s"), (0.12, "120ms"), (1, "1s"), (12, "12s"), (56.5, "56.5s"),
                                           (360, "6m0s"), (3723.5, "1h2m3.5s")])
def test_server_writes_go_durations_the_client_reads(seconds, text):
    assert go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-3)


def test_server_bucket_refills_continuously_and_refuses_with_retry_after():
    clock = FakeClock()
    limiter = RateLimiter(images_per_min=6, clock=clock)
    for left in range(5, -1, -1):
        headers = limiter.admit("gpt-image-2", 1)
        assert headers["x-ratelimit-remaining-images"] == str(left)
    assert headers["x-ratelimit-reset-images"] == "1m0s"
    with pytest.raises(Exception) as refused:
        limiter.admit("gpt-image-2", 1)
    error = refused.value
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert error.headers["retry-after"] == "10" and error.headers["x-ratelimit-remaining-images"] == "0"
    clock.now += 10.0
    assert limiter.admit("gpt-image-2", 1)["x-ratelimit-remaining-images"] == "0"
    assert Bucket("images", 6, clock=clock).headers()["x-ratelimit-reset-images"] == "0s"


def test_server_counts_tokens_per_request_and_refuses_tpm_with_its_own_words():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, tokens_per_min=6000)
    assert limiter.counts_tokens and not RateLimiter(images_per_min=5).counts_tokens
    headers = limiter.admit("gpt-image-2", 1, 4000)
    assert headers["x-ratelimit-remaining-tokens"] == "2000" and headers["x-ratelimit-limit-tokens"] == "6000"
    with pytest.raises(Exception) as refused:
        limiter.admit("gpt-image-2", 1, 2500)  # 500 short at 100 a second
    error = refused.value
    assert error.status == 429 and "tokens per min (TPM): Limit 6000, Used 4000, Requested 2500" in error.message
    assert error.headers["retry-after-ms"] == "5000"
    clock.now += 5.0
    assert limiter.admit("gpt-image-2", 1, 2500)["x-ratelimit-remaining-tokens"] == "0"
