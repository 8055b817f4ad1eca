"""An engine kept warm between GIMP runs, so a run does not pay for starting Python, numpy, OpenCV and requests.

GIMP starts a new plug-in process for every run, and each used to start a new engine (about half a second of
CPU, most of the host's own time for a quick model). After a session on stdin ends normally, the engine starts
``gimp-openai warm``: a process that has loaded everything a job needs and waits on a Unix socket for the next
run's session, one at a time, for ``idle`` seconds after the last one. Each connection is a whole session
(:func:`gimp_openai.jobs.run_session`, settings and key read anew), so a run sees saved settings as they are now.

The socket's path is the host's choice: it names the environment that started the engine (the Python, the
installation, the OPENAI_* and GIMP_OPENAI_* variables), so a different GIMP, profile or server never reaches
this process; it lives in a folder only this user can open. A session whose host vanishes mid-job ends the
process (see ``jobs._Session._abandon``): the next run starts a new engine and, after it, a new warm one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

#: How long a warm engine waits for the next run when the host does not say.
DEFAULT_IDLE_SECONDS = 900.0


def is_live(path: Path) -> bool:
    """True when a warm engine answers on ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def start(path: Path, idle: float) -> None:
    """Start a warm engine on ``path`` unless one answers there already. Its own process group, no terminal,
    its messages in ``warm-engine.log`` in the cache folder: it outlives the plug-in that caused it."""
    if not hasattr(socket, "AF_UNIX") or idle <= 0 or is_live(path):
        return
    from gimp_openai.settings import cache_dir

    try:
        log_path = cache_dir() / "warm-engine.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            subprocess.Popen([sys.executable, "-m", "gimp_openai", "warm", "--socket", str(path), "--idle", str(idle)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                             start_new_session=True)
    except OSError:  # no warm engine: the next run starts its own, as without one
        return


def _listen(path: Path) -> socket.socket | None:
    """The listening socket, or None when another warm engine answers there already (a stale file is removed)."""
    if path.exists() or path.is_symlink():
        if is_live(path):
            return None
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)  # the socket is this user's only, from its first moment
    try:
        server.bind(str(path))
    except OSError:
        server.close()
        return None
    finally:
        os.umask(old_mask)
    server.listen(1)
    return server


def code_stamp() -> float:
    """The newest modification time of the engine's code: a warm engine whose code changed since it started
    (an update, a developer's edit) stops instead of serving the old code."""
    package = Path(__file__).resolve().parent
    return max(p.stat().st_mtime for p in package.rglob("*.py"))


def _session(conn: socket.socket) -> None:
    from gimp_openai import jobs

    reader = conn.makefile("r", encoding="utf-8", newline="\n")
    writer = conn.makefile("w", encoding="utf-8")
    try:
        writer.write(json.dumps({"type": "hello"}) + "\n")  # the host knows it is served, not queued
        writer.flush()
        jobs.run_session(reader, writer)
    finally:
        reader.close()
        try:
            writer.close()
        except OSError:
            pass


def serve(path: Path, idle: float) -> int:
    """Load what jobs need, then serve one session per connection until ``idle`` seconds pass without one."""
    from gimp_openai import jobs

    stamp = code_stamp()
    jobs._load_job_modules()
    server = _listen(path)
    if server is None:
        return 0
    server.settimeout(idle)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return 0
            with conn:
                if code_stamp() != stamp:  # no hello: the host starts a fresh engine
                    return 0
                conn.settimeout(None)
                try:
                    _session(conn)
                except OSError:  # the other side left (a probe, a host gone): wait for the next run
                    continue
    finally:
        server.close()
        try:
            if path.exists():
                path.unlink()
        except OSError:
            pass
