"""Raw HTTP over a real loopback socket, for the hardening and abuse tests: exact bytes out, the answer parsed
by hand (no HTTP library smoothing anything over), with every wait bounded."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    """What came back: ``status`` 0 means the server closed without answering; ``closed`` that it closed after."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False
    seconds: float = 0.0

    def error(self) -> dict:
        """The API error object, asserting the exact shape {"error": {message, type, param, code}}."""
        assert self.headers.get("content-type") == "application/json", (self.status, self.headers, self.body[:200])
        parsed = json.loads(self.body)
        assert set(parsed) == {"error"}, parsed
        assert set(parsed["error"]) == {"message", "type", "param", "code"}, parsed
        assert parsed["error"]["message"], parsed
        return parsed["error"]


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer:
    """Read one answer (head, then Content-Length bytes), then whether the server closed; all within ``timeout``."""
    started = time.monotonic()
    data = b""
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in data:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            piece = b""
        if not piece:
            return Answer(0, closed=True, seconds=time.monotonic() - started, body=data)
        data += piece
        if time.monotonic() - started > timeout:
            raise TimeoutError("no complete answer head")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length and time.monotonic() - started < timeout:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    announced = headers.get("connection", "").lower() == "close"  # then the close must follow at once
    closed = _closed(sock, 1.0 if announced else 0.05)
    return Answer(status, headers, body[:length], closed, time.monotonic() - started)


def _closed(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except (TimeoutError, OSError):
        return False


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    """Send ``data`` on a new connection and read the answer."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_answer(sock, timeout)


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A request's bytes exactly as given (the caller chooses every header, Host included)."""
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body
