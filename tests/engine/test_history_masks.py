"""A result brought back from history is the layer the run inserted: the same pixels (alignment and tone match put
back from the sidecar), the same layer mask (kept beside the image as ``<id>.mask.png``), the same offset. Real
edits against the local server rendering like GPT (shifted and re-toned), in process and through `gimp-openai
job` + `gimp-openai history layer` in subprocesses; entries kept before masks were, and damaged ones, still come
back, without a mask and saying so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gimp_openai import history_index as hx
from gimp_openai import imaging, operations
from gimp_openai.composite import result_to_place
from gimp_openai.geometry import Rect
from gimp_openai.history import MASK_SUFFIX, History
from gimp_openai.settings import Settings
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import client_for
from tests.engine.test_jobs_e2e import DATA
from tests.reliability import harness as H
from tests.support.local_server import LocalServerHandle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpt_like_server():
    handle = LocalServerHandle(("--render", "gpt-like"))
    yield handle
    handle.stop()


def lake() -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(Image.open(DATA / "lake-balloon.png").convert("RGBA"))
    sel = np.asarray(Image.open(DATA / "lake-balloon-selection.png").convert("L"))
    return pixels, sel


def edit(server, folder: Path, **choices) -> operations.Outcome:
    engine = operations.Engine(Settings(), client_for(server.url), History(folder))
    pixels, sel = lake()
    options = operations.Options(model="gpt-image-2", prompt="a red balloon", **choices)
    return operations.edit(engine, options, place_pixels=pixels, selection=sel,
                           layer=Rect(0, 0, pixels.shape[1], pixels.shape[0]))


def test_each_result_comes_back_with_the_runs_pixels_mask_and_place(gpt_like_server, tmp_path):
    outcome = edit(gpt_like_server, tmp_path, n=2, feather=3.0)
    assert len(outcome.outputs) == 2
    for output in outcome.outputs:
        assert output.history_png is not None
        entry = hx.get_entry(output.history_png.stem, tmp_path)
        assert entry.mask == output.history_png.with_name(output.history_png.stem + MASK_SUFFIX)
        placed = hx.placed_layer(entry)
        assert (placed.x, placed.y, placed.placed) == (output.x, output.y, True) and placed.notes == []
        assert placed.pixels.tobytes() == output.pixels.tobytes()  # aligned and tone-matched, bit for bit
        assert placed.mask is not None and placed.mask.tobytes() == output.mask.tobytes()
        # the corrections mattered: the answer merely cut to the place is another layer
        raw = result_to_place(imaging.read_image(output.history_png), outcome.plan)
        assert np.abs(raw.astype(int) - output.pixels.astype(int)).mean() > 1.0
        sidecar = json.loads(output.history_png.with_suffix(".json").read_text())
        assert sidecar["seamless"]["replay"]["matrix"] is not None and sidecar["mask"].endswith(MASK_SUFFIX)
    # one mask per result, none of them listed as an entry of its own
    listing = hx.list_entries(tmp_path)
    assert sorted(e.id for e in listing.entries) == sorted(o.history_png.stem for o in outcome.outputs)
    assert listing.notes == []


def test_a_poisson_blend_is_said_not_replayed(gpt_like_server, tmp_path):
    (output,) = edit(gpt_like_server, tmp_path, blend="poisson").outputs
    placed = hx.placed_layer(hx.get_entry(output.history_png.stem, tmp_path))
    assert placed.mask is not None and placed.mask.tobytes() == output.mask.tobytes()
    assert placed.notes == ["aligned and tone-matched as the run did, but not Poisson-blended (that needs the "
                            "original image)"]


def test_old_and_damaged_entries_come_back_without_a_mask(gpt_like_server, tmp_path):
    (output,) = edit(gpt_like_server, tmp_path).outputs
    stem = output.history_png.stem
    mask_file = output.history_png.with_name(stem + MASK_SUFFIX)
    sidecar_path = output.history_png.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())

    Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask_file)  # the wrong size: left out, said
    placed = hx.placed_layer(hx.get_entry(stem, tmp_path))
    assert placed.mask is None and "is 7x5, not the layer's" in placed.notes[0]
    mask_file.write_bytes(b"not a png")  # not an image: left out, said, no traceback
    placed = hx.placed_layer(hx.get_entry(stem, tmp_path))
    assert placed.mask is None and "could not be read" in placed.notes[0]
    assert placed.pixels.tobytes() == output.pixels.tobytes()

    # a sidecar naming another file is not followed; one from before masks (no "mask", no "replay") still works
    sidecar_path.write_text(json.dumps(dict(sidecar, mask="../../etc/passwd")))
    assert hx.get_entry(stem, tmp_path).mask is None
    old = {k: v for k, v in sidecar.items() if k not in ("mask", "seamless")}
    sidecar_path.write_text(json.dumps(old))
    placed = hx.placed_layer(hx.get_entry(stem, tmp_path))
    assert placed.mask is None and placed.placed and (placed.x, placed.y) == (output.x, output.y)
    assert placed.notes == ["history kept no mask for it: the whole region comes back, without the selection's mask"]
    assert placed.pixels.tobytes() == result_to_place(imaging.read_image(output.history_png),
                                                      edit_plan(sidecar)).tobytes()


def edit_plan(sidecar: dict):
    from gimp_openai.geometry import RegionPlan

    width, height = (int(v) for v in sidecar["size"].split("x"))
    return RegionPlan.from_dict({"place": sidecar["place"], "request": sidecar["request"], "target": [width, height]})


def test_cli_history_layer_gives_the_jobs_own_layer_and_mask_bytes(gpt_like_server, tmp_path):
    """`gimp-openai job` as a host runs it, then `history layer` as a host asks for the entry: the PNG files
    are byte-identical to the job's layer_png and mask_png, at the same offset."""
    pixels, sel = lake()
    job = H.JobFolder(tmp_path / "job")
    job.folder.mkdir()
    job.add("img-1", pixels, sel, layer_xy=(40, 30))
    env_history = tmp_path / "history"
    run = H.run_job(job.write(align=True, tone_match=True, feather=2.0), gpt_like_server.url,
                    GIMP_OPENAI_HISTORY_DIR=str(env_history))
    assert run.code == 0 and run.result["ok"], run.stdout + run.stderr
    (output,) = run.result["items"][0]["outputs"]
    stem = Path(output["history_png"]).stem
    env = H.engine_env(gpt_like_server.url, GIMP_OPENAI_HISTORY_DIR=str(env_history))
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "--json", "history", "layer", stem, "-o",
                           str(tmp_path / "back.png")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.splitlines()[-1])
    assert FAKE_KEY not in proc.stdout + proc.stderr
    assert (answer["x"], answer["y"], answer["width"], answer["height"]) == (
        output["x"], output["y"], output["width"], output["height"])
    assert answer["placed"] is True and answer["notes"] == ""
    assert Path(answer["layer_png"]).read_bytes() == Path(output["layer_png"]).read_bytes()
    assert answer["mask_png"] == str(tmp_path / "back-mask.png")
    assert Path(answer["mask_png"]).read_bytes() == Path(output["mask_png"]).read_bytes()
    assert answer["entry"]["mask"].endswith(stem + MASK_SUFFIX)

    # `history insert` into a copy of the picture shows it as GIMP does: through the mask
    picture = tmp_path / "photo.png"
    canvas = np.zeros((pixels.shape[0] + 60, pixels.shape[1] + 80, 4), np.uint8)
    canvas[30:30 + pixels.shape[0], 40:40 + pixels.shape[1]] = pixels
    Image.fromarray(canvas).save(picture)
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "--json", "history", "insert", stem, str(picture),
                           "-o", str(tmp_path / "out.png")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1])["masked"] is True, proc.stderr
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGBA"))
    x, y, w, h = output["x"], output["y"], output["width"], output["height"]
    mask = imaging.read_selection(output["mask_png"])
    layer = imaging.read_image(output["layer_png"])
    hidden = mask == 0
    assert np.array_equal(out[y:y + h, x:x + w][hidden], canvas[y:y + h, x:x + w][hidden])  # the mask hides these
    shown = mask == 255
    assert np.array_equal(out[y:y + h, x:x + w][shown][:, :3], layer[shown][:, :3])  # and shows these whole


@pytest.mark.parametrize("damage", [
    {"lab": [[1, 2], [3, 4]]},                       # a Lab map of the wrong shape (OpenCV would assert)
    {"lab": [["x"] * 4] * 3},                        # not numbers
    {"lab_dtype": "foo"},                            # not a dtype
    {"matrix": [[1, 0, float("nan")], [0, 1, 0]]},   # not finite
    {"sharp": [0, 1]},                               # a window of two numbers
    {"window": "everything"},
])
def test_a_damaged_record_of_corrections_costs_the_corrections_in_plain_words(gpt_like_server, tmp_path, damage):
    """The raw answer still comes back at its place, with its mask; the note says what was lost, never a
    library's text."""
    (output,) = edit(gpt_like_server, tmp_path).outputs
    stem = output.history_png.stem
    sidecar_path = output.history_png.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["seamless"]["replay"] = {**sidecar["seamless"]["replay"], "lab": [[1.0] * 4] * 3, **damage}
    sidecar_path.write_text(json.dumps(sidecar))
    placed = hx.placed_layer(hx.get_entry(stem, tmp_path))
    assert placed.placed and (placed.x, placed.y) == (output.x, output.y) and placed.mask is not None
    assert placed.notes == ["its alignment and tone match could not be put back (their record in history is "
                            "damaged)"]
