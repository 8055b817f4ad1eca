"""The host protocol end to end, as a GIMP host drives it: `python -m gimp_openai plan`, export `place`,
`python -m gimp_openai job`, read JSON lines. Real subprocesses against the real local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY

DATA = Path(__file__).resolve().parents[2] / "plugin" / "gimp_openai" / "data"


#: The line-up as of 2026-11-25 (issue 9): gpt-image-1 gone, the rest of its family retiring on 2026-12-01.
TODAYS_LINEUP = ("--today", "2026-11-25", "--shutdown", "gpt-image-1=2026-10-23",
                 "--shutdown", "gpt-image-1-mini=2026-12-01",
                 "--shutdown", "gpt-image-1.5=2026-12-01", "--shutdown", "chatgpt-image-latest=2026-12-01")


def engine(*args: str, server, env: dict | None = None) -> tuple[int, list[dict], str]:
    child = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=server.url)
    child.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", *args], capture_output=True, text=True, env=child,
                          timeout=240)
    assert FAKE_KEY not in proc.stdout and FAKE_KEY not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr


def layer_image(offset=(0, 0)):
    """The sample as a layer placed at ``offset`` in the image, and the balloon selection in image coordinates."""
    pixels = np.asarray(Image.open(DATA / "lake-balloon.png").convert("RGBA"))
    sel = np.asarray(Image.open(DATA / "lake-balloon-selection.png").convert("L"))
    return pixels, sel


def bounds(sel: np.ndarray, origin=(0, 0)) -> dict:
    ys, xs = np.nonzero(sel)
    return {"x": int(xs.min()) + origin[0], "y": int(ys.min()) + origin[1], "width": int(xs.max() - xs.min() + 1),
            "height": int(ys.max() - ys.min() + 1)}


def export(folder: Path, item_id: str, pixels, sel, layer_xy, place) -> dict:
    """What a host does: cut ``place`` (image coords) out of the layer, as RGBA and grayscale PNGs."""
    x0, y0 = place["x"] - layer_xy[0], place["y"] - layer_xy[1]
    crop = pixels[y0 : y0 + place["height"], x0 : x0 + place["width"]]
    sel_crop = sel[y0 : y0 + place["height"], x0 : x0 + place["width"]]
    Image.fromarray(crop, "RGBA").save(folder / f"{item_id}.png")
    Image.fromarray(sel_crop, "L").save(folder / f"{item_id}-sel.png")
    return {"image": f"{item_id}.png", "selection": f"{item_id}-sel.png"}


@pytest.mark.slow
def test_plan_then_job_returns_layers_that_sit_exactly_in_place(local_server, tmp_path):
    pixels, sel = layer_image()
    layer_xy = (10, -5)
    layer = {"x": layer_xy[0], "y": layer_xy[1], "width": pixels.shape[1], "height": pixels.shape[0]}
    plan = {"version": 1, "operation": "edit", "model": "", "size_mode": "auto", "context_padding": 0.25,
            "items": [{"id": "img-1", "layer": layer, "selection_bounds": bounds(sel, layer_xy)}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, lines, err = engine("plan", str(tmp_path / "plan.json"), server=local_server)
    assert code == 0, err
    (answer,) = lines
    assert answer["ok"] and answer["model"] == "gpt-image-2.6-sunburst"  # "" -> the newest live GPT image model
    (item,) = answer["items"]
    files = export(tmp_path, "img-1", pixels, sel, layer_xy, item["place"])
    job = {"version": 1, "operation": "edit", "model": answer["model"], "prompt": "remove the balloon", "n": 2,
           "quality": "low", "out_dir": "out", "source_name": "photo.xcf", "add_mask": True,
           "items": [dict(item, layer=layer, **files)]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=local_server)
    assert code == 0, err
    progress, result = lines[:-1], lines[-1]
    assert result["type"] == "result" and result["ok"] is True and result["error"] is None
    phases = [p["phase"] for p in progress]
    for phase in ("upload", "waiting", "saving", "compositing", "done"):
        assert phase in phases
    assert all(p["type"] == "progress" and p["item"] == "img-1" for p in progress)
    waiting = [p for p in progress if p["phase"] == "waiting"]
    assert waiting[0]["message"].startswith(f"Waiting for {answer['model']} (") and len(waiting[0]["expected"]) == 2
    overall = [p["overall"] for p in progress]
    assert overall == sorted(overall) and overall[-1] == 1.0

    (res_item,) = result["items"]
    place = item["place"]
    x0, y0 = place["x"] - layer_xy[0], place["y"] - layer_xy[1]
    original = pixels[y0 : y0 + place["height"], x0 : x0 + place["width"]]
    sel_place = sel[y0 : y0 + place["height"], x0 : x0 + place["width"]]
    for k, out in enumerate(res_item["outputs"], start=1):
        assert out["name"] == f"OpenAI: remove the balloon ({k}/2)" and out["path"] == "edit"
        assert (out["x"], out["y"], out["width"], out["height"]) == (place["x"], place["y"], place["width"],
                                                                      place["height"])
        layer_png = np.asarray(Image.open(out["layer_png"]).convert("RGBA"))
        mask = np.asarray(Image.open(out["mask_png"]))
        assert layer_png.shape[:2] == mask.shape == original.shape[:2]
        assert mask.dtype == np.uint8 and mask.ndim == 2
        assert (mask[sel_place == 0] == 0).all() and (mask[sel_place == 255] > 0).mean() > 0.9
        assert Path(out["history_png"]).exists() and out["request_id"]
        sidecar = next(Path(out["history_png"]).parent.glob(Path(out["history_png"]).stem + "*.json"))
        meta = json.loads(sidecar.read_text())
        assert meta["prompt"] == "remove the balloon" and meta["source"] == "photo.xcf"
        assert meta["place"] == place and FAKE_KEY not in sidecar.read_text()
    assert sum(v for k, v in local_server.stats()["endpoints"].items() if "edits" in k) == 1


@pytest.mark.slow
def test_a_batch_job_keeps_the_good_items_when_one_fails(start_local_server, tmp_path):
    """One server fault (moderation, never retried) and one bad export: the other items still come back."""
    server = start_local_server("--fault", "moderation_blocked;times=1")
    pixels, _ = layer_image()
    layer = {"x": 0, "y": 0, "width": 300, "height": 200}
    items = []
    for i in range(4):
        crop = pixels[100 + 20 * i : 300 + 20 * i, 300:600]
        Image.fromarray(np.ascontiguousarray(crop), "RGBA").save(tmp_path / f"i{i}.png")
        sel = np.zeros((200, 300), np.uint8)
        sel[50:150, 100:200] = 255
        Image.fromarray(sel if i != 3 else sel[:50], "L").save(tmp_path / f"i{i}-sel.png")
        items.append({"id": f"i{i}", "image": f"i{i}.png", "selection": f"i{i}-sel.png", "layer": layer,
                      "place": layer, "request": layer, "target": [1024, 688]})
    job = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": "sky", "n": 1, "out_dir": "out",
           "align": False, "tone_match": False, "concurrency": 4, "items": items}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=server)
    assert code == 0, err
    result = lines[-1]
    assert result["ok"] is False and result["error"]["code"] == "partial_failure"
    by_id = {i["id"]: i for i in result["items"]}
    failed = {k for k, v in by_id.items() if not v["ok"]}
    assert "i3" in failed and "is 300x50 but the planned region is 300x200" in by_id["i3"]["error"]["message"]
    moderated = [k for k, v in by_id.items() if not v["ok"] and v["error"]["code"] == "moderation_blocked"]
    assert len(moderated) == 1 and len(failed) == 2
    for k, v in by_id.items():
        if v["ok"]:
            assert Path(v["outputs"][0]["layer_png"]).exists()
    progress_items = {p["item"] for p in lines[:-1]}
    assert {"i0", "i1", "i2"} <= progress_items
    # three requests reached the server (the bad export never did), none retried
    assert sum(v for k, v in server.stats()["endpoints"].items() if "edits" in k) == 3


@pytest.mark.slow
def test_variation_and_generate_jobs(local_server, tmp_path):
    pixels, _ = layer_image()
    layer = {"x": 0, "y": 0, "width": 256, "height": 256}
    Image.fromarray(np.ascontiguousarray(pixels[:256, :256]), "RGBA").save(tmp_path / "v.png")
    job = {"version": 1, "operation": "variation", "model": "dall-e-2", "n": 1, "out_dir": "out",
           "items": [{"id": "v", "image": "v.png", "layer": layer, "place": layer, "request": layer,
                      "target": [256, 256]}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=local_server)
    assert code == 0 and lines[-1]["ok"], lines[-1]
    (out,) = lines[-1]["items"][0]["outputs"]
    assert out["path"] == "variation-endpoint" and out["name"] == "OpenAI: variation (1/1)"
    job = {"version": 1, "operation": "generate", "model": "gpt-image-2", "prompt": "a kite", "n": 1,
           "size": "1024x1024", "out_dir": "gen"}
    (tmp_path / "gen.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "gen.json"), server=local_server)
    assert code == 0 and lines[-1]["ok"], lines[-1]
    (out,) = lines[-1]["items"][0]["outputs"]
    assert out["path"] == "generate" and Image.open(out["layer_png"]).size == (1024, 1024)
    # into an image: the canvas's aspect is asked for and the layer covers the canvas
    job = {"version": 1, "operation": "generate", "model": "gpt-image-2", "prompt": "a kite", "n": 1,
           "canvas": {"width": 900, "height": 300}, "out_dir": "canvas"}
    (tmp_path / "canvas.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "canvas.json"), server=local_server)
    assert code == 0 and lines[-1]["ok"], lines[-1]
    (out,) = lines[-1]["items"][0]["outputs"]
    assert Image.open(out["layer_png"]).size == (900, 300) and (out["x"], out["y"]) == (0, 0)
    assert Image.open(out["history_png"]).size == (1776, 592)
    job["canvas"] = {"width": 0, "height": 300}
    (tmp_path / "bad.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "bad.json"), server=local_server)
    assert not lines[-1]["ok"] and "'width' of 'canvas' 0 is not allowed" in lines[-1]["error"]["message"]


@pytest.mark.slow
def test_a_shut_down_model_in_a_job_names_the_replacement(start_local_server, tmp_path):
    server = start_local_server(*TODAYS_LINEUP)
    job = {"version": 1, "operation": "generate", "model": "gpt-image-1", "prompt": "a kite", "out_dir": "gen"}
    (tmp_path / "gen.json").write_text(json.dumps(job))
    code, lines, _ = engine("job", str(tmp_path / "gen.json"), server=server)
    assert code == 0
    (item,) = lines[-1]["items"]
    assert item["error"]["code"] == "model_not_found" and item["error"]["replacement"] == "gpt-image-2.6-sunburst"
    assert "`gpt-image-1` was shut down on 2026-10-23" in item["error"]["message"]
    assert sum(v for k, v in server.stats()["endpoints"].items() if "generations" in k) == 1


@pytest.mark.slow
def test_a_retried_request_is_shown_in_the_progress_and_sent_exactly_twice(start_local_server, tmp_path):
    server = start_local_server("--fault", "503;times=1;retry-after=0")
    pixels, _ = layer_image()
    layer = {"x": 0, "y": 0, "width": 256, "height": 256}
    Image.fromarray(np.ascontiguousarray(pixels[:256, :256]), "RGBA").save(tmp_path / "v.png")
    job = {"version": 1, "operation": "variation", "model": "dall-e-2", "n": 1, "out_dir": "out",
           "items": [{"id": "v", "image": "v.png", "layer": layer, "place": layer, "request": layer,
                      "target": [256, 256]}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code, lines, err = engine("job", str(tmp_path / "job.json"), server=server)
    assert code == 0 and lines[-1]["ok"], lines[-1]
    retries = [p for p in lines[:-1] if "Retry in" in p.get("message", "")]
    assert len(retries) == 1 and retries[0]["item"] == "v" and retries[0]["phase"] == "waiting"
    assert server.stats()["endpoints"].get("variations") == 2


@pytest.mark.slow
def test_one_session_process_answers_plan_then_job_as_a_host_drives_it(local_server, tmp_path, monkeypatch):
    """hostlib's EngineSession against the real engine: plan and job in ONE process (its pid is the same),
    the plan tagged as such, the job's layers in place; the process has exited when the session ends."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugin" / "hostlib"))
    import gimp_openai_host as host

    monkeypatch.setenv("OPENAI_BASE_URL", local_server.url)
    pixels, sel = layer_image()
    layer = {"x": 0, "y": 0, "width": pixels.shape[1], "height": pixels.shape[0]}
    with host.EngineSession(python=sys.executable, api_key=FAKE_KEY) as session:
        answer = host.plan({"operation": "edit", "model": "", "items": [
            {"id": "img-1", "layer": layer, "selection_bounds": bounds(sel)}]}, str(tmp_path), session=session)
        pid = session.proc.pid
        (item,) = answer["items"]
        files = export(tmp_path, "img-1", pixels, sel, (0, 0), item["place"])
        seen = []
        result = host.run_job({"operation": "edit", "model": answer["model"], "prompt": "remove the balloon",
                               "n": 1, "out_dir": "out", "items": [dict(item, layer=layer, **files)]},
                              str(tmp_path), session=session, on_progress=lambda f, m: seen.append(f))
        assert session.proc.pid == pid
        proc = session.proc
    assert answer["type"] == "plan" and answer["model"] == "gpt-image-2.6-sunburst"
    assert result["ok"] and seen and max(seen) == 1.0
    (output,) = result["items"][0]["outputs"]
    assert (output["x"], output["y"]) == (item["place"]["x"], item["place"]["y"])
    assert proc.returncode == 0


def test_session_answers_a_malformed_request_and_goes_on(tmp_path):
    """A broken request line gets one error answer; the next request is still served."""
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2",
            "items": [{"id": "a", "layer": {"x": 0, "y": 0, "width": 100, "height": 80},
                       "selection_bounds": {"x": 10, "y": 10, "width": 20, "height": 20}}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    requests = "not json\n" + json.dumps({"cmd": "plan", "path": str(tmp_path / "plan.json")}) + "\n"
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "session"], input=requests, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, OPENAI_API_KEY=FAKE_KEY))
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["type"] == "session" and not first["ok"] and '"cmd"' in first["error"]["message"]
    assert second["type"] == "plan" and second["ok"] and second["items"][0]["id"] == "a"


@pytest.mark.slow
def test_a_host_gone_mid_job_ends_the_engine_at_once_and_the_next_session_says_what_was_paid(
        start_local_server, tmp_path):
    """GIMP's Cancel stops the plug-in: the engine's input ends while a job runs. The engine must stop at once
    (not finish the billed request), remove the host's job folder, keep the images it had already received
    in history, and its next session must tell where they are."""
    server = start_local_server("--fault", "latency=60;times=1")  # one of the two requests hangs
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=server.url)
    work = tmp_path / "gimp-openai-cancel"  # named as hosts name their job folders
    work.mkdir()
    pixels, sel = layer_image()
    layer = {"x": 0, "y": 0, "width": pixels.shape[1], "height": pixels.shape[0]}
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2",
            "items": [{"id": f"img-{k}", "layer": layer, "selection_bounds": bounds(sel)} for k in (1, 2)]}
    (work / "plan.json").write_text(json.dumps(plan))
    engine = subprocess.Popen([sys.executable, "-m", "gimp_openai", "session"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        engine.stdin.write(json.dumps({"cmd": "plan", "path": str(work / "plan.json")}) + "\n")
        engine.stdin.flush()
        answer = json.loads(engine.stdout.readline())
        items = []
        for item in answer["items"]:
            files = export(work, item["id"], pixels, sel, (0, 0), item["place"])
            items.append(dict(item, layer=layer, **files))
        job = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": "remove the balloon", "n": 1,
               "concurrency": 2, "out_dir": "out", "items": items}
        (work / "job.json").write_text(json.dumps(job))
        engine.stdin.write(json.dumps({"cmd": "job", "path": str(work / "job.json")}) + "\n")
        engine.stdin.flush()
        for line in engine.stdout:  # until one of the two items is done (paid, in history)
            event = json.loads(line)
            assert event.get("type") != "result", event
            if event.get("phase") == "done":
                break
        started = time.monotonic()
        engine.stdin.close()  # the host is gone
        engine.wait(timeout=15)
        stopped = time.monotonic() - started
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 0 and stopped < 5, (stopped, engine.stderr.read())
    assert not work.exists()  # the host's job folder is not left behind
    served = [r for r in server.stats()["requests"] if r["path"].endswith("/images/edits")]
    assert len(served) == 2
    # the next session tells the artist, once, where the image received before the cancel is
    (tmp_path / "plan2.json").write_text(json.dumps(dict(plan, items=plan["items"][:1])))
    requests = json.dumps({"cmd": "plan", "path": str(tmp_path / "plan2.json")}) + "\n"
    # a session started ahead and never asked anything (a plug-in run that needed no engine) keeps the notice
    unused = subprocess.run([sys.executable, "-m", "gimp_openai", "session"], input="", capture_output=True,
                            text=True, timeout=120, env=env)
    assert unused.returncode == 0 and unused.stdout == "", unused.stderr
    seen = []
    for _ in range(2):
        nxt = subprocess.run([sys.executable, "-m", "gimp_openai", "session"], input=requests, capture_output=True,
                             text=True, timeout=120, env=env)
        seen.append(json.loads(nxt.stdout.splitlines()[0]).get("notices", []))
    (notice,), later = seen
    assert later == []  # said once
    assert notice["code"] == "cancelled_results" and "(paid for)" in notice["message"]
    (saved,) = [line.strip() for line in notice["message"].splitlines()[1:]]
    assert Path(saved).is_file() and Path(saved).with_suffix(".json").is_file()


def _session_job(work: Path, env: dict[str, str], then: str) -> tuple[subprocess.Popen, dict]:
    """One session through plan and job to its result line; ``then`` is what the host does next ("done" and
    close, or just close: killed while it inserted the layers)."""
    pixels, sel = layer_image()
    layer = {"x": 0, "y": 0, "width": pixels.shape[1], "height": pixels.shape[0]}
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2",
            "items": [{"id": "img-1", "layer": layer, "selection_bounds": bounds(sel)}]}
    (work / "plan.json").write_text(json.dumps(plan))
    engine = subprocess.Popen([sys.executable, "-m", "gimp_openai", "session"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    engine.stdin.write(json.dumps({"cmd": "plan", "path": str(work / "plan.json")}) + "\n")
    engine.stdin.flush()
    (item,) = json.loads(engine.stdout.readline())["items"]
    files = export(work, "img-1", pixels, sel, (0, 0), item["place"])
    job = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": "remove the balloon", "n": 1,
           "out_dir": "out", "items": [dict(item, layer=layer, **files)]}
    (work / "job.json").write_text(json.dumps(job))
    engine.stdin.write(json.dumps({"cmd": "job", "path": str(work / "job.json")}) + "\n")
    engine.stdin.flush()
    for line in engine.stdout:
        result = json.loads(line)
        if result.get("type") == "result":
            break
    if then == "done":
        engine.stdin.write('{"cmd": "done"}\n')
    engine.stdin.close()
    engine.wait(timeout=30)
    return engine, result


@pytest.mark.slow
def test_a_host_killed_while_inserting_is_a_cancel_and_done_is_the_normal_end(local_server, tmp_path):
    """GIMP's Cancel can come after the result line, while the plug-in puts the layers into the image: the
    plug-in is killed, its folder would stay and the paid image go unmentioned. Without the host's ``done``
    the end of input is a cancel (folder removed, the image named next run); with it, the normal end."""
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=local_server.url)
    killed = tmp_path / "gimp-openai-killed"
    killed.mkdir()
    engine, result = _session_job(killed, env, then="close")
    assert engine.returncode == 0 and result["ok"], engine.stderr.read()
    assert not killed.exists()
    (output,) = result["items"][0]["outputs"]
    (tmp_path / "plan.json").write_text(json.dumps({"version": 1, "operation": "edit", "model": "gpt-image-2",
                                                    "items": []}))
    requests = json.dumps({"cmd": "plan", "path": str(tmp_path / "plan.json")}) + "\n"
    nxt = subprocess.run([sys.executable, "-m", "gimp_openai", "session"], input=requests, capture_output=True,
                         text=True, timeout=120, env=env)
    (notice,) = json.loads(nxt.stdout.splitlines()[0]).get("notices", [])
    assert notice["code"] == "cancelled_results" and output["history_png"] in notice["message"]
    finished = tmp_path / "gimp-openai-finished"
    finished.mkdir()
    engine, result = _session_job(finished, env, then="done")
    assert engine.returncode == 0 and result["ok"]
    assert finished.exists()  # the host removes its own folder after a normal run
    nxt = subprocess.run([sys.executable, "-m", "gimp_openai", "session"], input=requests, capture_output=True,
                         text=True, timeout=120, env=env)
    assert not json.loads(nxt.stdout.splitlines()[0]).get("notices")  # nothing was cancelled


def test_a_host_gone_before_its_job_leaves_no_folder_and_no_process(start_local_server, tmp_path):
    """GIMP's Cancel can stop the plug-in while it plans or exports, before any job: the host's job folder
    (named by its plan request) must go with the engine, nothing may be sent to the server, and a folder that
    is not a host's (a script's own) stays."""
    server = start_local_server()
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=server.url)
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2",
            "items": [{"id": "img-1", "layer": {"x": 0, "y": 0, "width": 400, "height": 300},
                       "selection_bounds": {"x": 120, "y": 100, "width": 160, "height": 100}}]}

    def gone(folder: Path, when: str) -> float:
        folder.mkdir()
        (folder / "plan.json").write_text(json.dumps(plan))
        engine = subprocess.Popen([sys.executable, "-m", "gimp_openai", "session"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            engine.stdin.write(json.dumps({"cmd": "plan", "path": str(folder / "plan.json")}) + "\n")
            engine.stdin.flush()
            if when == "exporting":  # the plan answered; the host was writing its PNGs
                assert json.loads(engine.stdout.readline())["ok"]
                (folder / "img-1.png").write_bytes(b"half a PNG")
            started = time.monotonic()
            engine.stdin.close()  # killed: its end of the pipe closes
            engine.wait(timeout=30)
            return time.monotonic() - started
        finally:
            if engine.poll() is None:
                engine.kill()
            assert engine.returncode == 0, engine.stderr.read()

    seconds = gone(tmp_path / "gimp-openai-exporting", "exporting")
    assert not (tmp_path / "gimp-openai-exporting").exists() and seconds < 10, seconds
    gone(tmp_path / "gimp-openai-planning", "planning")  # the plan request sent, its answer never read
    assert not (tmp_path / "gimp-openai-planning").exists()
    gone(tmp_path / "scripts-own", "exporting")
    assert (tmp_path / "scripts-own" / "plan.json").is_file()
    assert not [r for r in server.stats()["requests"] if "/images/" in r["path"]]
    assert [p.name for p in tmp_path.iterdir()] == ["scripts-own"]
