"""One bounds table (gimp_openai.bounds) for every numeric option: the CLI, the job protocol, the settings and the
dialogs' ranges in manifest/procedures.json all agree with it, NaN/inf never pass, refusals are one line.

Regression: ``--feather 1e9`` grew the CLI to ~23 GB (killed by the kernel); ``--timeout nan``/``inf``/``-1``, a
malformed IPv6 ``--base-url`` and a folder as ``--reference`` ended in "internal error ... this is a bug".
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import bounds, cli, jobs
from PIL import Image

from tests.conftest import FAKE_KEY

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "manifest" / "procedures.json").read_text(encoding="utf-8"))


def test_the_manifest_ranges_are_the_tables():
    checked = 0
    for procedure in MANIFEST["procedures"]:
        for param in procedure["params"]:
            if param["type"] not in ("int", "float"):
                continue
            bound = bounds.BOUNDS[param["name"]]  # every numeric dialog field has an entry
            assert (param["min"], param["max"]) == (bound.minimum, bound.maximum), (procedure["name"], param)
            assert (param["type"] == "int") == (bound.kind is int), param
            assert bound.minimum <= param["default"] <= bound.maximum, param
            checked += 1
    assert checked >= 9


def test_every_numeric_cli_option_uses_the_table():
    parser = cli.build_parser()
    seen = set()

    def parsers(p):  # every command's parser, and its own commands' (history list, ...)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield child
                    yield from parsers(child)

    for sub in parsers(parser):
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in cli.NUMERIC_OPTIONS:
                    assert getattr(action.type, "__name__", "") == cli.NUMERIC_OPTIONS[flag], (sub.prog, flag)
                    seen.add(flag)
                elif action.type in (int, float):
                    raise AssertionError(f"{sub.prog} {flag} is numeric but not in the bounds table")
    assert seen == set(cli.NUMERIC_OPTIONS)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), True, "3", None, 10**400, -10**400])
def test_not_finite_or_not_a_number_never_passes(value):
    for name in bounds.BOUNDS:
        assert not bounds.is_within(name, value)


def test_job_protocol_and_settings_use_the_same_limits(tmp_path, monkeypatch):
    from gimp_openai.settings import load_settings

    assert jobs.MAX_CONCURRENCY == bounds.BOUNDS["concurrency"].maximum
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text('{"read_timeout": NaN, "concurrency": 1000, "max_retries": 3}')
    monkeypatch.setenv("GIMP_OPENAI_CONFIG_DIR", str(config))
    settings = load_settings(apply_env=False)
    assert settings.read_timeout == 600.0 and settings.concurrency == 4 and settings.max_retries == 3


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    child = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL="http://127.0.0.1:9/v1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "gimp_openai", *args], capture_output=True, text=True, env=child,
                          timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)))


@pytest.fixture()
def picture(tmp_path) -> Path:
    path = tmp_path / "p.png"
    Image.fromarray(np.full((64, 80, 3), 120, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("option, value, words", [
    ("--feather", "1e9", "--feather 1e9 is not allowed: the extra softening of the layer mask's edge must be a "
                         "number from 0 to 200 px; use a value in that range."),
    ("--feather", "inf", "--feather inf is not allowed"),
    ("--feather", "nan", "--feather nan is not allowed"),
    ("--feather", "-1", "--feather -1 is not allowed"),
    ("--padding", "1e308", "--padding 1e308 is not allowed: the context added on every side of the selection must"
                           " be a number from 0 to 2 x the selection's size"),
    ("--timeout", "nan", "--timeout nan is not allowed: how long to wait for the server's answer must be a number "
                         "from 1 to 3,600 s"),
    ("--timeout", "inf", "--timeout inf is not allowed"),
    ("--timeout", "-1", "--timeout -1 is not allowed"),
    ("-n", "11", "-n 11 is not allowed: the number of results to ask for must be a whole number from 1 to 10"),
    ("-n", "1e3", "-n 1e3 is not allowed"),
])
def test_hostile_numbers_are_one_line_and_exit_2_before_any_work(tmp_path, picture, option, value, words):
    out = tmp_path / "out"
    proc = run_cli("edit", str(picture), "--rect", "1,1,10,10", "--prompt", "x", "--out", str(out), option, value)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"gimp-openai: error: {words}"] or (
        len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"gimp-openai: error: {words}"))
    assert proc.stdout == "" and not out.exists()


def test_batch_concurrency_and_json_refusal(tmp_path, picture):
    proc = run_cli("--json", "batch", str(picture), "--rect", "1,1,5,5", "--prompt", "x", "--concurrency", "0",
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "usage" and error["message"].startswith("--concurrency 0 is not allowed")
    assert "from 1 to 16" in error["message"]


@pytest.mark.parametrize("url, words", [
    ("http://[::1/v1", "is not a valid URL"),
    ("http://127.0.0.1:99999/v1", "is not a valid URL"),
    ("http://[zz::1]/v1", "is not a valid URL"),
])
def test_malformed_base_urls_are_refused_plainly(tmp_path, picture, url, words):
    proc = run_cli("edit", str(picture), "--rect", "1,1,10,10", "--prompt", "x", "--model", "gpt-image-2",
                   "--out", str(tmp_path), "--base-url", url)
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith("gimp-openai: error: The base URL") and words in first, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_folder_as_reference_is_refused_plainly(tmp_path, picture):
    proc = run_cli("edit", str(picture), "--rect", "1,1,10,10", "--prompt", "x", "--model", "gpt-image-2",
                   "--out", str(tmp_path / "out"), "--reference", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (f"gimp-openai: error: The reference image {tmp_path} does not exist or "
                                           "is not a file.")
    assert "internal error" not in proc.stderr


@pytest.mark.parametrize("rect, words", [
    ("0,0,1e9,5", "--rect WIDTH 1e9 is not allowed"),
    ("0,0,5,99999999999", "--rect HEIGHT 99999999999 is not allowed"),
    ("-9999999999,0,5,5", "--rect X -9999999999 is not allowed"),
    ("1,2,3", "--rect must be X,Y,WIDTH,HEIGHT"),
])
def test_rect_numbers_are_bounded(tmp_path, picture, rect, words):
    proc = run_cli("edit", str(picture), f"--rect={rect}", "--prompt", "x", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.startswith(f"gimp-openai: error: {words}"), proc.stderr


def test_an_ellipse_costs_its_own_size_not_the_images():
    selection = cli.rect_selection(9000, 9000, (100, 200, 41, 21), ellipse=True)
    ys, xs = np.nonzero(selection)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (100, 140, 200, 220)
    assert selection[210, 120] == 255 and selection[200, 100] == 0  # centre in, corner out
    clipped = cli.rect_selection(50, 50, (40, 40, 30, 30), ellipse=False)
    assert clipped.sum() == 255 * 10 * 10


def test_the_banded_ellipse_is_the_ellipse():
    """The same pixels as the whole-image formula it replaced, also when the rectangle runs off the image."""
    selection = cli.rect_selection(600, 700, (-50, 20, 800, 500), ellipse=True)
    yy, xx = np.mgrid[0:600, 0:700]
    cx, cy = -50 + 400 - 0.5, 20 + 250 - 0.5
    expected = np.where(((xx - cx) / 400) ** 2 + ((yy - cy) / 250) ** 2 <= 1, 255, 0).astype(np.uint8)
    assert np.array_equal(selection, expected)
