"""The event-stream decoder: WHATWG framing, any chunking, bounded lines and events, clear errors."""

from __future__ import annotations

import time

import pytest
from gimp_openai import sse

STREAM = (b": keep-alive\r\n"
          b"event: image_edit.partial_image\r\n"
          b'data: {"a":\r\n'
          b"data: 1}\r\n"
          b"id: 7\r\nretry: 10\r\nunknown: x\r\n"
          b"\r\n"
          b"event: empty\n\n"  # no data: not dispatched
          b"data:no-space\r\r"
          b"data: last\n\n")


def decode(chunks, limit=1024):
    return list(sse.events(chunks, limit))


def test_framing_fields_comments_and_line_ends():
    events = decode([STREAM])
    assert events == [sse.Event("image_edit.partial_image", '{"a":\n1}'), sse.Event("message", "no-space"),
                      sse.Event("message", "last")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_any_chunking_gives_the_same_events(size):
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(chunks) == decode([STREAM])


def test_an_event_cut_by_the_end_of_the_stream_is_dropped():
    assert decode([b"data: whole\n\ndata: half"]) == [sse.Event("message", "whole")]


def test_a_line_longer_than_the_limit_is_refused_before_it_ends():
    decoder = sse.Decoder(100)
    with pytest.raises(sse.SSEError, match="longer than the 100 bytes"):
        for _ in range(10):
            decoder.feed(b"data: " + b"A" * 30)


def test_an_event_larger_than_the_limit_is_refused():
    with pytest.raises(sse.SSEError, match="event 1 .* larger than the 100 bytes"):
        decode([b"data: " + b"A" * 60 + b"\n" + b"data: " + b"A" * 60 + b"\n\n"], limit=100)


def test_bytes_that_are_not_utf8_are_a_clear_error():
    with pytest.raises(sse.SSEError, match="not UTF-8"):
        decode([b"data: \xff\xfe\n\n"])


def test_a_long_line_in_small_chunks_costs_linear_time():
    """A 16 MB data line in 64 KiB chunks: a decoder rescanning its buffer per chunk would take minutes."""
    line = b"data: " + b"A" * (16 * 1024 * 1024) + b"\n\n"
    started = time.monotonic()
    events = decode([line[i : i + 65536] for i in range(0, len(line), 65536)], limit=32 * 1024 * 1024)
    assert len(events) == 1 and len(events[0].data) == 16 * 1024 * 1024
    assert time.monotonic() - started < 5.0
