"""Picking among n results, stepping through them, and bringing back a past result, as the one workflow runs
them against a fake adapter (no GIMP): what is kept, what is removed, how many undo steps, where a history
result goes. The history side runs the real engine (`gimp-openai history`) on real sidecars."""

import json
import os
import sys

import numpy as np
import pytest
from gimp_openai.history import History
from gimp_openai.imaging import encode_png

from tests.gimp2.test_workflow import ROOT, FakeAdapter, FakeImage, hl, proc, run

sys.path.insert(0, os.path.join(ROOT, "plugin", "hostlib"))
import gimp_openai_workflow as flow  # noqa: E402


class Layer:
    def __init__(self, name, visible=True, mask="engine", parasite=None):
        self.name, self.visible, self.mask = name, visible, mask
        self.parasite = parasite or json.dumps({"prompt": "a red kite"})


class Group(Layer):
    def __init__(self, name, children):
        Layer.__init__(self, name, True, None, "{}")
        self.children = children


class ResultsAdapter(FakeAdapter):
    """FakeAdapter plus the layer tree of one image: [group of results, photo]."""

    def __init__(self, n=3, choice=None, **kw):
        FakeAdapter.__init__(self, **kw)
        self.group = Group(f"OpenAI: a red kite ({n} results)",
                           [Layer(f"OpenAI: a red kite ({k}/{n})", visible=k == 1) for k in range(1, n + 1)])
        self.tree = [self.group, Layer("photo", mask=None, parasite=None)]
        self.choice, self.offered, self.undo_steps = choice, [], 0

    def result_group(self, image, drawables):
        active = (drawables or [self.group])[0]
        if active is self.group or active in self.group.children:
            return self.group, list(self.group.children)
        return None

    def is_visible(self, layer):
        return layer.visible

    def layer_label(self, layer):
        return layer.name

    def show_only(self, image, layers, k):
        self.undo_steps += 1
        for i, layer in enumerate(layers):
            layer.visible = i == k

    def keep_result(self, image, group, layer):
        self.undo_steps += 1
        layer.visible = True
        self.tree[self.tree.index(group)] = layer


class Chooser(ResultsAdapter):
    def choose_result(self, image, group, layers, current):
        self.offered.append(([la.name for la in layers], current))
        return self.choice


PICKS = [  # (index argument, interactive, host can show them, its choice) -> which result stays (1-based)
    (0, False, False, None, 1),  # a script: the one showing
    (2, False, False, None, 2),
    (3, False, True, 0, 3),  # a script's index wins over any chooser
    (0, True, False, None, 1),  # GIMP 2.10: interactive keeps the one showing
    (0, True, True, 2, 3),  # GIMP 3: what the artist picked side by side
]


@pytest.mark.parametrize("index,interactive,chooser,choice,kept", PICKS)
def test_pick_keeps_one_result_in_the_group_s_place_in_one_undo_step(index, interactive, chooser, choice, kept):
    adapter = (Chooser if chooser else ResultsAdapter)(choice=choice, interactive=interactive)
    image = FakeImage(50, 40)
    assert run(adapter, "pick-result", {"index": index}, image) is None
    layer = adapter.tree[0]
    assert layer.name == f"OpenAI: a red kite ({kept}/3)" and layer.visible and layer.mask == "engine"
    assert json.loads(layer.parasite)["prompt"] == "a red kite"  # its description goes with it
    assert [la.name for la in adapter.tree] == [layer.name, "photo"] and adapter.undo_steps == 1
    assert adapter.statuses[-1].startswith(f"Kept {layer.name}; 2 other result(s) removed")
    if chooser and interactive and not index:
        assert adapter.offered == [([f"OpenAI: a red kite ({k}/3)" for k in (1, 2, 3)], 0)]


def test_pick_starts_the_chooser_on_the_result_showing_and_cancel_changes_nothing():
    adapter = Chooser(choice=None, interactive=True)
    adapter.show_only(None, adapter.group.children, 1)
    adapter.undo_steps = 0
    with pytest.raises(flow.Stop):
        run(adapter, "pick-result", {}, FakeImage(50, 40))
    assert adapter.offered[0][1] == 1 and adapter.tree[0] is adapter.group and adapter.undo_steps == 0


def test_pick_refuses_what_is_not_a_result_group_and_an_index_past_the_end():
    adapter = ResultsAdapter()
    with pytest.raises(flow.Refusal) as outside:
        flow.Workflow(adapter, proc("pick-result"), {"index": 0}).run(FakeImage(50, 40), [adapter.tree[1]])
    assert outside.value.code == "not_results" and "Click a group" in outside.value.hint
    with pytest.raises(flow.Refusal) as past:
        run(adapter, "pick-result", {"index": 4}, FakeImage(50, 40))
    assert past.value.code == "no_such_result" and "from 1 to 3" in past.value.hint
    assert adapter.tree[0] is adapter.group and adapter.undo_steps == 0


def test_next_result_steps_through_the_group_and_wraps():
    adapter = ResultsAdapter()
    image = FakeImage(50, 40)
    seen = []
    for _ in range(4):
        run(adapter, "next-result", {}, image)
        seen.append([la.visible for la in adapter.group.children])
    assert seen == [[False, True, False], [False, False, True], [True, False, False], [False, True, False]]
    assert adapter.undo_steps == 4 and adapter.statuses[-1] == "Showing 2 of 3: OpenAI: a red kite (2/3)"


# --- history ----------------------------------------------------------------------------------------------------

@pytest.fixture
def real_engine(monkeypatch):
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", sys.executable)


def saved(meta, pixels=None):
    folder = os.environ["GIMP_OPENAI_HISTORY_DIR"]
    if pixels is None:
        pixels = np.zeros((64, 64, 4), np.uint8)
        pixels[..., 1] = 200
        pixels[..., 3] = 255
    return History(folder).save(encode_png(pixels), meta=meta).stem


EDIT = {"operation": "edit", "prompt": "a red kite", "model": "gpt-image-2", "source": "photo.png", "k": 2, "n": 3,
        "size": "64x64", "place": {"x": 30, "y": 20, "width": 40, "height": 30},
        "request": {"x": 20, "y": 10, "width": 60, "height": 50}, "request_id": "req_9"}


class HistoryAdapter(FakeAdapter):
    def __init__(self, pick=None, **kw):
        FakeAdapter.__init__(self, **kw)
        self.pick, self.listings = pick, []

    def choose_history(self, listing, image):
        self.listings.append(listing)
        return self.pick(listing) if callable(self.pick) else self.pick


def test_history_puts_a_result_back_at_its_place_in_one_undo_step(real_engine):
    older = saved(dict(EDIT, prompt="older"))
    wanted = saved(EDIT)
    image = FakeImage(120, 90)
    adapter = HistoryAdapter(pick=lambda listing: wanted, interactive=True)
    assert run(adapter, "history", {}, image) is None
    (listing,) = adapter.listings
    assert [e["id"] for e in listing["entries"]] == [wanted, older]
    assert all(os.path.isfile(e["thumbnail"]) for e in listing["entries"])  # the chooser shows them
    (insert,) = adapter.inserted
    name, x, y, w, h, mask, parasite = insert["layers"][0]
    assert (insert["image"], insert["group"], image.undo_groups) == ("photo.png", None, 1)
    assert (name, x, y, w, h, mask) == ("OpenAI: a red kite (2/3)", 30, 20, 40, 30, None)
    assert parasite["request_id"] == "req_9" and parasite["history_png"].endswith(wanted + ".png")
    assert "from history (no new request)" in adapter.statuses[-1] and not adapter.shown


def test_history_opens_a_result_that_does_not_fit_as_a_new_image(real_engine):
    entry = saved(EDIT)
    small = FakeImage(50, 40)
    adapter = HistoryAdapter()
    message = run(adapter, "history", {"entry": entry}, small)
    assert "opened as a new image: its place (40\u00d730 at 30, 20) is outside this image" in message
    (insert,) = adapter.inserted
    assert insert["image"] == "new" and insert["layers"][0][1:5] == (0, 0, 40, 30) and len(adapter.shown) == 1
    assert small.undo_groups == 0


def test_history_without_an_image_and_a_generation_centred(real_engine):
    generated = saved({"operation": "generate", "prompt": "a lighthouse", "model": "gpt-image-1",
                       "size": "64x64"})
    adapter = HistoryAdapter()
    assert run(adapter, "history", {"entry": generated}, None) is None  # no image open: a new one
    assert adapter.inserted[0]["image"] == "new" and len(adapter.shown) == 1
    adapter = HistoryAdapter()
    image = FakeImage(100, 80)
    run(adapter, "history", {"entry": generated}, image)
    assert adapter.inserted[0]["layers"][0][1:5] == (18, 8, 64, 64) and image.undo_groups == 1


def test_history_script_default_is_the_newest_and_errors_are_plain(real_engine):
    saved(dict(EDIT, prompt="older"))
    newest = saved(EDIT)
    adapter = HistoryAdapter()
    run(adapter, "history", {}, FakeImage(120, 90))
    assert adapter.inserted[0]["layers"][0][6]["history_png"].endswith(newest + ".png") and not adapter.listings
    with pytest.raises(hl.HostError) as bad:
        run(HistoryAdapter(), "history", {"entry": "../../etc/passwd"}, FakeImage(120, 90))
    assert "is not a history id" in bad.value.message and "Traceback" not in bad.value.message


def test_an_empty_history_and_a_cancelled_chooser(real_engine):
    with pytest.raises(flow.Refusal) as empty:
        run(HistoryAdapter(interactive=True), "history", {}, FakeImage(10, 10))
    assert empty.value.code == "empty_history"
    saved(EDIT)
    adapter = HistoryAdapter(pick=None, interactive=True)
    with pytest.raises(flow.Stop):
        run(adapter, "history", {}, FakeImage(120, 90))
    assert not adapter.inserted


def saved_with_mask(meta, mask):
    """An entry as an edit leaves it now: the image, its layer mask beside it, the sidecar naming the mask."""
    from gimp_openai.history import save_mask

    stem = saved(meta)
    folder = os.environ["GIMP_OPENAI_HISTORY_DIR"]
    image = os.path.join(folder, stem + ".png")
    mask_file = save_mask(__import__("pathlib").Path(image), encode_png(mask))
    sidecar = os.path.join(folder, stem + ".json")
    with open(sidecar) as handle:
        data = json.load(handle)
    data["mask"] = mask_file.name
    with open(sidecar, "w") as handle:
        json.dump(data, handle)
    return stem


class MaskReadingAdapter(HistoryAdapter):
    """Reads each layer's mask PNG while the workflow's files are still there (the run removes them after)."""

    def __init__(self, **kw):
        HistoryAdapter.__init__(self, **kw)
        self.masks = []

    def insert(self, image, anchor, layers, group_name):
        self.masks.extend(hl.read_png(s.mask_png) if s.mask_png else None for s in layers)
        return HistoryAdapter.insert(self, image, anchor, layers, group_name)


def test_history_puts_a_result_back_with_the_mask_the_run_gave_it(real_engine):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:25, 8:32] = 255
    mask[10:20, 15:25] = 128  # soft values survive as they are
    entry = saved_with_mask(EDIT, mask)
    adapter = MaskReadingAdapter()
    image = FakeImage(120, 90)
    assert run(adapter, "history", {"entry": entry}, image) is None
    (insert,) = adapter.inserted
    name, x, y, w, h, kind, parasite = insert["layers"][0]
    assert (x, y, w, h, kind, image.undo_groups) == (30, 20, 40, 30, "engine", 1)
    (read,) = adapter.masks
    assert read[:3] == (40, 30, 1) and read[3] == mask.tobytes()
    assert adapter.statuses[-1].endswith("from history (no new request)")
    # where it does not fit, the new image gets the mask too
    adapter = MaskReadingAdapter()
    run(adapter, "history", {"entry": entry}, FakeImage(50, 40))
    assert adapter.inserted[0]["image"] == "new" and adapter.inserted[0]["layers"][0][5] == "engine"
    assert adapter.masks[0][3] == mask.tobytes()


def test_an_entry_kept_without_a_mask_comes_back_without_one_and_says_so(real_engine):
    entry = saved(EDIT)
    adapter = HistoryAdapter()
    run(adapter, "history", {"entry": entry}, FakeImage(120, 90))
    assert adapter.inserted[0]["layers"][0][5] is None
    assert adapter.statuses[-1].endswith("from history (no new request); history kept no mask for it: the whole "
                                         "region comes back, without the selection's mask")
