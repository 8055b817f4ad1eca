"""Results of runs that did not end well are in the history too, and come back at their place: the engine
writes every paid image before anything else, so a cancelled run (the host killed while it inserted the
layers), a run that failed after a preview, or a run whose image was closed meanwhile (the same job, the host
only learns it afterwards) all leave an entry `gimp-openai history` lists and rebuilds. Real subprocesses
against the real local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gimp_openai import history_index as hx
from gimp_openai import operations
from gimp_openai.errors import RequestTimeoutError

from tests.conftest import FAKE_KEY
from tests.engine.test_jobs_e2e import _session_job
from tests.engine.test_stream_e2e import engine_for


def history(*args: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "--json", "history", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert FAKE_KEY not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_cancelled_run_is_listed_and_comes_back_at_its_place(local_server, tmp_path):
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=local_server.url)
    work = tmp_path / "gimp-openai-cancelled"
    work.mkdir()
    engine, result = _session_job(work, env, then="close")  # killed while inserting: a cancel
    assert engine.returncode == 0 and result["ok"]
    (output,) = result["items"][0]["outputs"]
    listing = history("list", env=env)
    (entry,) = [e for e in listing["entries"] if e["image"] == output["history_png"]]
    assert entry["prompt"] == "remove the balloon" and entry["operation"] == "edit" and entry["source"] == ""
    assert entry["usage"]["total_tokens"] > 0 and entry["cost"] > 0  # what it cost, shown by the browser
    layer = history("layer", entry["id"], "-o", str(tmp_path / "back.png"), env=env)
    assert (layer["x"], layer["y"], layer["width"], layer["height"]) == (output["x"], output["y"], output["width"],
                                                                         output["height"])
    assert layer["placed"] is True


@pytest.mark.slow
def test_a_run_that_failed_after_a_preview_leaves_it_in_the_listing(local_server, tmp_path):
    options = operations.Options(model="gpt-image-1", prompt="a kite", quality="low", size="1024x1024",
                                 partial_images=2)
    eng = engine_for(local_server, tmp_path, "stall;seconds=30", read_timeout=4.0, max_retries=0)
    with pytest.raises(RequestTimeoutError):
        operations.generate(eng, options)
    (entry,) = hx.list_entries(tmp_path / "history").entries
    assert entry.partial and entry.prompt == "a kite" and entry.operation == "generate"
    assert not hx.placed_layer(entry).placed  # a generation has no place: the host centres it or opens it new
