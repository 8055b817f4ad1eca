"""The fault matrix as plain functions (no pytest), so the tests, `scripts/bench` and
``python -m tests.reliability.faults`` print the same table.

Each case starts the REAL local server with ``--fault SPEC`` (its ``times=`` counter makes "fail, then
succeed" exact), then drives an edit through

* the engine's host protocol (``python -m gimp_openai job JOB.json`` in a subprocess), and
* the GIMP 2.10 host (tests/stubs gimpfu/gimp/pdb -> plug-in -> hostlib -> the same engine subprocess),

and checks the reaction (attempts and waits seen in ``/_stats``; or a clear message naming the cause and what
to do) and that no data was lost: the original byte-identical, every image the server delivered in the
history folder, nothing inserted twice, undo groups balanced, no temp files left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.reliability import harness as H

STUBS = H.ROOT / "tests" / "stubs"
PLUGIN = H.ROOT / "plugin" / "gimp2" / "openai_gimp2.py"
MANIFEST = json.loads((H.ROOT / "manifest" / "procedures.json").read_text())

N = 2  # two images per request, so "keep the good one" and "insert each once" mean something
BACKOFF = (0.37, 1.2)  # first backoff: 0.5 s minus up to 25 % jitter (loose upper bound: busy machine)


@dataclass(frozen=True)
class Case:
    name: str
    spec: str
    ok: bool
    attempts: int
    waits: tuple[tuple[float, float], ...] = ()
    code: str = ""
    words: tuple[str, ...] = ()  # the message must name the cause ...
    hint_words: tuple[str, ...] = ()  # ... and the hint what to do
    saved: int | None = None  # images in history (None: N per successful answer)
    truncated: int = 0
    settings: dict = field(default_factory=dict, hash=False)


CASES = [
    Case("429 retry-after: 1 s", "429;times=1;retry-after=1", True, 2, ((0.95, 1.8),)),
    Case("429 retry-after-ms: 300", "429;times=2;retry-after-ms=300", True, 3, ((0.28, 0.9), (0.28, 0.9))),
    Case("429 every time", "429;retry-after-ms=100", False, 3, ((0.09, 0.7), (0.09, 0.7)), "rate_limited",
         ("rate limit",), ("wait", "try again")),
    Case("500 then success", "500;times=1", True, 2, (BACKOFF,)),
    Case("502 then success", "502;times=1", True, 2, (BACKOFF,)),
    Case("503 twice then success", "503;times=2", True, 3, (BACKOFF, (0.74, 2.0))),
    Case("reset mid-body, then success", "reset;times=1;after=200", True, 2, ((0.0, 1.2),)),
    Case("stall (read timeout 1.5 s), then success", "stall;seconds=4;times=1", True, 2,
         settings={"read_timeout": 1.5}),
    Case("stall every time", "stall;seconds=4", False, 2, code="timeout", words=("no answer", "read timeout of 1.5 s"),
         hint_words=("timeout",), settings={"read_timeout": 1.5, "max_retries": 1}),
    Case("malformed JSON", "malformed_json", False, 1, code="malformed_response", words=("answer is not json",),
         hint_words=("kept",), saved=0),
    Case("truncated base64 (image 2 of 2)", "truncated_b64;index=1", False, 1, code="malformed_response",
         words=("image 2", "truncated"), hint_words=("kept",), truncated=1),
    Case("wrong-size image", "wrong_size", True, 1),
    Case("moderation_blocked", "moderation_blocked", False, 1, code="moderation_blocked",
         words=("safety system",), hint_words=("rephrase",), saved=0),
    Case("insufficient_quota", "insufficient_quota", False, 1, code="insufficient_quota",
         words=("quota",), hint_words=("billing",), saved=0),
    Case("401 invalid key", "401", False, 1, code="invalid_api_key", words=("api key",),
         hint_words=("key", "settings"), saved=0),
]


@dataclass
class Row:
    path: str
    case: str
    attempts: int
    waits: list[float]
    outcome: str
    saved: int
    returned: int
    lost: int
    seconds: float
    retries_text: str = ""

    def cells(self) -> list[str]:
        waits = ", ".join(f"{w:.2f}" for w in self.waits)
        retries = self.retries_text or (f"{self.attempts - 1} ({waits} s)" if waits else "0")
        return [self.path, self.case, retries, self.outcome, f"{self.saved}/{self.returned}",
                str(self.lost), f"{self.seconds:.1f}"]


HEADER = ["path", "fault", "retries (waits)", "outcome", "history/returned", "data lost", "s"]


def table(rows: list[Row]) -> str:
    cells = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# --- checks shared by both paths ------------------------------------------------------------------------------


def check_reaction(case: Case, server) -> tuple[list[dict], list[float]]:
    reqs = H.image_requests(server)
    assert len(reqs) == case.attempts, (case.name, [(r["status"], r.get("faults")) for r in reqs])
    waits = H.gaps(reqs)
    for (lo, hi), wait in zip(case.waits, waits, strict=False):
        assert lo <= wait <= hi, (case.name, waits)
    return reqs, waits


def check_message(case: Case, message: str, hint: str) -> None:
    text, advice = message.lower(), hint.lower()
    for word in case.words:
        assert word in text, (case.name, message)
    assert case.hint_words and any(w in advice for w in case.hint_words), (case.name, hint)
    assert FAKE_KEY not in message and FAKE_KEY not in hint


def expected_saved(case: Case, server) -> int:
    return H.returned_images(server, N, case.truncated) if case.saved is None else case.saved


def check_history(case: Case, server, saved_paths: list[str]) -> tuple[int, int]:
    returned = expected_saved(case, server)
    history = H.history_files()
    assert len(history) == returned, (case.name, history)
    for p in saved_paths:
        assert Path(p) in history
    for png in history:  # each a complete, decodable image with its sidecar
        with Image.open(png) as im:
            im.load()
        assert png.with_suffix(".json").exists()
        assert FAKE_KEY not in png.with_suffix(".json").read_text()
    return len(history), returned


def clear_history() -> None:
    for p in Path(os.environ["GIMP_OPENAI_HISTORY_DIR"]).glob("*") if os.environ.get("GIMP_OPENAI_HISTORY_DIR") \
            else []:
        p.unlink()


def apply_settings(case: Case) -> None:
    defaults = {"read_timeout": 600.0, "max_retries": 2}
    defaults.update(case.settings)
    H.write_settings(**defaults)


# --- the engine's job protocol ---------------------------------------------------------------------------------


def run_engine_case(case: Case, server, folder: Path) -> Row:
    apply_settings(case)
    clear_history()
    server.reset()
    jf = H.JobFolder(folder)
    layer = H.textured(160, 240, seed=3)
    jf.add("img-1", layer, H.rect_selection(160, 240, (90, 50, 70, 60)))
    exported = (folder / "img-1.png").read_bytes()
    run = H.run_job(jf.write(n=N), server.url)
    assert run.code == 0 and not run.stderr.strip(), (case.name, run.stderr)
    assert FAKE_KEY not in run.stdout
    result = run.result
    assert result["type"] == "result"
    item = run.item("img-1")
    reqs, waits = check_reaction(case, server)
    assert (folder / "img-1.png").read_bytes() == exported  # the original is never written
    out = folder / "out"
    if case.ok:
        assert item["ok"] and result["ok"], (case.name, item)
        outs = item["outputs"]
        assert sorted(o["index"] for o in outs) == list(range(1, N + 1))  # each result once
        assert len({o["layer_png"] for o in outs}) == N == len(list(out.glob("img-1-?.png")))
        original = jf.originals["img-1"]
        sel = jf.selections["img-1"]
        for o in outs:
            pixels = np.asarray(Image.open(o["layer_png"]))
            mask = np.asarray(Image.open(o["mask_png"]))
            assert pixels.shape[:2] == original.shape[:2] and (mask[sel == 0] == 0).all()
        saved_paths = [o["history_png"] for o in outs]
        outcome = "ok"
    else:
        error = item["error"]
        assert not item["ok"] and error["code"] == case.code, (case.name, error)
        check_message(case, error["message"], error["hint"])
        assert not list(out.glob("img-1*.png"))  # nothing half-inserted
        saved_paths = error.get("saved") or []
        outcome = f"error {case.code}"
    saved, returned = check_history(case, server, saved_paths)
    assert not H.partial_files(out, Path(os.environ["GIMP_OPENAI_HISTORY_DIR"]))
    return Row("job", case.name, len(reqs), waits, outcome, saved, returned, returned - saved, run.seconds)


# --- the GIMP 2.10 host through the stubs ------------------------------------------------------------------------


class G2:
    pass


@contextmanager
def gimp2_host():
    """The fake GIMP 2.10 with the plug-in registered (the same steps as tests/gimp2/conftest.py's ``g2``)."""
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))
    import gimp
    import gimpfu
    import gimpshelf

    gimp.reset()
    gimpfu._registered_plugins_.clear()
    gimpfu.DIALOG = None
    gimpshelf.shelf.clear()
    spec = importlib.util.spec_from_file_location("openai_gimp2", PLUGIN)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    plugin.register_all()
    plugin.main()
    h = G2()
    h.gimp, h.gimpfu, h.pdb, h.plugin = gimp, gimpfu, gimp.pdb, plugin
    try:
        yield h
    finally:
        plugin.ASK = None
        gimp.reset()


def edit_args(prompt: str = "a red kite", **kw) -> list:
    values = dict(prompt=prompt, model="gpt-image-2", n=N, quality="low", size_mode="auto", background="auto",
                  feather=0.0, context_padding=0.25, add_mask=True, align=False, tone_match=False, blend="feather",
                  partial_images=0, whole_layer=False)
    values.update(kw)
    return [values[p["name"]] for p in MANIFEST["procedures"][0]["params"]]


def batch_args(**kw) -> list:
    values = dict(batch_operation="edit", prompt="snow", model="gpt-image-2", n=1, quality="low", size_mode="auto",
                  feather=0.0, context_padding=0.25, add_mask=True, align=False, tone_match=False, blend="feather",
                  no_selection="whole layer", variation_prompt="v", concurrency=4)
    values.update(kw)
    return [values[p["name"]] for p in next(q for q in MANIFEST["procedures"] if q["operation"] == "batch")["params"]]


def make_image(g2, width: int, height: int, name: str = "photo.xcf", seed: int = 0):
    image = g2.gimp.Image(width, height, 0)
    image.filename = "/pictures/" + name
    layer = g2.gimp.Layer(image, "Background", width, height, 0)
    layer.pixels[...] = H.textured(height, width, seed)[..., : layer.bpp]
    image.insert_layer(layer)
    image.undo_steps = []
    return image, layer


@contextmanager
def host_env(server):
    saved = {k: os.environ.get(k) for k in ("GIMP_OPENAI_PYTHON", "OPENAI_BASE_URL", "OPENAI_API_KEY")}
    os.environ.update(GIMP_OPENAI_PYTHON=sys.executable, OPENAI_BASE_URL=server.url, OPENAI_API_KEY=FAKE_KEY)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_host_case(case: Case, server) -> Row:
    import time

    apply_settings(case)
    clear_history()
    server.reset()
    with host_env(server), gimp2_host() as g2:
        image, layer = make_image(g2, 240, 160, seed=5)
        before_layer = layer.pixels.copy()
        before = image.composite()
        g2.pdb.gimp_image_select_rectangle(image, 2, 90, 50, 70, 60)
        sel = image.selection.pixels[..., 0].copy()
        started = time.monotonic()
        failure = ""
        try:
            g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args())
        except RuntimeError as exc:  # non-interactive runs get the failure, as GIMP's PDB gives it
            failure = str(exc)
        seconds = time.monotonic() - started
        try:
            reqs, waits = check_reaction(case, server)
        except AssertionError as exc:  # what the run said is what explains an unexpected count
            raise AssertionError(f"{exc}; the run's failure: {failure!r}; messages: {g2.gimp.state.messages}; "
                                 f"{seconds:.1f} s") from None
        np.testing.assert_array_equal(layer.pixels, before_layer)  # the original layer, byte-identical
        assert image.undo_depth == 0 and g2.gimp.state.context_depth == 0  # undo groups and contexts balance
        steps = [s for s in image.undo_steps if s != ["selection"]]
        results = [lyr for lyr in _walk(image.layers) if lyr.name.startswith("OpenAI:") and not lyr.is_group]
        messages = list(g2.gimp.state.messages)
        assert all(FAKE_KEY not in str(m) for m in messages)
        if case.ok:
            assert not failure and messages == [], (case.name, messages)
            names = sorted(lyr.name for lyr in results)
            assert names == [f"OpenAI: a red kite ({k}/{N})" for k in range(1, N + 1)], names  # once each
            assert len(steps) == 1  # one undo step for the whole edit
            after = image.composite()
            np.testing.assert_array_equal(after[sel == 0], before[sel == 0])
            saved_paths = [json.loads(lyr.parasite_find("gimp-openai").data)["history_png"] for lyr in results]
            outcome = "ok"
        else:
            assert failure and results == [] and steps == [], (case.name, failure, results, steps)
            message, _, hint = failure.partition("What to do:")
            check_message(case, message, hint)
            np.testing.assert_array_equal(image.composite(), before)
            saved_paths = [line.strip() for line in failure.splitlines() if line.strip().endswith(".png")]
            outcome = f"message: {case.code}"
    saved, returned = check_history(case, server, saved_paths)
    return Row("gimp2 host", case.name, len(reqs), waits, outcome, saved, returned, returned - saved, seconds)


def _walk(layers):
    for lyr in layers:
        yield lyr
        if lyr.is_group:
            yield from _walk(lyr.layers)


# --- batch of 8, two refused ------------------------------------------------------------------------------------


def run_engine_batch(server, folder: Path) -> Row:
    """8 items, concurrency 4; the server refuses two (moderation: never retried): the 6 others finish."""
    apply_settings(Case("batch", "", True, 0))
    clear_history()
    server.reset()
    jf = H.JobFolder(folder)
    for i in range(8):
        jf.add(f"img-{i}", H.textured(120, 160, seed=i), H.rect_selection(120, 160, (50, 30, 60, 50)))
    exported = {i: (folder / f"img-{i}.png").read_bytes() for i in range(8)}
    run = H.run_job(jf.write(n=1, concurrency=4), server.url)
    assert run.code == 0 and not run.stderr.strip(), run.stderr
    result = run.result
    good = [i for i in result["items"] if i["ok"]]
    bad = [i for i in result["items"] if not i["ok"]]
    assert len(good) == 6 and len(bad) == 2, result
    assert all(i["error"]["code"] == "moderation_blocked" for i in bad)
    assert result["error"]["code"] == "partial_failure" and result["error"]["message"].startswith("2 of 8")
    assert all(len(i["outputs"]) == 1 and Path(i["outputs"][0]["layer_png"]).exists() for i in good)
    assert all((folder / f"img-{i}.png").read_bytes() == exported[i] for i in range(8))
    reqs = H.image_requests(server)
    assert len(reqs) == 8  # nobody retried a refusal, nobody sent twice
    history = H.history_files()
    assert len(history) == 6 == H.returned_images(server, 1)
    return Row("job", "batch of 8, 2 refused", len(reqs), [], "6 ok, 2 errors", len(history), 6, 0, run.seconds,
               "0 (8 requests)")


def run_host_batch(server) -> Row:
    import time

    apply_settings(Case("batch", "", True, 0))
    clear_history()
    server.reset()
    with host_env(server), gimp2_host() as g2:
        images = [make_image(g2, 96, 80, name=f"p{i}.png", seed=i)[0] for i in range(8)]
        befores = [img.layers[0].pixels.copy() for img in images]
        for img in images:
            g2.pdb.gimp_image_select_rectangle(img, 2, 20, 20, 40, 30)
        started = time.monotonic()
        g2.pdb.python_fu_openai_batch(*batch_args(concurrency=4))
        seconds = time.monotonic() - started
        text = g2.gimp.state.messages[-1]
        assert "6 of 8 images done" in text and FAKE_KEY not in text, text
        assert text.count("What to do: The request was refused by the safety system") == 2, text
        counts = sorted(len(img.layers) for img in images)
        assert counts == [1, 1, 2, 2, 2, 2, 2, 2], counts  # one result layer each for 6, none twice
        for img, before in zip(images, befores, strict=True):
            np.testing.assert_array_equal(img.layers[-1].pixels, before)
            assert img.undo_depth == 0
            assert len([s for s in img.undo_steps if s != ["selection"]]) == (1 if len(img.layers) == 2 else 0)
    reqs = H.image_requests(server)
    assert len(reqs) == 8
    history = H.history_files()
    assert len(history) == 6
    return Row("gimp2 host", "batch of 8, 2 refused", len(reqs), [], "6 ok, 2 messages", 6, 6, 0, seconds,
               "0 (8 requests)")


# --- run everything (scripts/bench, python -m tests.reliability.faults) --------------------------------------------


def run_all(paths: tuple[str, ...] = ("job", "gimp2 host")) -> list[Row]:
    from tests.support.local_server import LocalServerHandle

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for var, sub in (("GIMP_OPENAI_CONFIG_DIR", "config"), ("GIMP_OPENAI_CACHE_DIR", "cache"),
                         ("GIMP_OPENAI_HISTORY_DIR", "history")):
            os.environ[var] = str(home / sub)
        os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
        for number, case in enumerate(CASES):
            with LocalServerHandle(("--fault", case.spec)) as server:
                if "job" in paths:
                    folder = home / f"job-{number}"
                    folder.mkdir()
                    rows.append(run_engine_case(case, server, folder))
                if "gimp2 host" in paths:
                    rows.append(run_host_case(case, server))
        with LocalServerHandle(("--fault", "moderation_blocked;times=2")) as server:
            if "job" in paths:
                (home / "batch").mkdir()
                rows.append(run_engine_batch(server, home / "batch"))
            if "gimp2 host" in paths:
                rows.append(run_host_batch(server))
    return rows


if __name__ == "__main__":
    print(table(run_all()))
