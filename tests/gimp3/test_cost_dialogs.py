"""What a run costs, in the real GUI GIMP 3.0 and 3.2 under Xvfb with the local server: the Edit Selection
dialog shows an estimate that follows the number of results, the run's message and each result layer's
parasite say what it cost. Screenshots (kept in /tmp/gimp-openai-dialogs) are for people to look at."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAKE_KEY
from tests.gimp3.test_dialogs import DIALOG, IMAGE, _json, _names, _timings
from tests.support.gimp3_gui import GuiGimp, require_gui

pytestmark = [pytest.mark.gimp3]


def _labels(path) -> list[str]:
    return [e["text"] for e in _timings(path) if e["what"] == "estimate-label"]


def _wait_label(ui, path, predicate, timeout=60.0) -> str:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [t for t in _labels(path) if predicate(t)]
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no estimate label as expected after {timeout} s: {_labels(path)}")


def test_the_dialog_estimates_and_the_result_says_what_it_cost(gimp, local_server):
    require_gui(gimp)
    timings = gimp.work / f"cost-timings-{gimp.version}.jsonl"
    timings.unlink(missing_ok=True)
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_CONFIG_DIR": f"/gimp-openai-work/config-cost-{gimp.version}",
           "GIMP_OPENAI_HOST_TIMINGS": gimp.inside(timings)}
    code = IMAGE + r'''
img, lay = make_image()
mark("dialog")
res = call(img, lay, Gimp.RunMode.INTERACTIVE, n=1, model="gpt-image-2")
mark("interactive", res)
'''
    with GuiGimp(gimp, code, env=env, timeout=240, name="cost") as ui:
        ui.wait_mark("dialog", timeout=90)
        wid = ui.wait_window(DIALOG, timeout=60)
        first = _wait_label(ui, timings, lambda t: t.startswith("Estimated cost: about $"))
        ui.focus(wid)
        ui.key("ctrl+a")
        ui.type("a red kite")
        ui.screenshot("1-estimate-one", window=wid)
        ui.key("alt+n")  # the number of results
        ui.key("ctrl+a")
        ui.type("3")
        ui.key("Tab")
        three = _wait_label(ui, timings, lambda t: "3 images" in t)
        ui.screenshot("2-estimate-three", window=wid)
        ui.focus(wid)
        ui.key("alt+o")
        ui.wait_window_gone(wid)
        res = _json(ui.wait_mark("interactive", timeout=120))
        run = ui.wait(60)
    everything = run.stdout + run.stderr
    assert FAKE_KEY not in everything and "Traceback" not in everything, everything[-4000:]
    assert "1 image of " in first and "gpt-image-2" in first, first
    assert "\nUp to $" in first and "automatic quality" in first, first  # auto: what high would cost
    price = [float(t.split("about $", 1)[1].split()[0]) for t in (first, three)]
    assert 2.5 * price[0] < price[1] <= 3 * price[0], (first, three)  # three images; the upload counted once
    assert res["status"] == "success", res
    assert _names(res) == ["OpenAI: a red kite (3 results)", "photo"] or len(res["layers"]) >= 2, res
    # the run worked: its cost goes to the status text, not a message box that interrupts the artist
    said = [(e["what"], e["text"]) for e in _timings(timings) if e["what"] in ("message", "status")]
    assert len(said) == 1 and said[0][0] == "status", said
    assert said[0][1].startswith("OpenAI cost: $") and said[0][1].endswith("(3 images, gpt-image-2, auto quality)")
    progress = json.dumps(_timings(timings))
    assert FAKE_KEY not in progress


def test_parasites_carry_the_cost_headless(gimp, local_server):
    """A script's run (no dialog) within the limit: each result layer's parasite keeps its share of the cost
    and the run's message says the whole; above the limit it is refused unpaid."""
    env = {"OPENAI_BASE_URL": local_server.url, "OPENAI_API_KEY": FAKE_KEY,
           "GIMP_OPENAI_CONFIG_DIR": f"/gimp-openai-work/config-cost-headless-{gimp.version}"}
    code = "import json\n" + IMAGE.replace("    Gimp.Display.new(img)\n", "") + r'''
def parasites(items):
    """Every result layer's parasite, inside groups too."""
    found = []
    for item in items:
        if item.is_group():
            found += parasites(item.get_children())
        elif item.get_parasite("gimp-openai") is not None:
            found.append(json.loads(bytes(item.get_parasite("gimp-openai").get_data()).decode("utf-8")))
    return found

img, lay = make_image()
res = call(img, lay, Gimp.RunMode.NONINTERACTIVE, prompt="a red kite", n=2, quality="low", model="gpt-image-2")
res["error"] = str(res["error"])
res["parasites"] = parasites(img.get_layers())
print("RESULT " + json.dumps(res), flush=True)
img2, lay2 = make_image()
over = call(img2, lay2, Gimp.RunMode.NONINTERACTIVE, prompt="a red kite", n=10, quality="high", model="gpt-image-2")
over["error"] = str(over["error"])
print("OVER " + json.dumps(over), flush=True)
'''
    run = gimp.python(code, env=env, timeout=240)
    out = run.stdout
    assert FAKE_KEY not in out + run.stderr
    res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    over = json.loads(out.split("OVER ", 1)[1].splitlines()[0])
    assert res["status"] == "success", res
    shares = [p["cost"] for p in res["parasites"]]
    assert len(shares) == 2 and all(s["images_in_request"] == 2 and s["usd"] > 0 for s in shares), res
    assert sum(s["usd"] for s in shares) == pytest.approx(shares[0]["request_usd"])
    assert shares[0]["text"].endswith("(2 images, gpt-image-2, low)"), shares
    assert "OpenAI: Not sent" in run.stderr + out or "Not sent" in over["error"]
    assert over["status"] == "execution-error" and "Not sent" in str(over["error"]), over
    assert "above your cost limit of $1.00" in str(over["error"]), over
