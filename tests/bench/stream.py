"""Streamed previews against the local server: how soon the first preview comes, and what streaming costs.

One server with ``--latency L`` (default 15 s, short enough for a bench; the server's own paint time, ~0.5 s
for a 1024² generation here, runs inside L as a model's does). Each round sends, through the engine's
client in this process, one plain gpt-image-1 generation and one streamed with 3 previews (alternating which
goes first, so a slower moment of the shared machine hits both alike), and times from the call to: the first
preview delivered (decoded bytes handed to the callback), the result (the call's return, the completed image
decoded and checked). Figures are medians over the rounds.

Targets: first preview <= 0.3 x time to the result (the server sends it at 25 % of L from the request's
arrival); the streamed result no more than 2 % later than the plain one.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from tests.support.local_server import LocalServerHandle

STREAM_LATENCY = 15.0
PREVIEWS = 3


def _client(url: str) -> Any:
    from gimp_openai.client import ClientConfig, ImagesClient

    from tests.conftest import FAKE_KEY

    return ImagesClient(ClientConfig(base_url=url, api_key=FAKE_KEY, read_timeout=120.0, max_retries=0))


def _once(client: Any, stream: bool) -> dict:
    marks: list[float] = []
    started = time.monotonic()
    kwargs: dict[str, Any] = dict(model="gpt-image-1", prompt="a red kite over a lake", size="1024x1024",
                                  quality="low")
    if stream:
        kwargs.update(partial_images=PREVIEWS, on_partial=lambda _part: marks.append(time.monotonic() - started))
    result = client.generate(**kwargs)
    final = time.monotonic() - started
    assert len(result.images) == 1 and result.ok
    return {"final_s": final, "previews_s": marks}


def bench_stream(latency: float = STREAM_LATENCY, rounds: int = 3) -> dict:
    plain: list[float] = []
    streamed: list[dict] = []
    with LocalServerHandle(("--latency", str(latency))) as server:
        client = _client(server.url)
        _once(client, False)  # first request: server and client imports, not measured
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for stream in order:
                run = _once(client, stream)
                if stream:
                    streamed.append(run)
                else:
                    plain.append(run["final_s"])
    first = statistics.median(run["previews_s"][0] for run in streamed)
    final_stream = statistics.median(run["final_s"] for run in streamed)
    final_plain = statistics.median(plain)
    return {
        "latency_s": latency, "rounds": rounds, "previews": PREVIEWS,
        "plain_final_s": final_plain, "stream_final_s": final_stream, "first_preview_s": first,
        "preview_times_s": [run["previews_s"] for run in streamed], "plain_runs_s": plain,
        "stream_runs_s": [run["final_s"] for run in streamed],
        "first_share": first / final_stream, "stream_overhead": final_stream / final_plain - 1.0,
    }


def stream_line(s: dict) -> str:
    return (f"Streaming, local server latency {s['latency_s']:g} s, gpt-image-1 1024² low, {s['previews']} previews "
            f"(medians of {s['rounds']}): first preview {s['first_preview_s']:.2f} s = {100 * s['first_share']:.1f}% "
            f"of the streamed result's {s['stream_final_s']:.2f} s (target <= 30%); plain result "
            f"{s['plain_final_s']:.2f} s, so streaming adds {100 * s['stream_overhead']:+.2f}% (target <= 2%)")
