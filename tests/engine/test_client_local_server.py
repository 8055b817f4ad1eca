"""The client and discovery against the product's own local server (a real subprocess on loopback)."""

from __future__ import annotations

import datetime as dt
import io
import uuid

import pytest
from gimp_openai import discovery as D
from gimp_openai import errors as E
from gimp_openai import settings as S
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import client_for, png


def fault_client(server, fault: str | None, sleeps: list | None = None, **overrides):
    headers = {"X-Fault": f"{fault};key={uuid.uuid4().hex}"} if fault else {}
    return client_for(server.url, sleeps=sleeps, extra_headers=headers, **overrides)


def endpoint_requests(server, endpoint: str) -> list[dict]:
    return [r for r in server.stats()["requests"] if r.get("path", "").endswith(endpoint)]


def test_models_listed_and_default_chosen(local_server):
    models = D.list_image_models(client_for(local_server.url), S.Settings(base_url=local_server.url))
    ids = {m.id for m in models.models}
    assert {"gpt-image-2", "gpt-image-1.5", "dall-e-2"} <= ids and "whisper-1" not in ids
    assert models.get("gpt-image-2").family == "gpt-image-2" and models.get("dall-e-2").family == "dall-e-2"
    assert D.choose_default_model(models, None, "edit") == "gpt-image-2.6-sunburst"  # the newest alias


def test_edit_round_trip(local_server):
    image, mask = png(1024, 1024, (10, 120, 200, 255)), png(1024, 1024, alpha_hole=True)
    result = client_for(local_server.url).edit(model="gpt-image-2", prompt="a red kite", image=image, mask=mask,
                                               n=2, size="1024x1024", quality="low")
    assert len(result.images) == 2 and result.ok and result.request_id
    for returned in result.images:
        assert Image.open(io.BytesIO(returned.data)).size == (1024, 1024)
    (seen,) = endpoint_requests(local_server, "/images/edits")
    assert seen["status"] == 200
    assert FAKE_KEY not in str(local_server.stats())


def test_dall_e_2_variation_by_url_is_downloaded(local_server):
    result = client_for(local_server.url).variation(model="dall-e-2", image=png(256, 256), n=2, size="256x256",
                                                    response_format="url")
    assert len(result.images) == 2 and all(r.mimetype == "image/png" for r in result.images)


@pytest.mark.parametrize(
    "fault, expected_error, attempts, waits",
    [
        ("503;times=2", None, 3, [0.5, 1.0]),
        ("429;times=1;retry-after=2", None, 2, [2.0]),
        ("429;times=1;retry-after-ms=1500", None, 2, [1.5]),
        ("500;times=1", None, 2, [0.5]),
        ("reset;times=1", None, 2, [0.5]),
        ("429;retry-after=1", E.RateLimitError, 3, [1.0, 1.0]),
        ("insufficient_quota", E.QuotaExceededError, 1, []),
        ("401", E.AuthenticationError, 1, []),
        ("moderation_blocked", E.ModerationBlockedError, 1, []),
        ("malformed_json", E.MalformedResponseError, 1, []),
        ("503;should-retry=false", E.ServerError, 1, []),
    ],
)
def test_fault_matrix(local_server, fault, expected_error, attempts, waits):
    sleeps: list[float] = []
    client = fault_client(local_server, fault, sleeps)
    if expected_error is None:
        assert len(client.generate(model="gpt-image-2", prompt="x", quality="low").images) == 1
    else:
        with pytest.raises(expected_error) as info:
            client.generate(model="gpt-image-2", prompt="x", quality="low")
        assert FAKE_KEY not in str(info.value)
    assert len(endpoint_requests(local_server, "/images/generations")) == attempts
    assert sleeps == waits


def test_stall_hits_the_read_timeout(local_server):
    # Only the timeout itself here: how long the server takes to render on a busy machine is not ours to
    # bound, so "timeout, then retry, then success" is tested against the wire server, which answers at once.
    client = fault_client(local_server, "stall;seconds=5", max_retries=0, read_timeout=0.5)
    with pytest.raises(E.RequestTimeoutError) as info:
        client.generate(model="gpt-image-2", prompt="x", quality="low")
    assert "read timeout of 0.5 s" in info.value.message


def test_truncated_b64_keeps_the_good_image(local_server):
    client = fault_client(local_server, "truncated_b64;index=1")
    result = client.generate(model="gpt-image-2", prompt="x", n=2, quality="low")
    assert [r.index for r in result.images] == [0] and len(result.problems) == 1
    assert "image 2" in result.problems[0]


def test_shut_down_model_message_and_no_retry(start_local_server):
    # the whole gpt-image-1 family gone, as on OpenAI after 2026-12-01 (a live sibling would be named first)
    shutdowns = [f"{m}=2026-12-01" for m in ("gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest")]
    server = start_local_server(*(a for s in shutdowns for a in ("--shutdown", s)),
                                "--shutdown", "gpt-image-1=2026-10-23", "--today", "2026-12-02")
    client = client_for(server.url)
    with pytest.raises(E.ModelNotFoundError) as info:
        client.edit(model="gpt-image-1.5", prompt="x", image=png(64, 64))
    assert info.value.retries == 0
    explained = D.handle_model_not_found(info.value, client, S.Settings(base_url=server.url),
                                         today=dt.date(2026, 12, 2))
    assert explained.message == ("The model `gpt-image-1.5` was shut down on 2026-12-01. "
                                 "Use `gpt-image-2.6-sunburst` instead.")
    edits = [r for r in server.stats()["requests"] if r.get("path", "").endswith("/images/edits")]
    assert len(edits) == 1
