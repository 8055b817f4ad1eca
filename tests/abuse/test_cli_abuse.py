"""A bounded abuse run of the command line (loopback only, every loop bounded, the whole file well under 60 s on
2 cores): hostile option values, hostile file names, unreadable inputs, a PNG bomb, a 0-byte PNG, hostile
output folders. Every case checks the exit code, that a refusal is ONE clear line (``gimp-openai: error: ...``,
no traceback, no "internal error"), and that no file appeared outside --out (the history folder aside).

All cases run through ``cli.main`` in one child process (tests/abuse/driver.py) under a memory cap and a time
limit per case, against the real local server subprocess; the figures are in docs/hardening-cli.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_NUMBERS = ["nan", "inf", "-inf", "1e308", "-1", "1e9", "", "0x10", "9" * 400]
NUMERIC = {"-n": "edit", "--feather": "edit", "--padding": "edit", "--timeout": "edit", "--concurrency": "batch"}
HOSTILE_NAMES = ["-rf.png", "a\nb.png", "..png", "名前.png", ";rm -rf ~;.png", "$(touch pwned).png",
                 "x" * 200 + ".png", " .png"]


def bomb_png(path: Path, width: int = 12_000, height: int = 9_000) -> None:
    """A real decompression bomb: 108 million gray pixels of zeros in ~100 KB (over the 100 MP limit)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    squeeze = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    stream = b"".join(squeeze.compress(row * 500) for _ in range(height // 500)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def make_inputs(folder: Path) -> dict[str, str]:
    folder.mkdir()
    good = folder / "good.png"
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
    Image.fromarray(pixels).save(good)
    data = good.read_bytes()
    paths = {"good": good, "zero": folder / "zero.png", "truncated": folder / "truncated.png",
             "text": folder / "text.png", "bomb": folder / "bomb.png", "dir": folder / "dir.png",
             "fifo": folder / "fifo.png", "loop": folder / "loop.png", "missing": folder / "missing.png"}
    paths["zero"].write_bytes(b"")
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["text"].write_text("not a picture at all\n")
    bomb_png(paths["bomb"])
    paths["dir"].mkdir()
    os.mkfifo(paths["fifo"])
    paths["loop"].symlink_to(paths["loop"])
    for k, name in enumerate(HOSTILE_NAMES):
        (folder / name).write_bytes(data)
        paths[f"name{k}"] = folder / name
    return {key: str(value) for key, value in paths.items()}


def cases(inputs: dict[str, str], root: Path) -> list[dict]:
    """(id, argv, expected exit code, words in the one error line or None for success)."""
    found: list[dict] = []

    def add(case_id: str, argv: list[str], code: int, words: str | None) -> None:
        out = root / "outs" / case_id.replace("/", "_")
        found.append({"id": case_id, "argv": [*argv, "-q", "--out", str(out)], "out": str(out), "code": code,
                      "words": words})

    good = inputs["good"]
    edit = ["edit", good, "--rect", "5,5,20,20", "--prompt", "a kite", "--model", "gpt-image-2"]
    for flag, command in NUMERIC.items():
        base = edit if command == "edit" else ["batch", good, "--rect", "5,5,20,20", "--prompt", "x", "--model",
                                               "gpt-image-2"]
        for value in HOSTILE_NUMBERS:
            add(f"number {flag}={value[:12]}", [*base, f"{flag}={value}"], 2, "is not allowed")
    for rect in ["1,1,1e9,1", "nan,0,1,1", "0,0,0,0", "1,2,3", "", "1,1,99999999999,5"]:
        add(f"rect {rect}", ["edit", good, f"--rect={rect}", "--prompt", "x"], 2, "--rect")
    for size in ["99999x99999", "0x0", "nan", "-5x5", "1024x1024x3", "1e9x1"]:
        add(f"size {size}", [*edit, f"--size={size}"], 1, size)
    for url, words in [("http://[::1/v1", "not a valid URL"), ("http://127.0.0.1:99999/v1", "not a valid URL"),
                       ("ftp://127.0.0.1/v1", "not an http(s) URL"), ("http://u:p@127.0.0.1/v1", "user name"),
                       ("http://127.0.0.1/v1?api_key=sk-abcdefgh12345678", "API key")]:
        add(f"url {url}", [*edit, "--base-url", url], 1, words)
    add("quality", [*edit, "--quality", "ultra"], 1, "ultra")
    add("background", [*edit, "--background", "checkered"], 1, "checkered")
    add("prompt 100k", ["edit", good, "--rect", "5,5,20,20", "--prompt", "x" * 100_000, "--model", "gpt-image-2"],
        1, "at most")
    unreadable = {"zero": "empty (0 bytes)", "truncated": "truncated", "text": "not an image",
                  "bomb": "decompression bomb", "dir": "not a file", "fifo": "not a file", "loop": "not a file",
                  "missing": "does not exist"}
    for key, words in unreadable.items():
        add(f"input {key}", ["edit", inputs[key], "--rect", "1,1,5,5", "--prompt", "x", "--model", "gpt-image-2"],
            1, words)
        if key in ("zero", "bomb", "dir"):
            add(f"mask {key}", [*edit[:2], "--mask", inputs[key], *edit[4:]], 1, words if key != "dir" else
                "not a file")
            add(f"reference {key}", [*edit, "--reference", inputs[key]], 1, words if key != "dir" else "not a file")
    add("input /dev/zero", ["edit", "/dev/zero", "--rect", "1,1,5,5", "--prompt", "x"], 1, "not a file")
    for k, name in enumerate(HOSTILE_NAMES):
        add(f"name {name[:20]!r}", ["edit", inputs[f"name{k}"], "--rect", "5,5,20,20", "--prompt", "a kite",
                                    "--model", "gpt-image-2", "--no-align", "--no-tone-match"], 0, None)
    add("generate name", ["generate", "--prompt", "x", "--model", "gpt-image-2", "--size", "1024x1024", "--name",
                          "../../../escaped"], 0, None)
    blocker = root / "blocker-file"
    blocker.write_text("a file")
    found.append({"id": "out is a file", "argv": [*edit, "-q", "--out", str(blocker / "out")],
                  "out": str(blocker / "out"), "code": 1, "words": "Cannot write into"})
    found.append({"id": "out in /proc", "argv": [*edit, "-q", "--out", "/proc/self/gimp-openai-out"],
                  "out": "/proc/self/gimp-openai-out", "code": 1, "words": "Cannot write into"})
    return found


@pytest.fixture(scope="module")
def abuse_run(tmp_path_factory, local_server_module):
    root = tmp_path_factory.mktemp("abuse")
    inputs = make_inputs(root / "inputs")
    history = root / "history"
    all_cases = cases(inputs, root)
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=local_server_module.url,
               GIMP_OPENAI_HISTORY_DIR=str(history), GIMP_OPENAI_CONFIG_DIR=str(root / "config"),
               GIMP_OPENAI_CACHE_DIR=str(root / "cache"), GIMP_OPENAI_RESCUE_DIR=str(root / "rescue"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "plugin"), str(ROOT)]))
    job = {"root": str(root), "keep": [str(history), str(root / "outs"), str(root / "cache"), str(root / "config")],
           "cases": [{"id": c["id"], "argv": c["argv"], "out": c["out"]} for c in all_cases]}
    proc = subprocess.run([sys.executable, "-m", "tests.abuse.driver"], input=json.dumps(job), capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    return {c["id"]: (c, results[c["id"]]) for c in all_cases}, root


@pytest.fixture(scope="module")
def local_server_module():
    from tests.support.local_server import LocalServerHandle

    with LocalServerHandle() as server:
        yield server


def test_every_case_ran(abuse_run):
    runs, _ = abuse_run
    assert len(runs) >= 90  # ids are unique: every case built is a case run


def test_refusals_are_one_clear_line_with_the_right_exit_code(abuse_run):
    runs, _ = abuse_run
    problems = []
    for case_id, (case, result) in runs.items():
        if case["code"] == 0:
            continue
        errors = [line for line in result["stderr"].splitlines() if line.startswith("gimp-openai: error: ")]
        if result["code"] != case["code"]:
            problems.append(f"{case_id}: exit {result['code']}, expected {case['code']}: {result['stderr'][:300]}")
        elif len(errors) != 1 or case["words"] not in errors[0]:
            problems.append(f"{case_id}: error lines {errors!r} lack {case['words']!r}")
        elif "Traceback" in result["stderr"] or "internal error" in result["stderr"]:
            problems.append(f"{case_id}: {result['stderr'][:300]}")
        elif os.path.exists(case["out"]) and any(Path(case["out"]).iterdir()):
            problems.append(f"{case_id}: wrote into --out although refused")
    assert not problems, "\n".join(problems)


def test_hostile_file_names_work_and_stay_inside_out(abuse_run):
    runs, _ = abuse_run
    for case_id, (case, result) in runs.items():
        if case["code"] != 0:
            continue
        assert result["code"] == 0, (case_id, result["stderr"][-500:])
        written = sorted(p.name for p in Path(case["out"]).iterdir())
        assert written and all(name.isascii() and name.isprintable() and not name.startswith(".")
                               for name in written), (case_id, written)
        assert FAKE_KEY not in result["stdout"] + result["stderr"] and "Traceback" not in result["stderr"]


def test_nothing_is_written_outside_out(abuse_run):
    runs, root = abuse_run
    leaks = {case_id: result["outside"] for case_id, (_c, result) in runs.items() if result["outside"]}
    assert leaks == {}
    # --name ../../../escaped points above the watched folder: nothing of that name anywhere but inside --out
    assert [p for p in root.parent.rglob("escaped*") if root / "outs" not in p.parents] == []
    assert list((root / "outs" / "generate name").iterdir()) == [root / "outs" / "generate name" / "escaped-1.png"]


def figures(runs: dict) -> list[tuple[str, int, int, float, float]]:
    """Per input class (the case id's first word): cases, cases held (expected outcome), max peak RSS of the
    process during a case (MB, VmHWM reset before each), max seconds of a case."""
    classes: dict[str, list[tuple[dict, dict]]] = {}
    for case_id, pair in runs.items():
        classes.setdefault(case_id.split()[0], []).append(pair)
    rows = []
    for name, pairs in classes.items():
        held = sum(1 for case, result in pairs if result["code"] == case["code"] and not result["outside"]
                   and "Traceback" not in result["stderr"] and "internal error" not in result["stderr"])
        rows.append((name, len(pairs), held, max(r["peak_mb"] or 0 for _c, r in pairs),
                     max(r["seconds"] for _c, r in pairs)))
    return rows


def test_figures_per_class(abuse_run):
    """Prints the table of docs/hardening-cli.md (run with -s); every class held every case."""
    runs, _ = abuse_run
    rows = figures(runs)
    print("\n| class | cases | held | peak RSS MB | max s |")
    for name, count, held, peak, seconds in rows:
        print(f"| {name} | {count} | {held} | {peak:.0f} | {seconds:.2f} |")
    assert all(held == count for _n, count, held, _p, _s in rows)
