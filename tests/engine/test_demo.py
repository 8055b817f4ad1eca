"""scripts/demo end to end: the README's first command must work on this checkout with no key and no network."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "plugin" / "gimp_openai" / "data"


@pytest.mark.slow
def test_demo_removes_the_balloon_offline_and_stops_its_server(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    proc = subprocess.run([str(ROOT / "scripts" / "demo"), str(out)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Results in {out}" in proc.stdout
    # the local server's default render leaves the context where it was: an aligned result is not resampled
    reports = re.findall(r"lake-balloon-edit-\d\.png \[(.*)\]", proc.stdout)
    assert len(reports) == 2 and all(r.startswith("aligned already;") for r in reports), reports
    pngs = sorted(out.glob("lake-balloon-edit-*.png"))
    assert [p.name for p in pngs] == ["lake-balloon-edit-1.png", "lake-balloon-edit-2.png"]
    original = np.asarray(Image.open(DATA / "lake-balloon.png").convert("RGBA"))
    selection = np.asarray(Image.open(DATA / "lake-balloon-selection.png").convert("L"))
    for png in pngs:
        result = np.asarray(Image.open(png).convert("RGBA"))
        assert np.array_equal(result[selection == 0], original[selection == 0])
        red = (result[..., 0] > 150) & (result[..., 1] < 80)
        assert red[selection > 0].mean() < 0.01  # the balloon is gone
    with zipfile.ZipFile(out / "lake-balloon-openai.ora") as z:
        assert "stack.xml" in z.namelist()
    assert len([p for p in (out / "history").glob("*.png") if not p.name.endswith(".mask.png")]) == 2
    # the server is stopped
    url = re.search(r"local server at (http://127\.0\.0\.1:\d+)", proc.stderr).group(1)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/v1/models", timeout=5)
