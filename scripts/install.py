#!/usr/bin/env python3
"""Install gimp-openai for GIMP 2.10 and GIMP 3.x, on Linux, macOS and Windows (standard library only).

What it does, and says as it goes:
  1. creates the engine's Python 3 environment (default: <user data dir>/gimp-openai/venv; --venv DIR) and
     pip-installs the engine into it (a copy of this checkout; --dev installs it editable);
  2. copies (--dev: symlinks) the GIMP 3 host into every GIMP 3.x plug-in folder it finds and the GIMP 2.10
     host into every 2.10 folder, with the shared host library, the manifest and a small engine record
     (gimp-openai-engine.json: which Python runs the engine) beside each host; run bits set;
  3. writes an install record (<user data dir>/gimp-openai/install-record.json) so that --uninstall removes
     exactly what it installed, and nothing else.

Flatpak GIMP (org.gimp.GIMP) runs plug-ins inside its sandbox, where this machine's Python and venv are not
visible. With --flatpak (automatic when a Flatpak GIMP folder is found) the engine and its dependencies are
installed with pip --target into ~/.var/app/org.gimp.GIMP/data/gimp-openai/site (a folder the sandbox sees at
the same path), as binary wheels for the sandbox's Python (asked of the Flatpak, or --flatpak-python 3.12), and
the record names a small wrapper (…/data/gimp-openai/python3) that runs the sandbox's /usr/bin/python3 with
that folder on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORD_NAME = "install-record.json"
ENGINE_LOCK = REPO / "requirements" / "engine.txt"
# Written into the engine's venv as the last step of a successful install: a venv without it was left
# half-way (pip could not reach the registry, the run was interrupted) and is rebuilt, not reused.
COMPLETE_MARKER = ".gimp-openai-complete"
PIP_HINT = ("check the network or proxy; behind a proxy with its own certificate authority set PIP_CERT and "
            "SSL_CERT_FILE to its CA bundle, then run the installer again")


class InstallError(Exception):
    """One line for the user: what failed and what to do."""


def _load_plugin_dirs():
    path = REPO / "plugin" / "gimp_openai" / "plugin_dirs.py"
    spec = importlib.util.spec_from_file_location("_gimp_openai_plugin_dirs", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"install: cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


pd = _load_plugin_dirs()


def say(msg: str) -> None:
    print(f"install: {msg}", flush=True)


def venv_state(venv: Path, python: Path) -> str:
    """'missing', 'broken' (there, but its Python does not start), 'incomplete' (no marker of a finished
    install) or 'ok'."""
    if not venv.exists():
        return "missing"
    try:
        started = subprocess.run([str(python), "-c", "import sys"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        started = False
    if not started:
        return "broken"
    return "ok" if (venv / COMPLETE_MARKER).exists() else "incomplete"


def run_pip(cmd: list[str], what: str) -> None:
    """Run pip quietly; on failure raise one line (pip's own first error and what to do), not its retries."""
    say(f"installing {what} with pip")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode == 0:
        return
    lines = [ln.strip() for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    first = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else f"exit code {p.returncode}")
    raise InstallError(f"pip could not install {what}: {first[:300]}; {PIP_HINT}")


class Installer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.platform = args.platform or sys.platform
        self.windows = self.platform.startswith("win")
        self.home = Path(args.home).expanduser() if args.home else Path.home()
        self.data_dir = Path(args.data_dir) if args.data_dir else pd.default_data_dir(self.home, platform=self.platform)
        self.record_path = self.data_dir / RECORD_NAME
        self.created: list[str] = []  # files, links and folders this run created (in creation order)

    # ---------------------------------------------------------------- record
    def load_record(self) -> dict:
        try:
            return json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_record(self, record: dict) -> None:
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.record_path)

    # ---------------------------------------------------------------- engine
    def venv_python(self, venv: Path) -> Path:
        if self.windows:
            return venv / "Scripts" / "python.exe"
        return venv / "bin" / "python"

    def engine_source(self, tmp: Path) -> Path:
        """A copy of the engine's source (the checkout may be read-only; pip builds in the source tree)."""
        if self.args.dev:
            return REPO
        src = tmp / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (REPO / name).exists():
                shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "plugin" / "gimp_openai", src / "plugin" / "gimp_openai",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        return src

    def pip_install(self, python: Path, extra: list[str], locked: bool = False) -> None:
        """Install the engine (a copy of the checkout, or editable with --dev). ``locked``: first its
        dependencies exactly as requirements/engine.txt pins them (hashes checked), then the engine alone."""
        base = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--retries", "1"]
        with tempfile.TemporaryDirectory(prefix="gimp-openai-install-") as t:
            src = self.engine_source(Path(t))
            if locked:
                run_pip(base + ["--require-hashes", "-r", str(ENGINE_LOCK)] + extra, "the engine's dependencies")
            cmd = list(base)
            if self.args.no_deps or locked:
                cmd += ["--no-deps"]
                if self._has_new_setuptools(python):  # build offline with what is there
                    cmd += ["--no-build-isolation"]
            cmd += extra
            cmd += ["-e", str(src)] if self.args.dev else [str(src)]
            run_pip(cmd, "the engine")

    @staticmethod
    def _has_new_setuptools(python: Path) -> bool:
        """setuptools >= 77 (reads the pyproject's SPDX license string) importable by this interpreter."""
        p = subprocess.run([str(python), "-c", "import setuptools; print(setuptools.__version__)"],
                           capture_output=True, text=True)
        try:
            return p.returncode == 0 and int(p.stdout.strip().split(".")[0]) >= 77
        except ValueError:
            return False

    def make_engine(self, record: dict) -> dict:
        """Create the venv and install the engine; returns the engine record for the hosts."""
        if self.args.python:
            py = Path(self.args.python)
            say(f"using the existing interpreter {py} for the engine (no virtual environment)")
            if not self.args.skip_engine:
                self.pip_install(py, ["--user"] if self.args.user_site else [])
            return {"version": 1, "python": str(py), "pythonpath": [], "kind": "python"}
        venv = Path(self.args.venv).expanduser() if self.args.venv else self.data_dir / "venv"
        py = self.venv_python(venv)
        state = venv_state(venv, py)
        if state in ("broken", "incomplete"):
            why = ("its Python does not start" if state == "broken"
                   else "an earlier install stopped half-way")
            say(f"the engine's Python environment in {venv} is unusable ({why}); rebuilding it")
            shutil.rmtree(venv)
        if state != "ok":
            cmd = [sys.executable, "-m", "venv"]
            if self.args.system_site_packages:
                cmd.append("--system-site-packages")
            cmd.append(str(venv))
            say(f"creating the engine's Python environment in {venv}")
            subprocess.run(cmd, check=True)
            record.setdefault("venvs", [])
            if str(venv) not in record["venvs"]:
                record["venvs"].append(str(venv))
        else:
            say(f"reusing the engine's Python environment in {venv}")
        (venv / COMPLETE_MARKER).unlink(missing_ok=True)
        if not self.args.skip_engine:
            self.pip_install(py, [], locked=not self.args.no_deps)
        check = subprocess.run([str(py), "-c", "import gimp_openai, numpy, PIL, requests; print(gimp_openai.__file__)"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            last = (check.stderr.strip().splitlines() or ["(no output)"])[-1]
            problem = f"the engine does not import in {venv}: {last}"
            if not (self.args.no_deps or self.args.skip_engine):
                raise InstallError(problem)  # not marked complete: the next run rebuilds it
            say(f"WARNING: {problem} (--no-deps / --skip-engine: its dependencies were to be there already)")
        else:
            say(f"engine importable: {check.stdout.strip()}")
        (venv / COMPLETE_MARKER).write_text(_dt.datetime.now(_dt.timezone.utc).isoformat() + "\n", encoding="utf-8")
        return {"version": 1, "python": str(py), "pythonpath": [], "kind": "venv", "venv": str(venv)}

    def make_flatpak_engine(self, record: dict) -> dict:
        """Install the engine for Flatpak GIMP's own Python (inside the sandbox) with pip --target."""
        site = self.home / ".var" / "app" / pd.FLATPAK_ID / "data" / "gimp-openai" / "site"
        ver = self.args.flatpak_python
        if not ver and shutil.which("flatpak"):
            p = subprocess.run(["flatpak", "run", "--command=python3", pd.FLATPAK_ID, "-c",
                                "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
            ver = p.stdout.strip() if p.returncode == 0 else ""
        if not ver:
            say("Flatpak GIMP: could not ask the sandbox for its Python version; pass --flatpak-python X.Y")
            return {}
        site.mkdir(parents=True, exist_ok=True)
        if not self.args.skip_engine:
            host_py = self.args.python or sys.executable
            with tempfile.TemporaryDirectory(prefix="gimp-openai-install-") as t:
                src = self.engine_source(Path(t)) if not self.args.dev else REPO
                cmd = [host_py, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade",
                       "--target", str(site), "--python-version", ver, "--only-binary=:all:",
                       "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                       "--platform", "manylinux_2_28_x86_64", str(src)]
                say(f"Flatpak GIMP: installing the engine for the sandbox's Python {ver} into {site}")
                run_pip(cmd, "the engine for Flatpak GIMP")
        # the hosts run "<python> -m gimp_openai": a wrapper puts the site folder on the sandbox Python's path
        wrapper = site.parent / "python3"
        wrapper.write_text("#!/bin/sh\n# written by gimp-openai's installer: the engine for Flatpak GIMP\n"
                           f"PYTHONPATH='{site}' exec /usr/bin/python3 \"$@\"\n", encoding="utf-8")
        wrapper.chmod(0o755)
        record.setdefault("flatpak_sites", [])
        if str(site.parent) not in record["flatpak_sites"]:
            record["flatpak_sites"].append(str(site.parent))
        return {"version": 1, "python": str(wrapper), "pythonpath": [str(site)], "kind": "flatpak",
                "python_version": ver}

    # ---------------------------------------------------------------- hosts
    def host_files(self, host: str) -> tuple[str, list[tuple[Path, str, bool]]]:
        """(support folder, [(source, path relative to plug-ins/, executable)]) for a host.

        GIMP 3: everything in plug-ins/gimp-openai/ (GIMP 3 runs <folder>/<folder>.py).
        GIMP 2.10: the host directly in plug-ins/ (2.10 does not reliably load subfolders), its companions in
        plug-ins/gimp_openai_support/, not executable, named after no .py inside it (so no GIMP runs them;
        GIMP 2.10 on Windows would run any .py lying directly in plug-ins/)."""
        hostlib = [REPO / "plugin" / "hostlib" / name for name in pd.HOSTLIB_FILES]
        manifest = REPO / "manifest" / "procedures.json"
        if host == "gimp3":
            src = REPO / "plugin" / "gimp3" / pd.GIMP3_DIR
            folder = pd.GIMP3_DIR
            files = [(src / pd.GIMP3_FILE, f"{folder}/{pd.GIMP3_FILE}", True)]
            main = pd.GIMP3_FILE
        else:
            src = REPO / "plugin" / "gimp2"
            folder = pd.GIMP2_DIR
            files = [(src / pd.GIMP2_FILE, pd.GIMP2_FILE, True)]
            main = pd.GIMP2_FILE
        files += [(f, f"{folder}/{f.name}", False) for f in sorted(src.glob("*.py")) if f.name != main]
        files += [(f, f"{folder}/{f.name}", False) for f in hostlib]
        files += [(manifest, f"{folder}/{pd.MANIFEST_FILE}", False)]
        return folder, files

    def _mkdirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for m in reversed(missing):
            m.mkdir()
            self.created.append(str(m))

    def install_host(self, d, engine: dict) -> bool:
        folder, files = self.host_files(d.host)
        missing = [str(s) for s, _, _ in files if not s.exists()]
        if missing:
            say(f"skipping {d.describe()}: the {d.host} host is not in this checkout ({', '.join(missing)})")
            return False
        target = d.path / folder
        self._mkdirs(target)
        for src, rel, exe in files:
            dst = d.path / rel
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            if self.args.dev and not self.windows:
                dst.symlink_to(src.resolve())
            else:
                shutil.copy2(src, dst)
                mode = dst.stat().st_mode
                if exe:
                    dst.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                else:  # companions never carry a run bit (GIMP would try to run them)
                    dst.chmod(mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
            self.created.append(str(dst))
        rec = target / pd.ENGINE_RECORD
        data = dict(engine)
        data["installed"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        data["host"] = d.host
        rec.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        self.created.append(str(rec))
        how = "linked" if self.args.dev and not self.windows else "copied"
        if d.host == "gimp3":
            say(f"{how} the GIMP 3 host into {target}")
        else:
            say(f"{how} the GIMP 2.10 host to {d.path / pd.GIMP2_FILE} (its files in {target})")
        return True

    def targets(self) -> list:
        if self.args.gimp_dir:
            return [pd.plugin_dir_for(g, self.args.gimp_version) for g in self.args.gimp_dir]
        found = pd.found_plugin_dirs(self.home, platform=self.platform, env=self._env())
        if not self.args.flatpak:
            found = [d for d in found if d.flavour != "flatpak"]
        return found

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.args.home:
            env["HOME"] = str(self.home)
            for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
                env.pop(var, None)
        return env

    # ---------------------------------------------------------------- commands
    def install(self) -> int:
        targets = self.targets()
        if not targets:
            bases = ", ".join(str(b) for _, b in pd.gimp_config_bases(self.home, platform=self.platform,
                                                                        env=self._env()))
            say(f"no GIMP plug-in folder found (looked in {bases}). Start GIMP once so it creates its folder, "
                "or pass --gimp-dir <GIMP user folder>/plug-ins")
            return 1
        record = self.load_record()
        record.setdefault("version", 1)
        engine: dict = {}
        flatpak_engine: dict = {}
        if any(d.flavour != "flatpak" for d in targets):
            engine = self.make_engine(record)
        if any(d.flavour == "flatpak" for d in targets):
            flatpak_engine = self.make_flatpak_engine(record)
        done = []
        for d in targets:
            eng = flatpak_engine if d.flavour == "flatpak" else engine
            if not eng:
                say(f"skipping {d.describe()}: no engine for it")
                continue
            if self.install_host(d, eng):
                done.append(d)
        old = record.get("paths", [])
        record["paths"] = old + [p for p in self.created if p not in old]
        record["installed"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        p, missing = self.data_dir.parent, []
        while not p.exists():
            missing.append(str(p))
            p = p.parent
        record["data_parents"] = record.get("data_parents", []) + missing  # removed again when empty
        self.save_record(record)
        say(f"install record: {self.record_path} (scripts/install --uninstall removes exactly these files)")
        if not done:
            return 1
        say("done. Restart GIMP; the procedures are under Filters > OpenAI. "
            "If they do not show up: python -m gimp_openai doctor")
        return 0

    def uninstall(self) -> int:
        record = self.load_record()
        if not record:
            say(f"nothing to uninstall: no install record at {self.record_path}")
            return 0
        removed = 0
        for p in reversed(record.get("paths", [])):
            path = Path(p)
            try:
                if path.is_symlink() or path.is_file():
                    path.unlink()
                    removed += 1
                elif path.is_dir():
                    # our folders go with what we put there (a .pyc cache GIMP wrote); never others' files
                    leftovers = [c for c in path.iterdir() if c.name != "__pycache__"]
                    if leftovers:
                        say(f"kept {path}: it holds files the installer did not put there")
                        continue
                    shutil.rmtree(path)
                    removed += 1
            except OSError as e:
                say(f"could not remove {path}: {e}")
        for v in record.get("venvs", []) + record.get("flatpak_sites", []):
            if Path(v).is_dir():
                shutil.rmtree(v, ignore_errors=True)
                say(f"removed the engine environment {v}")
        self.record_path.unlink()
        say(f"removed {removed} installed files and folders; removed {self.record_path}")
        for d in [str(self.data_dir)] + record.get("data_parents", []):
            try:
                Path(d).rmdir()  # only when empty
            except OSError:
                pass
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="install", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uninstall", action="store_true", help="remove exactly what earlier installs put in place")
    ap.add_argument("--dev", action="store_true", help="editable engine install and symlinked hosts (for developers)")
    ap.add_argument("--venv", metavar="DIR", help="where to create the engine's environment")
    ap.add_argument("--python", metavar="PY",
                    help="run the engine with this existing Python instead of a new environment")
    ap.add_argument("--gimp-dir", action="append", metavar="DIR",
                    help="install into this plug-in folder only (repeatable)")
    ap.add_argument("--gimp-version", metavar="X.Y", help="the GIMP version of --gimp-dir when its path does not say")
    ap.add_argument("--system-site-packages", action="store_true",
                    help="let the environment see the system's packages (e.g. numpy from your distribution)")
    ap.add_argument("--no-deps", action="store_true",
                    help="install only the engine, not its dependencies (already installed, e.g. from apt)")
    ap.add_argument("--user-site", action="store_true", help="with --python: pip install --user")
    ap.add_argument("--skip-engine", action="store_true", help="do not pip-install the engine (it is there already)")
    ap.add_argument("--flatpak", action=argparse.BooleanOptionalAction, default=True,
                    help="also install for Flatpak GIMP when its folder exists (default on)")
    ap.add_argument("--flatpak-python", metavar="X.Y", help="the Python version inside the Flatpak GIMP sandbox")
    ap.add_argument("--data-dir", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--home", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--platform", choices=["linux", "darwin", "win32"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 8):  # noqa: UP036 (old Pythons run this file too)
        print("install: needs Python 3.8 or newer to run (the engine itself needs 3.10+)", file=sys.stderr)
        return 2
    args = parse_args(argv)
    inst = Installer(args)
    try:
        return inst.uninstall() if args.uninstall else inst.install()
    except InstallError as e:
        say(f"failed: {e}")
        return 1
    except subprocess.CalledProcessError as e:
        say(f"failed: {' '.join(map(str, e.cmd[:4]))}... exited with {e.returncode}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
