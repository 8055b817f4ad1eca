"""Streamed answers on the wire: what the client sends, how it reads hostile and broken event streams, retries,
the fallback for servers without streams, and the preview an error carries. Scripted server (wire_server)."""

from __future__ import annotations

import json

import pytest
from gimp_openai import discovery
from gimp_openai import errors as E

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import b64, client_for, png
from tests.support.wire_server import Reply, WireServer

SSE = {"Content-Type": "text/event-stream; charset=utf-8"}
FINAL = png(16, 16, (10, 200, 10, 255))


def event(kind: str, **fields) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def partial(k: int, prefix: str = "image_edit", color=(200, 10, 10, 255)) -> bytes:
    return event(f"{prefix}.partial_image", b64_json=b64(png(16, 16, color)), partial_image_index=k, size="1024x1024",
                 quality="low", background="opaque", output_format="png", created_at=1)


def completed(prefix: str = "image_edit", data: bytes = FINAL) -> bytes:
    usage = {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2,
             "input_tokens_details": {"text_tokens": 1, "image_tokens": 0}}
    return event(f"{prefix}.completed", b64_json=b64(data), size="1024x1024", quality="low", background="opaque",
                 output_format="png", created_at=2, usage=usage)


def stream(*events: bytes, action: str | None = None) -> Reply:
    return Reply(200, dict(SSE), b"".join(events), action=action)


def edit(client, previews: list, **kwargs):
    values = dict(model="gpt-image-1", prompt="p", image=png(16, 16), n=1, size="1024x1024", partial_images=2,
                  on_partial=previews.append)
    values.update(kwargs)
    return client.edit(**values)


def test_previews_arrive_in_order_and_the_completed_image_is_the_result():
    previews: list = []
    with WireServer([stream(b": keep-alive\n\n", partial(0), partial(1), completed())]) as server:
        result = edit(client_for(server.url), previews)
        parts = {p.name: p.data for p in server.requests[0].parts()}
    assert parts["stream"] == b"true" and parts["partial_images"] == b"2"
    assert [(p.index, p.image, p.sequence) for p in previews] == [(0, 0, 1), (1, 0, 2)]
    assert previews[0].data.startswith(b"\x89PNG") and previews[0].data != FINAL
    assert [i.data for i in result.images] == [FINAL] and result.ok
    assert result.meta["streamed"] is True and result.meta["usage"]["total_tokens"] == 3


def test_generation_streams_with_json_fields():
    previews: list = []
    with WireServer([stream(partial(0, "image_generation"), completed("image_generation"))]) as server:
        result = client_for(server.url).generate(model="gpt-image-2", prompt="p", partial_images=1,
                                                 on_partial=previews.append)
        body = server.requests[0].json()
    assert body["stream"] is True and body["partial_images"] == 1
    assert len(previews) == 1 and [i.data for i in result.images] == [FINAL]


def test_a_family_that_does_not_stream_is_sent_plain():
    answer = Reply.json({"created": 1, "data": [{"b64_json": b64(FINAL)}]})
    with WireServer([answer]) as server:
        client_for(server.url).edit(model="dall-e-2", prompt="p", image=png(16, 16), size="256x256",
                                    partial_images=2, on_partial=lambda p: None)
        assert "stream" not in {p.name for p in server.requests[0].parts()}


def test_a_plain_json_answer_to_a_stream_request_is_read_as_usual():
    previews: list = []
    with WireServer([Reply.json({"created": 1, "data": [{"b64_json": b64(FINAL)}]})]) as server:
        result = edit(client_for(server.url), previews)
    assert [i.data for i in result.images] == [FINAL] and previews == []


def test_a_stream_cut_before_completed_is_retried_like_a_cut_answer():
    previews: list = []
    sleeps: list = []
    cut = stream(partial(0), completed(), action="close_mid_body")  # half the body: the preview, part of the end
    with WireServer([cut, stream(partial(0), partial(1), completed())]) as server:
        result = edit(client_for(server.url, sleeps=sleeps), previews)
        assert len(server.requests) == 2
    assert sleeps == [0.5] and [i.data for i in result.images] == [FINAL]
    assert [p.attempt for p in previews] == [1, 2, 2] and [p.sequence for p in previews] == [1, 2, 3]


def test_a_clean_end_without_completed_is_a_cut_answer():
    with WireServer([stream(partial(0))] * 3) as server:
        with pytest.raises(E.ConnectionFailedError, match="closed the connection before the answer was complete"
                           ) as caught:
            edit(client_for(server.url), [])
        assert len(server.requests) == 3
    preview = caught.value.partial_preview
    assert preview is not None and preview.index == 0 and preview.data.startswith(b"\x89PNG")


def test_a_malformed_event_is_a_clear_error_and_not_retried():
    broken = b'event: image_edit.partial_image\ndata: {"type": "image_edit.partial_image", "b64_json": "iVB\n\n'
    with WireServer([stream(partial(0), broken, completed())]) as server:
        with pytest.raises(E.MalformedResponseError, match="event stream is malformed: event 2 is not JSON") as caught:
            edit(client_for(server.url), [])
        assert len(server.requests) == 1
    assert caught.value.partial_preview.index == 0
    assert "Traceback" not in caught.value.message and "JSONDecodeError" not in caught.value.message


def test_bytes_that_are_not_an_event_stream_are_a_clear_error():
    with WireServer([stream(partial(0), b"data: \xff\xfe\n\n")]) as server:
        with pytest.raises(E.MalformedResponseError, match="event 2 of the stream is not UTF-8"):
            edit(client_for(server.url), [])


def test_an_error_event_ends_the_stream_with_its_error_redacted():
    error = event("error", error={"message": f"Your request was rejected by the safety system {FAKE_KEY}",
                                  "type": "image_generation_user_error", "code": "moderation_blocked"})
    with WireServer([stream(partial(0), error)]) as server:
        with pytest.raises(E.ModerationBlockedError) as caught:
            edit(client_for(server.url), [])
        assert len(server.requests) == 1
    assert "during the stream" in caught.value.message and FAKE_KEY not in str(caught.value.to_dict())


def test_n_images_stop_at_n_and_a_cut_after_one_keeps_it():
    two = stream(partial(0), completed(), partial(0), completed(), completed())  # a third image nobody asked for
    with WireServer([two]) as server:
        result = edit(client_for(server.url), [], n=2)
    assert len(result.images) == 2 and result.ok
    # the connection is closed half-way through the body: inside the previews that follow the first image
    cut = stream(partial(0), completed(), *[partial(1, color=(1, 2, 3, 255))] * 6, action="close_mid_body")
    with WireServer([cut]) as server:
        result = edit(client_for(server.url), [], n=2)
        assert len(server.requests) == 1  # a paid image came: sending again would pay for both again
    assert [i.data for i in result.images] == [FINAL]
    assert result.problems == ["the connection was cut after 1 of the 2 images"]


def test_previews_beyond_those_asked_for_are_dropped_unread():
    previews: list = []
    with WireServer([stream(*[partial(k) for k in range(50)], completed())]) as server:
        edit(client_for(server.url), previews, partial_images=1)
    assert len(previews) == 1


def test_a_server_refusing_stream_gets_one_plain_request_and_is_remembered():
    refusal = Reply.error(400, "Unknown parameter: 'stream'.", code="unknown_parameter", param="stream")
    plain = Reply.json({"created": 1, "data": [{"b64_json": b64(FINAL)}]})
    with WireServer([refusal, plain, plain]) as server:
        result = edit(client_for(server.url), [])
        assert [i.data for i in result.images] == [FINAL]
        assert "does not stream" in result.warnings[0] and result.meta["streamed"] is False
        assert [("stream" in {p.name for p in r.parts()}) for r in server.requests] == [True, False]
        assert discovery.streaming_refused(server.url)
        edit(client_for(server.url), [])  # a new client (next run): plain at once
        assert len(server.requests) == 3 and "stream" not in {p.name for p in server.requests[2].parts()}


def test_other_400s_are_not_taken_for_a_streaming_refusal():
    refusal = Reply.error(400, "Invalid value for size.", code="invalid_value", param="size")
    with WireServer([refusal]) as server:
        with pytest.raises(E.UnsupportedSizeError):
            edit(client_for(server.url), [])
        assert len(server.requests) == 1 and not discovery.streaming_refused(server.url)


def test_a_preview_count_outside_the_family_range_is_refused_before_sending():
    with pytest.raises(E.InvalidInputError, match="partial_images must be 0 to 3"):
        edit(client_for("http://127.0.0.1:9/v1"), [], partial_images=4)
