"""Per-request socket deadlines: a slow or silent client can hold a connection only for a bounded time.

``http.server`` reads with no timeout at all, so a half-sent request (a Content-Length larger than the body,
headers that never end, a TLS ClientHello on the plain port) held a thread forever. :class:`DeadlineReader`
sits under the handler's ``rfile``: every ``recv`` waits at most the phase's idle timeout and never past the
phase's deadline, and raises :class:`TimeoutError` when either runs out. The handler opens a phase for the
request line and headers (one total deadline, so a slowloris dripping a byte a second is cut too) and another
for the body (an idle timeout plus a total deadline of :data:`BODY_DEADLINE_FACTOR` idle periods).
"""

from __future__ import annotations

import io
import socket
import time

#: The body's total deadline, in body idle periods (60 s idle -> 10 minutes for the whole body, ~85 KB/s for 50 MB).
BODY_DEADLINE_FACTOR = 10


class DeadlineReader(io.RawIOBase):
    """A raw, readable view of a socket whose reads obey the current phase's idle timeout and deadline."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._idle = 10.0
        self._deadline = time.monotonic() + self._idle
        self.received = 0  # bytes received since the phase began (0 = an idle keep-alive connection)

    def begin(self, idle: float, total: float) -> None:
        """Start a phase: each read may wait ``idle`` seconds, the whole phase ``total`` seconds."""
        self._idle = idle
        self._deadline = time.monotonic() + total
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(min(self._idle, remaining))
        count = self._sock.recv_into(buffer)
        self.received += count
        return count
