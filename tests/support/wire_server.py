"""A tiny scripted HTTP(S) server on 127.0.0.1 that records the raw bytes of every request.

Why not the local server: wire and retry tests must control each answer byte for byte (a reset half-way
through a body, a stall, a given header) and read exactly what the client put on the wire, independent of
the product's own server. Real sockets, a real thread, stdlib only.

    with WireServer([Reply(429, headers={"retry-after": "2"}), Reply.json({"data": [...]})]) as server:
        client = ImagesClient(ClientConfig(base_url=server.url, ...))
        ...
        assert len(server.requests) == 2
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATUS_TEXT = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
               404: "Not Found", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
               429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable"}


@dataclass
class Reply:
    """One scripted answer. ``action``: None, "close_mid_body" (headers + half the body, then close),
    "close" (close without answering), "stall" (read the request, answer nothing until the server stops),
    "drip" (headers at once, then the body one byte every ``drip`` seconds), "drip_head" (the status line and
    headers one byte every ``drip`` seconds). A drip ends with the body or when the server stops."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    action: str | None = None
    drip: float = 0.05

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode())

    @classmethod
    def error(cls, status: int, message: str, code: str | None = None, param: str | None = None,
              headers: dict[str, str] | None = None, etype: str = "invalid_request_error") -> Reply:
        return cls.json({"error": {"message": message, "type": etype, "param": param, "code": code}},
                        status, headers)


@dataclass
class Recorded:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    raw_head: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def parts(self) -> list[Part]:
        return parse_multipart(self.headers.get("content-type", ""), self.body)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/form-data body exactly as received (no library: we test what is on the wire)."""
    assert content_type.startswith("multipart/form-data"), content_type
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    delimiter = b"--" + boundary
    assert body.endswith(delimiter + b"--\r\n"), "multipart body must end with the closing boundary"
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = {}
        for item in disposition.split(";")[1:]:
            key, _, value = item.strip().partition("=")
            params[key] = value.strip('"')
        parts.append(Part(params.get("name", ""), params.get("filename"), headers.get("content-type"), data))
    return parts


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(30)
        reader = conn.makefile("rb")
        try:
            while True:
                if not self._one(conn, reader):
                    return
        except (OSError, ValueError):
            return

    def _one(self, conn: socket.socket, reader: Any) -> bool:
        line = reader.readline(65537)
        if not line:
            return False
        head = bytearray(line)
        headers: dict[str, str] = {}
        while True:
            h = reader.readline(65537)
            head += h
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        method, target, _ = line.decode("latin-1").split(" ", 2)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(reader.readline().strip().split(b";")[0], 16)
                if size == 0:
                    reader.readline()
                    break
                body += reader.read(size)
                reader.readline()
        else:
            body = bytearray(reader.read(int(headers.get("content-length", "0") or 0)))
        outer = self.server.owner
        reply = outer._next(Recorded(method, target, headers, bytes(body), bytes(head)))
        if reply.action == "close":
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if reply.action == "stall":
            outer._stop.wait(60)
            return False
        status_line = f"HTTP/1.1 {reply.status} {STATUS_TEXT.get(reply.status, 'Status')}\r\n"
        hdrs = {"Content-Length": str(len(reply.body)), **reply.headers}
        if reply.action == "close_mid_body":
            hdrs["Content-Length"] = str(len(reply.body))
        out = status_line + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        if reply.action == "close_mid_body":
            conn.sendall(out.encode("latin-1") + reply.body[: len(reply.body) // 2])
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if reply.action in ("drip", "drip_head"):
            head, rest = (b"", out.encode("latin-1")) if reply.action == "drip_head" else (out.encode("latin-1"), b"")
            conn.sendall(head)
            slow = rest + reply.body
            for i in range(len(slow)):
                conn.sendall(slow[i : i + 1])
                if outer._stop.wait(reply.drip):
                    return False
            return False
        conn.sendall(out.encode("latin-1") + reply.body)
        return headers.get("connection", "").lower() != "close"


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: WireServer


class WireServer:
    """Scripted server. Replies are used in order; when the script runs out, ``default`` answers."""

    def __init__(self, script: list[Reply] | None = None, *, default: Reply | None = None,
                 tls: ssl.SSLContext | None = None, routes: dict[str, Reply] | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Reply.error(500, "wire server script exhausted")
        self.routes = dict(routes or {})
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tls = tls
        self._server = _TCPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL in the OpenAI style (with /v1)."""
        return self.origin + "/v1"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if recorded.path in self.routes:
                return self.routes[recorded.path]
            return self.script.pop(0) if self.script else self.default

    def start(self) -> WireServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- TLS material for the self-signed server ------------------------------------------------------------


def make_tls_files(folder: Any, dns_names: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """A private CA and a server certificate for 127.0.0.1 (and ``dns_names``), written as PEM:
    (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gimp-openai test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    *(x509.DNSName(name) for name in dns_names)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(ca_path), str(cert_path), str(key_path)


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
