"""What the client needs from requests that requests does not do: a deadline for a whole attempt, and
connecting to the address the URL policy checked instead of resolving the host name a second time.

Why: requests' read timeout applies to each ``recv``, so a server that sends one byte a second (in the
headers or the body) holds a request for ever; a check between body chunks is not enough either, because
one ``read(65536)`` blocks until the whole chunk has dripped in. :class:`Deadline` therefore watches the
connections an attempt uses and shuts their sockets down when it expires, which wakes the blocked read at
once. And a host name that resolved to a public address when it was checked may resolve to 127.0.0.1 a
moment later (DNS rebinding); so a checked download connects to the checked address and only names the host
for TLS (SNI and certificate verification) and in the ``Host`` header.

How: :class:`ClientAdapter` (mounted on every session the client uses) makes urllib3 pools that report each
connection they hand out to the current thread's :func:`attempt`, and adds ``server_hostname`` to the pool of
a pinned https request. Nothing global is patched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_state = threading.local()


class Deadline:
    """The moment an attempt must be over. ``restart`` moves it (when the upload has gone out, the answer gets
    a fresh read timeout); on expiry every watched socket is shut down and ``expired`` is set.

    Sockets, not connections, are watched: http.client drops ``conn.sock`` as soon as the headers of a
    ``Connection: close`` answer are read (the response keeps the socket), which is when a drip begins."""

    def __init__(self, seconds: float) -> None:
        self._cond = threading.Condition()
        self._when = time.monotonic() + seconds
        self._socks: list[Any] = []
        self._done = False
        self.expired = False
        self._thread = threading.Thread(target=self._run, name="gimp-openai-deadline", daemon=True)

    def __enter__(self) -> Deadline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._done = True
            self._socks.clear()
            self._cond.notify()

    def restart(self, seconds: float) -> None:
        with self._cond:
            self._when = time.monotonic() + seconds
            self._cond.notify()

    def overdue(self) -> bool:
        return self.expired or time.monotonic() >= self._when

    def watch(self, sock: Any) -> None:
        if sock is None:
            return
        with self._cond:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        """End the attempt now: shut every watched socket down (a blocked read returns at once)."""
        with self._cond:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def _run(self) -> None:
        with self._cond:
            while not self._done:
                remaining = self._when - time.monotonic()
                if remaining <= 0:
                    self.expired = True
                    for sock in self._socks:
                        _shut(sock)
                    return
                self._cond.wait(remaining)


def _shut(sock: Any) -> None:
    """Shut the socket down for both directions. The plain socket method is called even for TLS, because
    ``SSLSocket.shutdown`` drops its TLS state under the feet of the thread that is reading."""
    with contextlib.suppress(OSError, TypeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextlib.contextmanager
def attempt(deadline: Deadline | None, server_hostname: str | None = None) -> Iterator[None]:
    """Within this block, connections this thread takes from a pool are watched by ``deadline``, and an https
    request to an address verifies and names ``server_hostname`` (the host the address was checked for)."""
    before = (getattr(_state, "deadline", None), getattr(_state, "server_hostname", None))
    _state.deadline, _state.server_hostname = deadline, server_hostname
    try:
        yield
    finally:
        _state.deadline, _state.server_hostname = before


def _watch(sock: Any) -> None:
    deadline = getattr(_state, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedConnection:
    """Mixin: a new connection's socket is reported to the current attempt's deadline once connected."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(getattr(self, "sock", None))


class WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool:
    """Mixin: a kept-alive connection handed out again is reported too (it is connected already)."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        _watch(getattr(conn, "sock", None))
        return conn


class WatchedHTTPConnectionPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSConnectionPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


_POOLS = {"http": WatchedHTTPConnectionPool, "https": WatchedHTTPSConnectionPool}


class ClientAdapter(HTTPAdapter):
    """requests' adapter with watched pools and, for a pinned https request, ``server_hostname``."""

    def __init__(self) -> None:
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        kwargs: dict[str, Any] = dict(pool_kwargs)
        hostname = getattr(_state, "server_hostname", None)
        if hostname and host_params.get("scheme") == "https":
            kwargs["server_hostname"] = hostname
        return dict(host_params), kwargs


def mount(session: requests.Session) -> requests.Session:
    """Mount :class:`ClientAdapter` on ``session`` for http and https, once."""
    if not isinstance(session.get_adapter("https://x"), ClientAdapter):
        adapter = ClientAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
