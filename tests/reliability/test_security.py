"""Security end to end: the key never in argv of the engine subprocess (sampled from /proc DURING a
run), never in any output, file, layer name or parasite; config 0600; TLS verification cannot be switched off
by any option or variable; returned URLs fetched only over https or loopback and size-limited; history and
output paths cannot escape their folders. Client-level TLS/url tests live in tests/engine/test_client_*.py;
these go through the engine's entry points (CLI, job subprocess, GIMP 2.10 host)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FAKE_KEY
from tests.reliability import faults as F
from tests.reliability import harness as H
from tests.support.wire_server import Reply, WireServer, make_tls_files, server_tls_context

pytestmark = pytest.mark.slow
KEY = FAKE_KEY.encode()


def all_bytes_under(*folders: Path) -> list[tuple[Path, bytes]]:
    out = []
    for folder in folders:
        if folder and folder.exists():
            for p in folder.rglob("*"):
                if p.is_file():
                    data = p.read_bytes()
                    out.append((p, data))
                    if p.suffix == ".ora":
                        with zipfile.ZipFile(p) as z:
                            out.extend((p / n, z.read(n)) for n in z.namelist())
    return out


class ProcWatcher:
    """Samples /proc/*/cmdline of every process (every 20 ms) while a run is going on."""

    def __init__(self) -> None:
        self.seen: dict[int, bytes] = {}
        self.environ_has_key: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"gimp_openai" in cmdline and b"gimp_openai.server" not in cmdline:
                    self.seen[int(entry.name)] = cmdline
                    try:
                        if KEY in (entry / "environ").read_bytes():
                            self.environ_has_key.add(int(entry.name))
                    except OSError:
                        pass
            self._stop.wait(0.02)

    def __enter__(self) -> ProcWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_key_never_in_argv_of_the_job_subprocess_during_a_run(start_local_server, tmp_path):
    server = start_local_server("--latency", "1.5")
    jf = H.JobFolder(tmp_path)
    jf.add("img-1", H.textured(100, 120), H.rect_selection(100, 120, (40, 30, 30, 30)))
    samples: list[bytes] = []

    def sample(pid: int) -> None:
        try:
            samples.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            if KEY in Path(f"/proc/{pid}/environ").read_bytes():
                samples.append(b"ENVIRON-HAS-KEY")
        except OSError:
            pass

    run = H.run_job(jf.write(prompt="a kite"), server.url, sample=sample)
    assert run.code == 0 and run.result["ok"], run.stdout
    assert len(samples) > 20  # sampled all along the 1.5 s wait
    assert any(b"job" in s for s in samples)
    assert b"ENVIRON-HAS-KEY" in samples  # the key travels in the environment (that is allowed) ...
    assert not any(KEY in s for s in samples)  # ... never on the command line
    assert FAKE_KEY not in run.stdout + run.stderr


def test_key_never_in_argv_when_the_gimp2_host_runs_the_engine(start_local_server, tmp_path):
    server = start_local_server("--latency", "1.5")
    with F.host_env(server), F.gimp2_host() as g2, ProcWatcher() as watcher:
        image, layer = F.make_image(g2, 120, 90)
        g2.pdb.gimp_image_select_rectangle(image, 2, 30, 20, 40, 30)
        g2.pdb.python_fu_openai_edit_selection(image, layer, *F.edit_args("a kite", n=1))
        assert g2.gimp.state.messages == []
    assert any(b"session" in c for c in watcher.seen.values()), watcher.seen  # the engine the host ran
    assert watcher.environ_has_key  # we did look at the right processes
    assert not any(KEY in c for c in watcher.seen.values())


def test_key_in_the_prompt_never_reaches_files_names_parasites_or_output(local_server, tmp_path, monkeypatch):
    """Worst case: the artist pastes the key into the prompt. It must not be copied into history, sidecars,
    layer names, parasites, output PNGs, the .ora, or any stream."""
    prompt = f"a red kite {FAKE_KEY} over the lake"
    history = Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])
    # the CLI (PNG + .ora)
    from PIL import Image

    picture = tmp_path / "photo.png"
    Image.fromarray(H.textured(80, 100)).save(picture)
    out = tmp_path / "cli-out"
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "edit", str(picture), "--rect", "30,20,30,30",
                           "--prompt", prompt, "--model", "gpt-image-2", "--quality", "low", "--out", str(out)],
                          capture_output=True, text=True, env=H.engine_env(local_server.url), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert FAKE_KEY not in proc.stdout + proc.stderr
    assert list(out.glob("*.ora"))
    # the job protocol
    jf = H.JobFolder(tmp_path / "job")
    (tmp_path / "job").mkdir()
    jf.add("img-1", H.textured(80, 100), H.rect_selection(80, 100, (30, 20, 30, 30)))
    run = H.run_job(jf.write(prompt=prompt), local_server.url)
    assert run.result["ok"] and FAKE_KEY not in run.stdout + run.stderr
    # the GIMP 2.10 host: layer names and parasites
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.url)
    with F.host_env(local_server), F.gimp2_host() as g2:
        image, layer = F.make_image(g2, 100, 80)
        g2.pdb.gimp_image_select_rectangle(image, 2, 30, 20, 30, 30)
        g2.pdb.python_fu_openai_edit_selection(image, layer, *F.edit_args(prompt, n=1))
        results = [lyr for lyr in F._walk(image.layers) if lyr.name.startswith("OpenAI:")]
        assert results
        for lyr in results:
            assert FAKE_KEY not in lyr.name
            for name in lyr.parasite_list() if hasattr(lyr, "parasite_list") else ["gimp-openai"]:
                assert KEY not in bytes(lyr.parasite_find(name).data, "utf-8") \
                    if isinstance(lyr.parasite_find(name).data, str) else lyr.parasite_find(name).data
        assert all(FAKE_KEY not in str(m) for m in g2.gimp.state.messages)
    leaks = [p for p, data in all_bytes_under(history, out, tmp_path / "job" / "out") if KEY in data]
    assert leaks == []
    assert len(H.history_files()) >= 3


def test_config_file_is_0600_and_the_key_is_read_from_stdin(tmp_path):
    env = H.engine_env(None)
    env.pop("OPENAI_API_KEY")
    proc = subprocess.run([sys.executable, "-m", "gimp_openai", "key", "set"], input=FAKE_KEY + "\n",
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert FAKE_KEY not in proc.stdout + proc.stderr
    config = Path(os.environ["GIMP_OPENAI_CONFIG_DIR"])
    files = [p for p in config.rglob("*") if p.is_file()]
    holding = [p for p in files if KEY in p.read_bytes()]
    assert holding, files  # the null keyring: the key went to the file ...
    for p in holding:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, oct(p.stat().st_mode)  # ... readable by the user only
    status = subprocess.run([sys.executable, "-m", "gimp_openai", "key", "status"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert FAKE_KEY not in status.stdout + status.stderr


# --- TLS cannot be switched off ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _ok_answer(size: tuple[int, int]) -> bytes:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", tuple(size), (10, 20, 30, 255)).save(buf, "PNG", compress_level=1)
    return json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]}).encode()


ATTEMPTS_TO_DISABLE = [
    ("no variable", {}, {}),
    ("PYTHONHTTPSVERIFY=0", {"PYTHONHTTPSVERIFY": "0"}, {}),
    ("empty CA variables", {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""}, {}),
    ("GIMP_OPENAI_VERIFY=0 / _INSECURE=1", {"GIMP_OPENAI_VERIFY": "0", "GIMP_OPENAI_INSECURE": "1",
                                            "GIMP_OPENAI_TLS_VERIFY": "false"}, {}),
    ("config: verify false", {}, {"verify": False, "tls_verify": False, "insecure": True, "verify_ssl": False}),
]


@pytest.mark.parametrize("label,env,config", ATTEMPTS_TO_DISABLE, ids=[a[0] for a in ATTEMPTS_TO_DISABLE])
def test_tls_verification_cannot_be_turned_off(label, env, config, tls_files, tmp_path):
    ca, cert, key = tls_files
    if config:
        path = Path(os.environ["GIMP_OPENAI_CONFIG_DIR"]) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        path.chmod(0o600)
    jf = H.JobFolder(tmp_path)
    jf.add("img-1", H.textured(60, 80), H.rect_selection(60, 80, (20, 20, 20, 20)))
    job = jf.write()
    with WireServer(default=Reply(200, {"Content-Type": "application/json"}, _ok_answer(jf.items[0]["target"])),
                    tls=server_tls_context(cert, key)) as server:
        base = {k: "" for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "SSL_CERT_DIR")}
        run = H.run_job(job, server.url, **{**base, **env})
        error = run.result["items"][0]["error"] if run.result.get("items") else run.result["error"]
        assert error and error["code"] == "tls_error", (label, run.stdout)
        assert "127.0.0.1" in error["message"] and "certificate" in error["message"].lower(), error
        assert "REQUESTS_CA_BUNDLE" in error["hint"]
        assert server.requests == []  # nothing (no key, no pixels) went over the untrusted connection
        # and with its CA supplied, the same job works
        trusted = H.run_job(job, server.url, **{**base, **env, "REQUESTS_CA_BUNDLE": ca})
        assert trusted.result["ok"], trusted.stdout
        assert len(server.requests) == 1


def test_cli_has_no_option_to_skip_verification():
    for flag in ("--insecure", "--no-verify", "--no-tls-verify", "-k"):
        proc = subprocess.run([sys.executable, "-m", "gimp_openai", "edit", "x.png", flag, "--prompt", "p"],
                              capture_output=True, text=True, env=H.engine_env("http://127.0.0.1:9/v1"), timeout=60)
        assert proc.returncode != 0 and "unrecognized arguments" in proc.stderr, (flag, proc.stderr)


# --- URLs returned by a server -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url,code,words", [
    ("http://example.com/result.png", "malformed_response", ["refused to download", "example.com"]),
    ("file:///etc/passwd", "malformed_response", ["refused to download"]),
    ("ftp://127.0.0.1/result.png", "malformed_response", ["refused to download"]),
    ("LOOPBACK/huge.png", "malformed_response", ["68,157", "bytes"]),
])
def test_returned_urls_only_https_or_loopback_and_size_limited(url, code, words, tmp_path):
    huge = b"\x89PNG\r\n\x1a\n" + b"\x00" * (65 * 1024 * 1024)
    with WireServer(routes={"/v1/huge.png": Reply(200, {"Content-Type": "image/png"}, huge)}) as server:
        real = url.replace("LOOPBACK", server.url)
        server.routes["/v1/images/edits"] = Reply.json({"created": 1, "data": [{"url": real}]})
        jf = H.JobFolder(tmp_path)
        jf.add("img-1", H.textured(60, 80), H.rect_selection(60, 80, (20, 20, 20, 20)), model="gpt-image-1")
        run = H.run_job(jf.write(model="gpt-image-1"), server.url)
        error = run.result["items"][0]["error"]
        assert error["code"] == code, error
        for word in words:
            assert word in error["message"].lower(), error["message"]
        assert error["hint"]
        fetched = [r.path for r in server.requests]
        assert fetched.count("/v1/images/edits") == 1
        assert all(KEY not in r.raw_head for r in server.requests if r.path == "/v1/huge.png")
        assert not H.history_files()


# --- paths cannot escape ---------------------------------------------------------------------------------------


def test_crafted_names_cannot_escape_history_or_out(local_server, tmp_path):
    """Prompt, source name and item id full of ../, absolute paths and NULs: every file lands inside the
    history and out folders."""
    root = tmp_path / "root"
    job_dir = root / "job"
    job_dir.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*")}
    jf = H.JobFolder(job_dir)
    crafted = "../../../../../../tmp/evil/\x00/../x"
    jf.add("img", H.textured(60, 80), H.rect_selection(60, 80, (20, 20, 20, 20)))
    jf.items[0]["id"] = "../../escape-\x00-/etc/passwd"
    prompt = crafted.replace("\x00", "") + " /etc/passwd C:\\Windows\\x"
    run = H.run_job(jf.write(prompt=prompt, source_name="/etc/" + crafted), local_server.url)
    assert run.code == 0 and run.result["ok"], run.stdout
    history = Path(os.environ["GIMP_OPENAI_HISTORY_DIR"]).resolve()
    out = (job_dir / "out").resolve()
    for o in run.result["items"][0]["outputs"]:
        for key in ("layer_png", "mask_png"):
            assert Path(o[key]).resolve().parent == out
        assert Path(o["history_png"]).resolve().parent == history
    new = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in new if p.is_file() and not (p.resolve().is_relative_to(out) or
                                                      p.resolve().is_relative_to(job_dir.resolve()))]
    assert outside == []
    assert not Path("/tmp/evil").exists()
    sidecars = list(history.glob("*.json"))
    assert sidecars and all("\x00" not in p.name and ".." not in p.name for p in history.iterdir())


def test_key_never_in_debug_logs_of_a_job_with_retries_and_a_failure(start_local_server, tmp_path, caplog,
                                                                    monkeypatch, capsys):
    """Every logger at DEBUG (the engine's, requests', urllib3's) through a retried success and a refusal."""
    import io
    import logging

    from gimp_openai import jobs

    # a spec is used up by every request carrying it, whatever answers first: 500 (then gone), the retry refused
    server = start_local_server("--fault", "500;times=1", "--fault", "moderation_blocked;times=2;key=m")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    jf = H.JobFolder(tmp_path)
    jf.add("img-1", H.textured(60, 80, 1), H.rect_selection(60, 80, (20, 20, 20, 20)))
    jf.add("img-2", H.textured(60, 80, 2), H.rect_selection(60, 80, (20, 20, 20, 20)))
    out = io.StringIO()
    assert jobs.run_job(str(jf.write(concurrency=1)), out) == 0
    result = json.loads(out.getvalue().splitlines()[-1])
    assert [i["ok"] for i in result["items"]].count(True) == 1  # one refused (moderation), one retried to success
    assert any("retry" in r.getMessage().lower() for r in caplog.records)  # the logs did record the retry
    captured = capsys.readouterr()
    assert FAKE_KEY not in caplog.text + out.getvalue() + captured.out + captured.err
