"""The generated bad-input corpus (scripts/make_corpus.py) through the CLI and the job protocol, against the
real local server: each input gets a clear error (the code and the words that say what was wrong, plus a hint)
or a correct result (right size, outside the selection unchanged). Never a traceback, never a half-written
file in the output or history folders, never the key."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.reliability import harness as H

pytestmark = pytest.mark.slow


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_corpus", H.ROOT / "scripts" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("corpus")
    cases = _load_generator().generate(folder)
    return folder, {c["name"]: c for c in cases}


def _names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [c["name"] for c in _load_generator().generate(Path(tmp))]


NAMES = _names()


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A tmpfs at ``path`` (root in a container can mount; otherwise the test is skipped with the reason)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options) or "size=1m"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); atomic.py's own tests cover "
                    "disk-full with patched writes")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def environment(case: dict, tmp: Path):
    """(out folder, history folder) for the case: normal, a read-only mount, or a 64 KiB tmpfs history."""
    history = Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])
    if case["needs"] == "readonly_out":
        with tmpfs(tmp / "ro", "ro,size=1m") as ro:
            yield ro, history
    elif case["needs"] == "full_history":
        with tmpfs(tmp / "full", "size=64k") as full:
            yield tmp / "out", full
    else:
        yield tmp / "out", history


def check_clean(proc_out: str, proc_err: str, *folders: Path) -> None:
    assert "Traceback" not in proc_err and "Traceback" not in proc_out, proc_err[-2000:]
    assert FAKE_KEY not in proc_out + proc_err
    assert not H.partial_files(*folders), H.partial_files(*folders)


def check_error(case: dict, error: dict) -> None:
    expect = case["expect"]
    assert error["code"] == expect["code"], (case["name"], error)
    message = error["message"]
    for word in expect["words"]:
        assert word.lower() in message.lower(), (case["name"], message)
    assert error.get("hint"), (case["name"], error)  # and what to do
    assert "Traceback" not in message and len(message) < 2000


def original_rgba(path: Path) -> np.ndarray:
    from gimp_openai import imaging

    return imaging.read_image(path)


# --- the CLI ------------------------------------------------------------------------------------------------------


def cli_args(case: dict, folder: Path, out: Path) -> list[str]:
    args = ["--json", "edit", str(folder / case["image"]), "--prompt", case["prompt"], "--model", "gpt-image-2",
            "--quality", "low", "--out", str(out), "-q", "--no-align", "--no-tone-match"]
    if case["selection"]:
        args += ["--mask", str(folder / case["selection"])]
    if case["rect"]:
        args += ["--rect", ",".join(map(str, case["rect"]))]
    return args


def check_cli(case: dict, folder: Path, out: Path, history: Path, code: int, stdout: str, stderr: str) -> None:
    name = case["name"]
    check_clean(stdout, stderr, out if out.exists() else None, history)
    assert "internal error" not in stderr, stderr
    lines = [json.loads(x) for x in stdout.splitlines() if x.strip().startswith("{")]
    if case["expect"]["ok"]:
        assert code == 0, (name, stdout, stderr)
        (answer,) = lines
        (result,) = answer["results"]
        (output,) = result["outputs"]
        written = np.asarray(Image.open(output["png"]).convert("RGBA"))
        original = original_rgba(folder / case["image"])
        assert written.shape == original.shape
        from gimp_openai import imaging

        sel = imaging.read_selection(folder / case["selection"])
        np.testing.assert_array_equal(written[sel == 0], original[sel == 0])
        assert Path(output["history_png"]).exists() and Path(result["ora"]).exists()
        if case["needs"] == "full_history":  # kept in the out folder instead, and said so
            assert Path(output["history_png"]).parent == out and Path(output["history_png"]).read_bytes()
            assert any(f"History folder {history} is full" in n for n in result["notes"]), result
    else:
        assert code != 0, (name, stdout)
        error = lines[-1]["error"] if lines and "error" in lines[-1] else None
        assert error is not None, (name, stdout, stderr)
        check_error(case, error)
        if out.exists() and case["needs"] != "readonly_out":
            assert not [p for p in out.iterdir() if p.suffix in (".png", ".ora")]


@pytest.mark.parametrize("name", NAMES)
def test_cli(name, corpus, local_server, tmp_path, capsys, monkeypatch):
    """In-process (fast), with GIMP_OPENAI_DEBUG=1 so an unexpected exception fails the test instead of being
    turned into a polite 'internal error' line."""
    from gimp_openai import cli

    folder, cases = corpus
    case = cases[name]
    if "\x00" in case["prompt"]:
        pytest.skip("argv cannot carry NUL (the OS refuses it); the job protocol test takes this prompt")
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("GIMP_OPENAI_DEBUG", "1")
    monkeypatch.setenv("GIMP_OPENAI_RESCUE_DIR", str(tmp_path / "rescue"))
    with environment(case, tmp_path) as (out, history):
        monkeypatch.setenv("GIMP_OPENAI_HISTORY_DIR", str(history))
        code = cli.main(cli_args(case, folder, out))
        captured = capsys.readouterr()
        check_cli(case, folder, out, history, code, captured.out, captured.err)


@pytest.mark.parametrize("name", ["name-фото 🎨", "prompt-40000-chars", "bomb-30000x30000", "bomb-20000x6000"])
def test_cli_subprocess(name, corpus, local_server, tmp_path):
    """A few through the real console entry point: unicode argv, a 40,000-character argument, a bomb."""
    folder, cases = corpus
    case = cases[name]
    out, history = tmp_path / "out", Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", *cli_args(case, folder, out)], capture_output=True,
                          text=True, env=H.engine_env(local_server.url), timeout=120)
    check_cli(case, folder, out, history, proc.returncode, proc.stdout, proc.stderr)
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. Pillow's DecompressionBombWarning: one clear line only


# --- the job protocol -----------------------------------------------------------------------------------------------


def _dims(path: Path) -> tuple[int, int] | None:
    """Width, height from the header (bombs are never decoded); None when unreadable."""
    from gimp_openai import imaging

    try:
        return imaging.image_size_of(path.read_bytes())
    except Exception:  # noqa: BLE001
        return None


def _groups() -> list[str]:
    """One batch job for every case with the default prompt and environment; one job per other case."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cases = _load_generator().generate(Path(tmp))
    default = _load_generator().PROMPT
    return ["batch"] + [c["name"] for c in cases if c["prompt"] != default or c["needs"]]


def _export(case: dict, folder: Path, job_dir: Path, number: int) -> dict:
    """What a host hands over: the exported region file and its selection, place = the whole layer."""
    image = job_dir / f"img-{number}.png"
    image.write_bytes((folder / case["image"]).read_bytes())
    dims = _dims(image) or (64, 48)
    layer = {"x": 0, "y": 0, "width": dims[0], "height": dims[1]}
    sel_path = job_dir / f"img-{number}-sel.png"
    if case["selection"]:
        sel_path.write_bytes((folder / case["selection"]).read_bytes())
    else:  # what a host exports for a selection off the layer: nothing selected inside it
        Image.fromarray(np.zeros((dims[1], dims[0]), np.uint8), "L").save(sel_path)
    region = H.plan_item(layer, layer)
    return dict(region, id=case["name"], layer=layer, image=image.name, selection=sel_path.name)


@pytest.mark.parametrize("group", _groups())
def test_job(group, corpus, local_server, tmp_path):
    folder, cases = corpus
    default = _load_generator().PROMPT
    chosen = [c for c in cases.values() if c["prompt"] == default and not c["needs"]] if group == "batch" \
        else [cases[group]]
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    items = [_export(case, folder, job_dir, number) for number, case in enumerate(chosen)]
    exported = {p.name: p.read_bytes() for p in job_dir.iterdir()}
    with environment(chosen[0], tmp_path) as (out, history):
        job = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": chosen[0]["prompt"], "n": 1,
               "quality": "low", "out_dir": str(out), "align": False, "tone_match": False, "concurrency": 4,
               "items": items}
        (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        run = H.run_job(job_dir / "job.json", local_server.url, timeout=300, GIMP_OPENAI_HISTORY_DIR=str(history),
                        GIMP_OPENAI_RESCUE_DIR=str(tmp_path / "rescue"))
        check_clean(run.stdout, run.stderr, out if out.exists() else None, history)
        assert run.code == 0 and run.result["type"] == "result", (group, run.stdout, run.stderr)
        by_id = {i["id"]: i for i in run.result["items"]}
        from gimp_openai import imaging

        for number, case in enumerate(chosen):
            got = by_id.get(case["name"]) or {"ok": False, "outputs": [], "error": run.result["error"]}
            assert "internal_error" not in json.dumps(got), got
            if case["expect"]["ok"]:
                assert got["ok"], (case["name"], got)
                (output,) = got["outputs"]
                mask = np.asarray(Image.open(output["mask_png"]))
                layer_png = np.asarray(Image.open(output["layer_png"]))
                place = items[number]["place"]
                assert layer_png.shape[:2] == mask.shape == (place["height"], place["width"])
                sel = imaging.read_selection(job_dir / items[number]["selection"])
                assert (mask[sel == 0] == 0).all()
                if case["needs"] == "full_history":  # kept in the rescue folder instead, and said so
                    assert Path(output["history_png"]).parent == tmp_path / "rescue"
                    assert got["warnings"][0]["code"] == "results_elsewhere"
                    assert f"History folder {history} is full" in got["warnings"][0]["message"]
            else:
                assert not got["ok"] and not got["outputs"]
                check_error(case, got["error"])
    assert {p.name: p.read_bytes() for p in job_dir.iterdir() if p.name != "job.json"} == exported  # untouched


def test_plan_refuses_a_selection_off_the_layer(local_server, tmp_path):
    """The host asks `plan` first: a selection that misses the layer gets a message, not a crash."""
    plan = {"version": 1, "operation": "edit", "model": "gpt-image-2",
            "items": [{"id": "a", "layer": {"x": 0, "y": 0, "width": 96, "height": 64},
                       "selection_bounds": {"x": 500, "y": 400, "width": 20, "height": 20}}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "plan", str(tmp_path / "plan.json")],
                          capture_output=True, text=True, env=H.engine_env(local_server.url), timeout=60)
    check_clean(proc.stdout, proc.stderr)
    answer = json.loads(proc.stdout)
    assert answer["ok"] is False and "layer" in answer["error"]["message"].lower(), answer
    assert answer["error"]["hint"]


def test_generator_is_deterministic_and_complete(tmp_path):
    gen = _load_generator()
    a = gen.generate(tmp_path / "a")
    b = gen.generate(tmp_path / "b")
    assert a == b and len(a) >= 40
    for case in a:
        assert (tmp_path / "a" / case["image"]).read_bytes() == (tmp_path / "b" / case["image"]).read_bytes()
    bomb = (tmp_path / "a" / "bomb-30000x30000.png").read_bytes()
    assert len(bomb) < 20_000  # the bomb is a header, not 2.7 GB
    kinds = " ".join(c["name"] for c in a)
    for needed in ("shape-1x1", "shape-1x3000", "shape-3000x1", "bomb-30000x30000", "truncated", "not-an-image",
                   "rgb16", "cmyk-jpeg", "palette-transparency", "gray-alpha", "selection-off-layer",
                   "selection-empty", "prompt-control-chars", "prompt-40000-chars", "фото", "readonly_out",
                   "full_history"):
        assert needed in kinds, needed

