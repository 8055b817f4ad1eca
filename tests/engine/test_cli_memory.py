"""The CLI's big-image path stays near the picture's own size: the peak is the decoded picture (libpng needs two
copies while it decodes) plus crop-sized work, whatever the picture's transparency.

Regression: a transparent 8000² edit (1024² selection) peaked at 7.7 GB (9000²: 9.8 GB), an opaque one at 2.3 GB:
the .ora's thumbnail resized the whole canvas in premultiplied float32, the flattened picture was composited
over the whole canvas in float, the full-size PNGs were encoded from full-size copies and the archive was built
in memory. After: 552 MB for both (tests/bench/run.py --cli-memory-only). Here a 4000² picture, so CI is fast:
the old code needed ~30x the canvas there; the bound below is two canvases plus crop-sized work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_KEY

SIDE = 4000
SELECTION = 1024
#: What the interpreter, numpy, OpenCV, Pillow and requests take before any picture (measured: ~110 MB).
RUNTIME_MB = 150


def picture(path: Path, transparent: bool) -> Path:
    """A smooth SIDE² picture (gradients and a little noise), with an alpha ramp when ``transparent``."""
    from gimp_openai import imaging

    ramp = np.linspace(0, 255, SIDE, dtype=np.float32).astype(np.uint8)
    pixels = np.empty((SIDE, SIDE, 4), np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = np.random.default_rng(0).integers(90, 110, (SIDE, SIDE), dtype=np.uint8)
    pixels[..., 3] = ramp[None, :] if transparent else 255
    path.write_bytes(imaging.encode_png(pixels))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("transparent", [True, False], ids=["transparent", "opaque"])
def test_a_big_edit_peaks_near_the_picture_not_thirty_canvases(local_server, tmp_path, transparent):
    source = picture(tmp_path / "big.png", transparent)
    off = (SIDE - SELECTION) // 2
    run, peak_mb, wall = isolated_peak(["--json", "edit", str(source), "--rect", f"{off},{off},{SELECTION},{SELECTION}",
                                        "--prompt", "a red kite", "--model", "gpt-image-2", "--quality", "low",
                                        "--no-align", "--out", str(tmp_path / "out"), "-q"], local_server)
    assert run.returncode == 0, run.stderr
    canvas_mb = SIDE * SIDE * 4 / 2**20
    place = json.loads(run.stdout)["results"][0]["outputs"][0]
    crop_mb = place["width"] * place["height"] * 4 / 2**20
    bound = RUNTIME_MB + 2 * canvas_mb + 12 * crop_mb  # 150 + 122 + 108 = ~380 MB; the old code: ~1.9 GB
    assert peak_mb <= bound, f"peak {peak_mb:.0f} MB > {bound:.0f} MB (canvas {canvas_mb:.0f}, crop {crop_mb:.0f})"
    # the outputs are whole: the full-size PNG, and the .ora with the crop-sized layer at its offsets
    result = json.loads(run.stdout)["results"][0]
    written = Image.open(result["outputs"][0]["png"])
    assert written.mode == ("RGBA" if transparent else "RGB")  # an opaque picture stays an RGB file
    full = np.asarray(written.convert("RGBA"))
    original = np.asarray(Image.open(source).convert("RGBA"))
    assert full.shape == original.shape
    outside = np.ones(full.shape[:2], bool)
    outside[place["y"] : place["y"] + place["height"], place["x"] : place["x"] + place["width"]] = False
    assert np.array_equal(full[outside], original[outside])
    with zipfile.ZipFile(result["ora"]) as archive:
        import io
        import xml.etree.ElementTree as ET

        layers = list(ET.fromstring(archive.read("stack.xml")).iter("layer"))
        top = layers[0]
        assert (int(top.get("x")), int(top.get("y"))) == (place["x"], place["y"])
        crop = Image.open(io.BytesIO(archive.read(top.get("src"))))
        assert crop.size == (place["width"], place["height"])
        merged = np.asarray(Image.open(io.BytesIO(archive.read("mergedimage.png"))).convert("RGBA"))
        assert np.array_equal(merged, full)
        assert max(Image.open(io.BytesIO(archive.read("Thumbnails/thumbnail.png"))).size) == 256
    print(f"\n{SIDE}² {'transparent' if transparent else 'opaque'}: peak {peak_mb:.0f} MB (bound {bound:.0f}), "
          f"wall {wall:.2f} s")


def isolated_peak(args: list[str], server) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run the CLI through a fresh wrapper process, so its RUSAGE_CHILDREN peak is this one CLI run's own
    (result, peak RSS in MB, wall seconds)."""
    wrapper = ("import os, resource, subprocess, sys, time\n"
               "t = time.monotonic()\n"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(p.stdout)\n"
               "sys.stderr.write(p.stderr + '\\nPEAK_KB %d %f %d\\n' % (resource.getrusage(resource.RUSAGE_CHILDREN)"
               ".ru_maxrss, time.monotonic() - t, p.returncode))\n")
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=server.url)
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "gimp_openai", *args],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = proc.stderr.rstrip().splitlines()
    _, peak_kb, seconds, code = lines[-1].split()
    err = "\n".join(lines[:-1]).rstrip()
    return subprocess.CompletedProcess(args, int(code), proc.stdout, err), int(peak_kb) / 1024, float(seconds)
