"""``pytest -m bench -s tests/bench``: the same figures as ``scripts/bench``, printed (not pass/fail timings).

The only assertions are that every measurement ran and produced numbers; targets are reported, not enforced,
because a shared 2-core machine's timings are not a correctness property."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.bench import run as B

pytestmark = pytest.mark.bench


def test_benchmarks_print_the_table(tmp_path):
    figures = B.run_all(quick=False, faults=True)
    print("\n" + B.table(figures))
    out = B.ROOT / "bench-results" / "bench-pytest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1, default=str))
    assert {r["layer"] for r in figures["host"]} == set(B.LAYERS)
    for value in (figures["ratio_8000_1024"], figures["memory"]["peak_mb"], figures["batch"]["speedup_c4"],
                  figures["seamless"]["share"]):
        assert math.isfinite(value)
    assert all(r["lost"] == 0 for r in figures["faults"])


def test_corpus_generator_cli(tmp_path):
    """scripts/make_corpus.py DIR as a command (also used by hand to look at the inputs)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(B.ROOT / "scripts" / "make_corpus.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cases = json.loads(Path(tmp_path / "cases.json").read_text())
    print(f"\n{len(cases)} generated cases: " + ", ".join(c["name"] for c in cases))
