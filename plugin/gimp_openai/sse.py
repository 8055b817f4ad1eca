"""Server-sent events (the ``text/event-stream`` format of streamed image answers), decoded within bounds.

Why a decoder of our own: the engine reads answers with requests only, and a streamed answer comes from a
server we do not trust: one line may not grow without limit (a partial image arrives as one ``data:`` line
of base64, up to ~45 MB for the largest gpt-image-2 output, so the limit is set per request from the family
table), bytes that are not UTF-8 must end in a clear error, not a library's exception text, and the decoder
must cost linear time however the bytes are split into chunks (a 45 MB line arrives in ~700 pieces).

Framing follows the WHATWG HTML "event stream" rules: lines end in CRLF, LF or CR; ``field: value`` (one
space after the colon dropped); ``data`` lines of one event are joined with LF; a blank line dispatches the
event; lines starting with ``:`` are comments (keep-alives); ``id`` and ``retry`` are read and ignored
(nothing here reconnects); unknown fields are ignored; an event without data is not dispatched; an event
cut by the end of the stream is dropped (its blank line never came).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class SSEError(ValueError):
    """The bytes are not an event stream within the limits; the message is a sentence for people."""


@dataclass(frozen=True)
class Event:
    name: str  # the ``event:`` field, "message" when absent
    data: str  # the ``data:`` lines joined with LF


class Decoder:
    """Feed bytes, get whole events. ``max_event_bytes`` bounds one line and one event's data."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for a line end
        self._name = ""
        self._data: list[str] = []
        self._data_bytes = 0
        self.events = 0  # dispatched so far (for messages: "event 3 ...")

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk``; SSEError when a line or event exceeds the limit or is not UTF-8."""
        self._buffer += chunk
        events: list[Event] = []
        buffer = self._buffer
        while True:
            newline = buffer.find(b"\n", self._scanned)
            limit = newline if newline >= 0 else len(buffer)
            carriage = buffer.find(b"\r", self._scanned, limit)
            if carriage >= 0:
                if carriage == len(buffer) - 1:  # CR at the end: it may be the first half of CRLF
                    self._scanned = carriage
                    break
                end, skip = carriage, 2 if buffer[carriage + 1] == 0x0A else 1
            elif newline >= 0:
                end, skip = newline, 1
            else:
                self._scanned = len(buffer)
                if len(buffer) > self.max_event_bytes:
                    raise SSEError(
                        f"a line of the event stream is longer than the {self.max_event_bytes:,} bytes accepted"
                    )
                break
            line = bytes(buffer[:end])
            del buffer[: end + skip]  # cheap: bytearray drops a prefix without moving the rest
            self._scanned = 0
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> list[Event]:
        """End of the stream: a last line without its line end still counts; an event without its blank line
        does not (the stream was cut inside it)."""
        if self._buffer:
            line, self._buffer = bytes(self._buffer), bytearray()
            self._line(line.rstrip(b"\r"))
        self._name, self._data, self._data_bytes = "", [], 0
        return []

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            return self._dispatch()
        if len(raw) > self.max_event_bytes:
            raise SSEError(f"a line of the event stream is longer than the {self.max_event_bytes:,} bytes accepted")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SSEError(f"event {self.events + 1} of the stream is not UTF-8 text") from None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw) + 1
            if self._data_bytes > self.max_event_bytes:
                raise SSEError(
                    f"event {self.events + 1} of the stream is larger than the {self.max_event_bytes:,} bytes accepted"
                )
            self._data.append(value)
        elif name == "event":
            self._name = value
        return None  # id, retry and unknown fields: nothing to do

    def _dispatch(self) -> Event | None:
        name, data = self._name or "message", self._data
        self._name, self._data, self._data_bytes = "", [], 0
        if not data:
            return None
        self.events += 1
        return Event(name, "\n".join(data))


def events(chunks: Iterable[bytes], max_event_bytes: int) -> Iterator[Event]:
    """Every event of a whole stream given as chunks (tests and simple readers)."""
    decoder = Decoder(max_event_bytes)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.finish()
