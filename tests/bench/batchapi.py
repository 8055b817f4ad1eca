"""Rate-limit pacing and the Batch API against the local server (the real CLI as subprocesses).

``bench_ratelimit``: 40 edits (256², concurrency 4) against ``--rate-limit 20`` (20 images a minute, a bucket of
20 that starts full and refills at one image every 3 s, as OpenAI's limits do), server latency 1 s. Figures: the
wall time, failed items, requests answered 429. Two ideals: the brief's "40 at 20 a minute" = 120 s, and what a
full bucket allows = (40 - 20) x 3 s + one latency = 61 s. Targets: wall <= 1.15 x 120 s, 0 failed, <= 2 x 429.

``bench_batch_async``: 20 edits submitted with ``batch --async --wait`` (``--batch-delay 5``), the process killed
(SIGKILL) once the batch id is recorded, then ``batch collect``: results, lost items, history PNGs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.local_server import LocalServerHandle

KEY = "sk-bench-not-a-real-key-0000000000000000"
EDIT = ["--rect", "64,64,128,128", "--prompt", "a red kite", "--model", "gpt-image-2", "--quality", "low"]


def _inputs(folder: Path, count: int, size: int = 256) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(count):
        path = folder / f"in-{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _env(server: LocalServerHandle) -> dict[str, str]:
    env = dict(os.environ)
    env["OPENAI_BASE_URL"] = server.url
    env["OPENAI_API_KEY"] = server.key or KEY
    return env


def bench_ratelimit(work: Path, items: int = 40, per_minute: int = 20, latency: float = 1.0) -> dict:
    sources = _inputs(work / "ratelimit-in", items)
    with LocalServerHandle(("--rate-limit", str(per_minute), "--latency", str(latency))) as server:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "gimp_openai", "--json", "batch", *sources, *EDIT,
                               "--concurrency", "4", "--out", str(work / "ratelimit-out"), "-q"],
                              capture_output=True, text=True, env=_env(server), timeout=900)
        wall = time.monotonic() - started
        stats = server.stats()
    answer = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {"results": [], "failed": []}
    ideal_brief = items / per_minute * 60.0
    ideal_bucket = max(0, items - per_minute) * 60.0 / per_minute + latency
    return {"items": items, "per_minute": per_minute, "latency_s": latency, "wall_s": round(wall, 1),
            "done": len(answer.get("results", [])), "failed": len(answer.get("failed", [])),
            "answered_429": stats["statuses"].get("429", 0), "ideal_brief_s": ideal_brief,
            "ideal_bucket_s": ideal_bucket, "wall_over_brief_ideal": round(wall / ideal_brief, 3),
            "wall_over_bucket_ideal": round(wall / ideal_bucket, 3), "exit": proc.returncode}


def bench_batch_async(work: Path, items: int = 20, delay: float = 5.0) -> dict:
    sources = _inputs(work / "batch-in", items)
    states = Path(os.environ["GIMP_OPENAI_CACHE_DIR"]) / "batches"
    history = Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])
    before = set(states.glob("sub-*.json")) if states.exists() else set()
    history_before = (len([p for p in history.rglob("*.png") if not p.name.endswith(".mask.png")])
                      if history.exists() else 0)
    with LocalServerHandle(("--batch-delay", str(delay))) as server:
        env = _env(server)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "gimp_openai", "batch", *sources, "--async", "--wait",
                                 "--poll", "0.5", *EDIT, "--out", str(work / "batch-out"), "-q"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        batch_id = None
        while batch_id is None and time.monotonic() - started < 300:
            for path in set(states.glob("sub-*.json")) - before if states.exists() else ():
                batch_id = json.loads(path.read_text()).get("batch_id")
            time.sleep(0.1)
        submitted = time.monotonic() - started
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        collect_started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "gimp_openai", "batch", "collect", str(batch_id), "--json",
                               "--poll", "0.5"], capture_output=True, text=True, env=env, timeout=900)
        collected = time.monotonic() - collect_started
    answer = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {"results": [], "failed": []}
    saved = len([p for p in history.rglob("*.png") if not p.name.endswith(".mask.png")]) - history_before
    results = len(answer.get("results", []))
    return {"items": items, "batch_delay_s": delay, "submit_s": round(submitted, 1), "collect_s": round(collected, 1),
            "results": results, "failed": len(answer.get("failed", [])), "lost": items - results,
            "history_pngs": saved, "cost": (answer.get("cost") or {}).get("text"), "exit": done.returncode}


def lines(rate: dict | None, batch: dict | None) -> list[str]:
    out = []
    if rate:
        out.append(f"rate limit: {rate['items']} edits at {rate['per_minute']} images/min, concurrency 4, latency "
                   f"{rate['latency_s']} s: wall {rate['wall_s']} s = {rate['wall_over_brief_ideal']:.2f} x "
                   f"{rate['ideal_brief_s']:.0f} s ({rate['wall_over_bucket_ideal']:.2f} x a full bucket's "
                   f"{rate['ideal_bucket_s']:.0f} s); {rate['failed']} failed, {rate['answered_429']} answered 429 "
                   "(targets: <= 1.15 x, 0, <= 2)")
    if batch:
        out.append(f"batch --async: {batch['items']} edits submitted in {batch['submit_s']} s, process killed, "
                   f"collect {batch['collect_s']} s: {batch['results']} results, {batch['lost']} lost, "
                   f"{batch['failed']} failed, {batch['history_pngs']} in history; {batch['cost']}")
    return out
