"""`gimp-openai` as a user runs it: a real subprocess against the real local server (C's) on 127.0.0.1.

Each test asserts what the user gets: output pixels (outside the selection bit-identical), .ora layers,
history files and sidecars (no key anywhere), the server's request counts (no unwanted retries), and error
texts (one line and a hint, no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY

DATA = Path(__file__).resolve().parents[2] / "plugin" / "gimp_openai" / "data"
SAMPLE = DATA / "lake-balloon.png"
SAMPLE_SEL = DATA / "lake-balloon-selection.png"


#: The line-up as of 2026-11-25: gpt-image-1 gone, the rest of its family retiring on 2026-12-01.
TODAYS_LINEUP = ("--today", "2026-11-25", "--shutdown", "gpt-image-1=2026-10-23",
                 "--shutdown", "gpt-image-1-mini=2026-12-01",
                 "--shutdown", "gpt-image-1.5=2026-12-01", "--shutdown", "chatgpt-image-latest=2026-12-01")


def cli(*args: str, server=None, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    child = dict(os.environ)
    child["OPENAI_API_KEY"] = FAKE_KEY
    if server is not None:
        child["OPENAI_BASE_URL"] = server.url
    child.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", *args], capture_output=True, text=True, env=child,
                          input=stdin, timeout=240)
    assert FAKE_KEY not in proc.stdout and FAKE_KEY not in proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def rgba(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def history_dir() -> Path:
    return Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])


def no_key_in_files(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f


def image_requests(server) -> int:
    return sum(v for k, v in server.stats()["endpoints"].items() if k in ("edits", "variations", "generations"))


def edit_requests(server) -> int:
    return sum(v for k, v in server.stats()["endpoints"].items() if "edits" in k)


@pytest.mark.slow
def test_edit_removes_the_balloon_and_keeps_everything_else(local_server, tmp_path):
    out = tmp_path / "out"
    proc = cli("--json", "edit", str(SAMPLE), "--mask", str(SAMPLE_SEL), "--prompt", "remove the balloon",
               "--model", "gpt-image-2", "-n", "2", "--out", str(out), server=local_server)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    (result,) = answer["results"]
    original = rgba(SAMPLE)
    selection = np.asarray(Image.open(SAMPLE_SEL).convert("L"))
    assert len(result["outputs"]) == 2
    for k, output in enumerate(result["outputs"], start=1):
        assert output["name"] == f"OpenAI: remove the balloon ({k}/2)"
        assert output["path"] == "edit"
        full = rgba(output["png"])
        assert full.shape == original.shape
        assert np.array_equal(full[selection == 0], original[selection == 0])  # bit for bit
        # the red balloon is gone from the middle of the selection
        red = (full[..., 0] > 150) & (full[..., 1] < 80) & (selection == 255)
        assert red.sum() < 0.02 * (selection == 255).sum()
        # the placed crop contains the whole selection
        ys, xs = np.nonzero(selection)
        assert output["x"] <= xs.min() and output["y"] <= ys.min()
        assert output["x"] + output["width"] > xs.max() and output["y"] + output["height"] > ys.max()
        assert Path(output["history_png"]).exists()
    # exactly one request: nothing was retried
    assert edit_requests(local_server) == 1
    # layered OpenRaster: the original plus one layer per result, named from the prompt
    ora = Path(result["ora"])
    with zipfile.ZipFile(ora) as z:
        assert z.namelist()[0] == "mimetype" and z.read("mimetype") == b"image/openraster"
        names = [layer.get("name") for layer in ET.fromstring(z.read("stack.xml")).iter("layer")]
    assert set(names) == {"lake-balloon", "OpenAI: remove the balloon (1/2)", "OpenAI: remove the balloon (2/2)"}
    # history: every returned image with a sidecar; no key in any file
    sidecars = [json.loads(p.read_text()) for p in history_dir().rglob("*.json")]
    assert len(sidecars) == 2
    assert {s["prompt"] for s in sidecars} == {"remove the balloon"}
    assert all(s["model"] == "gpt-image-2" and s["source"].endswith("lake-balloon.png") for s in sidecars)
    no_key_in_files(history_dir())
    no_key_in_files(out)


@pytest.mark.slow
def test_text_output_says_where_and_a_rect_selection_works(local_server, tmp_path):
    small = tmp_path / "small.png"
    Image.open(SAMPLE).crop((500, 150, 900, 450)).save(small)
    proc = cli("edit", str(small), "--rect", "150,40,120,150", "--ellipse", "--prompt", "sky",
               "--model", "gpt-image-1", "--no-align", "--out", str(tmp_path), server=local_server)
    assert proc.returncode == 0, proc.stderr
    assert "OpenAI: sky (1/1): " in proc.stdout and "small-edit-1.png" in proc.stdout
    assert "layers (OpenRaster" in proc.stdout and "small-openai.ora" in proc.stdout
    full = rgba(tmp_path / "small-edit-1.png")
    orig = rgba(small)
    assert np.array_equal(full[:, :140], orig[:, :140]) and np.array_equal(full[:, 280:], orig[:, 280:])


@pytest.mark.slow
@pytest.mark.parametrize("model, path, endpoint, name", [
    ("dall-e-2", "variation-endpoint", "variations", "OpenAI: variation (1/2)"),
    ("gpt-image-2", "variation-edit", "edits", "OpenAI: variation via edit (1/2)"),
])
def test_variation_takes_the_path_the_model_serves(local_server, tmp_path, model, path, endpoint, name):
    small = tmp_path / "photo.png"
    Image.open(SAMPLE).crop((0, 0, 512, 384)).save(small)
    proc = cli("--json", "variation", str(small), "--model", model, "-n", "2", "--out", str(tmp_path),
               server=local_server)
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads(proc.stdout)["results"][0]["outputs"]
    assert [o["path"] for o in outputs] == [path, path]
    assert outputs[0]["name"] == name
    assert rgba(outputs[0]["png"]).shape == (384, 512, 4)
    endpoints = local_server.stats()["endpoints"]
    assert sum(v for k, v in endpoints.items() if endpoint in k) == 1
    assert image_requests(local_server) == 1


@pytest.mark.slow
def test_generate_writes_full_size_images(local_server, tmp_path):
    proc = cli("--json", "generate", "--prompt", "a lighthouse at dusk", "--model", "gpt-image-2", "--size",
               "1536x1024", "--out", str(tmp_path), server=local_server)
    assert proc.returncode == 0, proc.stderr
    (output,) = json.loads(proc.stdout)["results"][0]["outputs"]
    assert output["name"] == "OpenAI: a lighthouse at dusk (1/1)" and output["path"] == "generate"
    assert Image.open(output["png"]).size == (1536, 1024)


@pytest.mark.slow
def test_generate_from_a_prompts_file_writes_one_set_per_prompt(local_server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# the night sky\na red kite\n\n  two moons  \n", encoding="utf-8")
    proc = cli("--json", "generate", "--prompts", str(prompts), "--model", "gpt-image-2", "--size", "1024x1024",
               "--quality", "low", "--name", "sky", "--out", str(tmp_path), server=local_server)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert [Path(r["outputs"][0]["png"]).name for r in answer["results"]] == ["sky-1-1.png", "sky-2-1.png"]
    assert [r["outputs"][0]["name"] for r in answer["results"]] == ["OpenAI: a red kite (1/1)",
                                                                     "OpenAI: two moons (1/1)"]
    assert answer["cost"]["requests"] == 2 and answer["failed"] == []
    sent = [r["fields"]["prompt"] for r in local_server.stats()["requests"] if r.get("endpoint") == "generations"]
    assert sent == ["a red kite", "two moons"]
    piped = cli("--json", "generate", "--prompts", "-", "--model", "gpt-image-2", "--size", "1024x1024", "--quality",
                "low", "--name", "piped", "--out", str(tmp_path), server=local_server, stdin="a kite\na moon\n")
    assert piped.returncode == 0, piped.stderr
    assert len(json.loads(piped.stdout)["results"]) == 2
    batched = cli("--json", "generate", "--prompts", "-", "--async", "--model", "gpt-image-2", "--out", str(tmp_path),
                  server=local_server, stdin="a kite\na moon\n")  # stdin is read once, for the whole submission
    assert batched.returncode == 0, batched.stderr
    assert json.loads(batched.stdout)["items"] == 2


@pytest.mark.parametrize("args, text", [
    (("--prompts", "MISSING"), "cannot be read: No such file or directory"),
    (("--prompts", "EMPTY"), "holds no prompt"),
    (("--prompts", "LATIN1"), "cannot be read: it is not UTF-8 text"),
    (("--prompts", "EMPTY", "--prompt", "x"), "Give --prompt or --prompts FILE, not both."),
    (("--prompt", "  "), "The prompt is empty."),
    (("--prompt", "x", "--wait"), "--wait goes with --async"),
    (("--prompt", "x", "--async", "--partial-images", "2"), "The Batch API does not stream"),
    (("--prompt", "x", "--async", "--reference", "REF"), "cannot be batched"),
])
def test_bad_prompts_are_one_clear_line_before_any_request(local_server, tmp_path, args, text):
    (tmp_path / "empty.txt").write_text("# nothing here\n\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(tmp_path / "ref.png")
    subs = {"MISSING": str(tmp_path / "missing.txt"), "EMPTY": str(tmp_path / "empty.txt"),
            "LATIN1": str(tmp_path / "latin1.txt"), "REF": str(tmp_path / "ref.png")}
    proc = cli("generate", *(subs.get(a, a) for a in args), "--model", "gpt-image-2", "--out", str(tmp_path),
               server=local_server)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("gimp-openai: error: ") and text in proc.stderr.splitlines()[0], proc.stderr
    assert image_requests(local_server) == 0 and not list(tmp_path.glob("generated*"))


def test_batch_finishes_the_good_images_when_one_is_bad(local_server, tmp_path):
    images, masks = [], []
    for i in range(3):
        img = tmp_path / f"b{i}.png"
        Image.open(SAMPLE).crop((400 + 40 * i, 100, 800 + 40 * i, 400)).save(img)
        sel = np.zeros((300, 400) if i != 1 else (10, 10), np.uint8)
        sel[100:200, 150:250] = 255
        Image.fromarray(sel).save(tmp_path / f"b{i}-sel.png")
        images.append(str(img))
        masks += ["--mask", str(tmp_path / f"b{i}-sel.png")]
    proc = cli("--json", "batch", *images, *masks, "--prompt", "clear sky", "--model", "gpt-image-2",
               "--concurrency", "3", "--no-align", "--no-tone-match", "--out", str(tmp_path / "out"),
               server=local_server)
    assert proc.returncode == 1
    answer = json.loads(proc.stdout)
    assert sorted(Path(r["source"]).name for r in answer["results"]) == ["b0.png", "b2.png"]
    (failed,) = answer["failed"]
    assert failed["source"].endswith("b1.png") and "same size" in failed["error"]["message"]
    assert edit_requests(local_server) == 2


@pytest.mark.slow
def test_a_refused_free_size_is_retried_once_at_a_standard_size_and_remembered(local_server, tmp_path):
    """The user told the engine gpt-image-1.5 takes free sizes; the server (rightly) answers 400 on size."""
    config = Path(os.environ["GIMP_OPENAI_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.json").write_text(json.dumps({"model_rules": {"gpt-image-1.5": "gpt-image-2"}}))
    small = tmp_path / "p.png"
    Image.open(SAMPLE).crop((300, 100, 1000, 600)).save(small)
    args = ("--json", "edit", str(small), "--rect", "300,100,200,150", "--prompt", "sky", "--model", "gpt-image-1.5",
            "--no-align", "--no-tone-match", "--out", str(tmp_path))
    proc = cli(*args, server=local_server)
    assert proc.returncode == 0, proc.stderr
    (output,) = json.loads(proc.stdout)["results"][0]["outputs"]
    assert any("retried once" in note for note in output["notes"])
    stats = local_server.stats()
    assert edit_requests(local_server) == 2 and stats["statuses"].get("400") == 1
    assert json.loads((config / "config.json").read_text())["model_rules"]["gpt-image-1.5"] == "gpt-image-1"
    # remembered: the next run asks at a standard size at once
    local_server.reset()
    assert cli(*args, server=local_server).returncode == 0
    assert edit_requests(local_server) == 1 and "400" not in local_server.stats()["statuses"]


@pytest.mark.slow
def test_a_shut_down_model_is_not_retried_and_the_replacement_is_named(start_local_server, tmp_path):
    server = start_local_server(*TODAYS_LINEUP)
    small = tmp_path / "p.png"
    Image.open(SAMPLE).crop((0, 0, 300, 300)).save(small)
    proc = cli("edit", str(small), "--rect", "10,10,50,50", "--prompt", "x", "--model", "gpt-image-1",
               "--out", str(tmp_path), server=server)
    assert proc.returncode == 1
    (first,) = [line for line in proc.stderr.splitlines() if line.startswith("gimp-openai: error:")]
    assert first == ("gimp-openai: error: The model `gpt-image-1` was shut down on 2026-10-23. "
                     "Use `gpt-image-2.6-sunburst` instead.")
    assert sum(v for k, v in server.stats()["endpoints"].items() if "edits" in k) == 1


@pytest.mark.parametrize("args, text", [
    (("--prompt", "", "--rect", "0,0,5,5"), "The prompt is empty."),
    (("--prompt", "x", "--mask", "SMALLSEL"), "they must be the same size"),
    (("--prompt", "x", "--rect", "0,0,5,5", "--model", "dall-e-2", "--size", "640x480"), "640x480"),
    (("--prompt", "x" * 1001, "--rect", "0,0,5,5", "--model", "dall-e-2"), "at most 1,000"),
    (("--prompt", "x", "--mask", "EMPTYSEL"), "The selection is empty."),
    (("--prompt", "x", "--rect", "0,0,5,5", "--out", "BLOCKED/out"), "Cannot write into"),
])
def test_bad_input_is_one_clear_line_before_any_request(local_server, tmp_path, args, text):
    img = tmp_path / "i.png"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(img)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small-sel.png")
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(tmp_path / "empty-sel.png")
    (tmp_path / "blocked").write_text("a file, not a folder")
    subs = {"SMALLSEL": str(tmp_path / "small-sel.png"), "EMPTYSEL": str(tmp_path / "empty-sel.png"),
            "BLOCKED/out": str(tmp_path / "blocked" / "out")}
    args = tuple(subs.get(a, a) for a in args)
    proc = cli("edit", str(img), "--out", str(tmp_path), *args, server=local_server)  # a later --out wins
    assert proc.returncode == 1
    assert proc.stderr.startswith("gimp-openai: error: ") and text in proc.stderr.splitlines()[0]
    assert image_requests(local_server) == 0


def test_missing_key_and_unreadable_file(tmp_path):
    img = tmp_path / "i.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = cli("edit", str(img), "--rect", "0,0,5,5", "--prompt", "x", "--out", str(tmp_path),
               env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "https://api.openai.com/v1"})
    assert proc.returncode == 1 and "No OpenAI API key" in proc.stderr and "hint:" in proc.stderr
    proc = cli("edit", str(img), "--rect", "0,0,5,5", "--prompt", "x", "--model", "gpt-image-2",
               "--out", str(tmp_path), env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert proc.returncode == 1 and proc.stderr.startswith("gimp-openai: error: ")
    assert "i.png" in proc.stderr


def test_key_set_reads_stdin_and_status_never_shows_it(tmp_path):
    proc = cli("key", "set", stdin=FAKE_KEY + "\n", env={"OPENAI_API_KEY": ""})
    assert proc.returncode == 0 and "Key stored in" in proc.stdout
    proc = cli("--json", "key", "status", env={"OPENAI_API_KEY": ""})
    assert json.loads(proc.stdout)["present"] is True
    no_key_in_files(Path(os.environ["GIMP_OPENAI_CACHE_DIR"]).parent / "cache")


def test_models_and_doctor_against_the_local_server(local_server):
    proc = cli("models", "--refresh", server=local_server)
    assert proc.returncode == 0, proc.stderr
    assert "gpt-image-2" in proc.stdout and "dall-e-2" in proc.stdout and "whisper-1" not in proc.stdout
    proc = cli("--json", "doctor", "--no-plugin-dirs", server=local_server)
    checks = json.loads(proc.stdout)["checks"]
    by_what = {c["what"]: c for c in checks}
    assert by_what["API key"]["level"] == "ok" and "not shown" in by_what["API key"]["detail"]
    assert by_what["server"]["level"] == "ok" and by_what["models"]["level"] == "ok"
    assert proc.returncode == 0


@pytest.mark.slow
def test_interactive_run_offers_the_replacement_and_remembers_it(start_local_server, tmp_path, monkeypatch, capsys):
    from gimp_openai import cli as cli_module
    from gimp_openai.settings import load_settings

    server = start_local_server(*TODAYS_LINEUP)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setattr(cli_module, "interactive", lambda: True)
    questions = []
    monkeypatch.setattr(cli_module, "ask", lambda q: questions.append(q) or "y\n")
    code = cli_module.main(["generate", "--prompt", "a kite", "--model", "gpt-image-1", "--size", "1024x1024",
                            "--quiet", "--out", str(tmp_path)])
    assert code == 0
    assert questions == ["Use gpt-image-2.6-sunburst now, and from now on? [Y/n] "]
    assert load_settings(apply_env=False).default_model == "gpt-image-2.6-sunburst"
    assert (tmp_path / "generated-1.png").exists()
    stats = server.stats()["endpoints"]
    assert stats.get("generations") == 2  # the refused one (never retried) and the one with the replacement
    assert FAKE_KEY not in capsys.readouterr().err
