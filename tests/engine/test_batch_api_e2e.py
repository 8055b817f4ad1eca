"""The Batch API and rate-limit pacing as a user meets them: the real CLI (subprocesses) against the real local
server on 127.0.0.1; a submitting process killed with SIGKILL, then resumed by ``batch collect``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY


def env_for(server) -> dict[str, str]:
    child = dict(os.environ)
    child["OPENAI_API_KEY"] = FAKE_KEY
    child["OPENAI_BASE_URL"] = server.url
    return child


def cli(*args: str, server, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", *args], capture_output=True, text=True,
                          env=env_for(server), timeout=timeout)
    assert FAKE_KEY not in proc.stdout and FAKE_KEY not in proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def images(folder: Path, count: int, size: int = 192) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        path = folder / f"photo-{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def state_files() -> list[Path]:
    return sorted((Path(os.environ["GIMP_OPENAI_CACHE_DIR"]) / "batches").glob("sub-*.json"))


def history_pngs() -> list[Path]:
    return sorted(p for p in Path(os.environ["GIMP_OPENAI_HISTORY_DIR"]).rglob("*.png")
                  if not p.name.endswith(".mask.png"))  # results, not the masks kept beside them


def no_key_in(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f


EDIT = ("--rect", "40,40,80,80", "--prompt", "a red kite", "--model", "gpt-image-2", "--quality", "low")


@pytest.mark.slow
def test_submitted_batch_survives_a_killed_process_and_is_collected_whole(start_local_server, tmp_path):
    server = start_local_server("--batch-delay", "4")
    sources = images(tmp_path / "in", 20)
    out = tmp_path / "out"
    submitter = subprocess.Popen(
        [sys.executable, "-m", "gimp_openai", "batch", *sources, "--async", "--wait", "--poll", "0.3", *EDIT,
         "--out", str(out)], env=env_for(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    batch_id = None
    while time.monotonic() < deadline and batch_id is None:
        for path in state_files():
            batch_id = json.loads(path.read_text()).get("batch_id")
        time.sleep(0.1)
    assert batch_id, "the submission was never recorded"
    submitter.send_signal(signal.SIGKILL)  # while it waits for the batch: nothing was collected yet
    submitter.wait(10)
    assert history_pngs() == []
    (state_path,) = state_files()
    assert oct(state_path.stat().st_mode & 0o777) == "0o600"

    listed = json.loads(cli("--json", "batch", "list", server=server).stdout)
    assert [b["batch_id"] for b in listed["batches"]] == [batch_id] and listed["batches"][0]["items"] == 20

    proc = cli("batch", "collect", batch_id, "--json", "--poll", "0.3", server=server)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["status"] == "completed" and answer["failed"] == []
    assert len(answer["results"]) == 20  # 20 results, 0 lost
    assert sorted(r["source"] for r in answer["results"]) == sorted(sources)
    for result in answer["results"]:
        (output,) = result["outputs"]
        assert Path(output["png"]).is_file() and Path(result["ora"]).is_file()
        sidecar = json.loads(Path(output["history_png"]).with_suffix(".json").read_text())
        assert sidecar["cost"]["usd"] > 0 and "Batch API" in sidecar["cost"]["price_source"]
        assert sidecar["request_id"]
    assert len(history_pngs()) == 20  # history complete: every returned image
    # the batch price is half the synchronous one for the same usage
    cost = answer["cost"]
    assert cost["usd"] == pytest.approx((cost["input_tokens"] * 8.0 + cost["output_tokens"] * 30.0) / 1e6 / 2,
                                        rel=0.05)

    again = json.loads(cli("batch", "collect", batch_id, "--json", server=server).stdout)
    assert again["results"] == [] and len(again["already_collected"]) == 20
    assert len(history_pngs()) == 20  # collecting twice saves nothing twice
    no_key_in(Path(os.environ["GIMP_OPENAI_CACHE_DIR"]))
    no_key_in(Path(os.environ["GIMP_OPENAI_HISTORY_DIR"]))
    status = json.loads(cli("--json", "batch", "status", batch_id, server=server).stdout)
    assert status["status"] == "completed" and status["collected"] == 20


@pytest.mark.slow
def test_failed_lines_are_reported_per_item_and_the_rest_composited(start_local_server, tmp_path):
    server = start_local_server("--batch-delay", "0.5", "--batch-fail-every", "3")
    sources = images(tmp_path / "in", 6)
    proc = cli("--json", "batch", *sources, "--async", "--wait", "--poll", "0.2", *EDIT, "--out",
               str(tmp_path / "out"), server=server)
    assert proc.returncode == 1, proc.stderr
    answer = json.loads(proc.stdout)
    assert len(answer["results"]) == 4 and len(answer["failed"]) == 2
    assert sorted(Path(f["source"]).name for f in answer["failed"]) == ["photo-02.png", "photo-05.png"]
    assert all(f["error"]["code"] == "server_error" for f in answer["failed"])
    assert len(history_pngs()) == 4


@pytest.mark.slow
def test_collected_results_are_the_synchronous_run_s_pixels(start_local_server, tmp_path):
    server = start_local_server("--batch-delay", "0.5")
    sources = images(tmp_path / "in", 2)
    sync = json.loads(cli("--json", "batch", *sources, *EDIT, "--out", str(tmp_path / "sync"), server=server).stdout)
    batched = json.loads(cli("--json", "batch", *sources, "--async", "--wait", "--poll", "0.2", *EDIT, "--out",
                             str(tmp_path / "async"), server=server).stdout)
    by_source = {r["source"]: r for r in batched["results"]}
    for result in sync["results"]:
        other = by_source[str(Path(result["source"]).resolve())]
        a = np.asarray(Image.open(result["outputs"][0]["png"]))
        b = np.asarray(Image.open(other["outputs"][0]["png"]))
        assert np.array_equal(a, b)
        assert {k: result["outputs"][0][k] for k in ("x", "y", "width", "height")} == {
            k: other["outputs"][0][k] for k in ("x", "y", "width", "height")}
    assert batched["cost"]["usd"] == pytest.approx(sync["cost"]["usd"] / 2, rel=0.02)


@pytest.mark.slow
def test_a_changed_source_is_not_composited_but_can_be_collected_later(start_local_server, tmp_path):
    server = start_local_server("--batch-delay", "0.5")
    sources = images(tmp_path / "in", 2)
    submitted = json.loads(cli("--json", "batch", *sources, "--async", *EDIT, "--out", str(tmp_path / "out"),
                               server=server).stdout)
    original = Path(sources[0]).read_bytes()
    Image.new("RGB", (192, 192), (1, 2, 3)).save(sources[0])
    first = cli("--json", "batch", "collect", submitted["batch_id"], "--poll", "0.2", server=server)
    answer = json.loads(first.stdout)
    assert first.returncode == 1 and len(answer["results"]) == 1
    assert "changed since the batch was submitted" in answer["failed"][0]["error"]["message"]
    Path(sources[0]).write_bytes(original)
    second = json.loads(cli("--json", "batch", "collect", submitted["batch_id"], server=server).stdout)
    assert len(second["results"]) == 1 and len(second["already_collected"]) == 1


def batch_all_done(sources: list[str], out: Path, server) -> float:
    """``batch`` of ``sources`` at concurrency 4 (synchronous edits): every item done, none failed; its wall time."""
    started = time.monotonic()
    proc = cli("--json", "batch", *sources, *EDIT, "--concurrency", "4", "--out", str(out), server=server)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert len(answer["results"]) == len(sources) and answer["failed"] == []
    return wall


@pytest.mark.slow
def test_batch_paces_to_the_servers_rate_limit_without_429s(start_local_server, tmp_path):
    """12 edits at concurrency 4 against 4 images per 2 s (120 a minute, a bucket of 4): the first 4 go at
    once, then 2 a second; no item fails and at most 2 requests are answered 429."""
    server = start_local_server("--rate-limit", "4", "--rate-window", "2", "--latency", "0.2")
    wall = batch_all_done(images(tmp_path / "in", 12, size=128), tmp_path / "out", server)
    statuses = server.stats()["statuses"]
    assert statuses.get("429", 0) <= 2, statuses
    assert statuses.get("200") == 12
    ideal = (12 - 4) / 2.0  # seconds the limit needs to admit 12 from a full bucket of 4
    assert wall >= ideal  # it did wait for the budget
    print(f"\n12 edits at 4 images per 2 s: {wall:.2f} s (ideal {ideal:.1f} s + startup), 429s: "
          f"{statuses.get('429', 0)}")


@pytest.mark.slow
def test_batch_paces_to_the_token_budget_before_it_is_spent(start_local_server, tmp_path):
    """16 edits at concurrency 4 against a tokens-per-minute budget of 4 requests' worth: each request waits
    until its own estimated tokens are back (not until the budget is spent), so none is answered 429 and the
    requests reach the server at the budget's pace: the last arrives within 1.15 x the ideal (the tokens beyond
    the first full budget, at its refill rate)."""
    calibrate = start_local_server("--rate-limit-tokens", str(10**9))
    sources = images(tmp_path / "in", 16, size=128)
    one = cli("--json", "edit", sources[0], *EDIT, "--out", str(tmp_path / "calibrate"), server=calibrate)
    assert one.returncode == 0, one.stderr
    (entry,) = [r for r in calibrate.stats()["requests"] if r.get("endpoint") == "edits"]
    per_request = entry["rate_tokens"]  # the server's count (pricing.request_tokens on what it received)
    estimate = json.loads(one.stdout)["results"][0]["estimate"]
    assert estimate["input_tokens"] + estimate["output_tokens"] == per_request  # the client's own estimate
    window = 3.0
    budget = 4 * per_request  # the first 4 fit at once, then one every per_request / rate seconds
    server = start_local_server("--rate-limit-tokens", str(budget), "--rate-window", str(window), "--latency", "0.2")
    wall = batch_all_done(sources, tmp_path / "out", server)
    stats = server.stats()
    assert stats["statuses"].get("429", 0) == 0, stats["statuses"]
    edits = sorted((r for r in stats["requests"] if r.get("endpoint") == "edits"), key=lambda r: r["time"])
    assert len(edits) == 16 and {r["rate_tokens"] for r in edits} == {per_request}
    rate = budget / window
    ideal = (16 * per_request - budget) / rate  # 3 windows: 12 requests' tokens at the refill rate
    span = edits[-1]["time"] - edits[0]["time"]
    arrivals = [round(r["time"] - edits[0]["time"], 2) for r in edits]
    assert ideal * 0.98 <= span <= 1.15 * ideal, (span, ideal, arrivals)
    print(f"\n16 edits of {per_request} tokens against {budget} tokens per {window:.0f} s: requests spread over "
          f"{span:.2f} s (ideal {ideal:.2f} s, x{span / ideal:.3f}); CLI wall {wall:.2f} s; 0 answered 429")


# --- generations through the Batch API ---------------------------------------------------------------------------

GENERATE = ("--model", "gpt-image-2", "--quality", "low", "--size", "1024x1024")


def prompts_file(path: Path, count: int) -> list[str]:
    prompts = [f"a lighthouse at dusk, number {k}" for k in range(1, count + 1)]
    path.write_text("# the lighthouses\n\n" + "\n".join(prompts) + "\n", encoding="utf-8")
    return prompts


def input_lines(server, state: dict) -> list[dict]:
    """The JSONL the client uploaded, as the server holds it: the bytes that went on the wire."""
    import requests

    response = requests.get(f"{server.url}/files/{state['input_file_id']}/content",
                            headers={"Authorization": f"Bearer {FAKE_KEY}"}, timeout=30)
    response.raise_for_status()
    return [json.loads(line) for line in response.content.splitlines()]


@pytest.mark.slow
def test_generations_batch_survives_a_killed_process_and_is_collected_as_generate_writes(start_local_server,
                                                                                          tmp_path):
    server = start_local_server("--batch-delay", "4")
    prompts = prompts_file(tmp_path / "prompts.txt", 20)
    out = tmp_path / "out"
    started = time.monotonic()
    submitter = subprocess.Popen(
        [sys.executable, "-m", "gimp_openai", "generate", "--prompts", str(tmp_path / "prompts.txt"), "--async",
         "--wait", "--poll", "0.3", *GENERATE, "--out", str(out)], env=env_for(server), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    state: dict = {}
    while time.monotonic() < deadline and not state.get("batch_id"):
        for path in state_files():
            state = json.loads(path.read_text())
        time.sleep(0.1)
    assert state.get("batch_id"), "the submission was never recorded"
    submitted = time.monotonic() - started
    submitter.send_signal(signal.SIGKILL)  # while it waits for the batch: nothing was collected yet
    _out, err = submitter.communicate(timeout=10)
    assert err.count("estimate: 1 image of 1024x1024, gpt-image-2, quality low: about $") == 20, err
    assert history_pngs() == []
    assert state["endpoint"] == "/v1/images/generations" and len(state["items"]) == 20
    assert [i["prompt"] for i in state["items"]] == prompts

    # the bytes on the wire: one POST line per prompt to the generations endpoint, the body a generation's
    lines = input_lines(server, state)
    assert [line["custom_id"] for line in lines] == [i["custom_id"] for i in state["items"]]
    for line, prompt in zip(lines, prompts, strict=True):
        assert line["method"] == "POST" and line["url"] == "/v1/images/generations"
        assert line["body"] == {"model": "gpt-image-2", "prompt": prompt, "size": "1024x1024", "quality": "low",
                                "background": "opaque"}, line["body"]  # n=1 is the API's default: not sent

    started = time.monotonic()
    proc = cli("batch", "collect", state["batch_id"], "--json", "--poll", "0.3", server=server)
    collected = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["status"] == "completed" and answer["failed"] == []
    assert len(answer["results"]) == 20  # 20 results, 0 lost
    print(f"\n20 generations: submitted in {submitted:.1f} s, killed, collected in {collected:.1f} s "
          f"(batch delay 4 s), cost {answer['cost']['text']}")
    names = sorted(Path(r["outputs"][0]["png"]).name for r in answer["results"])
    assert names == [f"generated-{k:02d}-1.png" for k in range(1, 21)], names  # NAME-K, then the result number
    for result in answer["results"]:
        (output,) = result["outputs"]
        assert Image.open(output["png"]).size == (1024, 1024)
        sidecar = json.loads(Path(output["history_png"]).with_suffix(".json").read_text())
        assert sidecar["cost"]["usd"] > 0 and "Batch API" in sidecar["cost"]["price_source"]
        assert sidecar["prompt"] in prompts and sidecar["request_id"]
    history = history_pngs()
    assert len(history) == 20  # history complete: every returned image

    # exactly what a synchronous generate writes for the same prompt: the same file name and pixels, at twice
    # the price
    sync = json.loads(cli("--json", "generate", "--prompt", prompts[0], "--name", "generated-01", *GENERATE,
                          "--out", str(tmp_path / "sync"), server=server).stdout)
    (batched,) = [r for r in answer["results"] if Path(r["outputs"][0]["png"]).name.startswith("generated-01-")]
    a, b = Path(sync["results"][0]["outputs"][0]["png"]), Path(batched["outputs"][0]["png"])
    assert a.name == b.name and np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert batched["cost"]["usd"] == pytest.approx(sync["results"][0]["cost"]["usd"] / 2, rel=0.05)

    again = json.loads(cli("batch", "collect", state["batch_id"], "--json", server=server).stdout)
    assert again["results"] == [] and len(again["already_collected"]) == 20
    assert {i["prompt"] for i in again["already_collected"]} == set(prompts)
    assert len(history_pngs()) == 21  # the synchronous one; collecting twice saves nothing twice
    no_key_in(Path(os.environ["GIMP_OPENAI_CACHE_DIR"]))
    no_key_in(Path(os.environ["GIMP_OPENAI_HISTORY_DIR"]))


@pytest.mark.slow
def test_failed_generation_lines_are_listed_by_prompt(start_local_server, tmp_path):
    server = start_local_server("--batch-delay", "0.3", "--batch-fail-every", "3")
    prompts = prompts_file(tmp_path / "prompts.txt", 6)
    proc = cli("--json", "generate", "--prompts", str(tmp_path / "prompts.txt"), "--async", "--wait", "--poll", "0.2",
               *GENERATE, "--out", str(tmp_path / "out"), server=server)
    assert proc.returncode == 1, proc.stderr
    answer = json.loads(proc.stdout)
    assert len(answer["results"]) == 4 and len(history_pngs()) == 4
    assert [f["prompt"] for f in answer["failed"]] == [prompts[2], prompts[5]]
    assert all(f["error"]["code"] == "server_error" for f in answer["failed"])
    human = cli("generate", "--prompts", str(tmp_path / "prompts.txt"), "--async", *GENERATE, "--out",
                str(tmp_path / "out2"), server=server)
    assert human.returncode == 0 and "6 request(s) submitted at the Batch API's price (half)" in human.stdout
    estimates = [line for line in human.stderr.splitlines() if "estimate:" in line]
    assert [line.split(":")[0] for line in estimates] == [f"generated-{k}" for k in range(1, 7)]
    assert all(line.endswith("quality low: about $0.0030") for line in estimates), estimates  # half of $0.0060
