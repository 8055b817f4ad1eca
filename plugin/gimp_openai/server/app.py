"""Start the local server: options, the listening line, clean shutdown.

Prints exactly one JSON line on stdout when it is ready (``{"event": "listening", "url": ..., "host": ...,
"port": ...}``) so tests and the demo can use ``--port 0``; human messages go to stderr. Uploads are held in
memory only (bounded by the 50 MB body limit); nothing is written to disk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import date
from http.server import ThreadingHTTPServer
from typing import Any

from gimp_openai.server import faults, models, render
from gimp_openai.server.files import FileStore
from gimp_openai.server.handler import Handler
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gimp-openai serve",
        description="Local OpenAI-compatible images server: offline engine, strict validation, faults on demand.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port; the listening line says which)")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without an Authorization header")
    parser.add_argument("--models", metavar="FILE", help="JSON list of model objects (id, created, shutdown_date)")
    parser.add_argument("--shutdown", action="append", default=[], metavar="MODEL=YYYY-MM-DD",
                        help="give a model a shutdown date (repeatable); past dates make it answer model_not_found")
    parser.add_argument("--today", metavar="YYYY-MM-DD", help="the date the server assumes (lifecycle tests)")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="a fault for every request, same grammar as the X-Fault header (repeatable)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay every answer")
    parser.add_argument("--latency-jitter", type=float, default=0.0, metavar="SECONDS",
                        help="add a random 0..SECONDS to the delay")
    parser.add_argument("--render", default="inpaint", metavar="MODE",
                        help="edit results: 'inpaint' (default), 'gpt-like', or an X-Render spec")
    parser.add_argument("--verbose", action="store_true", help="log each request line to stderr (never headers)")
    return parser


def make_server(args: argparse.Namespace) -> LocalServer:
    served = models.load_models_file(args.models) if args.models else models.default_models()
    served = models.apply_shutdowns(served, args.shutdown)
    today = date.fromisoformat(args.today) if args.today else None
    config = ServerConfig(
        no_auth=args.no_auth,
        required_key=os.environ.get(KEY_ENV) or None,
        faults=[spec for text in args.fault for spec in faults.parse_faults(text)],
        latency=max(0.0, args.latency),
        latency_jitter=max(0.0, args.latency_jitter),
        render=render.parse_render(args.render),
        verbose=args.verbose,
    )
    return LocalServer((args.host, args.port), config, models.ModelRegistry(served, today))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = make_server(args)
    except (ValueError, OSError) as exc:
        print(f"gimp-openai serve: {exc}", file=sys.stderr)
        return 2
    host, port = str(server.server_address[0]), int(server.server_address[1])
    url_host = f"[{host}]" if ":" in host else host
    line: dict[str, Any] = {"event": "listening", "url": f"http://{url_host}:{port}/v1", "host": host, "port": port}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    scope = "this machine only" if host.startswith("127.") or host == "::1" else "OTHER MACHINES TOO"
    auth = "no key needed" if args.no_auth else "any non-empty key" if not server.config.required_key else "one key"
    print(f"gimp-openai serve: listening on {host}:{port} ({scope}); auth: {auth}; "
          f"set OPENAI_BASE_URL={line['url']}", file=sys.stderr, flush=True)

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
