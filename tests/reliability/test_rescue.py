"""No paid image is ever lost: with the history folder full (a real 64 KiB tmpfs) or not writable (a read-only
tmpfs, or a path under a regular file where mounting is impossible), the images the server returned are kept
down the rescue chain (CLI: out folder -> temp rescue folder; job: temp rescue folder -> job out folder, because
a host deletes its job folder after inserting; then memory), byte for byte as the server sent them, and the
operation still completes with outputs and a note that says where the images went.

The server is the scripted wire server, so "what the server sent" is known to the byte.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import history as history_mod
from gimp_openai import operations
from gimp_openai.client import ImagesResult, ReturnedImage
from gimp_openai.geometry import Rect
from gimp_openai.settings import Settings
from PIL import Image

from tests.reliability import harness as H
from tests.support.tmpfs import tmpfs
from tests.support.wire_server import Reply, WireServer

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def bad_history(kind: str, tmp: Path) -> Iterator[tuple[Path, str]]:
    """(history folder, the words the note must use): full tmpfs, read-only tmpfs, or under a regular file."""
    if kind == "full":
        with tmpfs(tmp / "full-history", "size=64k") as folder:
            (folder / "filler.bin").write_bytes(b"\0" * 40_000)  # what earlier results left: 24 KiB free
            yield folder, "is full"
    elif kind == "readonly":
        with tmpfs(tmp / "ro-history", "ro,size=64k") as folder:
            yield folder, "is not writable"
    else:  # works without root: a folder path whose parent is a file cannot be created
        blocker = tmp / "blocker"
        blocker.write_bytes(b"a file, not a folder")
        yield blocker / "history", "could not be written"


def returned_png(seed: int, size: tuple[int, int]) -> bytes:
    """A returned image big enough not to fit in 64 KiB (noise), exactly target-sized."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def answer(images: list[bytes]) -> Reply:
    return Reply.json({"created": 1, "data": [{"b64_json": base64.b64encode(d).decode()} for d in images]},
                      headers={"x-request-id": "req_rescue"})


def layer_and_selection(w: int = 96, h: int = 64) -> tuple[np.ndarray, np.ndarray]:
    pixels = H.textured(h, w)
    selection = H.rect_selection(h, w, (30, 20, 30, 20))
    return pixels, selection


def files_in(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".png"}


def assert_kept(folder: Path, sent: list[bytes]) -> list[Path]:
    """Each sent image is in ``folder`` byte for byte, with its sidecar; nothing half-written anywhere."""
    kept = sorted(p for p in folder.iterdir() if p.suffix == ".png" and p.with_suffix(".json").exists())
    assert sorted(p.read_bytes() for p in kept) == sorted(sent), [p.name for p in folder.iterdir()]
    for p in kept:
        meta = json.loads(p.with_suffix(".json").read_text())
        assert meta["rescued_from"] and meta["bytes"] == len(p.read_bytes())
    assert not H.partial_files(folder)
    return kept


# --- through operations (in-process) ------------------------------------------------------------------------------


class SentClient:
    """Returns scripted PNG bytes of the target size (no problems)."""

    def __init__(self, n_seed: int = 1) -> None:
        self.sent: list[bytes] = []
        self.seed = n_seed

    def edit(self, **kw):
        w, h = (int(v) for v in kw["size"].split("x"))
        self.sent = [returned_png(self.seed + i, (w, h)) for i in range(kw.get("n", 1))]
        return ImagesResult(images=[ReturnedImage(data=d, index=i) for i, d in enumerate(self.sent)],
                            request_id="req_rescue")


@pytest.mark.parametrize("kind", ["full", "readonly", "under-a-file"])
def test_operations_rescue_to_the_fallback_folder(kind, tmp_path):
    with bad_history(kind, tmp_path) as (folder, words):
        client = SentClient()
        engine = operations.Engine(Settings(base_url="http://127.0.0.1:9/v1"), client, history_mod.History(folder))
        out = tmp_path / "out"
        engine.fallback_dirs = [out]
        pixels, selection = layer_and_selection()
        opts = operations.Options(model="gpt-image-2", prompt="a kite", n=2, align=False, tone_match=False)
        outcome = operations.edit(engine, opts, place_pixels=pixels, selection=selection,
                                  layer=Rect(0, 0, pixels.shape[1], pixels.shape[0]))
        assert len(outcome.outputs) == 2  # the operation went on: composited, ready to insert
        kept = assert_kept(out, client.sent)
        assert {o.history_png for o in outcome.outputs} == set(kept)
        (note,) = [n for n in outcome.notes if n.startswith("History folder")]
        assert f"History folder {folder} {words}" in note and f"the 2 images were saved to {out} instead" in note
        assert all(note in o.notes for o in outcome.outputs)
        if folder.exists():
            assert not files_in(folder) and not H.partial_files(folder)


def test_operations_out_folder_full_too_goes_to_temp_rescue(tmp_path, monkeypatch):
    rescue = tmp_path / "rescue"
    monkeypatch.setenv("GIMP_OPENAI_RESCUE_DIR", str(rescue))
    with bad_history("full", tmp_path) as (folder, _words), tmpfs(tmp_path / "full-out", "size=64k") as out:
        client = SentClient()
        engine = operations.Engine(Settings(base_url="http://127.0.0.1:9/v1"), client, history_mod.History(folder))
        engine.fallback_dirs = [out]
        pixels, selection = layer_and_selection()
        outcome = operations.edit(engine, operations.Options(model="gpt-image-2", prompt="a kite", n=1, align=False,
                                                             tone_match=False),
                                  place_pixels=pixels, selection=selection, layer=Rect(0, 0, 96, 64))
        assert_kept(rescue, client.sent)
        note = outcome.notes[-1]
        assert f"the image was saved to {rescue} instead" in note and f"{out} is full" in note
        assert not H.partial_files(folder, out)


def test_operations_last_resort_is_memory(tmp_path, monkeypatch):
    """Every folder fails: the operation still completes (the host can insert the layers) and says so."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"x")
    monkeypatch.setenv("GIMP_OPENAI_RESCUE_DIR", str(blocker / "rescue"))
    client = SentClient()
    engine = operations.Engine(Settings(base_url="http://127.0.0.1:9/v1"), client,
                               history_mod.History(blocker / "history"))
    engine.fallback_dirs = [blocker / "out"]
    pixels, selection = layer_and_selection()
    outcome = operations.edit(engine, operations.Options(model="gpt-image-2", prompt="a kite", n=2, align=False,
                                                         tone_match=False),
                              place_pixels=pixels, selection=selection, layer=Rect(0, 0, 96, 64))
    assert len(outcome.outputs) == 2 and all(o.history_png is None for o in outcome.outputs)
    note = outcome.notes[-1]
    assert "2 images could not be written anywhere" in note and "save your image now" in note
    assert str(blocker / "history") in note and str(blocker / "rescue") in note


# --- through the job protocol (engine subprocess) --------------------------------------------------------------------


def _job(tmp_path: Path, n: int) -> tuple[Path, dict]:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    jf = H.JobFolder(job_dir)
    pixels, selection = layer_and_selection()
    item = jf.add("img-1", pixels, selection)
    return jf.write(n=n), item


@pytest.mark.parametrize("kind", ["full", "readonly", "under-a-file"])
def test_job_rescue(kind, tmp_path):
    job, item = _job(tmp_path, n=2)
    sent = [returned_png(7, tuple(item["target"])), returned_png(8, tuple(item["target"]))]
    rescue = tmp_path / "rescue"
    with bad_history(kind, tmp_path) as (folder, words), WireServer([answer(sent)]) as server:
        run = H.run_job(job, server.url, GIMP_OPENAI_HISTORY_DIR=str(folder), GIMP_OPENAI_RESCUE_DIR=str(rescue))
        assert run.code == 0 and "Traceback" not in run.stderr, run.stderr
        result = run.result
        assert result["ok"], result
        (got,) = result["items"]
        kept = assert_kept(rescue, sent)
        assert {o["history_png"] for o in got["outputs"]} == {str(p) for p in kept}
        for o in got["outputs"]:  # the host can insert them
            assert Path(o["layer_png"]).exists() and Path(o["mask_png"]).exists()
            assert f"History folder {folder} {words}" in o["notes"]
        (warning,) = result["warnings"]
        assert warning == got["warnings"][0] and warning["code"] == "results_elsewhere"
        assert f"the 2 images were saved to {rescue} instead" in warning["message"]
        assert not H.partial_files(job.parent / "out", rescue)


def test_job_rescue_falls_back_to_out_folder(tmp_path):
    """The temp rescue folder unusable too: the job's out folder (still there while the host inserts)."""
    job, item = _job(tmp_path, n=1)
    sent = [returned_png(9, tuple(item["target"]))]
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"x")
    with bad_history("full", tmp_path) as (folder, _words), WireServer([answer(sent)]) as server:
        run = H.run_job(job, server.url, GIMP_OPENAI_HISTORY_DIR=str(folder),
                        GIMP_OPENAI_RESCUE_DIR=str(blocker / "rescue"))
        assert run.result["ok"], run.stdout + run.stderr
        out = job.parent / "out"
        assert_kept(out, sent)
        assert f"the image was saved to {out} instead" in run.result["warnings"][0]["message"]


# --- through the CLI --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["full", "readonly"])
def test_cli_rescue_to_out_folder(kind, tmp_path):
    pixels, selection = layer_and_selection()
    image, mask = tmp_path / "photo.png", tmp_path / "sel.png"
    Image.fromarray(pixels, "RGBA").save(image)
    Image.fromarray(selection, "L").save(mask)
    item = H.plan_item({"x": 0, "y": 0, "width": 96, "height": 64}, {"x": 30, "y": 20, "width": 30, "height": 20})
    sent = [returned_png(11, tuple(item["target"]))]
    out = tmp_path / "out"
    with bad_history(kind, tmp_path) as (folder, words), WireServer([answer(sent)]) as server:
        env = H.engine_env(server.url, GIMP_OPENAI_HISTORY_DIR=str(folder),
                           GIMP_OPENAI_RESCUE_DIR=str(tmp_path / "rescue"))
        proc = subprocess.run([sys.executable, "-m", "gimp_openai", "--json", "edit", str(image), "--mask", str(mask),
                               "--prompt", "a kite", "--model", "gpt-image-2", "--out", str(out), "-q",
                               "--no-align", "--no-tone-match"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        answer_ = json.loads(proc.stdout)
        (result,) = answer_["results"]
        (output,) = result["outputs"]
        assert Path(output["png"]).exists() and Path(result["ora"]).exists()
        rescued = Path(output["history_png"])
        assert rescued.parent == out and rescued.read_bytes() == sent[0]
        assert json.loads(rescued.with_suffix(".json").read_text())["rescued_from"] == str(folder)
        (note,) = result["notes"]
        assert f"History folder {folder} {words}; the image was saved to {out} instead." == note
        assert not H.partial_files(out) and not (tmp_path / "rescue").exists()
    assert os.environ.get("GIMP_OPENAI_RESCUE_DIR") is None  # nothing leaked into this process
