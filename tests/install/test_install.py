"""scripts/install.py and plugin_dirs with a fake HOME: folders per platform, run bits, records, uninstall,
--dev links, Flatpak layout, and doctor's diagnosis of a plug-in that would not show up."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from gimp_openai import plugin_dirs as pd

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.py"


def install(home: Path, *args: str, platform: str | None = None, env: dict | None = None):
    cmd = [sys.executable, str(INSTALL), "--home", str(home), *args]
    if platform:
        cmd += ["--platform", platform]
    e = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "APPDATA",
                                                          "LOCALAPPDATA")}
    e["HOME"] = str(home)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=120)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    (h / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    (h / ".config" / "GIMP" / "3.2").mkdir(parents=True)
    return h


def test_linux_install_then_uninstall_removes_exactly_what_it_put(home):
    foreign = home / ".config" / "GIMP" / "3.0" / "plug-ins" / "someone-else" / "someone-else.py"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("# not ours\n")
    before = tree(home)
    r = install(home, "--python", sys.executable, "--skip-engine")
    assert r.returncode == 0, r.stdout + r.stderr
    for ver in ("3.0", "3.2"):
        folder = home / ".config" / "GIMP" / ver / "plug-ins" / "gimp-openai"
        host = folder / "gimp-openai.py"
        assert host.is_file() and host.stat().st_mode & stat.S_IXUSR
        assert not (folder / "gimp_openai_host.py").stat().st_mode & stat.S_IXUSR
        assert json.loads((folder / "procedures.json").read_text())["procedures"]
        record = json.loads((folder / pd.ENGINE_RECORD).read_text())
        assert record["python"] == sys.executable and record["host"] == "gimp3"
        assert f"into {folder}" in r.stdout  # says what it did and where
    assert not (home / ".config" / "GIMP" / "2.10").exists()  # no GIMP 2.10 folder: nothing invented
    assert "install-record.json" in r.stdout
    u = install(home, "--uninstall")
    assert u.returncode == 0, u.stdout + u.stderr
    assert tree(home) == before  # exactly what was there before, the other plug-in included
    assert foreign.read_text() == "# not ours\n"


def test_gimp_dir_targets_one_folder_and_findings_are_ok(home, tmp_path):
    target = home / ".config" / "GIMP" / "3.2" / "plug-ins"
    r = install(home, "--python", sys.executable, "--skip-engine", "--gimp-dir", str(target))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "gimp-openai" / "gimp-openai.py").exists()
    assert not (home / ".config" / "GIMP" / "3.0" / "plug-ins").exists()
    findings = pd.diagnose_plugin_dirs(home, platform="linux", env={"HOME": str(home), "PATH": ""})
    ok = [f for f in findings if f.level == "ok"]
    assert len(ok) == 1 and "3.2" in ok[0].where


def test_dev_install_links_the_hosts(home):
    r = install(home, "--python", sys.executable, "--skip-engine", "--dev")
    assert r.returncode == 0, r.stdout + r.stderr
    host = home / ".config" / "GIMP" / "3.0" / "plug-ins" / "gimp-openai" / "gimp-openai.py"
    assert host.is_symlink() and host.resolve() == REPO / "plugin" / "gimp3" / "gimp-openai" / "gimp-openai.py"
    record = host.parent / pd.ENGINE_RECORD
    assert record.is_file() and not record.is_symlink()  # the record never lands in the checkout


def test_venv_is_created_and_recorded(home, tmp_path):
    venv = tmp_path / "venv"
    r = install(home, "--venv", str(venv), "--no-deps")
    assert r.returncode == 0, r.stdout + r.stderr
    py = venv / "bin" / "python"
    rec = json.loads((home / ".config/GIMP/3.0/plug-ins/gimp-openai" / pd.ENGINE_RECORD).read_text())
    assert rec["python"] == str(py) and rec["kind"] == "venv"
    out = subprocess.run([str(py), "-c", "import gimp_openai, sys; print(gimp_openai.__file__)"],
                         capture_output=True, text=True)
    assert str(venv) in out.stdout  # the engine copy is installed in the venv, not the checkout
    u = install(home, "--uninstall")
    assert u.returncode == 0 and not venv.exists()


@pytest.mark.parametrize("platform, base", [
    ("darwin", "Library/Application Support/GIMP"),
    ("win32", "AppData/Roaming/GIMP"),
])
def test_macos_and_windows_folders(tmp_path, platform, base):
    home = tmp_path / "home"
    (home / base / "3.0").mkdir(parents=True)
    env = {"APPDATA": str(home / "AppData" / "Roaming"), "LOCALAPPDATA": str(home / "AppData" / "Local")}
    r = install(home, "--python", sys.executable, "--skip-engine", platform=platform, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (home / base / "3.0" / "plug-ins" / "gimp-openai" / "gimp-openai.py").is_file()
    dirs = pd.candidate_plugin_dirs(home, platform=platform, env={"HOME": str(home), **env})
    assert home / base / "3.0" / "plug-ins" in [d.path for d in dirs]
    assert install(home, "--uninstall", platform=platform, env=env).returncode == 0
    assert not (home / base / "3.0" / "plug-ins").exists()


def test_flatpak_layout_wrapper_and_record(tmp_path):
    home = tmp_path / "home"
    flat = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    flat.mkdir(parents=True)
    r = install(home, "--python", sys.executable, "--skip-engine", "--flatpak-python", "3.12")
    assert r.returncode == 0, r.stdout + r.stderr
    folder = flat / "plug-ins" / "gimp-openai"
    rec = json.loads((folder / pd.ENGINE_RECORD).read_text())
    site = home / ".var/app/org.gimp.GIMP/data/gimp-openai/site"
    assert rec["kind"] == "flatpak" and rec["pythonpath"] == [str(site)]
    wrapper = Path(rec["python"])
    assert wrapper == site.parent / "python3" and wrapper.stat().st_mode & stat.S_IXUSR
    text = wrapper.read_text()
    assert "exec /usr/bin/python3" in text and str(site) in text  # the sandbox's own Python, our site folder
    assert install(home, "--uninstall").returncode == 0
    assert not (home / ".var/app/org.gimp.GIMP/data/gimp-openai").exists()


def test_no_gimp_folder_says_what_to_do(tmp_path):
    home = tmp_path / "empty"
    home.mkdir()
    r = install(home, "--python", sys.executable, "--skip-engine", env={"PATH": os.path.dirname(sys.executable)})
    assert r.returncode == 1
    assert "Start GIMP once" in r.stdout and "--gimp-dir" in r.stdout


def test_doctor_findings_explain_why_it_would_not_show_up(home, tmp_path):
    assert install(home, "--python", sys.executable, "--skip-engine").returncode == 0
    env = {"HOME": str(home), "PATH": ""}
    v30 = home / ".config/GIMP/3.0/plug-ins/gimp-openai"
    v32 = home / ".config/GIMP/3.2/plug-ins/gimp-openai"
    (v30 / "gimp-openai.py").chmod(0o644)  # no run bit
    rec = json.loads((v32 / pd.ENGINE_RECORD).read_text())
    rec["python"] = str(tmp_path / "gone" / "bin" / "python")  # engine interpreter gone
    (v32 / pd.ENGINE_RECORD).write_text(json.dumps(rec))
    stray = home / ".config/GIMP/3.2/plug-ins/gimp-openai.py"  # GIMP 3 ignores files outside a folder
    stray.write_text("")
    text = "\n".join(str(f) for f in pd.diagnose_plugin_dirs(home, platform="linux", env=env))
    assert "no run bit" in text and "chmod +x" in text
    assert "interpreter" in text and "is gone" in text
    assert "wrong place" in text
    errors = [f for f in pd.diagnose_plugin_dirs(home, platform="linux", env=env) if f.level == "error"]
    assert len(errors) >= 3 and all(f.hint for f in errors)


def test_plugin_dirs_is_stdlib_only():
    src = (REPO / "plugin" / "gimp_openai" / "plugin_dirs.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "json", "os", "re", "shutil", "sys", "dataclasses", "pathlib"}


@pytest.mark.parametrize("platform, base", [("linux", ".config/GIMP"), ("win32", "AppData/Roaming/GIMP")])
def test_gimp210_host_is_top_level_and_its_files_in_a_support_folder(tmp_path, platform, base):
    """GIMP 2.10 reliably loads only executables directly in plug-ins/ (and on Windows runs every .py there):
    the host sits there alone; hostlib, manifest and engine record live in a non-executable support folder
    whose name matches no .py inside it."""
    home = tmp_path / "home"
    (home / base / "2.10").mkdir(parents=True)
    env = {"APPDATA": str(home / "AppData" / "Roaming"), "LOCALAPPDATA": str(home / "AppData" / "Local")}
    before = tree(home)
    r = install(home, "--python", sys.executable, "--skip-engine", platform=platform, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    plugins = home / base / "2.10" / "plug-ins"
    host = plugins / pd.GIMP2_FILE
    support = plugins / pd.GIMP2_DIR
    assert pd.GIMP2_DIR == "gimp_openai_support" and f"to {host}" in r.stdout
    assert sorted(p.name for p in plugins.iterdir()) == sorted([pd.GIMP2_FILE, pd.GIMP2_DIR])  # nothing else loose
    assert host.is_file() and (platform == "win32" or host.stat().st_mode & stat.S_IXUSR)
    names = sorted(p.name for p in support.iterdir())
    assert {*pd.HOSTLIB_FILES, pd.MANIFEST_FILE, pd.ENGINE_RECORD} <= set(names), names
    assert f"{pd.GIMP2_DIR}.py" not in names  # GIMP 3-style loading finds nothing to run there
    assert not any(p.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) for p in support.iterdir())
    rec = json.loads((support / pd.ENGINE_RECORD).read_text())
    assert rec["host"] == "gimp2" and rec["python"] == sys.executable
    d = [x for x in pd.candidate_plugin_dirs(home, platform=platform, env={"HOME": str(home), **env})
         if x.version == "2.10"][0]
    assert d.host_file == host and d.support_dir == support
    findings = [f for f in pd.diagnose_plugin_dirs(home, platform=platform, env={"HOME": str(home), "PATH": "",
                                                                                   **env}) if "2.10" in f.where]
    assert [f.level for f in findings] == ["ok"], findings
    # the 2.10 host finds its files there (it reads SUPPORT_FOLDER beside itself)
    src = (REPO / "plugin" / "gimp2" / pd.GIMP2_FILE).read_text()
    assert f'SUPPORT_FOLDER = "{pd.GIMP2_DIR}"' in src
    assert install(home, "--uninstall", platform=platform, env=env).returncode == 0
    assert tree(home) == before


def test_doctor_flags_the_old_210_layout_and_hosts_in_the_wrong_gimp(tmp_path):
    home = tmp_path / "home"
    for v in ("2.10", "3.0"):
        (home / ".config" / "GIMP" / v).mkdir(parents=True)
    assert install(home, "--python", sys.executable, "--skip-engine").returncode == 0
    p210 = home / ".config/GIMP/2.10/plug-ins"
    p30 = home / ".config/GIMP/3.0/plug-ins"
    (p210 / pd.GIMP2_OLD_DIR).mkdir()  # left by an older install
    (p210 / pd.HOSTLIB_FILES[0]).write_text("")  # a companion lying loose where 2.10 runs files
    (p30 / pd.GIMP2_FILE).write_text("")  # the 2.10 host in GIMP 3's folder
    text = "\n".join(str(f) for f in pd.diagnose_plugin_dirs(home, platform="linux", env={"HOME": str(home),
                                                                                           "PATH": ""}))
    assert "old layout" in text and "tries to run every file" in text
    assert f"{p30 / pd.GIMP2_FILE} belongs to the GIMP 2.10 host" in text


def unreachable_registry() -> dict:
    """pip pointed at a closed port on loopback, with no config files or local wheels to fall back on."""
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": "",
            "PIP_NO_CACHE_DIR": "1"}


def test_pip_failure_is_one_line_and_the_half_built_venv_is_rebuilt(home, tmp_path):
    venv = tmp_path / "venv"
    failed = install(home, "--venv", str(venv), env=unreachable_registry())
    assert failed.returncode == 1
    output = failed.stdout + failed.stderr
    errors = [line for line in output.splitlines() if "pip could not install" in line]
    assert len(errors) == 1, output
    assert "the engine's dependencies" in errors[0] and "PIP_CERT" in errors[0] and "SSL_CERT_FILE" in errors[0]
    assert "Retrying" not in output and "Traceback" not in output
    assert venv.exists() and not (venv / ".gimp-openai-complete").exists()

    again = install(home, "--venv", str(venv), "--no-deps")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "an earlier install stopped half-way); rebuilding it" in again.stdout
    assert "reusing" not in again.stdout
    assert (venv / ".gimp-openai-complete").exists()
    third = install(home, "--venv", str(venv), "--no-deps")
    assert third.returncode == 0 and "reusing the engine's Python environment" in third.stdout


def test_a_venv_whose_python_is_gone_is_rebuilt(home, tmp_path):
    venv = tmp_path / "venv"
    assert install(home, "--venv", str(venv), "--no-deps").returncode == 0
    python = venv / "bin" / "python"
    python.unlink()
    python.symlink_to(tmp_path / "no-such-python")
    again = install(home, "--venv", str(venv), "--no-deps")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "its Python does not start); rebuilding it" in again.stdout
    assert subprocess.run([str(python), "-c", "import gimp_openai"]).returncode == 0
