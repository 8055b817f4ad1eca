"""hostlib under Python 3, against a tiny fake engine (a script standing in for the engine's interpreter)."""

import io
import json
import os
import stat
import sys
import textwrap

import pytest
from PIL import Image

from tests.conftest import FAKE_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "plugin", "hostlib"))
import gimp_openai_host as host  # noqa: E402

FAKE_ENGINE = textwrap.dedent('''\
    #!{python}
    """Stands in for `python -m gimp_openai`: records argv/env/stdin, then plays a script of lines."""
    import json, os, sys, time
    args = sys.argv[1:]
    assert args[:2] == ["-m", "gimp_openai"], args
    log = os.environ["FAKE_ENGINE_LOG"]
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")

    def record(argv, stdin):
        with open(log, "a") as f:
            f.write(json.dumps({{"argv": argv, "key": os.environ.get("OPENAI_API_KEY"), "stdin": stdin}}) + "\\n")

    def answer(cmd, path):
        if mode == "crash":
            sys.stderr.write("Traceback (most recent call last):\\nboom: engine exploded\\n")
            sys.exit(1)
        if cmd == "plan":
            plan = json.load(open(path))
            if mode == "plan_error":
                error = {{"code": "model_not_found", "message": "The model x was shut down.",
                         "hint": "Use gpt-image-2."}}
                print(json.dumps({{"type": "plan", "ok": False, "error": error}}))
            else:
                items = [dict(id=i["id"], place=i["selection_bounds"], request=i["selection_bounds"],
                              target=[1024, 1024]) for i in plan["items"]]
                print(json.dumps({{"type": "plan", "ok": True, "model": "gpt-image-2", "items": items}}))
        elif cmd == "job":
            job = json.load(open(path))
            print("not json noise")
            for item in job["items"]:
                line = {{"type": "progress", "item": item["id"], "phase": "waiting", "fraction": 0.5,
                        "message": "Waiting\\u001b[31m for model"}}
                print(json.dumps(line))
                sys.stdout.flush()
                if mode == "slow":
                    time.sleep(30)
            results = [{{"id": i["id"], "ok": True, "outputs": []}} for i in job["items"]]
            print(json.dumps({{"type": "result", "ok": True, "items": results, "error": None}}))
        sys.stdout.flush()

    cmd = args[2]
    if cmd == "session":
        for request in sys.stdin:
            request = json.loads(request)
            record(sys.argv[:3] + [request["cmd"], request["path"]], None)
            answer(request["cmd"], request["path"])
        sys.exit(0)
    stdin = sys.stdin.read()
    record(sys.argv, stdin)
    if cmd == "key":
        sys.exit(0 if stdin else 3)
''')


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    script = tmp_path / "fake-python"
    script.write_text(FAKE_ENGINE.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "engine.log"
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", str(script))
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls


def test_layer_name_truncates_strips_control_chars_and_never_shows_a_key():
    name = host.layer_name("a red\nkite\x1b[0m over " + FAKE_KEY + " the hills at dusk, very long", 2, 3)
    assert name.startswith("OpenAI: a red kite")
    assert name.endswith(" (2/3)")
    assert FAKE_KEY not in name and "\n" not in name and "\x1b" not in name
    assert len(name) <= len("OpenAI: ") + 40 + len(" (2/3)")
    assert host.layer_name("", 1, 1) == "OpenAI: (no prompt) (1/1)"
    assert "variations endpoint" in host.layer_name("p", 1, 2, path="variation-endpoint")
    assert "variation by edit" in host.layer_name("p", 1, 2, path="variation-edit")


def test_describe_error_has_hint_and_saved_files_and_no_key():
    text = host.describe_error({"message": "Quota exceeded for " + FAKE_KEY, "hint": "Add credit.",
                                "saved": ["/h/1.png", "/h/2.png"]})
    assert "Quota exceeded" in text and "What to do: Add credit." in text
    assert "/h/1.png" in text and "/h/2.png" in text and "paid for" in text
    assert FAKE_KEY not in text


def test_png_writer_round_trips_through_pillow():
    w, h = 5, 3
    rgba = bytes(range(w * h * 4))
    im = Image.open(io.BytesIO(host.png_bytes(w, h, rgba, 4)))
    assert im.mode == "RGBA" and im.size == (w, h) and im.tobytes() == rgba
    gray = bytes(range(w * h))
    im = Image.open(io.BytesIO(host.png_bytes(w, h, gray, 1)))
    assert im.mode == "L" and im.tobytes() == gray


def test_to_rgba_from_every_layer_type():
    assert bytes(host.to_rgba(b"\x01\x02\x03\x04\x05\x06", 3)) == b"\x01\x02\x03\xff\x04\x05\x06\xff"
    assert bytes(host.to_rgba(b"\x07\x80", 2)) == b"\x07\x07\x07\x80"
    assert bytes(host.to_rgba(b"\x09", 1)) == b"\x09\x09\x09\xff"
    assert bytes(host.channel_of(b"\x01\x02\x03\x04\x05\x06", 3)) == b"\x01\x04"


def test_manifest_loads_and_secret_params_are_not_pdb_arguments():
    manifest = host.load_manifest()
    names = [p["name"] for p in manifest["procedures"]]
    assert names == ["python-fu-openai-edit-selection", "python-fu-openai-variations",
                     "python-fu-openai-generate", "python-fu-openai-expand-canvas", "python-fu-openai-batch",
                     "python-fu-openai-pick-result", "python-fu-openai-next-result", "python-fu-openai-history",
                     "python-fu-openai-settings"]
    settings = host.procedure(manifest, "python-fu-openai-settings")
    assert "api_key" not in [p["name"] for p in host.public_params(settings)]
    edit = host.defaults(host.procedure(manifest, "python-fu-openai-edit-selection"))
    assert edit["model"] == "" and edit["add_mask"] is True and edit["align"] and edit["tone_match"]
    assert edit["blend"] == "feather"


def test_engine_python_from_record_or_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("GIMP_OPENAI_PYTHON", raising=False)
    monkeypatch.setattr(host, "_HERE", str(tmp_path / "nowhere"))
    with pytest.raises(host.HostError) as info:
        host.find_engine_python([str(tmp_path)])
    assert "scripts/install" in info.value.hint
    (tmp_path / host.ENGINE_RECORD).write_text(json.dumps({"python": sys.executable}))
    assert host.find_engine_python([str(tmp_path)]) == sys.executable
    (tmp_path / host.ENGINE_RECORD).write_text(json.dumps({"python": "/gone/python3"}))
    with pytest.raises(host.HostError) as info:
        host.find_engine_python([str(tmp_path)])
    assert "/gone/python3" in info.value.message


def test_job_progress_and_result_with_key_only_in_environment(fake_engine, tmp_path):
    work = host.make_workdir()
    try:
        seen = []
        result = host.run_job({"operation": "edit", "items": [{"id": "a"}, {"id": "b"}]}, work,
                              api_key=FAKE_KEY, on_progress=lambda f, m: seen.append((f, m)))
        assert result["ok"] and [i["id"] for i in result["items"]] == ["a", "b"]
        assert seen[0][0] == pytest.approx(0.25) and seen[1][0] == pytest.approx(0.5)
        assert "\x1b" not in seen[0][1] and seen[0][1].startswith("Waiting")
        call = fake_engine()[0]
        assert call["key"] == FAKE_KEY
        assert FAKE_KEY not in json.dumps(call["argv"])
        assert call["argv"][3] == "job" and os.path.dirname(call["argv"][4]) == work
        assert FAKE_KEY not in open(os.path.join(work, "job.json")).read()
        assert oct(os.stat(work).st_mode & 0o777) == "0o700"
    finally:
        host.cleanup(work)
    assert not os.path.exists(work)


def test_plan_error_and_crash_become_plain_host_errors(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "plan_error")
    with pytest.raises(host.HostError) as info:
        host.plan({"operation": "edit", "items": []}, str(tmp_path))
    assert info.value.code == "model_not_found" and info.value.hint == "Use gpt-image-2."
    monkeypatch.setenv("FAKE_ENGINE_MODE", "crash")
    with pytest.raises(host.HostError) as info:
        host.run_job({"items": []}, str(tmp_path), api_key=FAKE_KEY)
    assert "engine exploded" in info.value.message and "doctor" in info.value.hint


def test_cancel_from_progress_callback_stops_the_engine(fake_engine, tmp_path, monkeypatch):
    import time
    monkeypatch.setenv("FAKE_ENGINE_MODE", "slow")

    class Cancelled(Exception):
        pass

    def cancel(_fraction, _message):
        raise Cancelled()
    start = time.time()
    with pytest.raises(Cancelled):
        host.run_job({"items": [{"id": "a"}]}, str(tmp_path), on_progress=cancel)
    assert time.time() - start < 10


def test_store_key_sends_it_on_stdin_only(fake_engine):
    host.store_key(FAKE_KEY)
    call = fake_engine()[0]
    assert call["stdin"] == FAKE_KEY and call["key"] is None
    assert call["argv"][3:] == ["--json", "key", "set"]


def test_batch_summary_names_successes_and_failures():
    result = {"ok": False, "items": [
        {"id": "i1", "ok": True, "outputs": [{}, {}]},
        {"id": "i2", "ok": False, "error": {"message": "Server error 500", "hint": "Try again later."}}]}
    text = host.summary(result, {"i1": "cat.xcf", "i2": "dog.png"})
    assert "1 of 2 images done" in text
    assert "cat.xcf: 2 layer(s) added" in text
    assert "dog.png: Server error 500" in text and "Try again later." in text


def test_save_settings_runs_the_engines_config_set(monkeypatch):
    """The real engine: `config set KEY=VALUE ...` in argv (no key), typed in the file; a bad value is a
    HostError with the engine's one line, and the key is refused before any process starts."""
    from gimp_openai.settings import load_settings

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    assert host.config_args({"default_model": "gpt-image-2", "history_dir": "/t/\u00e9t\u00e9 x",
                             "extra_image_models": ["a", "b"]}) == [
        "config", "set", "default_model=gpt-image-2", "extra_image_models=a,b", "history_dir=/t/\u00e9t\u00e9 x"]
    host.save_settings({"default_model": "gpt-image-2", "concurrency": 3, "base_url": "http://127.0.0.1:9/v1"},
                       python=sys.executable)
    saved = load_settings(apply_env=False)
    assert (saved.default_model, saved.concurrency, saved.base_url) == ("gpt-image-2", 3, "http://127.0.0.1:9/v1")
    with pytest.raises(host.HostError) as err:
        host.save_settings({"base_url": "ftp://example.com"}, python=sys.executable)
    assert "not an http(s) URL" in err.value.message and "error:" not in err.value.message
    with pytest.raises(host.HostError):
        host.save_settings({"api_key": FAKE_KEY}, python="/nonexistent/python")
    assert load_settings(apply_env=False).base_url == "http://127.0.0.1:9/v1"


def test_saved_settings_show_openai_as_an_empty_url(tmp_path, monkeypatch):
    """What the Settings dialog opens with comes from the real engine's config file."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "plugin"))
    subprocess.run([sys.executable, "-m", "gimp_openai", "config", "set", "default_model=gpt-image-2"], env=env,
                   check=True, capture_output=True)
    saved = host.saved_settings(python=sys.executable)
    assert saved["base_url"] == "" and saved["default_model"] == "gpt-image-2"
    subprocess.run([sys.executable, "-m", "gimp_openai", "config", "set", "base_url=http://127.0.0.1:9/v1"],
                   env=env, check=True, capture_output=True)
    assert host.saved_settings(python=sys.executable)["base_url"] == "http://127.0.0.1:9/v1"


def test_the_engine_started_with_the_plug_in_serves_the_run(fake_engine, tmp_path, monkeypatch):
    """prestart_engine starts the session while GIMP loads; the run's first session takes that process."""
    monkeypatch.setattr(host, "_PRESTARTED", [])
    host.prestart_engine()
    ((_identity, started, _errfile),) = host._PRESTARTED
    with host.EngineSession() as session:
        answer = host.plan({"operation": "edit", "model": "gpt-image-2", "items": [
            {"id": "a", "layer": {"x": 0, "y": 0, "width": 10, "height": 10},
             "selection_bounds": {"x": 1, "y": 1, "width": 2, "height": 2}}]}, str(tmp_path), session=session)
        assert session.proc is started and host._PRESTARTED == []
    assert answer["items"][0]["id"] == "a" and started.poll() is not None  # ended with the session
    with host.EngineSession() as session:  # later sessions start their own
        host.plan({"operation": "edit", "model": "gpt-image-2", "items": []}, str(tmp_path), session=session)
        assert session.proc is not started


def test_an_engine_started_for_another_server_does_not_serve_the_run(fake_engine, tmp_path, monkeypatch):
    """A session prestarted (or opened by a dialog's estimate) under one OPENAI_BASE_URL answers for that server:
    a run under another one starts its own engine, and the stale one ends."""
    monkeypatch.setattr(host, "_PRESTARTED", [])
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    host.prestart_engine()
    ((_identity, stale, _errfile),) = host._PRESTARTED
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:10/v1")
    with host.EngineSession() as session:
        host.plan({"operation": "edit", "model": "gpt-image-2", "items": []}, str(tmp_path), session=session)
        assert session.proc is not stale and host._PRESTARTED == []
    assert stale.wait(timeout=10) is not None  # its input ended: it does not linger


def test_a_prestart_that_cannot_find_the_engine_says_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "_PRESTARTED", [])
    monkeypatch.delenv("GIMP_OPENAI_PYTHON", raising=False)
    monkeypatch.setattr(host, "_HERE", str(tmp_path))
    host.prestart_engine([str(tmp_path)])  # no record: the run that needs the engine says what to do
    assert host._PRESTARTED == []


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_read_png_gives_back_the_engine_s_pixels_and_refuses_other_pngs(tmp_path, channels, mode):
    import numpy as np
    from gimp_openai.imaging import encode_host_png

    rng = np.random.default_rng(channels)
    shape = (37, 53) if channels == 1 else (37, 53, channels)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    if channels != 2:  # the engine writes gray, RGB and RGBA; the host writer the same plus gray+alpha
        (tmp_path / "engine.png").write_bytes(encode_host_png(pixels))
        assert host.read_png(str(tmp_path / "engine.png")) == (53, 37, channels, pixels.tobytes())
    host.write_png(str(tmp_path / "host.png"), 53, 37, pixels.tobytes(), channels)
    assert host.read_png(str(tmp_path / "host.png")) == (53, 37, channels, pixels.tobytes())
    Image.fromarray(pixels, mode).save(tmp_path / "pillow.png", optimize=True)  # filtered rows: not ours
    assert host.read_png(str(tmp_path / "pillow.png")) is None
