"""Start the local images server as a REAL subprocess for tests (no mocks stand in for HTTP).

``local_server`` (session-scoped server, reset before each test that uses it) and ``start_local_server``
(a factory for servers with special flags, stopped at the end of the test) are registered in conftest.py.
Test servers run with ``--legacy-models`` (today's line-up plus the retired models whose rules many tests
exercise) unless they are given ``--models FILE`` or ``legacy_models=False`` (what a test of today's line-up
itself asks for).

The server requires a key unless ``--no-auth``: the handle starts it with ``GIMP_OPENAI_SERVER_KEY`` set to the
suite's fake key (what every client in the tests sends), unless the test passes its own key or ``--no-auth``;
``handle.key`` is the key in force (read from the listening line when the server generated it). The handle
always adds ``--test-routes`` so ``stats()`` and ``reset()`` work (``test_routes=False`` leaves it out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "GIMP_OPENAI_SERVER_KEY"


class LocalServerHandle:
    """A running server: ``url`` ends in /v1; ``stats()``, ``reset()``, ``stop()``."""

    def __init__(self, args: tuple[str, ...] = (), env: dict[str, str] | None = None, *,
                 test_routes: bool = True, legacy_models: bool = True) -> None:
        from tests.conftest import FAKE_KEY  # here, not at import time: conftest imports this module

        command = [sys.executable, "-m", "gimp_openai.server", "--port", "0", *args]
        if legacy_models and "--models" not in args and "--legacy-models" not in args:
            command.append("--legacy-models")
        if test_routes:
            command.append("--test-routes")
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "plugin"), child_env.get("PYTHONPATH")]))
        child_env.pop(KEY_ENV, None)
        if "--no-auth" not in args:
            child_env[KEY_ENV] = FAKE_KEY
        child_env.update(env or {})
        started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env, text=True
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            self.process.wait(5)
            raise RuntimeError(f"local server did not start: {stderr.strip()}")
        self.startup_seconds = time.monotonic() - started
        self.listening = json.loads(line)
        assert self.listening["event"] == "listening"
        self.url: str = self.listening["url"]
        self.root: str = self.url[: -len("/v1")]
        self.port: int = self.listening["port"]
        self.key: str | None = None if "--no-auth" in args else self.listening.get("key") or child_env.get(KEY_ENV)
        self.stderr_lines: list[str] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        if self.process.stderr:
            for text in self.process.stderr:
                self.stderr_lines.append(text)

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header this server accepts (empty with ``--no-auth``)."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def stats(self) -> dict:
        response = requests.get(self.root + "/_stats", headers=self.auth, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        requests.post(self.root + "/_reset", headers=self.auth, timeout=10).raise_for_status()

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM from /proc; Linux only), in MB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def alive(self) -> bool:
        """Does the server still answer (GET /v1/models with its key, 200 within 10 s)?"""
        try:
            return requests.get(self.url + "/models", headers=self.auth, timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._drain.join(timeout=5)
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> LocalServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SHARED: dict[str, LocalServerHandle] = {}


@pytest.fixture
def local_server(request: pytest.FixtureRequest) -> LocalServerHandle:
    """One server for the whole session (started on first use, stopped when pytest ends), with its
    statistics and fault counters cleared before each test that uses it."""
    handle = _SHARED.get("server")
    if handle is None or handle.process.poll() is not None:
        handle = LocalServerHandle()
        _SHARED["server"] = handle
        request.config.add_cleanup(handle.stop)
        print(f"\nlocal server started in {handle.startup_seconds:.2f} s at {handle.url}")
    handle.reset()
    return handle


@pytest.fixture
def start_local_server() -> Iterator:
    """``start_local_server("--no-auth", env={...})`` -> a new handle, stopped when the test ends
    (``legacy_models=False``: today's line-up only)."""
    handles: list[LocalServerHandle] = []

    def start(*args: str, env: dict[str, str] | None = None, test_routes: bool = True,
              legacy_models: bool = True) -> LocalServerHandle:
        handle = LocalServerHandle(tuple(args), env, test_routes=test_routes, legacy_models=legacy_models)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
