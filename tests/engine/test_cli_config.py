"""`gimp-openai config show|set`: typed values, strict refusals (one error line, exit 1), the key never shown
and never settable there."""

import json
import os
import stat

import pytest
from gimp_openai import cli
from gimp_openai.settings import config_path, load_settings, store_api_key

from tests.conftest import FAKE_KEY


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_set_typed_values_and_show_them(capsys):
    code, out, err = run(capsys, "config", "set", "read_timeout=300", "connect_timeout=5.5", "concurrency=2",
                         "max_retries=0", "model_rules.my-model=gpt-image-1", "extra_image_models=a, b,,c",
                         "default_model=gpt-image-2", "base_url=http://127.0.0.1:9/v1/",
                         "variation_prompt=keep it = same")
    assert code == 0, err
    s = load_settings(apply_env=False)
    assert s.read_timeout == 300.0 and isinstance(s.read_timeout, float) and s.connect_timeout == 5.5
    assert s.concurrency == 2 and isinstance(s.concurrency, int) and s.max_retries == 0
    assert s.model_rules == {"my-model": "gpt-image-1"} and s.extra_image_models == ["a", "b", "c"]
    assert s.base_url == "http://127.0.0.1:9/v1" and s.default_model == "gpt-image-2"
    assert s.variation_prompt == "keep it = same"
    assert stat.S_IMODE(os.stat(config_path()).st_mode) == 0o600
    # a second rule merges; an empty family removes one
    assert run(capsys, "config", "set", "model_rules.other=dall-e-2")[0] == 0
    assert run(capsys, "config", "set", "model_rules.my-model=")[0] == 0
    assert load_settings(apply_env=False).model_rules == {"other": "dall-e-2"}
    code, out, err = run(capsys, "config", "show")
    assert code == 0 and "concurrency = 2" in out and "model_rules = other=dall-e-2" in out
    assert "api_key: not set" in out
    code, out, _ = run(capsys, "config", "show", "--json")
    shown = json.loads(out)
    assert shown["settings"]["read_timeout"] == 300.0 and shown["settings"]["extra_image_models"] == ["a", "b", "c"]
    assert shown["key"] == {"configured": False, "source": "none"} and "api_key" not in shown["settings"]


def test_key_value_as_two_words_is_accepted(capsys):
    """The GIMP 3 host passes `config set NAME VALUE`."""
    assert run(capsys, "config", "set", "default_model", "gpt-image-2")[0] == 0
    assert load_settings(apply_env=False).default_model == "gpt-image-2"


@pytest.mark.parametrize("pair,text", [
    ("nope=1", "There is no setting called 'nope'"),
    ("read_timeout=soon", "read_timeout soon is not allowed: how long to wait for the server's answer must be a "
                          "number from 1 to 3,600 s; use a value in that range."),
    ("read_timeout=0", "read_timeout 0 is not allowed"),
    ("read_timeout=nan", "read_timeout nan is not allowed"),
    ("read_timeout=inf", "read_timeout inf is not allowed"),
    ("concurrency=0", "concurrency 0 is not allowed: the number of requests sent at once must be a whole number "
                      "from 1 to 16"),
    ("concurrency=2.5", "concurrency 2.5 is not allowed"),
    ("max_retries=-1", "max_retries -1 is not allowed: how often a failed request is retried must be a whole "
                       "number from 0 to 10"),
    ("base_url=http://[::1/v1", "is not a valid URL"),
    ("model_rules.x=zzz", "'zzz' is not a model family"),
    ("model_rules=x", "use model_rules.<id>=<family>"),
    ("model_rules.=gpt-image-1", "needs a model id"),
    ("base_url=ftp://example.com", "is not an http(s) URL"),
    ("base_url=https://u:p@example.com/v1", "must not contain a user name or password"),
    ("default_model", "is not KEY=VALUE"),
    ("organization=a\nb", "one line of printable text"),
])
def test_bad_keys_and_values_are_one_clear_line_and_exit_1(capsys, pair, text):
    config_before = config_path().exists()
    code, out, err = run(capsys, "config", "set", "concurrency=3", pair)
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gimp-openai: error: ") and text in lines[0], err
    assert "Traceback" not in err and out == ""
    assert config_path().exists() == config_before  # nothing half-applied (concurrency=3 came first)


def test_api_key_is_refused_and_never_shown(capsys, monkeypatch):
    code, out, err = run(capsys, "config", "set", "api_key=" + FAKE_KEY)
    assert code == 1 and "gimp-openai key set" in err and FAKE_KEY not in out + err
    assert not config_path().exists()
    store_api_key(FAKE_KEY)  # null keyring in tests -> the 0600 config file
    for argv in (("config", "show"), ("config", "show", "--json")):
        code, out, err = run(capsys, *argv)
        assert code == 0 and FAKE_KEY not in out + err
    shown = json.loads(out)
    assert shown["key"] == {"configured": True, "source": "config file"}
    # setting other values keeps the stored key
    assert run(capsys, "config", "set", "concurrency=5")[0] == 0
    assert json.loads(config_path().read_text())["api_key"] == FAKE_KEY
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    code, out, err = run(capsys, "config", "show")
    assert "api_key: configured (environment (OPENAI_API_KEY)" in out and FAKE_KEY not in out + err


def test_show_says_which_values_come_from_the_environment(capsys, monkeypatch):
    assert run(capsys, "config", "set", "base_url=http://127.0.0.1:9/v1")[0] == 0
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:7/v1")
    code, out, _ = run(capsys, "config", "show")
    assert "base_url = http://127.0.0.1:7/v1   [environment (OPENAI_BASE_URL)]" in out
    # `set` writes the file's value, never the environment's
    assert run(capsys, "config", "set", "concurrency=2")[0] == 0
    assert json.loads(config_path().read_text())["base_url"] == "http://127.0.0.1:9/v1"


def test_usage_errors(capsys):
    assert run(capsys, "config", "set")[0] == cli.EXIT_USAGE
    assert run(capsys, "config", "show", "x=1")[0] == cli.EXIT_USAGE
