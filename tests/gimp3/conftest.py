"""Fixtures for the real-GIMP 3 tests: one chroot per GIMP version, the plug-in installed by the installer."""

from __future__ import annotations

import pytest

from tests.support.gimp3 import REPO_INSIDE, all_versions, make_chroot


@pytest.fixture(scope="session", params=all_versions(), ids=lambda v: f"gimp{v}")
def gimp(request, tmp_path_factory):
    """A GIMP 3.x chroot whose user plug-in folder holds the plug-in, installed by scripts/install.py run
    inside the chroot with the chroot's python3 (engine venv on the chroot's apt packages, no network)."""
    chroot = make_chroot(request.param, tmp_path_factory.mktemp(f"gimp{request.param}"))
    run = chroot.run(["python3", f"{REPO_INSIDE}/scripts/install.py", "--venv", "/gimp-openai-work/venv",
                      "--system-site-packages", "--no-deps"], timeout=300)
    assert run.returncode == 0, f"installer failed in the chroot:\n{run.stdout}\n{run.stderr}"
    chroot.install_log = run.stdout  # type: ignore[attr-defined]
    return chroot
