"""Start the local server: options, the listening line, clean shutdown.

Prints exactly one JSON line on stdout when it is ready (``{"event": "listening", "url": ..., "host": ...,
"port": ..., "auth": ...}``) so tests and the demo can use ``--port 0``; human messages go to stderr. Uploads
are held in memory only (bounded by the 50 MB body limit); nothing is written to disk.

A key is always required unless ``--no-auth``: ``GIMP_OPENAI_SERVER_KEY``, or else a random key generated at
start and printed (stderr, and ``"key"`` in the listening line), because any local process can reach a
loopback port. Capacity limits (docs/hardening-server.md): open connections (``--max-connections``; more are
answered 429 and closed), concurrent image work (``--max-work``, waiting at most ``--work-wait`` s, then 429),
header deadline and body idle timeout (``--header-timeout``, ``--body-timeout``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from datetime import date
from http.server import ThreadingHTTPServer
from typing import Any

from gimp_openai.server import faults, models, render
from gimp_openai.server.apierror import server_busy
from gimp_openai.server.batches import BatchService
from gimp_openai.server.files import FileStore
from gimp_openai.server.handler import Handler, raw_answer
from gimp_openai.server.ratelimit import RateLimiter
from gimp_openai.server.stats import Stats

KEY_ENV = "GIMP_OPENAI_SERVER_KEY"


@dataclass
class ServerConfig:
    no_auth: bool = False
    required_key: str | None = None
    faults: list[faults.FaultSpec] = field(default_factory=list)
    latency: float = 0.0
    latency_jitter: float = 0.0
    render: render.RenderSpec | None = None
    verbose: bool = False
    test_routes: bool = False  # /_stats and /_reset (they show every client's requests)
    header_timeout: float = 10.0  # request line + headers, in total
    body_timeout: float = 60.0  # idle time while reading a body or writing an answer
    max_connections: int = 32
    max_work: int = 2  # requests decoding / painting at once
    work_wait: float = 30.0  # how long a request waits for a worker before 429
    no_streaming: bool = False  # refuse ``stream`` like a compatible server without streams (400 unknown_parameter)
    rate_limit_images: int = 0  # images per minute (0: no limit); answers carry x-ratelimit-* headers
    rate_limit_requests: int = 0  # requests per minute (0: no limit)
    rate_limit_tokens: int = 0  # tokens per minute (0: no limit), counted as pricing.request_tokens
    rate_window: float = 60.0  # the limits' window in seconds (tests shorten it)
    batch_delay: float = 5.0  # seconds a batch stays validating/in progress before it is worked off
    batch_fail_every: int = 0  # every K-th line of a batch fails (500 server_error) into the error file


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: ServerConfig, registry: models.ModelRegistry) -> None:
        super().__init__(address, Handler)
        self.config = config
        self.registry = registry
        self.stats = Stats()
        self.faults = faults.FaultBook()
        self.files = FileStore()
        self.stopping = threading.Event()
        self.connections = threading.BoundedSemaphore(max(1, config.max_connections))
        self.work_gate = threading.BoundedSemaphore(max(1, config.max_work))
        self.limiter = RateLimiter(config.rate_limit_images, config.rate_limit_requests, config.rate_window,
                                   tokens_per_min=config.rate_limit_tokens)
        self.batches = BatchService(self)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most ``max_connections`` of them: a flood of idle connections gets
        a 429 and a close instead of a thread each."""
        if not self.connections.acquire(blocking=False):
            self._turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def _turn_away(self, request: socket.socket) -> None:
        """Answer 429 on the accept thread without reading anything (small write, short timeout), then close."""
        try:
            request.settimeout(0.5)
            request.sendall(raw_answer(server_busy("too many open connections", retry_after=1)))
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception escaped a connection's handler: one line on stderr, never a traceback."""
        kind = sys.exc_info()[0]
        print(f"gimp-openai serve: connection error {kind.__name__ if kind else '?'}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gimp-openai serve",
        description="Local OpenAI-compatible images server: offline engine, strict validation, faults on demand.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port; the listening line says which)")
    parser.add_argument("--no-auth", action="store_true",
                        help=f"accept requests without a key (default: the key in ${KEY_ENV}, else a random key "
                             "printed at start)")
    parser.add_argument("--test-routes", action="store_true",
                        help="serve GET /_stats and POST /_reset (behind the key) for tests")
    parser.add_argument("--models", metavar="FILE", help="JSON list of model objects (id, created, shutdown_date)")
    parser.add_argument("--legacy-models", action="store_true",
                        help="also serve the models OpenAI retired in 2026 (dall-e-2/3, the gpt-image-1 family, "
                             "chatgpt-image-latest), for tests of their rules")
    parser.add_argument("--shutdown", action="append", default=[], metavar="MODEL=YYYY-MM-DD",
                        help="give a model a shutdown date (repeatable); past dates make it answer model_not_found")
    parser.add_argument("--today", metavar="YYYY-MM-DD", help="the date the server assumes (lifecycle tests)")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="a fault for every request, same grammar as the X-Fault header (repeatable)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="delay every answer (a streamed one spreads its previews over these seconds)")
    parser.add_argument("--no-streaming", action="store_true",
                        help="refuse 'stream' (400 unknown_parameter), like a compatible server without streams")
    parser.add_argument("--latency-jitter", type=float, default=0.0, metavar="SECONDS",
                        help="add a random 0..SECONDS to the delay")
    parser.add_argument("--render", default="inpaint", metavar="MODE",
                        help="edit results: 'inpaint' (default), 'gpt-like', or an X-Render spec")
    parser.add_argument("--verbose", action="store_true", help="log each request line to stderr (never headers)")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="time for a request's line and headers, in total (default 10)")
    parser.add_argument("--body-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="idle time allowed while a body arrives or an answer is read (default 60)")
    parser.add_argument("--max-connections", type=int, default=32, metavar="N",
                        help="open connections at most; more are answered 429 (default 32)")
    parser.add_argument("--max-work", type=int, default=2, metavar="N",
                        help="requests decoding and painting at once (default 2)")
    parser.add_argument("--work-wait", type=float, default=30.0, metavar="SECONDS",
                        help="how long a request waits for a worker before 429 (default 30)")
    parser.add_argument("--rate-limit", type=int, default=0, metavar="IMAGES_PER_MIN",
                        help="images per minute, like OpenAI's IPM limit: answers carry x-ratelimit-* headers and "
                             "a request over it gets 429 rate_limit_exceeded (default 0: no limit)")
    parser.add_argument("--rate-limit-requests", type=int, default=0, metavar="REQUESTS_PER_MIN",
                        help="requests per minute on the images endpoints (default 0: no limit)")
    parser.add_argument("--rate-limit-tokens", type=int, default=0, metavar="TOKENS_PER_MIN",
                        help="tokens per minute, like OpenAI's TPM limit: a request counts its prompt, uploads and "
                             "images at the size and quality asked when it arrives (default 0: no limit)")
    parser.add_argument("--rate-window", type=float, default=60.0, metavar="SECONDS",
                        help="the window of the --rate-limit options (default 60: per minute)")
    parser.add_argument("--batch-delay", type=float, default=5.0, metavar="SECONDS",
                        help="Batch API: how long a batch waits before it is worked off (default 5)")
    parser.add_argument("--batch-fail-every", type=int, default=0, metavar="K",
                        help="Batch API: every K-th request line fails into the error file (default 0: none)")
    return parser


def server_key(args: argparse.Namespace) -> tuple[str | None, bool]:
    """(the key requests must carry, was it generated here); (None, False) with ``--no-auth``."""
    if args.no_auth:
        return None, False
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return from_env, False
    return "sk-local-" + secrets.token_urlsafe(24), True


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise ValueError(f"{flag} must be a positive number of seconds, not {value}")
    return value


def make_server(args: argparse.Namespace, key: str | None) -> LocalServer:
    """Bind the server (``key``: what requests must carry; None only with ``--no-auth``)."""
    served = models.load_models_file(args.models) if args.models else models.default_models(legacy=args.legacy_models)
    served = models.apply_shutdowns(served, args.shutdown)
    today = date.fromisoformat(args.today) if args.today else None
    check_port(args.port)
    config = ServerConfig(
        no_auth=args.no_auth,
        required_key=key,
        faults=[spec for text in args.fault for spec in faults.parse_faults(text)],
        latency=max(0.0, args.latency),
        latency_jitter=max(0.0, args.latency_jitter),
        render=render.parse_render(args.render),
        verbose=args.verbose,
        test_routes=args.test_routes,
        header_timeout=_positive(args.header_timeout, "--header-timeout"),
        body_timeout=_positive(args.body_timeout, "--body-timeout"),
        max_connections=max(1, args.max_connections),
        max_work=max(1, args.max_work),
        work_wait=max(0.0, args.work_wait),
        no_streaming=args.no_streaming,
        rate_limit_images=max(0, args.rate_limit),
        rate_limit_requests=max(0, args.rate_limit_requests),
        rate_limit_tokens=max(0, args.rate_limit_tokens),
        rate_window=_positive(args.rate_window, "--rate-window"),
        batch_delay=max(0.0, args.batch_delay),
        batch_fail_every=max(0, args.batch_fail_every),
    )
    return LocalServer((args.host, args.port), config, models.ModelRegistry(served, today))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key, generated = server_key(args)
    try:
        server = make_server(args, key)
    except ValueError as exc:  # an option's value: the message names it
        print(f"gimp-openai serve: {exc}", file=sys.stderr)
        return 2
    except (OverflowError, OSError) as exc:  # binding: port in use, unknown host, no permission
        where = f"{args.host}:{args.port}"
        print(f"gimp-openai serve: cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        return 2
    _announce(server, args, key if generated else None)

    def stop(signum: int, frame: object) -> None:
        server.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return 0


def _announce(server: LocalServer, args: argparse.Namespace, generated_key: str | None) -> None:
    """The JSON listening line on stdout (with the key when it was generated here), a sentence on stderr."""
    host, port = str(server.server_address[0]), int(server.server_address[1])
    url_host = f"[{host}]" if ":" in host else host
    auth = "none" if args.no_auth else "generated key" if generated_key else f"key from {KEY_ENV}"
    line: dict[str, Any] = {"event": "listening", "url": f"http://{url_host}:{port}/v1", "host": host, "port": port,
                            "auth": auth}
    if generated_key:
        line["key"] = generated_key
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    scope = "this machine only" if host.startswith("127.") or host == "::1" else "OTHER MACHINES TOO"
    print(f"gimp-openai serve: listening on {host}:{port} ({scope}); auth: {auth}; "
          f"set OPENAI_BASE_URL={line['url']}", file=sys.stderr, flush=True)
    if generated_key:
        print(f"gimp-openai serve: requests must carry 'Authorization: Bearer {generated_key}' "
              f"(set {KEY_ENV} to choose the key, or --no-auth for none)", file=sys.stderr, flush=True)
