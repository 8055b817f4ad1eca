"""Retries as openai-python does them, counted on a real server; waits asserted, never slept."""

from __future__ import annotations

import email.utils
import time

import pytest
from gimp_openai import errors as E
from gimp_openai.client import parse_retry_after, retry_delay, should_retry

from tests.engine._client_helpers import client_for, images_answer, png
from tests.support.wire_server import Reply, WireServer

OK = Reply.json(images_answer(png(4, 4)))


def run(script, **overrides):
    sleeps: list[float] = []
    with WireServer(script) as server:
        client = client_for(server.url, sleeps=sleeps, **overrides)
        try:
            outcome = client.generate(model="gpt-image-2", prompt="x")
        except E.GimpOpenAIError as exc:
            outcome = exc
        return outcome, len(server.requests), sleeps, server.requests


@pytest.mark.parametrize(
    "first, expected_wait",
    [
        (Reply.error(429, "slow down", headers={"retry-after": "2"}), 2.0),
        (Reply.error(429, "slow down", headers={"retry-after-ms": "1500"}), 1.5),
        (Reply.error(429, "slow", headers={"retry-after-ms": "250", "retry-after": "9"}), 0.25),  # -ms wins
        (Reply.error(500, "boom"), 0.5),  # backoff base (rand -> no jitter)
        (Reply.error(502, "bad gateway"), 0.5),
        (Reply.error(503, "unavailable"), 0.5),
        (Reply.error(408, "timeout"), 0.5),
        (Reply.error(409, "conflict"), 0.5),
        (Reply.error(429, "slow", headers={"retry-after": "600"}), 0.5),  # > 60 s: not trusted, backoff instead
        (Reply.error(400, "odd", headers={"x-should-retry": "true"}), None),  # 400 never retried
        (Reply(200, {"Content-Type": "application/json"}, b'{"data": [', action="close_mid_body"), 0.5),
        (Reply(action="close"), 0.5),
    ],
)
def test_retried_once_then_success(first, expected_wait):
    outcome, count, sleeps, _ = run([first, OK])
    if expected_wait is None:
        assert isinstance(outcome, E.InvalidRequestError) and count == 1 and sleeps == []
    else:
        assert not isinstance(outcome, Exception), outcome
        assert count == 2 and sleeps == [pytest.approx(expected_wait)]


def test_retry_count_header_and_exponential_backoff_then_give_up():
    outcome, count, sleeps, requests = run([Reply.error(500, "boom")] * 5, max_retries=3)
    assert isinstance(outcome, E.ServerError) and outcome.status == 500 and outcome.retries == 3
    assert count == 4 and sleeps == [0.5, 1.0, 2.0]
    assert [r.headers["x-stainless-retry-count"] for r in requests] == ["0", "1", "2", "3"]


def test_backoff_capped_and_jittered():
    assert retry_delay(10, {}, rand=lambda: 0.0) == 8.0
    assert retry_delay(0, {}, rand=lambda: 1.0) == pytest.approx(0.375)  # up to 25 % less


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"Retry-After": when}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_x_should_retry_false_stops_a_retryable_status():
    outcome, count, sleeps, _ = run([Reply.error(503, "no", headers={"x-should-retry": "false"}), OK])
    assert isinstance(outcome, E.ServerError) and count == 1 and sleeps == []


def test_x_should_retry_true_retries_an_otherwise_final_status():
    assert should_retry(418, {"x-should-retry": "true"}, None)
    assert not should_retry(418, {}, None)


@pytest.mark.parametrize(
    "reply, error_class",
    [
        (Reply.error(400, "bad", param="prompt"), E.InvalidRequestError),
        (Reply.error(401, "Incorrect API key provided", code="invalid_api_key"), E.AuthenticationError),
        (Reply.error(403, "not allowed"), E.PermissionDeniedError),
        (Reply.error(429, "You exceeded your current quota", code="insufficient_quota",
                     headers={"x-should-retry": "true"}), E.QuotaExceededError),
        (Reply.error(404, "The model `gpt-image-1` does not exist", code="model_not_found"), E.ModelNotFoundError),
        (Reply.error(400, "The model `dall-e-3` has been deprecated", code="model_not_found"), E.ModelNotFoundError),
        (Reply.error(400, "Your request was rejected by the safety system", code="moderation_blocked"),
         E.ModerationBlockedError),
        (Reply.error(400, "Invalid size", param="size"), E.UnsupportedSizeError),
        (Reply.error(413, "too big"), E.FileTooLargeError),
        (Reply.error(404, "Not found"), E.EndpointNotFoundError),
    ],
)
def test_never_retried(reply, error_class):
    outcome, count, sleeps, _ = run([reply, OK, OK])
    assert type(outcome) is error_class
    assert count == 1 and sleeps == []
    assert outcome.status == reply.status and outcome.retries == 0


def test_error_carries_server_message_request_id_param_code():
    reply = Reply.error(400, "Invalid value for size", code="invalid_value", param="size",
                        headers={"x-request-id": "req_123"})
    outcome, *_ = run([reply])
    assert isinstance(outcome, E.UnsupportedSizeError)
    assert outcome.message == "Invalid value for size"
    assert (outcome.request_id, outcome.param, outcome.server_code) == ("req_123", "size", "invalid_value")
    assert outcome.hint


def test_model_not_found_names_the_model():
    outcome, *_ = run([Reply.error(404, "The model `gpt-image-2` does not exist or you do not have access")])
    assert isinstance(outcome, E.ModelNotFoundError) and outcome.model == "gpt-image-2"


def test_rate_limit_after_retries():
    outcome, count, sleeps, _ = run([Reply.error(429, "busy", headers={"retry-after": "1"})] * 3)
    assert isinstance(outcome, E.RateLimitError) and count == 3 and sleeps == [1.0, 1.0]


def test_read_timeout_then_retry_then_success():
    sleeps: list[float] = []
    with WireServer([Reply(action="stall"), OK]) as server:
        result = client_for(server.url, sleeps=sleeps, read_timeout=1.0).generate(model="gpt-image-2", prompt="x")
        assert len(result.images) == 1 and len(server.requests) == 2 and sleeps == [0.5]


def test_read_timeout_gives_up_with_timeout_error():
    with WireServer([Reply(action="stall")] * 2) as server:
        with pytest.raises(E.RequestTimeoutError) as info:
            client_for(server.url, read_timeout=0.2, max_retries=1).generate(model="gpt-image-2", prompt="x")
        assert "read timeout" in info.value.message and len(server.requests) == 2


def test_connection_refused_is_connection_failed():
    with WireServer() as server:
        url = server.url
    events: list = []
    with pytest.raises(E.ConnectionFailedError) as info:
        client_for(url, events=events).generate(model="gpt-image-2", prompt="x")
    assert info.value.retries == 2
    retries = [e for e in events if e.kind == "retry"]
    assert [e.attempt for e in retries] == [2, 3] and "Retry in" in retries[0].message


def test_url_download_retried_like_the_api():
    image = png(4, 4)
    with WireServer() as server:
        server.push(Reply.json({"created": 1, "data": [{"url": server.origin + "/f.png"}]}),
                    Reply.error(503, "later"), Reply(200, {}, image))
        sleeps: list[float] = []
        result = client_for(server.url, sleeps=sleeps).variation(model="dall-e-2", image=png(8, 8))
        assert result.images[0].data == image and len(server.requests) == 3 and sleeps == [0.5]
