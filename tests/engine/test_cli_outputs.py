"""Where the CLI's files go: names claimed atomically and kept inside --out; paid images always accounted for;
private history and rescue folders. The real CLI as a subprocess against the real local server.

Regressions: ``batch a/x.png b/x.png --concurrency 2`` overwrote outputs and wrote both .ora files into one
(exit 0); ``generate --name ../../X`` wrote outside --out; with history and --out both full the images were in
the rescue folder but the error said nothing (``"saved": []``), and when nothing could be written the loss was
not said; the history folder was created 0755; the rescue folder in the shared temp folder followed a symlink
another user planted there.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from gimp_openai.atomic import pending_file
from PIL import Image

from tests.engine.test_cli_e2e import cli, edit_requests, rgba
from tests.support.tmpfs import tmpfs


def picture(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[...] = colour
    pixels[:, ::7] = 30  # some structure, so the two inputs' outputs are told apart by their pixels
    Image.fromarray(pixels).save(path)
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_names_are_claimed_atomically_by_racing_writers(tmp_path):
    """Eight threads publish the same name at once: eight files, none overwritten (link-based claim)."""
    barrier = threading.Barrier(8)
    paths: list[Path] = []

    def write(k: int) -> None:
        with pending_file(tmp_path, "x.png") as pending:
            pending.write_all(f"writer {k}".encode())
            barrier.wait()
            paths.append(pending.publish_unique("x-edit-1", ".png"))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(paths)) == 8 and {p.name for p in paths} >= {"x-edit-1.png", "x-edit-1-2.png"}
    assert sorted(p.read_text() for p in paths) == sorted(f"writer {k}" for k in range(8))
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in paths}  # no temp file left


@pytest.mark.slow
def test_same_named_inputs_from_two_folders_get_distinct_outputs(local_server, tmp_path):
    a = picture(tmp_path / "a" / "x.png", (200, 40, 40))
    b = picture(tmp_path / "b" / "x.png", (40, 40, 200))
    out = tmp_path / "out"
    proc = cli("--json", "batch", str(a), str(b), "--rect", "10,10,30,20", "--prompt", "a kite", "--model",
               "gpt-image-2", "--concurrency", "2", "--no-align", "--no-tone-match", "--out", str(out),
               server=local_server)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    pngs = [Path(r["outputs"][0]["png"]) for r in results]
    oras = [Path(r["ora"]) for r in results]
    assert len(set(pngs)) == 2 and len(set(oras)) == 2
    assert {p.name for p in files_under(out)} == {"x-edit-1.png", "x-edit-1-2.png", "x-openai.ora", "x-openai-2.ora"}
    for result, png in zip(results, pngs, strict=True):  # each output holds its own input's pixels outside the edit
        source = rgba(result["source"])
        assert np.array_equal(rgba(png)[40:, 50:], source[40:, 50:])
    assert edit_requests(local_server) == 2


@pytest.mark.parametrize("name, stem", [("../../X", "X"), ("/etc/evil", "etc-evil"), ("..", "generated"),
                                         ("a\nb", "a-b"), ("Ünïcode ／ slash", "Unicode-slash")])
def test_generate_names_stay_inside_out(local_server, tmp_path, name, stem):
    out = tmp_path / "deep" / "out"
    proc = cli("--json", "generate", "--prompt", "a lighthouse", "--model", "gpt-image-2", "--size", "1024x1024",
               "--name", name, "--out", str(out), server=local_server)
    assert proc.returncode == 0, proc.stderr
    (output,) = json.loads(proc.stdout)["results"][0]["outputs"]
    assert Path(output["png"]) == out / f"{stem}-1.png"
    assert files_under(tmp_path) == {out / f"{stem}-1.png"}  # nothing anywhere else under the test's folder


def test_the_history_folder_is_created_private(local_server, tmp_path, monkeypatch):
    history = tmp_path / "new" / "history"
    proc = cli("generate", "--prompt", "a secret plan", "--model", "gpt-image-2", "--size", "1024x1024",
               "--out", str(tmp_path / "out"), server=local_server, env={"GIMP_OPENAI_HISTORY_DIR": str(history)})
    assert proc.returncode == 0, proc.stderr
    assert os.stat(history).st_mode & 0o777 == 0o700
    assert any("a-secret-plan" in p.name for p in history.iterdir())


def fill(folder: Path) -> None:
    """Fill a tmpfs to the last byte: an empty file can still be created (the out-folder check passes), no
    image fits."""
    with open(folder / "filler.bin", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def _edit_into_full_out(server, tmp_path: Path, out: Path, env: dict) -> tuple:
    fill(out)
    source = picture(tmp_path / "p.png", (120, 160, 90), (600, 400))
    proc = cli("--json", "edit", str(source), "--rect", "100,100,200,150", "--prompt", "a kite", "--model",
               "gpt-image-2", "--no-align", "--no-tone-match", "-q", "--out", str(out), server=server, env=env)
    return proc, json.loads(proc.stdout)


@pytest.mark.slow
def test_history_and_out_full_the_error_says_where_the_paid_image_is(local_server, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so no folder can be made under it")
    rescue = tmp_path / "rescue"
    with tmpfs(tmp_path / "small-out", "size=64k") as out:
        proc, answer = _edit_into_full_out(local_server, tmp_path, out, {
            "GIMP_OPENAI_HISTORY_DIR": str(blocker / "history"), "GIMP_OPENAI_RESCUE_DIR": str(rescue)})
    assert proc.returncode == 1
    (kept,) = [p for p in rescue.glob("*.png") if not p.name.endswith(".mask.png")]
    error = answer["error"]
    assert error["saved"] == [str(kept)] and error["unsaved"] == 0
    assert f"The paid image is saved: {kept}." in error["message"]
    first = proc.stderr.splitlines()[0]
    assert first.startswith("gimp-openai: error: Cannot write ") and f"The paid image is saved: {kept}." in first
    assert Image.open(kept).size[0] > 0  # the image the server sent, whole


@pytest.mark.slow
def test_nothing_writable_the_loss_is_said_and_the_run_fails(local_server, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so no folder can be made under it")
    with tmpfs(tmp_path / "small-out", "size=64k") as out:
        proc, answer = _edit_into_full_out(local_server, tmp_path, out, {
            "GIMP_OPENAI_HISTORY_DIR": str(blocker / "history"), "GIMP_OPENAI_RESCUE_DIR": str(blocker / "rescue")})
    assert proc.returncode == 1
    error = answer["error"]
    assert error["saved"] == [] and error["unsaved"] == 1
    assert ("1 paid image could not be saved anywhere (history, the output folder and the rescue folder all "
            "failed) and is lost.") in error["message"]
    assert "is lost." in proc.stderr.splitlines()[0]


@pytest.mark.slow
def test_the_rescue_folder_never_follows_a_planted_symlink(local_server, tmp_path):
    """Another user made <tmp>/gimp-openai-rescue-<uid> a symlink to their folder: nothing lands there."""
    shared_tmp = tmp_path / "shared-tmp"
    attacker = tmp_path / "attacker"
    shared_tmp.mkdir()
    attacker.mkdir()
    (shared_tmp / f"gimp-openai-rescue-{os.getuid()}").symlink_to(attacker)
    blocker = tmp_path / "blocker"
    blocker.write_text("no folder under a file")
    env = {"GIMP_OPENAI_HISTORY_DIR": str(blocker / "history"), "TMPDIR": str(shared_tmp),
           "GIMP_OPENAI_RESCUE_DIR": ""}
    with tmpfs(tmp_path / "small-out", "size=64k") as out:
        proc, answer = _edit_into_full_out(local_server, tmp_path, out, env)
    assert proc.returncode == 1
    assert list(attacker.iterdir()) == []
    (kept,) = answer["error"]["saved"]
    folder = Path(kept).parent
    assert folder.parent == shared_tmp and folder.name.startswith(f"gimp-openai-rescue-{os.getuid()}-")
    info = os.lstat(folder)
    assert info.st_uid == os.getuid() and info.st_mode & 0o777 == 0o700 and Path(kept).is_file()
