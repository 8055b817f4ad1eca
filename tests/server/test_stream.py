"""The local server's streamed answers (a real subprocess on loopback): the contract's events and fields,
previews spread over the latency, faults in the middle of a stream, and the client reading all of it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from gimp_openai import capabilities as caps
from gimp_openai import discovery, sse
from gimp_openai import errors as E

from tests.engine._client_helpers import client_for, png
from tests.server.helpers import AUTH

CONTRACT = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "openai_images_contract.yaml")
                          .read_text())
SCHEMAS = CONTRACT["components"]["schemas"]


def read_events(response: requests.Response, started: float) -> list[tuple[float, str, dict]]:
    """(seconds since ``started``, event name, data) for every event, timed as it arrives."""
    decoder = sse.Decoder(64 * 1024 * 1024)
    seen = []
    for chunk in response.raw.stream(1024, decode_content=True):
        for event in decoder.feed(chunk):
            seen.append((time.monotonic() - started, event.name, json.loads(event.data)))
    return seen


def post_stream(server, endpoint: str, **fields):
    started = time.monotonic()
    if endpoint == "generations":
        response = requests.post(f"{server.url}/images/generations", json=fields, headers=AUTH, stream=True,
                                 timeout=60)
    else:
        files = {"image": ("i.png", png(256, 256), "image/png"),
                 "mask": ("m.png", png(256, 256, alpha_hole=True), "image/png")}
        data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
        response = requests.post(f"{server.url}/images/edits", data=data, files=files, headers=AUTH, stream=True,
                                 timeout=60)
    return response, started


def test_the_table_says_which_families_stream_as_the_contract_does():
    maximum = SCHEMAS["PartialImages"]["anyOf"][0]["maximum"]
    assert "only supported for the GPT image models" in SCHEMAS["CreateImageRequest"]["properties"]["stream"][
        "description"]
    for family in caps.FAMILIES.values():
        assert family.streams == family.gpt_params, family.name  # the GPT image families, and only they
        assert family.max_partial_images == (maximum if family.streams else 0), family.name


@pytest.mark.slow
def test_an_edit_streams_the_contract_events_spread_over_the_latency(start_local_server):
    server = start_local_server("--latency", "6")  # painting this edit takes ~1 s: inside the first 1.5 s
    post_stream(server, "edits", model="gpt-image-1", prompt="p", size="1024x1024", quality="low")[0].close()
    response, started = post_stream(server, "edits", model="gpt-image-1", prompt="p", stream=True,
                                    partial_images=3, size="1024x1024", quality="low")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response, started)
    names = [name for _, name, _ in events]
    assert names == ["image_edit.partial_image"] * 3 + ["image_edit.completed"]
    for (_, name, data), schema in zip(events, ["ImageEditPartialImageEvent"] * 3 + ["ImageEditCompletedEvent"],
                                       strict=True):
        assert data["type"] == name and set(SCHEMAS[schema]["required"]) <= set(data), (name, data.keys())
        assert data["size"] in SCHEMAS[schema]["properties"]["size"]["enum"]
    assert [data["partial_image_index"] for _, _, data in events[:3]] == [0, 1, 2]
    assert set(events[-1][2]["usage"]) >= set(SCHEMAS["ImagesUsage"]["required"])
    times = [t for t, _, _ in events]
    # from the request's arrival, painting inside: never early, and on time once the image is painted (the
    # first waits for the painting, ~1 s here, longer on a loaded machine)
    assert all(due - 0.05 <= t for t, due in zip(times, (1.5, 3.0, 4.5, 6.0), strict=True)), times
    assert times[0] <= 3.0 and all(t <= due + 0.35 for t, due in zip(times[1:], (3.0, 4.5, 6.0))), times


@pytest.mark.slow
def test_the_latency_runs_from_the_arrival_with_the_painting_inside_it(start_local_server):
    """As a real model's: a 20 s server sends the first of 3 previews at 5 s after the request arrived and the
    result at 20 s, whatever painting costs; a plain answer of 4 large images (~2 s of painting here) also comes
    at 20 s, not 22; listing the models takes no model time at all. All three at once, timed on loopback."""
    server = start_local_server("--latency", "20")
    timed: dict[str, object] = {}

    def stream() -> None:
        response, started = post_stream(server, "edits", model="gpt-image-1", prompt="p", stream=True,
                                        partial_images=3, size="1024x1024", quality="low")
        timed["stream"] = [(t, name) for t, name, _ in read_events(response, started)]

    def plain() -> None:
        started = time.monotonic()
        answer = requests.post(f"{server.url}/images/generations", headers=AUTH, timeout=60,
                               json={"model": "gpt-image-2", "prompt": "p", "n": 4, "size": "1536x1024",
                                     "quality": "low"})
        timed["plain"] = (time.monotonic() - started, answer.status_code, len(answer.json()["data"]))

    workers = [threading.Thread(target=stream), threading.Thread(target=plain)]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    listed = requests.get(f"{server.url}/models", headers=AUTH, timeout=30)
    timed["models"] = time.monotonic() - started
    for worker in workers:
        worker.join(60)
    assert listed.status_code == 200 and timed["models"] < 1.0, timed
    events = timed["stream"]
    assert [name for _, name in events] == ["image_edit.partial_image"] * 3 + ["image_edit.completed"], events
    for (t, _), due in zip(events, (5.0, 10.0, 15.0, 20.0), strict=True):
        assert due - 0.05 <= t <= due + 0.5, events
    seconds, status, count = timed["plain"]
    assert status == 200 and count == 4 and 19.95 <= seconds <= 21.0, timed  # not 20 s + the painting
    painted = [r for r in server.stats()["requests"] if r["path"].endswith("/generations")][-1]["seconds"]
    assert painted > 0.5, painted  # it did paint for a while, inside the 20 s


def test_a_late_painting_leaves_previews_out_rather_than_delay_the_result(start_local_server):
    """Four 1536x1024 images with 3 previews each cost the server more than the 0.5 s it may take: the previews
    whose image is already due are left out, and the stream ends about when a plain answer would."""
    server = start_local_server("--latency", "0.5")
    response, started = post_stream(server, "generations", model="gpt-image-2", prompt="p", n=4, stream=True,
                                    partial_images=3, size="1536x1024", quality="low")
    events = read_events(response, started)
    names = [name for _, name, _ in events]
    assert names.count("image_generation.completed") == 4 and names.count("image_generation.partial_image") < 12
    assert all(data["b64_json"] for _, _, data in events)
    started = time.monotonic()
    requests.post(f"{server.url}/images/generations", headers=AUTH, timeout=60,
                  json={"model": "gpt-image-2", "prompt": "p", "n": 4, "size": "1536x1024", "quality": "low"})
    plain = time.monotonic() - started
    assert events[-1][0] <= plain + 0.5, (events[-1][0], plain)


def test_several_images_stream_one_after_another(local_server):
    response, started = post_stream(local_server, "generations", model="gpt-image-2", prompt="p", n=2,
                                     stream=True, partial_images=1, size="1024x1024", quality="low")
    names = [name for _, name, _ in read_events(response, started)]
    assert names == ["image_generation.partial_image", "image_generation.completed"] * 2


def test_a_family_without_streams_is_refused_like_the_api(local_server):
    answer = requests.post(f"{local_server.url}/images/generations", headers=AUTH, timeout=30,
                           json={"model": "dall-e-2", "prompt": "p", "stream": True})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unknown_parameter"
    assert answer.json()["error"]["param"] == "stream"


def faulty(server, fault: str, **overrides):
    headers = {"X-Fault": f"{fault};key={uuid.uuid4().hex}"}
    return client_for(server.url, extra_headers=headers, **overrides)


def generate(client, previews: list, **kwargs):
    values = dict(model="gpt-image-1", prompt="a kite", size="1024x1024", quality="low", partial_images=2,
                  on_partial=previews.append)
    values.update(kwargs)
    return client.generate(**values)


def test_a_reset_after_the_first_preview_is_retried_and_the_run_completes(local_server):
    previews: list = []
    sleeps: list = []
    result = generate(faulty(local_server, "reset;times=1", sleeps=sleeps), previews)
    assert len(result.images) == 1 and result.ok and sleeps == [0.5]
    assert [(p.attempt, p.index) for p in previews] == [(1, 0), (2, 0), (2, 1)]


def test_a_stall_ends_in_the_read_timeout_and_the_error_carries_the_preview(local_server):
    previews: list = []
    started = time.monotonic()
    with pytest.raises(E.RequestTimeoutError) as caught:
        generate(faulty(local_server, "stall;seconds=30", read_timeout=4.0, max_retries=0), previews)
    assert time.monotonic() - started < 12
    assert caught.value.partial_preview is not None and caught.value.partial_preview.data == previews[-1].data


def test_a_malformed_event_is_a_clear_error(local_server):
    with pytest.raises(E.MalformedResponseError, match="event 2 is not JSON") as caught:
        generate(faulty(local_server, "malformed_event"), [])
    assert caught.value.partial_preview is not None


def test_a_server_without_streams_gets_a_plain_request_once(start_local_server):
    server = start_local_server("--no-streaming")
    previews: list = []
    result = generate(client_for(server.url), previews)
    assert len(result.images) == 1 and previews == [] and "does not stream" in result.warnings[0]
    assert discovery.streaming_refused(server.url)
    generate(client_for(server.url), previews)
    statuses = [r["status"] for r in server.stats()["requests"] if r["path"].endswith("/generations")]
    assert statuses == [400, 200, 200]  # one refusal, then plain at once
