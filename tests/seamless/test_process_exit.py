"""Every engine job is a fresh process that exits right after make_seamless: the Lab warm-up thread must never
still be running then (the C++ runtime aborts the process: "terminate called without an active exception")."""

import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np
from gimp_openai.seamless import make_seamless
rng = np.random.default_rng(1)
original = rng.integers(0, 255, (256, 256, 4), dtype=np.uint8)
original[..., 3] = 255
selection = np.full((256, 256), 255, np.uint8)  # the whole crop: no context, tone match returns at once
out = make_seamless(original, original.copy(), selection)
print(out.report)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_engine_process_exits_cleanly_when_tone_match_returns_early(attempt):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "terminate called" not in proc.stderr
    assert "tone not matched" in proc.stdout
