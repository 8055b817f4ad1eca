"""Run Python inside a real, headless GIMP 3 living in a Debian chroot (built by scripts/chroots).

    trixie -> GIMP 3.0 (gimp-console-3.0)      forky -> GIMP 3.2 (gimp-console-3.2)

Every run happens in a private mount namespace (``unshare --mount``): /proc, /dev, the repository (read-only,
at /srv/gimp-openai) and a work folder (read-write, at /gimp-openai-work) are mounted only for that process,
so nothing stays mounted when it ends, even when it is killed. The chroot shares the host's network, so a
server started on 127.0.0.1 by the test is reachable from inside GIMP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROOT_ROOT = Path(os.environ.get("GIMP_OPENAI_CHROOT_DIR", "/var/cache/gimp-openai/chroots"))
SUITES = {"3.0": "trixie", "3.2": "forky"}
REPO_INSIDE = "/srv/gimp-openai"
WORK_INSIDE = "/gimp-openai-work"


@dataclass
class GimpRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    argv: list[str] = field(default_factory=list)

    def check(self) -> GimpRun:
        if self.returncode != 0:
            raise AssertionError(f"GIMP run failed (exit {self.returncode}):\n--- stdout\n{self.stdout}\n--- stderr\n"
                                 f"{self.stderr[-6000:]}")
        return self

    def lines_with(self, prefix: str) -> list[str]:
        return [line[len(prefix):].strip() for line in self.stdout.splitlines() if line.startswith(prefix)]


@dataclass
class GimpChroot:
    version: str
    root: Path
    work: Path  # host folder mounted read-write at WORK_INSIDE

    @property
    def console(self) -> str:
        return f"gimp-console-{self.version}"

    @property
    def home_inside(self) -> str:
        return f"{WORK_INSIDE}/home"

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def user_dir(self) -> Path:
        """GIMP's user folder as seen from the host (``~/.config/GIMP/<version>``)."""
        return self.home / ".config" / "GIMP" / self.version

    def inside(self, host_path: Path | str) -> str:
        """The path inside the chroot of a host path under the work folder or the repository."""
        p = Path(host_path).resolve()
        for base, inner in ((self.work.resolve(), WORK_INSIDE), (REPO, REPO_INSIDE)):
            try:
                return str(Path(inner) / p.relative_to(base))
            except ValueError:
                continue
        raise ValueError(f"{p} is neither in the work folder {self.work} nor in the repository")

    def outside(self, inside_path: str) -> Path:
        rel = Path(inside_path).relative_to(WORK_INSIDE)
        return self.work / rel

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 240,
            cwd: str = WORK_INSIDE) -> GimpRun:
        """Run argv inside the chroot with the mounts in place; a clean environment plus ``env``."""
        self.home.mkdir(parents=True, exist_ok=True)
        for d in (REPO_INSIDE, WORK_INSIDE):
            (self.root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        base_env = {"HOME": self.home_inside, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8", "TMPDIR": f"{WORK_INSIDE}/tmp", "PYTHONDONTWRITEBYTECODE": "1",
                    "NO_AT_BRIDGE": "1", "GIMP_OPENAI_CONFIG_DIR": f"{WORK_INSIDE}/config",
                "GIMP_OPENAI_WARM_SECONDS": "0",  # no engine left running in the chroot after GIMP
                    "GIMP_OPENAI_CACHE_DIR": f"{WORK_INSIDE}/cache",
                    "GIMP_OPENAI_HISTORY_DIR": f"{WORK_INSIDE}/history",
                    "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
        (self.work / "tmp").mkdir(exist_ok=True)
        base_env.update(env or {})
        root = str(self.root)
        script = textwrap.dedent(f"""\
            set -e
            mount -t proc proc '{root}/proc'
            mount --rbind /dev '{root}/dev'
            mount --bind '{REPO}' '{root}{REPO_INSIDE}'
            mount -o remount,bind,ro '{root}{REPO_INSIDE}'
            mount --bind '{self.work}' '{root}{WORK_INSIDE}'
            cd '{root}{cwd}'
            exec chroot '{root}' /usr/bin/env -i "$@"
            """)
        full = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
                *[f"{k}={v}" for k, v in base_env.items()], "/bin/sh", "-c", f'cd "{cwd}" && exec "$@"', "sh",
                *argv]
        t0 = time.monotonic()
        try:
            p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return GimpRun(124, out, err + f"\n[timed out after {timeout} s]", time.monotonic() - t0, argv)
        return GimpRun(p.returncode, p.stdout, p.stderr, time.monotonic() - t0, argv)

    def python(self, code: str, *, env: dict[str, str] | None = None, timeout: float = 240) -> GimpRun:
        """Run Python code inside GIMP (python-fu-eval batch interpreter) and quit."""
        code = textwrap.dedent(code)
        # python-fu-eval takes the code as one argument; a file keeps quoting and tracebacks sane
        script = self.work / "tmp" / f"batch-{time.monotonic_ns()}.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(code, encoding="utf-8")
        inner = self.inside(script)
        wrapper = (f"import sys, traceback\nns = {{'__name__': '__gimp_batch__'}}\n"
                   f"try:\n    exec(compile(open({inner!r}).read(), {inner!r}, 'exec'), ns)\n"
                   f"except SystemExit:\n    raise\nexcept BaseException:\n    traceback.print_exc()\n"
                   f"    print('BATCH-FAILED', flush=True)\n")
        return self.run([self.console, "-i", "--no-data", "--no-fonts", "--batch-interpreter=python-fu-eval",
                         "-b", wrapper, "--quit"], env=env, timeout=timeout)


def chroot_problem(version: str, root: Path | None = None) -> str | None:
    """Why the GIMP `version` chroot cannot be used here, or None."""
    suite = SUITES[version]
    root = root or CHROOT_ROOT / suite
    if os.geteuid() != 0:
        return f"GIMP {version} tests need root (chroot, mounts); run as root"
    if not shutil.which("unshare"):
        return "unshare (util-linux) is missing"
    if not (root / ".gimp-openai-ready").exists():
        return f"no ready GIMP {version} chroot at {root} (build it: sudo scripts/chroots {suite})"
    if not (root / "usr" / "bin" / f"gimp-console-{version}").exists():
        return f"{root} has no gimp-console-{version}"
    return None


def all_versions() -> list[str]:
    return list(SUITES)


def make_chroot(version: str, work: Path) -> GimpChroot:
    problem = chroot_problem(version)
    if problem:
        # In CI a real-GIMP test that does not run counts as failed: say why loudly instead of skipping.
        if os.environ.get("CI"):
            pytest.fail(f"real GIMP {version} test could not run in CI: {problem}")
        pytest.skip(problem)
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    return GimpChroot(version=version, root=CHROOT_ROOT / SUITES[version], work=work)
