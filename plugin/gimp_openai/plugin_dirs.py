"""Where GIMP looks for user plug-ins on every platform, and why our plug-in would not show up.

Standard library only: the installer (scripts/install.py) loads this file by path before the engine is
installed, and `gimp-openai doctor` calls :func:`diagnose_plugin_dirs`.

Layout written by the installer into a GIMP plug-in folder::

    <plug-ins>/gimp-openai/gimp-openai.py          GIMP 3.x host (folder and file share the name, run bit set)
    <plug-ins>/gimp-openai/gimp_openai_host.py     shared host library (plugin/hostlib: helpers
    <plug-ins>/gimp-openai/gimp_openai_workflow.py   and the one workflow both hosts run)
    <plug-ins>/gimp-openai/procedures.json         the manifest
    <plug-ins>/gimp-openai/gimp-openai-engine.json the engine record (see ENGINE_RECORD)
    <plug-ins>/openai_gimp2.py                     GIMP 2.10 host: top level, run bit set (2.10 does not
                                                   reliably load plug-ins from subfolders)
    <plug-ins>/gimp_openai_support/                its companions (hostlib, manifest, engine record, any
                                                   helper modules), no run bits: a folder whose name matches
                                                   no .py inside it, so neither GIMP 2.10 nor 3 runs anything
                                                   there (GIMP 2.10 on Windows runs every .py it finds
                                                   directly in plug-ins/ through its interpreter association)

The engine record is JSON: ``{"version": 1, "python": "/abs/venv/bin/python", "pythonpath": [],
"python", "flatpak"|"python"|"flatpak", "engine_version": "0.1.0"}``. Hosts run
``<python> -m gimp_openai ...``. For Flatpak GIMP, ``python`` is a wrapper script in
``~/.var/app/org.gimp.GIMP/data/gimp-openai/`` (visible inside the sandbox at the same path) that runs the
sandbox's own ``/usr/bin/python3`` with ``pythonpath`` (the engine installed there with pip --target).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

KNOWN_VERSIONS = ("2.10", "3.0", "3.2")
FLATPAK_ID = "org.gimp.GIMP"
ENGINE_RECORD = "gimp-openai-engine.json"
GIMP3_DIR = "gimp-openai"
GIMP3_FILE = "gimp-openai.py"
GIMP2_DIR = "gimp_openai_support"  # the 2.10 host's support folder (the host itself is top level)
GIMP2_FILE = "openai_gimp2.py"
GIMP2_OLD_DIR = "openai_gimp2"  # the pre-0.2 layout: host inside a subfolder, which 2.10 may not load
#: The host library (plugin/hostlib): the host helpers and the one workflow both hosts run.
HOSTLIB_FILES = ("gimp_openai_host.py", "gimp_openai_workflow.py")
MANIFEST_FILE = "procedures.json"
_VERSION_RE = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class PluginDir:
    """One GIMP user plug-in folder (it may not exist yet)."""

    path: Path  # .../GIMP/<version>/plug-ins
    version: str  # "2.10", "3.0", "3.2", ...
    flavour: str  # "linux", "flatpak", "macos", "windows", "custom"

    @property
    def user_dir(self) -> Path:
        return self.path.parent

    @property
    def host(self) -> str:
        """Which host belongs here: "gimp2" for GIMP 2.x, "gimp3" otherwise."""
        return "gimp2" if self.version.startswith("2.") else "gimp3"

    @property
    def host_file(self) -> Path:
        if self.host == "gimp2":
            return self.path / GIMP2_FILE
        return self.path / GIMP3_DIR / GIMP3_FILE

    @property
    def support_dir(self) -> Path:
        """Where the host's companions and the engine record live."""
        return self.path / (GIMP2_DIR if self.host == "gimp2" else GIMP3_DIR)

    def describe(self) -> str:
        where = {"flatpak": "Flatpak GIMP", "custom": "GIMP"}.get(self.flavour, "GIMP")
        return f"{where} {self.version} ({self.path})"


@dataclass(frozen=True)
class Finding:
    """One thing doctor reports: level is "ok", "info", "warning" or "error"."""

    level: str
    where: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"[{self.level}] {self.where}: {self.message}"
        return text + (f" -> {self.hint}" if self.hint else "")


def _platform(platform: str | None) -> str:
    p = platform or sys.platform
    if p.startswith("win"):
        return "windows"
    if p == "darwin" or p == "macos":
        return "macos"
    return "linux"


def gimp_config_bases(home: Path | str | None = None, *, platform: str | None = None,
                      env: dict[str, str] | None = None) -> list[tuple[str, Path]]:
    """(flavour, folder holding GIMP's per-version user folders) for this platform."""
    env = dict(os.environ if env is None else env)
    home = Path(home) if home is not None else Path(env.get("HOME") or Path.home())
    plat = _platform(platform)
    if plat == "windows":
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return [("windows", Path(appdata) / "GIMP")]
    if plat == "macos":
        return [("macos", home / "Library" / "Application Support" / "GIMP")]
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return [("linux", Path(xdg) / "GIMP"),
            ("flatpak", home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP")]


def candidate_plugin_dirs(home: Path | str | None = None, *, platform: str | None = None,
                          env: dict[str, str] | None = None) -> list[PluginDir]:
    """Every plug-in folder GIMP could use here: the known versions plus any version folder that exists."""
    out: list[PluginDir] = []
    for flavour, base in gimp_config_bases(home, platform=platform, env=env):
        versions = list(KNOWN_VERSIONS)
        if base.is_dir():
            for child in sorted(base.iterdir()):
                if child.is_dir() and _VERSION_RE.match(child.name) and child.name not in versions:
                    versions.append(child.name)
        for v in versions:
            out.append(PluginDir(base / v / "plug-ins", v, flavour))
    return out


def installed_gimp_versions(env: dict[str, str] | None = None) -> list[str]:
    """GIMP versions whose programs are on PATH (gimp-2.10, gimp-3.0, gimp-console-3.2, ...)."""
    env = dict(os.environ if env is None else env)
    path = env.get("PATH", "")
    found = set()
    for v in KNOWN_VERSIONS:
        for prog in (f"gimp-{v}", f"gimp-console-{v}"):
            if shutil.which(prog, path=path):
                found.add(v)
    return sorted(found, key=lambda s: tuple(int(x) for x in s.split(".")))


def found_plugin_dirs(home: Path | str | None = None, *, platform: str | None = None,
                      env: dict[str, str] | None = None) -> list[PluginDir]:
    """The plug-in folders to install into: GIMP user folders that exist, plus (native Linux) the versions
    whose GIMP programs are on PATH even if GIMP has not been started yet."""
    on_path = set(installed_gimp_versions(env)) if _platform(platform) == "linux" else set()
    out = []
    for d in candidate_plugin_dirs(home, platform=platform, env=env):
        if d.user_dir.is_dir() or (d.flavour == "linux" and d.version in on_path):
            out.append(d)
    return out


def plugin_dir_for(path: Path | str, version: str | None = None) -> PluginDir:
    """A PluginDir for a folder the user named (--gimp-dir); the version is read from the path when it can be."""
    p = Path(path).expanduser()
    if version is None:
        for part in reversed(p.parts):
            if _VERSION_RE.match(part):
                version = part
                break
    flavour = "flatpak" if ".var/app/" + FLATPAK_ID in p.as_posix() else "custom"
    return PluginDir(p, version or "3.0", flavour)


def read_engine_record(folder: Path | str) -> dict | None:
    """The engine record beside an installed host, or None when missing or unreadable."""
    f = Path(folder) / ENGINE_RECORD
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _python_fu_problem(version: str, flavour: str, env: dict[str, str] | None = None) -> str | None:
    """Why this GIMP build may have no Python plug-in support (Linux system packages only), or None.
    Only asked when this version's GIMP program is on PATH (a system package whose files we can look at)."""
    if flavour != "linux" or version not in installed_gimp_versions(env):
        return None
    if version.startswith("2."):
        roots = [Path("/usr/lib/gimp/2.0"), *Path("/usr/lib").glob("*/gimp/2.0")]
        if any((r / "python").is_dir() or (r / "plug-ins" / "python-eval").exists() for r in roots):
            return None
        return ("GIMP 2.10's Python-Fu (gimp-python, Python 2.7) is not installed; most distributions dropped it: "
                "use GIMP 3, or the Flatpak/AppImage GIMP 2.10 which bundles it")
    typelibs = [*Path("/usr/lib").glob("*/girepository-1.0/Gimp-3.0.typelib"),
                Path("/usr/lib/girepository-1.0/Gimp-3.0.typelib")]
    if not any(t.exists() for t in typelibs):
        return "GIMP 3's introspection data (gir1.2-gimp-3.0) is missing, so Python plug-ins cannot load"
    return None


def diagnose_plugin_dirs(home: Path | str | None = None, *, platform: str | None = None,
                         env: dict[str, str] | None = None) -> list[Finding]:
    """Explain, folder by folder, whether GIMP will show the OpenAI plug-in, and if not, why."""
    findings: list[Finding] = []
    plat = _platform(platform)
    candidates = candidate_plugin_dirs(home, platform=platform, env=env)
    existing = [d for d in candidates if d.user_dir.is_dir()]
    if not existing:
        bases = ", ".join(str(b) for _, b in gimp_config_bases(home, platform=platform, env=env))
        findings.append(Finding("warning", "GIMP", f"no GIMP user folder found under {bases}",
                                "start GIMP once (it creates its folder), then run scripts/install again, "
                                "or pass --gimp-dir to scripts/install"))
    for d in candidates:
        where = d.describe()
        if not d.user_dir.is_dir():
            continue
        # a host in the wrong place
        for stray, why in ((d.path / GIMP3_FILE, "GIMP 3 only runs plug-ins inside a folder of the same name"),
                           (d.user_dir / GIMP3_DIR, "this is GIMP's user folder, not its plug-ins folder"),
                           (d.user_dir / GIMP2_FILE, "this is GIMP's user folder, not its plug-ins folder")):
            if stray.exists():
                findings.append(Finding("error", where, f"{stray} is in the wrong place: {why}",
                                        "run scripts/install --uninstall, then scripts/install"))
        for wrong_host in ([d.path / GIMP3_DIR] if d.host == "gimp2" else [d.path / GIMP2_FILE, d.path / GIMP2_DIR]):
            if wrong_host.exists():
                other = "GIMP 3" if d.host == "gimp2" else "GIMP 2.10"
                findings.append(Finding("error", where, f"{wrong_host} belongs to the {other} host; "
                                                        f"GIMP {d.version} cannot run it",
                                        "run scripts/install again: it puts each host into its own GIMP's folder"))
        if d.host == "gimp2":
            old = d.path / GIMP2_OLD_DIR
            if old.exists():
                findings.append(Finding("warning", where, f"{old} is the old layout: GIMP 2.10 may not load "
                                                          "plug-ins from a subfolder",
                                        f"remove {old} and run scripts/install again (the host now sits directly "
                                        f"in {d.path}, its files in {GIMP2_DIR}/)"))
            for loose in HOSTLIB_FILES:
                if (d.path / loose).exists():
                    findings.append(Finding("warning", where, f"{d.path / loose} sits directly in plug-ins/, where "
                                                              "GIMP 2.10 tries to run every file as a plug-in",
                                            f"move it into {d.path / GIMP2_DIR}/ (scripts/install does)"))
        host = d.host_file
        if not host.exists():
            findings.append(Finding("info", where, "the OpenAI plug-in is not installed here",
                                    "run scripts/install (or scripts/install --gimp-dir " + str(d.path) + ")"))
            continue
        problems = 0
        if plat != "windows" and not os.access(host, os.X_OK):
            problems += 1
            findings.append(Finding("error", where, f"{host} has no run bit, so GIMP skips it",
                                    f"chmod +x '{host}' (or run scripts/install again)"))
        record = read_engine_record(d.support_dir)
        if record is None:
            problems += 1
            findings.append(Finding("error", where, f"no readable engine record {d.support_dir / ENGINE_RECORD}",
                                    "run scripts/install again: it records which Python runs the engine"))
        else:
            py = str(record.get("python") or "")
            if record.get("kind") == "flatpak":
                site = [Path(p) for p in record.get("pythonpath") or []]
                missing = [str(p) for p in site if not p.is_dir()]
                if missing:
                    problems += 1
                    findings.append(Finding("error", where, f"the engine folder for Flatpak GIMP is gone: "
                                                            f"{', '.join(missing)}",
                                            "run scripts/install --flatpak again"))
            elif not py or not Path(py).exists():
                problems += 1
                findings.append(Finding("error", where, f"the engine's interpreter {py or '(none)'} is gone "
                                                        "(its virtual environment was moved or deleted)",
                                        "run scripts/install again to recreate it"))
            elif plat != "windows" and not os.access(py, os.X_OK):
                problems += 1
                findings.append(Finding("error", where, f"the engine's interpreter {py} cannot be run",
                                        "run scripts/install again"))
        fu = _python_fu_problem(d.version, d.flavour, env)
        if fu:
            problems += 1
            findings.append(Finding("error", where, fu, "install GIMP's Python support for this version"))
        pluginrc = d.user_dir / "pluginrc"
        try:
            if (pluginrc.exists() and pluginrc.stat().st_mtime > host.stat().st_mtime
                    and host.name not in pluginrc.read_text(encoding="utf-8", errors="replace")):
                problems += 1
                findings.append(Finding("warning", where,
                                        "GIMP started after the install but did not register the plug-in "
                                        "(it failed while GIMP queried it)",
                                        f"start GIMP from a terminal with --verbose and look for {host.name}"))
        except OSError:
            pass
        if not problems:
            findings.append(Finding("ok", where, f"installed: {host}"))
    return findings


def default_data_dir(home: Path | str | None = None, *, platform: str | None = None,
                     env: dict[str, str] | None = None) -> Path:
    """The per-user data folder of gimp-openai (engine venv and install record live here)."""
    env = dict(os.environ if env is None else env)
    home = Path(home) if home is not None else Path(env.get("HOME") or Path.home())
    plat = _platform(platform)
    if plat == "windows":
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "gimp-openai"
    if plat == "macos":
        return home / "Library" / "Application Support" / "gimp-openai"
    return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "gimp-openai"
