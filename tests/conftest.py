"""Shared fixtures. Each fixture lives in tests/support/ next to the helpers it needs."""

import os

import pytest

from tests.support.local_server import local_server, start_local_server  # noqa: F401

# A recognisable fake key: tests grep every output, log and file for it to prove it never leaks.
FAKE_KEY = "sk-test-NEVER-PRINT-THIS-KEY-0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own config, cache and history folders, so nothing touches the real user's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GIMP_OPENAI_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("GIMP_OPENAI_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("GIMP_OPENAI_HISTORY_DIR", str(home / "history"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    # no engine kept warm after a test's run (tests of the warm engine set their own short wait)
    monkeypatch.setenv("GIMP_OPENAI_WARM_SECONDS", "0")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)
    yield
    assert os.environ.get("GIMP_OPENAI_CONFIG_DIR")
    _end_prestarted_engines()


def _end_prestarted_engines() -> None:
    """An engine a test's dialog estimate or prestart left waiting ends with the test (as it ends with the
    plug-in's process in GIMP), so no test's engine outlives it."""
    import sys

    host = sys.modules.get("gimp_openai_host")
    if host is None:
        return
    with host._PRESTARTED_LOCK:
        while host._PRESTARTED:
            _identity, proc, errfile = host._PRESTARTED.pop()
            try:
                proc.stdin.close()
            except OSError:
                pass
            if errfile is not None:
                errfile.close()
