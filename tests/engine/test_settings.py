"""Settings file (0600, atomic), key resolution order, folders and environment overrides."""

from __future__ import annotations

import json
import logging
import os
import stat

import keyring
import pytest
from gimp_openai import settings as S
from gimp_openai.client import ClientConfig
from gimp_openai.errors import SettingsError
from keyring.backend import KeyringBackend

from tests.conftest import FAKE_KEY


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self):
        super().__init__()
        self.store: dict = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        self.store.pop((service, username), None)


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service, username):
        raise RuntimeError("no D-Bus session")

    def set_password(self, service, username, password):
        raise RuntimeError("locked")


@pytest.fixture
def use_keyring():
    previous = keyring.get_keyring()

    def install(backend):
        keyring.set_keyring(backend)
        return backend

    yield install
    keyring.set_keyring(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_defaults_without_a_file():
    s = S.load_settings()
    assert (s.base_url, s.read_timeout, s.connect_timeout, s.concurrency) == (S.DEFAULT_BASE_URL, 600.0, 10.0, 4)
    assert "subject" in s.variation_prompt and "composition" in s.variation_prompt and "style" in s.variation_prompt


def test_round_trip_file_is_0600():
    s = S.load_settings()
    s.default_model, s.model_rules, s.extra_image_models = "gpt-image-2", {"flux-x": "gpt-image-1"}, ["flux-x"]
    path = S.save_settings(s)
    assert path == S.config_dir() / "config.json" and mode(path) == 0o600
    again = S.load_settings()
    assert again == s
    assert not [p for p in path.parent.iterdir() if p.name != "config.json"]  # no temp files left


def test_loose_mode_is_repaired_with_a_warning(caplog):
    S.save_settings(S.Settings())
    os.chmod(S.config_path(), 0o644)
    with caplog.at_level(logging.WARNING):
        S.load_settings()
    assert mode(S.config_path()) == 0o600 and "0600" in caplog.text


def test_env_overrides_apply_but_are_not_saved(monkeypatch):
    S.update_settings(base_url="http://127.0.0.1:8000/v1", organization="org-saved")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://example.test/v1/")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_env")
    s = S.load_settings()
    assert (s.base_url, s.project, s.organization) == ("https://example.test/v1", "proj_env", "org-saved")
    s.concurrency = 2
    S.save_settings(s)
    raw = json.loads(S.config_path().read_text())
    assert raw["base_url"] == "http://127.0.0.1:8000/v1" and raw["project"] == "" and raw["concurrency"] == 2


@pytest.mark.parametrize("url", [f"https://user:{FAKE_KEY}@api.example/v1", f"https://api.example/v1?api_key={FAKE_KEY}",
                                 f"https://api.example/v1?x={FAKE_KEY}", "ftp://x/v1", "api.openai.com/v1"])
def test_no_key_or_nonsense_in_base_url(url):
    with pytest.raises(SettingsError) as info:
        S.check_base_url(url)
    assert FAKE_KEY not in str(info.value)
    with pytest.raises(SettingsError):
        ClientConfig(base_url=url)


def test_key_resolution_order(monkeypatch, use_keyring):
    assert S.resolve_api_key(S.Settings()) is None and S.key_source() == "none"
    S._write_config_file({"api_key": "sk-from-file-000000000"})
    assert S.resolve_api_key(S.Settings()) == "sk-from-file-000000000" and S.key_source() == "config file"
    use_keyring(MemoryKeyring()).set_password("gimp-openai", "api_key", "sk-from-keyring-00000")
    assert S.resolve_api_key(S.Settings()) == "sk-from-keyring-00000" and S.key_source() == "keyring"
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    assert S.resolve_api_key(S.Settings()) == FAKE_KEY and S.key_source().startswith("environment")


def test_broken_keyring_falls_through_quietly(use_keyring, caplog):
    use_keyring(BrokenKeyring())
    S._write_config_file({"api_key": FAKE_KEY})
    assert S.resolve_api_key() == FAKE_KEY
    where = S.store_api_key(FAKE_KEY)  # keyring refuses: the 0600 file takes it
    assert where == str(S.config_path()) and mode(where) == 0o600
    assert FAKE_KEY not in caplog.text


def test_store_in_keyring_when_available(use_keyring):
    S._write_config_file({"api_key": "sk-old-file-key-0000", "concurrency": 3})
    backend = use_keyring(MemoryKeyring())
    assert S.store_api_key(f"  {FAKE_KEY}\n") == "keyring"
    assert backend.store[("gimp-openai", "api_key")] == FAKE_KEY
    raw = json.loads(S.config_path().read_text())
    assert "api_key" not in raw and raw["concurrency"] == 3  # one copy only, other settings kept


def test_store_in_file_with_the_null_keyring():
    where = S.store_api_key(FAKE_KEY)
    assert where == str(S.config_path()) and mode(where) == 0o600
    assert S.resolve_api_key() == FAKE_KEY
    S.save_settings(S.load_settings())  # saving settings keeps the stored key
    assert S.resolve_api_key() == FAKE_KEY


@pytest.mark.parametrize("bad", ["", "   ", "sk-abc def", "sk-abc\x07"])
def test_store_refuses_non_keys(bad):
    with pytest.raises(SettingsError):
        S.store_api_key(bad)


def test_folders_follow_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("GIMP_OPENAI_CACHE_DIR", str(tmp_path / "c"))
    assert S.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("GIMP_OPENAI_HISTORY_DIR", str(tmp_path / "env-h"))
    assert S.history_dir(S.Settings(history_dir=str(tmp_path / "h"))) == tmp_path / "env-h"  # env wins
    monkeypatch.setenv("GIMP_OPENAI_HISTORY_DIR", "")  # empty = not set
    assert S.history_dir(S.Settings(history_dir=str(tmp_path / "h"))) == tmp_path / "h"
    assert S.history_dir().name == "history" and "gimp-openai" in str(S.history_dir())
    saved = os.environ["GIMP_OPENAI_CONFIG_DIR"]
    monkeypatch.setenv("GIMP_OPENAI_CONFIG_DIR", "")
    assert "gimp-openai" in str(S.config_dir())
    monkeypatch.setenv("GIMP_OPENAI_CONFIG_DIR", saved)  # the shared fixture checks it at teardown


def test_corrupt_file_is_a_clear_error_without_its_content():
    S.config_dir().mkdir(parents=True, exist_ok=True)
    S.config_path().write_text('{"api_key": "' + FAKE_KEY + '", broken')
    with pytest.raises(SettingsError) as info:
        S.load_settings()
    assert FAKE_KEY not in str(info.value) and "config.json" in str(info.value)


def test_client_config_from_settings(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    s = S.Settings(base_url="http://127.0.0.1:1/v1", read_timeout=900, organization="o", model_rules={"m": "dall-e-2"})
    config = ClientConfig.from_settings(s)
    assert (config.api_key, config.read_timeout, config.organization) == (FAKE_KEY, 900.0, "o")
    assert config.model_rules == {"m": "dall-e-2"} and FAKE_KEY not in repr(config)


@pytest.mark.parametrize("url, loopback", [("http://127.0.0.1:8000/v1", True), ("http://localhost/v1", True),
                                           ("http://[::1]:9/v1", True), ("https://api.openai.com/v1", False),
                                           ("http://10.0.0.1/v1", False)])
def test_loopback_detection(url, loopback):
    assert S.is_loopback_url(url) is loopback


@pytest.mark.parametrize("name, value, expected", [("read_timeout", 0, 600.0), ("read_timeout", "900", 900.0),
                                                   ("concurrency", -3, 4), ("max_retries", "x", 2),
                                                   ("model_rules", ["not", "a", "dict"], {})])
def test_unusable_values_fall_back_to_defaults(name, value, expected):
    S._write_config_file({name: value})
    assert getattr(S.load_settings(), name) == expected
