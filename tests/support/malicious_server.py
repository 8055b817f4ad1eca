"""A deliberately hostile HTTP server on 127.0.0.1 for the abuse suite: answers streamed from generators (so a
gigabyte answer costs the test process nothing), without a Content-Length or with a false one, dripped byte by
byte in the head or the body, compressed into bombs, redirected in circles.

Why not WireServer: it holds each reply in memory and always announces its true length; an attacker does
neither. Every answer is bounded: it ends with its generator, after ``MAX_SECONDS``, or when the server stops.

    with MaliciousServer({"/v1/images/generations": Answer(chunks=lambda: many_images(10_000))}) as server:
        ... point the client at server.url ...
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_SECONDS = 20.0


@dataclass
class Answer:
    """``chunks`` makes the body; ``length`` is the Content-Length announced (None: close-delimited body);
    ``pace`` seconds between body chunks; ``head_pace`` seconds between the bytes of the status line and
    headers (a slowloris answer)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Callable[[], Iterable[bytes]] = lambda: ()
    length: int | None = None
    pace: float = 0.0
    head_pace: float = 0.0


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(10)
        try:
            line = self.rfile.readline(65537)
            if not line:
                return
            headers: dict[str, str] = {}
            while True:
                h = self.rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self.rfile.read(int(headers.get("content-length", "0") or 0))
            method, target, _ = line.decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            owner = self.server.owner
            owner.seen.append((method, path, headers))
            answer = owner.routes.get(path) or Answer(404, chunks=lambda: [b"not here"])
            self._send(answer, owner.stop)
        except OSError:
            return

    def _send(self, answer: Answer, stop: threading.Event) -> None:
        started = time.monotonic()
        head = f"HTTP/1.1 {answer.status} Answer\r\nConnection: close\r\n"
        if answer.length is not None:
            head += f"Content-Length: {answer.length}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items()) + "\r\n"
        raw = head.encode("latin-1")
        if answer.head_pace:
            for i in range(len(raw)):
                self.connection.sendall(raw[i : i + 1])
                if stop.wait(answer.head_pace) or time.monotonic() - started > MAX_SECONDS:
                    return
        else:
            self.connection.sendall(raw)
        for chunk in answer.chunks():
            self.connection.sendall(chunk)
            if (answer.pace and stop.wait(answer.pace)) or stop.is_set() or time.monotonic() - started > MAX_SECONDS:
                return
        self.connection.shutdown(socket.SHUT_WR)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: MaliciousServer


class MaliciousServer:
    """Routes by path; ``seen`` lists (method, path, headers) of every request received."""

    def __init__(self, routes: dict[str, Answer] | None = None) -> None:
        self.routes: dict[str, Answer] = dict(routes or {})
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.stop = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def __enter__(self) -> MaliciousServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()
