"""The GIMP 2.10 host end to end: gimpfu stubs -> hostlib -> the REAL engine subprocess
(`python -m gimp_openai plan|job`) -> the REAL local server on 127.0.0.1."""

import json
import sys

import numpy as np
import pytest

from tests.conftest import FAKE_KEY
from tests.gimp2.conftest import make_image
from tests.gimp2.test_plugin_fake_engine import batch_args, edit_args, plugin_steps

pytestmark = pytest.mark.slow


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", sys.executable)


def _point(monkeypatch, server):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def _status(g2):
    """The last status text the run set (the progress bar's text)."""
    return [text for kind, text in g2.gimp.state.progress if kind == "text"][-1]


def test_edit_selection_against_the_local_server(g2, engine, local_server, monkeypatch):
    _point(monkeypatch, local_server)
    image, layer = make_image(g2, 160, 120, layer_box=(-16, 8, 192, 104))
    before = image.composite()
    g2.pdb.gimp_image_select_ellipse(image, 2, 40, 30, 48, 40)
    sel = image.selection.pixels[..., 0].copy()
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("a red kite", n=2))
    assert g2.gimp.state.messages == []  # a run that worked: its cost in the status text, no message box
    msg = _status(g2)
    assert msg.startswith("OpenAI cost: $0.") and msg.endswith("(2 images, gpt-image-2.6-sunburst, auto quality)")
    group = image.layers[0]
    shares = [json.loads(la.parasite_find("gimp-openai").data)["cost"] for la in group.layers]
    assert [s["images_in_request"] for s in shares] == [2, 2]
    assert sum(s["usd"] for s in shares) == pytest.approx(shares[0]["request_usd"])
    paid = shares[0]["request_usd"]
    assert f"${paid:.4f}" in msg or f"${paid:.3f}" in msg
    assert group.is_group
    assert [layer.name for layer in group.layers] == ["OpenAI: a red kite (1/2)", "OpenAI: a red kite (2/2)"]
    for res in group.layers:
        x, y = res.offsets
        assert res.mask is not None
        _, x1, y1, x2, y2 = g2.pdb.gimp_selection_bounds(image)
        assert x <= x1 and y <= y1 and x + res.width >= x2 and y + res.height >= y2
        assert res.mask.pixels[..., 0].max() > 0
        outside = sel[y:y + res.height, x:x + res.width] == 0
        assert (res.mask.pixels[..., 0][outside] == 0).all()
        p = json.loads(res.parasite_find("gimp-openai").data)
        assert p["prompt"] == "a red kite" and p["model"] and FAKE_KEY not in json.dumps(p)
    after = image.composite()
    np.testing.assert_array_equal(after[sel == 0], before[sel == 0])
    assert not np.array_equal(after[sel == 255], before[sel == 255])
    assert len(plugin_steps(image)) == 1 and image.undo_depth == 0
    assert all(FAKE_KEY not in str(m) for m in g2.gimp.state.messages)


def test_batch_one_image_refused_by_the_server(g2, engine, start_local_server, monkeypatch):
    server = start_local_server("--fault", "moderation_blocked;times=1")
    _point(monkeypatch, server)
    images = [make_image(g2, 64, 64, name=f"{n}.png", seed=i)[0] for i, n in enumerate("abc")]
    for img in images:
        g2.pdb.gimp_image_select_rectangle(img, 2, 8, 8, 24, 24)
    g2.pdb.python_fu_openai_batch(*batch_args(concurrency=1))
    text = g2.gimp.state.messages[-1]
    assert "2 of 3 images done" in text, text
    assert sorted(len(img.layers) for img in images) == [1, 2, 2]
    assert FAKE_KEY not in text


@pytest.mark.parametrize("model,tag", [("dall-e-2", "[variations endpoint]"), ("", "[variation by edit]")])
def test_variations_both_paths(g2, engine, local_server, monkeypatch, model, tag):
    _point(monkeypatch, local_server)
    image, layer = make_image(g2, 96, 96)
    g2.pdb.gimp_image_select_rectangle(image, 2, 16, 16, 48, 48)
    g2.pdb.python_fu_openai_variations(image, layer, model, 1, "vary it", "auto", "auto", False, True)
    # a run that worked: its cost in the status text (dall-e-2 is billed per image, its answer has no usage)
    assert g2.gimp.state.messages == []
    message = _status(g2)
    if model:
        assert message == "OpenAI cost: unknown (the server did not say what it used)", message
    else:
        assert message.startswith("OpenAI cost: $") and message.endswith("(1 image, gpt-image-2.6-sunburst, auto "
                                                                         "quality)"), message
    top = image.layers[0]
    assert top.name == f"OpenAI: variation {tag} (1/1)"
    assert len(plugin_steps(image)) == 1


def test_generate_against_the_local_server(g2, engine, local_server, monkeypatch):
    _point(monkeypatch, local_server)
    image, layer = make_image(g2, 64, 64)
    g2.pdb.python_fu_openai_generate(image, layer, "a lighthouse", "", 1, "1024x1024", "low", "auto", 0, "new image")
    assert g2.gimp.state.messages == []
    message = _status(g2)
    assert message.startswith("OpenAI cost: $0.0") and message.endswith("(1 image, gpt-image-2.6-sunburst, low)")
    new = g2.gimp.image_list()[-1]
    assert new is not image and new.layers[0].name == "OpenAI: a lighthouse (1/1)"


# A model that is gone. The server runs "today's line-up" (gpt-image-1 shut down 2026-10-23).
TODAYS_LINEUP = ("--today", "2026-11-25", "--shutdown", "gpt-image-1=2026-10-23",
                 "--shutdown", "gpt-image-1-mini=2026-12-01", "--shutdown", "gpt-image-1.5=2026-12-01",
                 "--shutdown", "chatgpt-image-latest=2026-12-01")
#: The newest live model of the line-up (test servers add the retired ones for their rules).
NEWEST = "gpt-image-2.6-sunburst"
GONE_TEXT = f"The model `gpt-image-1` was shut down on 2026-10-23. Use `{NEWEST}` instead."


def _image_requests(server):
    return [(r.get("endpoint"), r.get("model"), r.get("status")) for r in server.stats()["requests"]
            if r.get("endpoint") in ("edits", "generations", "variations")]


def _run_dead_model_edit(g2, server, monkeypatch, ask):
    _point(monkeypatch, server)
    image, layer = make_image(g2, 96, 80)
    before_layer = layer.pixels.copy()
    g2.pdb.gimp_image_select_rectangle(image, 2, 24, 20, 40, 30)
    asked = []
    g2.plugin.ASK = lambda q: asked.append(q) or ask
    g2.gimpfu.DIALOG = lambda name, values: values[:2] + edit_args("a red kite", model="gpt-image-1")
    return image, layer, before_layer, asked


def test_dead_model_interactive_switch_is_remembered_and_runs_once(g2, engine, start_local_server, monkeypatch):
    from gimp_openai.settings import load_settings

    server = start_local_server(*TODAYS_LINEUP)
    image, layer, before_layer, asked = _run_dead_model_edit(g2, server, monkeypatch, True)
    g2.pdb.python_fu_openai_edit_selection(image, layer, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert len(asked) == 1 and GONE_TEXT in asked[0] and f"Switch to {NEWEST}" in asked[0]
    assert g2.gimp.state.messages == [], g2.gimp.state.messages
    # the dead model was asked once (no retry), then the replacement once
    assert _image_requests(server) == [("edits", "gpt-image-1", 404), ("edits", NEWEST, 200)]
    assert load_settings(apply_env=False).default_model == NEWEST
    assert [layer.name for layer in image.layers] == ["OpenAI: a red kite (1/1)", "Background"]
    top = image.layers[0]
    assert json.loads(top.parasite_find("gimp-openai").data)["model"] == NEWEST
    np.testing.assert_array_equal(layer.pixels, before_layer)
    assert len(plugin_steps(image)) == 1 and image.undo_depth == 0


@pytest.mark.parametrize("interactive", [False, True], ids=["non-interactive", "declined"])
def test_dead_model_fails_with_the_engines_text_and_inserts_nothing(g2, engine, start_local_server, monkeypatch,
                                                                    interactive):
    from gimp_openai.settings import load_settings

    server = start_local_server(*TODAYS_LINEUP)
    image, layer, before_layer, asked = _run_dead_model_edit(g2, server, monkeypatch, False)
    if interactive:
        g2.pdb.python_fu_openai_edit_selection(image, layer, run_mode=g2.gimpfu.RUN_INTERACTIVE)
        assert len(asked) == 1
    else:
        with pytest.raises(RuntimeError) as err:
            g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("a red kite", model="gpt-image-1"))
        assert GONE_TEXT in str(err.value) and asked == []
    (message,) = g2.gimp.state.messages
    assert GONE_TEXT in message and FAKE_KEY not in message
    assert _image_requests(server) == [("edits", "gpt-image-1", 404)]
    assert load_settings(apply_env=False).default_model == ""
    assert image.layers == [layer]
    np.testing.assert_array_equal(layer.pixels, before_layer)
    assert plugin_steps(image) == [] and image.undo_depth == 0


def test_history_unwritable_the_layer_is_inserted_and_the_message_says_where_the_paid_image_went(
        g2, engine, local_server, monkeypatch, tmp_path):
    _point(monkeypatch, local_server)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the history folder should be")
    monkeypatch.setenv("GIMP_OPENAI_HISTORY_DIR", str(blocker / "history"))  # cannot be created, even as root
    rescue = tmp_path / "rescue"
    monkeypatch.setenv("GIMP_OPENAI_RESCUE_DIR", str(rescue))
    image, layer = make_image(g2, 96, 80)
    before = image.composite()
    g2.pdb.gimp_image_select_ellipse(image, 2, 20, 20, 40, 30)
    sel = image.selection.pixels[..., 0].copy()
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("a red kite", n=1))
    assert [res.name for res in image.layers[:1]] == ["OpenAI: a red kite (1/1)"]
    np.testing.assert_array_equal(image.composite()[sel == 0], before[sel == 0])
    rescued = sorted(p for p in rescue.rglob("*.png") if not p.name.endswith(".mask.png"))
    assert len(rescued) == 1, list(rescue.rglob("*"))
    messages = [str(m) for m in g2.gimp.state.messages]
    assert len(messages) == 1 and str(rescue) in messages[0] and "history" in messages[0].lower(), messages
    assert len(plugin_steps(image)) == 1 and image.undo_depth == 0


def test_dead_model_in_a_batch_offers_the_switch_once_and_runs_every_image(g2, engine, start_local_server,
                                                                           monkeypatch):
    from gimp_openai.settings import load_settings

    server = start_local_server(*TODAYS_LINEUP)
    _point(monkeypatch, server)
    images = [make_image(g2, 64, 64, name=f"{n}.png", seed=i)[0] for i, n in enumerate("ab")]
    for img in images:
        g2.pdb.gimp_image_select_rectangle(img, 2, 10, 10, 30, 30)
    asked = []
    g2.plugin.ASK = lambda q: asked.append(q) or True
    g2.gimpfu.DIALOG = lambda name, values: batch_args(model="gpt-image-1")
    g2.pdb.python_fu_openai_batch(run_mode=g2.gimpfu.RUN_INTERACTIVE)
    # the batch's price once (the repeat with the replacement costs no more), then the switch
    assert len(asked) == 2 and asked[0].startswith("Send this batch (2 images)") and GONE_TEXT in asked[1], asked
    requests = sorted(_image_requests(server))
    assert requests == [("edits", "gpt-image-1", 404)] * 2 + [("edits", NEWEST, 200)] * 2, requests
    assert load_settings(apply_env=False).default_model == NEWEST
    for img in images:
        assert img.layers[0].name == "OpenAI: snow (1/1)"
        assert json.loads(img.layers[0].parasite_find("gimp-openai").data)["model"] == NEWEST
    assert "2 of 2 images done" in g2.gimp.state.messages[-1]


def test_settings_saves_through_the_engine_and_tests_the_real_connection(g2, engine, local_server, monkeypatch):
    from gimp_openai.settings import load_settings

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    g2.pdb.python_fu_openai_settings(local_server.url, "gpt-image-2", "", False, True, 1.0)
    saved = load_settings(apply_env=False)
    assert saved.base_url == local_server.url and saved.default_model == "gpt-image-2"
    (message,) = [str(m) for m in g2.gimp.state.messages]
    assert f"Settings saved: server {local_server.url}; model gpt-image-2." in message, message
    assert f"Connected to {local_server.url}. Image models offered:" in message, message
    assert "gpt-image-2" in message, message
    assert "dall-e-2" in message and "gpt-4o" not in message  # image models only
    assert FAKE_KEY not in message
    assert any(r["path"].endswith("/models") for r in local_server.stats()["requests"])


def test_settings_connection_failure_is_a_plain_message(g2, engine, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    g2.pdb.python_fu_openai_settings("http://127.0.0.1:9/v1", "", "", False, True, 1.0)  # nothing listens on port 9
    (message,) = [str(m) for m in g2.gimp.state.messages]
    assert "Settings saved: server http://127.0.0.1:9/v1." in message, message
    assert "Connected" not in message and "the connection was refused (is the server running?)" in message
    assert "Traceback" not in message and FAKE_KEY not in message
    assert "127.0.0.1:9" in message, message  # says which server could not be reached
