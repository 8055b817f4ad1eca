"""The GUI GIMP 3 (not gimp-console) in a chroot under Xvfb, driven from outside GIMP with xdotool.

A ``GuiGimp`` starts, in one process group: Xvfb (it picks a free display and says which through
``-displayfd``) and ``gimp-3.x --no-splash`` running a Python batch script. While the script waits in a
procedure call (a plug-in dialog is open), the test finds windows by title, types, presses keys and takes
screenshots (ImageMagick ``import -window root``) through short ``xdotool``/``import`` runs in the same chroot
on the same display. The batch script and the test meet through two things only: marker lines the script
prints (``MARK name``) and flag files the test writes (``wait_flag(name)`` in the script).

Everything started is killed at the end (``stop()``, also on timeouts and failed assertions): the whole
process group, Xvfb included. Screenshots are copied to ``SHOTS`` (default /tmp/gimp-openai-dialogs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.gimp3 import REPO, REPO_INSIDE, WORK_INSIDE, GimpChroot, GimpRun

SHOTS = Path(os.environ.get("GIMP_OPENAI_SHOTS", "/tmp/gimp-openai-dialogs"))
GUI_TOOLS = ("usr/bin/Xvfb", "usr/bin/xdotool", "usr/bin/import")

# Run at the start of every batch script: markers for the test, flags from it.
PRELUDE = r'''
import json, os, sys, time
def mark(name, obj=None):
    print("MARK " + name + ((" " + json.dumps(obj)) if obj is not None else ""), flush=True)
def wait_flag(name, timeout=60.0):
    path = os.path.join(os.environ["GUI_FLAGS"], name)
    end = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > end:
            mark("flag-timeout", name)
            return False
        time.sleep(0.05)
    return True
'''


def gui_problem(chroot: GimpChroot) -> str | None:
    """Why the GUI GIMP cannot run under Xvfb in this chroot, or None."""
    # lexists: Debian's tools are often absolute alternatives symlinks, valid only inside the chroot
    missing = [t.split("/")[-1] for t in GUI_TOOLS if not os.path.lexists(chroot.root / t)]
    if missing:
        return (f"the GIMP {chroot.version} chroot has no {', '.join(missing)} (extend it: "
                f"sudo scripts/chroots {chroot.root.name})")
    if not (chroot.root / "usr" / "bin" / f"gimp-{chroot.version}").exists():
        return f"the GIMP {chroot.version} chroot has no GUI gimp-{chroot.version}"
    return None


def require_gui(chroot: GimpChroot) -> None:
    problem = gui_problem(chroot)
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"GIMP {chroot.version} dialog test could not run in CI: {problem}")
        pytest.skip(problem)


class GuiGimp:
    def __init__(self, chroot: GimpChroot, code: str, *, env: dict[str, str] | None = None,
                 timeout: float = 180, name: str = "gui", unreachable: tuple[str, ...] = ()) -> None:
        """``unreachable``: host names that resolve to a closed port on this machine inside GIMP's chroot (a
        hosts file over /etc/hosts in GIMP's own mount namespace), so that a run that would go to a real
        server, such as OpenAI's when the server URL is emptied, fails at once instead of using the network."""
        self.chroot, self.timeout, self.name = chroot, timeout, name
        self.unreachable = unreachable
        self.dir = chroot.work / "gui" / f"{name}-{time.monotonic_ns()}"
        self.flags = self.dir / "flags"
        self.flags.mkdir(parents=True)
        self.shots: list[Path] = []
        self.env = dict(env or {})
        self.env["GUI_FLAGS"] = chroot.inside(self.flags)
        self._write_gimprc()
        # every dialog test starts from the manifest's defaults, not from what an earlier test typed or failed
        for remembered in [*chroot.user_dir.glob("gimp-openai-unsaved-*.json"),
                           *chroot.user_dir.glob("plug-in-settings/*openai*")]:
            remembered.unlink()
        script = self.dir / "batch.py"
        script.write_text(PRELUDE + textwrap.dedent(code), encoding="utf-8")
        inner = chroot.inside(script)
        self.wrapper = (f"import sys, traceback\nns = {{'__name__': '__gimp_batch__'}}\n"
                        f"try:\n    exec(compile(open({inner!r}).read(), {inner!r}, 'exec'), ns)\n"
                        f"except SystemExit:\n    raise\nexcept BaseException:\n    traceback.print_exc()\n"
                        f"    print('BATCH-FAILED', flush=True)\n")
        self.display = ""
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def _write_gimprc(self) -> None:
        """No welcome dialog: GIMP 3 shows one whenever gimprc's config-version is not its own version."""
        rc = self.chroot.user_dir / "gimprc"
        rc.parent.mkdir(parents=True, exist_ok=True)
        text = rc.read_text(encoding="utf-8") if rc.exists() else ""
        if "(config-version" in text:
            return
        run = self.chroot.run([f"gimp-{self.chroot.version}", "--version"], timeout=60)
        found = re.search(r"version (\d+\.\d+\.\d+)", run.stdout)
        if found:
            rc.write_text(text + f'\n(config-version "{found.group(1)}")\n', encoding="utf-8")

    # ------------------------------------------------------------------------------------------ process
    def _argv(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """unshare + private mounts + chroot, as GimpChroot.run does, for a process we keep running."""
        c = self.chroot
        c.home.mkdir(parents=True, exist_ok=True)
        (c.work / "tmp").mkdir(exist_ok=True)
        for d in (REPO_INSIDE, WORK_INSIDE):
            (c.root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        base = {"HOME": c.home_inside, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", "TMPDIR": f"{WORK_INSIDE}/tmp", "PYTHONDONTWRITEBYTECODE": "1",
                "NO_AT_BRIDGE": "1", "GIMP_OPENAI_CONFIG_DIR": f"{WORK_INSIDE}/config",
                "GIMP_OPENAI_WARM_SECONDS": "0",  # no engine left running in the chroot after GIMP
                "GIMP_OPENAI_CACHE_DIR": f"{WORK_INSIDE}/cache", "GIMP_OPENAI_HISTORY_DIR": f"{WORK_INSIDE}/history",
                "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring", "GTK_A11Y": "none"}
        base.update(env)
        root = str(c.root)
        hosts = ""
        if self.unreachable:
            pinned = self.dir / "hosts"
            names = " ".join(self.unreachable)
            original = (c.root / "etc" / "hosts").read_text(encoding="utf-8")
            pinned.write_text(f"{original}\n127.0.0.1 {names}\n::1 {names}\n", encoding="utf-8")
            hosts = f"mount --bind '{pinned}' '{root}/etc/hosts'"
        script = textwrap.dedent(f"""\
            set -e
            mount -t proc proc '{root}/proc'
            mount --rbind /dev '{root}/dev'
            mount --bind '{REPO}' '{root}{REPO_INSIDE}'
            mount -o remount,bind,ro '{root}{REPO_INSIDE}'
            mount --bind '{c.work}' '{root}{WORK_INSIDE}'
            {hosts}
            exec chroot '{root}' /usr/bin/env -i "$@"
            """)
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
                *[f"{k}={v}" for k, v in base.items()], "/bin/sh", "-c", f'cd "{WORK_INSIDE}" && exec "$@"', "sh",
                *argv]

    def start(self) -> GuiGimp:
        display_file = self.chroot.inside(self.dir) + "/display"
        gimp = (f"gimp-{self.chroot.version} -n --no-splash --no-data --no-fonts "
                f"--batch-interpreter=python-fu-eval -b \"$BATCH\" --quit")
        # Xvfb picks a free display (abstract sockets are shared with the host's network namespace, so a
        # fixed number could collide) and writes it on fd 3 once it accepts connections
        launcher = textwrap.dedent(f"""\
            Xvfb -displayfd 3 -screen 0 1280x960x24 -nolisten tcp -noreset 3>'{display_file}' \
                >'{self.chroot.inside(self.dir)}/xvfb.log' 2>&1 &
            XPID=$!
            trap 'kill $XPID 2>/dev/null' EXIT
            for i in $(seq 1 200); do [ -s '{display_file}' ] && break; sleep 0.05; done
            [ -s '{display_file}' ] || {{ echo 'Xvfb did not start' >&2; exit 90; }}
            export DISPLAY=":$(head -n1 '{display_file}')"
            echo "DISPLAY $DISPLAY"
            {gimp}
            """)
        env = dict(self.env, BATCH=self.wrapper)
        self.out = open(self.dir / "stdout", "w")
        self.err = open(self.dir / "stderr", "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(self._argv(["/bin/sh", "-c", launcher], env), stdout=self.out,
                                        stderr=self.err, start_new_session=True)
        end = time.monotonic() + 30
        while time.monotonic() < end and not self.display:
            found = re.search(r"^DISPLAY (:\d+)$", self.stdout(), re.M)
            if found:
                self.display = found.group(1)
                break
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        if not self.display:
            self.stop()
            raise AssertionError(f"Xvfb did not start:\n{self.stderr()[-3000:]}\n{self._read('xvfb.log')}")
        return self

    def _read(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stdout(self) -> str:
        return self._read("stdout")

    def stderr(self) -> str:
        return self._read("stderr")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Kill GIMP, its plug-ins and Xvfb (the whole process group), politely first."""
        p = self.process
        if p is not None and p.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for f in (getattr(self, "out", None), getattr(self, "err", None)):
            if f is not None and not f.closed:
                f.close()

    def wait(self, timeout: float | None = None) -> GimpRun:
        """Wait for GIMP to quit (the batch script ended); killed (exit 124) when it takes too long."""
        assert self.process is not None
        left = timeout if timeout is not None else max(5.0, self.timeout - (time.monotonic() - self.started))
        code = 0
        try:
            code = self.process.wait(left)
        except subprocess.TimeoutExpired:
            code = 124
        self.stop()
        err = self.stderr() + (f"\n[timed out after {left:.0f} s]" if code == 124 else "")
        return GimpRun(code, self.stdout(), err, time.monotonic() - self.started)

    def __enter__(self) -> GuiGimp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ driving
    def x(self, *argv: str, timeout: float = 30) -> GimpRun:
        """Run an X client (xdotool, import, ...) in the chroot on GIMP's display."""
        return self.chroot.run(list(argv), env={"DISPLAY": self.display}, timeout=timeout)

    def xdo(self, *args: str) -> str:
        run = self.x("xdotool", *args)
        if run.returncode != 0:
            raise AssertionError(f"xdotool {' '.join(args)} failed: {run.stderr.strip()}")
        return run.stdout.strip()

    def wait_mark(self, name: str, timeout: float = 60) -> str:
        """Wait for the batch script's ``MARK name`` line; returns what follows it."""
        end = time.monotonic() + timeout
        pattern = re.compile(rf"^MARK {re.escape(name)}(?: (.*))?$", re.M)
        while True:
            found = pattern.search(self.stdout())
            if found:
                return found.group(1) or ""
            if not self.alive():
                raise AssertionError(f"GIMP ended before '{name}':\n{self.stdout()[-3000:]}\n{self.stderr()[-3000:]}")
            if time.monotonic() > end:
                raise AssertionError(f"no '{name}' from the batch script after {timeout} s:\n{self.stdout()[-3000:]}"
                                     f"\n{self.stderr()[-3000:]}")
            time.sleep(0.1)

    def flag(self, name: str) -> None:
        (self.flags / name).write_text("1")

    def wait_window(self, title_regex: str, timeout: float = 60) -> str:
        """The id of the visible window whose title matches, retried until it is mapped."""
        end = time.monotonic() + timeout
        while True:
            run = self.x("xdotool", "search", "--onlyvisible", "--name", title_regex)
            ids = run.stdout.split()
            if run.returncode == 0 and ids:
                return ids[-1]
            if not self.alive():
                raise AssertionError(f"GIMP ended while waiting for a window '{title_regex}':\n"
                                     f"{self.stdout()[-3000:]}\n{self.stderr()[-3000:]}")
            if time.monotonic() > end:
                raise AssertionError(f"no window '{title_regex}' after {timeout} s; visible: {self.window_names()}")
            time.sleep(0.25)

    def wait_window_gone(self, wid: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            run = self.x("xdotool", "getwindowname", wid)
            if run.returncode != 0:
                return
            vis = self.x("xdotool", "search", "--onlyvisible", "--name", ".")
            if wid not in vis.stdout.split():
                return
            time.sleep(0.2)
        raise AssertionError(f"window {wid} still open after {timeout} s")

    def window_names(self) -> list[str]:
        run = self.x("xdotool", "search", "--onlyvisible", "--name", ".")
        names = []
        for wid in run.stdout.split():
            n = self.x("xdotool", "getwindowname", wid)
            names.append(f"{wid}:{n.stdout.strip()}")
        return names

    def geometry(self, wid: str) -> dict[str, int]:
        out = self.xdo("getwindowgeometry", "--shell", wid)
        return {k: int(v) for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)
                if k in ("X", "Y", "WIDTH", "HEIGHT")}

    def focus(self, wid: str) -> None:
        """Keyboard focus to a window (no window manager under Xvfb: XSetInputFocus, retried)."""
        for _ in range(20):
            self.x("xdotool", "windowraise", wid)
            self.x("xdotool", "windowfocus", "--sync", wid)
            if self.x("xdotool", "getwindowfocus").stdout.strip() == wid:
                return
            time.sleep(0.1)

    def type(self, text: str) -> None:
        self.xdo("type", "--delay", "15", "--", text)

    def key(self, *keys: str) -> None:
        self.xdo("key", "--delay", "60", *keys)

    def screenshot(self, label: str, window: str | None = None, required: bool = True) -> Path | None:
        """A PNG of the screen copied to SHOTS (cropped to ``window`` when given); returns the host path.
        (``import -window <id>`` misses GTK's client windows without a window manager: crop the root.)
        ``required=False`` for shots taken after the batch script's last mark: GIMP then quits and takes Xvfb
        with it, so such a shot may find no X server; it is for people to look at, never an assertion."""
        inner = f"{self.chroot.inside(self.dir)}/{label}.png"
        run = self.x("import", "-window", "root", inner, timeout=60)
        if run.returncode != 0:
            if not required:
                return None
            raise AssertionError(f"screenshot failed: {run.stderr.strip()}")
        SHOTS.mkdir(parents=True, exist_ok=True)
        dest = SHOTS / f"gimp{self.chroot.version}-{self.name}-{label}.png"
        if window:
            from PIL import Image

            g = self.geometry(window)
            with Image.open(self.chroot.outside(inner)) as im:
                im.crop((g["X"], g["Y"], g["X"] + g["WIDTH"], g["Y"] + g["HEIGHT"])).save(dest)
        else:
            shutil.copyfile(self.chroot.outside(inner), dest)
        self.shots.append(dest)
        return dest
