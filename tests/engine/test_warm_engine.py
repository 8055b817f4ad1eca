"""The engine kept warm between GIMP runs: a run's session leaves one behind, the next run of the same host
environment is served by it (no new process), another environment is not, and it ends after its idle time."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugin" / "hostlib"))
import gimp_openai_host as host  # noqa: E402
from gimp_openai import warm  # noqa: E402

PLAN = {"operation": "edit", "model": "gpt-image-2", "items": [
    {"id": "a", "layer": {"x": 0, "y": 0, "width": 400, "height": 300},
     "selection_bounds": {"x": 100, "y": 100, "width": 50, "height": 40}}]}


@pytest.fixture
def runtime(monkeypatch):
    folder = tempfile.mkdtemp(prefix="gow-", dir="/tmp")  # short: a Unix socket's path has ~100 bytes at most
    monkeypatch.setenv("XDG_RUNTIME_DIR", folder)
    monkeypatch.setenv("GIMP_OPENAI_PYTHON", sys.executable)
    monkeypatch.setenv("GIMP_OPENAI_WARM_SECONDS", "20")
    monkeypatch.setattr(host, "_PRESTARTED", [])
    yield Path(folder)
    for sock in Path(folder).rglob("*.sock"):  # stop what the test left waiting
        _stop_warm(sock)
    shutil.rmtree(folder, ignore_errors=True)


def _stop_warm(sock: Path) -> None:
    connection = host._WarmConnection.open(str(sock))
    if connection is not None:
        connection.stdin.write(b"not json\n")  # any session: answered, then the engine waits again
        connection.terminate()


def _wait_live(path: str, seconds: float = 30.0) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if warm.is_live(Path(path)):
            return True
        time.sleep(0.1)
    return False


def _plan(tmp_path: Path) -> tuple[dict, object, float]:
    with host.EngineSession(python=sys.executable) as session:
        started = time.monotonic()
        answer = host.plan(PLAN, str(tmp_path), session=session)
        return answer, session.proc, time.monotonic() - started


def test_a_run_leaves_a_warm_engine_that_serves_the_next_run(runtime, tmp_path, monkeypatch):
    socket_path = host.warm_socket(sys.executable)
    assert socket_path is not None and Path(socket_path).parent.stat().st_mode & 0o777 == 0o700
    first, first_proc, cold = _plan(tmp_path)
    assert not isinstance(first_proc, host._WarmConnection)  # nothing was warm: a process was started
    assert _wait_live(socket_path), "no warm engine after the first run"
    assert Path(socket_path).stat().st_mode & 0o077 == 0
    second, second_proc, hot = _plan(tmp_path)
    assert isinstance(second_proc, host._WarmConnection)
    assert second["items"] == first["items"] and second["ok"]
    third, third_proc, _ = _plan(tmp_path)  # served again: one run after another
    assert isinstance(third_proc, host._WarmConnection) and third["items"] == first["items"]
    # another server (another environment) is never served by this engine
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert host.warm_socket(sys.executable) != socket_path
    _, other_proc, _ = _plan(tmp_path)
    assert not isinstance(other_proc, host._WarmConnection)
    print(f"plan answered in {cold:.2f} s by a new engine, {hot:.2f} s by the warm one")


def test_a_warm_engine_ends_after_its_idle_time(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP_OPENAI_WARM_SECONDS", "2")
    socket_path = host.warm_socket(sys.executable)
    _plan(tmp_path)
    assert _wait_live(socket_path)
    end = time.time() + 30
    while os.path.exists(socket_path) and time.time() < end:
        time.sleep(0.2)
    assert not os.path.exists(socket_path) and not warm.is_live(Path(socket_path))


def test_no_warm_engine_when_the_wait_is_zero(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP_OPENAI_WARM_SECONDS", "0")
    assert host.warm_socket(sys.executable) is None
    answer, proc, _ = _plan(tmp_path)
    assert answer["ok"] and not isinstance(proc, host._WarmConnection)
    assert list(runtime.rglob("*.sock")) == []


def test_a_busy_or_foreign_socket_is_not_waited_for(runtime, tmp_path):
    import socket

    path = host.warm_socket(sys.executable)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts, never says hello
    listener.bind(path)
    listener.listen(1)
    try:
        started = time.monotonic()
        assert host._WarmConnection.open(path) is None
        assert time.monotonic() - started < 2.0
        answer, proc, _ = _plan(tmp_path)  # the run starts its own engine instead
        assert answer["ok"] and not isinstance(proc, host._WarmConnection)
        json.dumps(answer)
    finally:
        listener.close()
        os.unlink(path)
