"""Runs abuse cases through ``cli.main`` in ONE child process (one interpreter start for them all), each under a
memory cap and a time limit, and prints one JSON line per case: exit code, stdout, stderr, and every file that
appeared outside the case's --out folder.

Input (stdin, JSON): {"root": folder, "keep": [folders where files may appear], "cases": [{"id", "argv", "out"}]}.
Why a child: a regression that makes a hostile value allocate gigabytes (``--feather 1e9`` once grew to ~23 GB)
must fail a case under RLIMIT_AS, not take the test machine down.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

MEMORY_CAP = 6 << 30  # virtual: thread stacks and malloc arenas count too; 23 GB would not fit
CASE_SECONDS = 30


class CaseTimeout(BaseException):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise CaseTimeout()


def files(root: Path, skip: list[Path]) -> set[str]:
    found = set()
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not any((here / d) == s or s in (here / d).parents for s in skip)]
        found.update(str(here / n) for n in names)
    return found


def run_case(case: dict, root: Path, keep: list[Path]) -> dict:
    from gimp_openai import cli

    out = Path(case["out"])
    before = files(root, [*keep, out])
    stdout, stderr = io.StringIO(), io.StringIO()
    reset_peak()
    started = time.monotonic()
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(case["argv"])
    except CaseTimeout:
        code = "timeout"
    except SystemExit as exc:
        code = f"SystemExit({exc.code})"
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        code = f"raised {type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
    seconds = time.monotonic() - started
    outside = sorted(files(root, [*keep, out]) - before)
    return {"id": case["id"], "code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "outside": outside, "seconds": round(seconds, 3), "peak_mb": peak_mb()}


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM), so each case's own peak can be read after it (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> int:
    job = json.load(sys.stdin)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    signal.signal(signal.SIGALRM, _on_alarm)
    root = Path(job["root"])
    keep = [Path(k) for k in job["keep"]]
    for case in job["cases"]:
        os.chdir(root)
        print(json.dumps(run_case(case, root, keep)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
