"""What both GIMP hosts share: manifest, engine interpreter, job files, the engine subprocess, messages, names.

Standard library only, and Python 2.7 as well as Python 3: GIMP 2.10 runs plug-ins with its bundled Python 2.7
and GIMP 3 with Python 3, and both import this file. It knows nothing about GIMP; the hosts hand it plain
dicts and callbacks, so it is tested without GIMP under both Pythons.

The engine itself (``python3 -m gimp_openai``) runs in its own Python 3 environment, found through the record
the installer writes beside the host (or ``GIMP_OPENAI_PYTHON``). The API key only ever travels in the
subprocess environment or on its stdin, never in argv, files, names or messages.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

PROTOCOL_VERSION = 1
ENGINE_RECORD = "gimp-openai-engine.json"
MANIFEST_NAME = "procedures.json"
PYTHON_ENV = "GIMP_OPENAI_PYTHON"
MANIFEST_ENV = "GIMP_OPENAI_MANIFEST"
KEY_ENV = "OPENAI_API_KEY"
NAME_PREFIX = "OpenAI: "
PARASITE_NAME = "gimp-openai"
#: The preview layer's parasite (persistent: a run killed by Cancel cannot remove its preview, and the next run
#: finds it by this, even in an image saved and opened again) and its name, which says what it is to an artist
#: who finds it left behind.
PREVIEW_PARASITE = "gimp-openai-preview"
PREVIEW_NAME = u"OpenAI preview (not a result)"

_HERE = os.path.dirname(os.path.abspath(__file__))

try:  # Python 2
    text_type = unicode  # noqa: F821
except NameError:  # Python 3
    text_type = str


class HostError(Exception):
    """A failure the artist can act on: ``message`` says what happened, ``hint`` what to do, ``saved`` lists
    result files already written (paid for), so a message never loses them."""

    def __init__(self, message, hint="", code="host_error", saved=None):
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint or ""
        self.code = code
        self.saved = list(saved or [])

    @classmethod
    def from_engine(cls, error, default_code="engine_error"):
        """Build from the engine's ``{"code", "message", "hint", "saved"}`` error object."""
        error = error or {}
        return cls(to_text(error.get("message") or "The engine failed without saying why."),
                   to_text(error.get("hint") or ""), error.get("code") or default_code, error.get("saved") or [])


# ---------------------------------------------------------------------------------------------- text helpers

def to_text(value):
    """Text for names and messages under both Pythons (GIMP 2 hands plug-ins UTF-8 byte strings)."""
    if value is None:
        return u""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return text_type(value)
    except UnicodeDecodeError:  # Python 2: an exception whose message is UTF-8 bytes
        return str(value).decode("utf-8", "replace")  # novermin (Python 2 only)


_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{6,})")
_CONTROL = re.compile(u"[\u0000-\u001f\u007f-\u009f\u2028\u2029]+")


def env_secrets():
    """The key the plug-in can see (``OPENAI_API_KEY``), to hide from anything it shows or writes."""
    key = os.environ.get(KEY_ENV)
    return [key] if key else []


def redact(text, secrets=()):
    """Remove anything that is, or looks like, an API key from a text shown to the artist or written down."""
    text = to_text(text)
    for secret in secrets:
        secret = to_text(secret)
        if secret:
            text = text.replace(secret, u"[key hidden]")
    return _KEY_PATTERN.sub(u"[key hidden]", text)


def clean_line(text, secrets=()):
    """One line of plain text: control characters (newlines, escapes) become spaces, runs of spaces one."""
    text = _CONTROL.sub(u" ", redact(text, secrets))
    return u" ".join(text.split())


def clean_multiline(text, secrets=()):
    """Plain text that keeps its line breaks (a list of paths), each line cleaned like ``clean_line``."""
    lines = [u" ".join(_CONTROL.sub(u" ", line).split()) for line in redact(text, secrets).splitlines()]
    return u"\n".join(u"  " + line if k else line for k, line in enumerate(lines) if line)


def layer_name(prompt, index, count, max_prompt=40, path=None, secrets=()):
    """``OpenAI: <prompt...> (k/n)``: short enough for the Layers dialog, one line, never a key.

    ``path`` (the engine's ``variation-endpoint``/``variation-edit``) is added so the name says which
    variation path produced the layer.
    """
    prompt = clean_line(prompt, secrets)
    if len(prompt) > max_prompt:
        prompt = prompt[:max_prompt - 1].rstrip() + u"\u2026"
    if not prompt:
        prompt = u"(no prompt)"
    tag = u""
    if path and path.startswith("variation"):
        tag = u" [%s]" % ("variations endpoint" if path == "variation-endpoint" else "variation by edit")
    return u"%s%s%s (%d/%d)" % (NAME_PREFIX, prompt, tag, index, count)


def describe_error(error, secrets=()):
    """The plain message for an error: what happened, what to do, and which paid results are already saved."""
    if isinstance(error, HostError):
        message, hint, saved = error.message, error.hint, error.saved
    elif isinstance(error, dict):
        message = error.get("message") or "The engine failed without saying why."
        hint, saved = error.get("hint") or "", error.get("saved") or []
    else:
        message, hint, saved = to_text(error) or error.__class__.__name__, "", []
    parts = [redact(message, secrets).strip()]
    if hint:
        parts.append(u"What to do: " + redact(hint, secrets).strip())
    if saved:
        parts.append(u"Results already received (and paid for) are saved here:\n" +
                     u"\n".join(u"  " + to_text(p) for p in saved))
    return u"\n\n".join(parts)


# ------------------------------------------------------------------------------------------------- manifest

def find_manifest(extra_dirs=()):
    """The manifest: ``GIMP_OPENAI_MANIFEST``, beside the host (installed layout), or the repository's."""
    override = os.environ.get(MANIFEST_ENV)
    if override:
        return override
    candidates = []
    for folder in list(extra_dirs) + [_HERE]:
        candidates.append(os.path.join(folder, MANIFEST_NAME))
        candidates.append(os.path.join(folder, "manifest", MANIFEST_NAME))
    candidates.append(os.path.join(_HERE, os.pardir, os.pardir, "manifest", MANIFEST_NAME))
    for path in candidates:
        if os.path.isfile(path):
            return os.path.normpath(path)
    raise HostError("The plug-in's procedure list (%s) is missing." % MANIFEST_NAME,
                    "Reinstall the plug-in with scripts/install.", "manifest_missing")


def load_manifest(path=None):
    """The parsed manifest dict (see manifest/procedures.json)."""
    path = path or find_manifest()
    with open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def procedure(manifest, name):
    """One procedure's entry by its PDB name."""
    for proc in manifest["procedures"]:
        if proc["name"] == name:
            return proc
    raise KeyError(name)


def menu_order(manifest):
    """The menu as the artist should read it: [(section, [procedure names])], the sections in the order of
    the manifest's ``menu.sections`` (actions, results, setup) and, within one, the procedures in the
    manifest's order. A procedure whose ``menu_section`` is not listed is a manifest error, said at once."""
    sections = list(manifest.get("menu", {}).get("sections") or [])
    groups = dict((s, []) for s in sections)
    for proc in manifest["procedures"]:
        section = proc.get("menu_section")
        if section not in groups:
            raise ValueError("manifest procedure %s has menu_section %r, not one of %s"
                             % (proc["name"], section, ", ".join(sections)))
        groups[section].append(proc["name"])
    return [(s, groups[s]) for s in sections if groups[s]]


def menu_place(manifest, name):
    """Where procedure ``name`` sits in the menu as a tag that sorts the same in every locale:
    ``<section number>-<two-digit position>-<section>``, e.g. ``1-04-actions``. GIMP 3 sorts a plug-in's
    entries by g_utf8_collate_key of their menu path (app/menus/plug-in-menus.c), which in most locales skips
    punctuation ("3b-x" before "3-y" in en_US, after it in C); fixed-width digits decide the order before any
    punctuation is compared."""
    for s, (section, names) in enumerate(menu_order(manifest), 1):
        if name in names:
            position = names.index(name) + 1
            if s > 9 or position > 99:
                raise ValueError("the menu has too many sections or entries for a fixed-width place")
            return "%d-%02d-%s" % (s, position, section)
    raise KeyError(name)


def public_params(proc):
    """Parameters that are PDB arguments: everything except secrets (asked in a hidden field instead)."""
    return [p for p in proc["params"] if not p.get("secret")]


def advanced_params(proc):
    """The public parameters a dialog shows in its Advanced section (``"advanced": true`` in the manifest);
    the manifest lists them after the others, so the PDB order and both dialogs agree."""
    return [p for p in public_params(proc) if p.get("advanced")]


def basic_params(proc):
    """The public parameters a dialog shows first, above the Advanced section."""
    return [p for p in public_params(proc) if not p.get("advanced")]


def value_label(param, value):
    """The words a dialog shows for one value of a choice (the PDB argument stays the value itself)."""
    return to_text((param.get("value_labels") or {}).get(value, value))


def plain_label(label):
    """A label without its mnemonic underscore, for titles, tooltips and messages."""
    return to_text(label).replace(u"__", u"\0").replace(u"_", u"").replace(u"\0", u"_")


def defaults(proc):
    """{param name: default} for the public parameters."""
    return dict((p["name"], p["default"]) for p in public_params(proc))


def check_choice(param, value):
    """Validate a choice argument from a non-interactive caller, with a message that lists the values."""
    value = to_text(value)
    if value not in param["values"]:
        raise HostError(u"%s must be one of: %s (got %r)." % (param["name"], u", ".join(param["values"]), value),
                        u"Pass one of the listed values.", "invalid_argument")
    return value


# ------------------------------------------------------------------------------------------ engine location

def find_engine_python(search_dirs=()):
    """The engine's Python 3 interpreter: ``GIMP_OPENAI_PYTHON``, else the installer's record beside the host.

    The record (``gimp-openai-engine.json``) is ``{"python": "/path/to/venv/bin/python"}``.
    """
    override = os.environ.get(PYTHON_ENV)
    if override:
        return override
    for folder in list(search_dirs) + [_HERE]:
        record = os.path.join(folder, ENGINE_RECORD)
        if os.path.isfile(record):
            try:
                with open(record, "rb") as handle:
                    python = json.loads(handle.read().decode("utf-8")).get("python")
            except (IOError, OSError, ValueError):
                python = None
            if python and os.path.exists(python):
                return python
            raise HostError(u"The engine's Python recorded in %s (%s) is gone." % (record, to_text(python)),
                            u"Run scripts/install again to recreate the engine environment.", "engine_missing")
    raise HostError(u"The plug-in cannot find its engine (no %s beside the plug-in)." % ENGINE_RECORD,
                    u"Run scripts/install, which creates the engine environment and records where it is.",
                    "engine_missing")


def engine_env(api_key=None, base=None):
    """Environment for the engine: the caller's, plus the key when the host has one, UTF-8 output."""
    env = dict(base if base is not None else os.environ)
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONHOME", None)  # GIMP's bundled Python must not leak into the engine's interpreter
    env.pop("PYTHONPATH", None)
    if api_key:
        env[KEY_ENV] = api_key
    return env


# ------------------------------------------------------------------------------------------- job folders

def make_workdir():
    """A private temporary folder for one operation's PLAN/JOB files and PNGs."""
    path = tempfile.mkdtemp(prefix="gimp-openai-")
    os.chmod(path, 0o700)
    return path


def cleanup(workdir):
    """Remove an operation's temporary folder; results the artist keeps live in the history folder."""
    if workdir and os.path.isdir(workdir):
        shutil.rmtree(workdir, ignore_errors=True)


def write_json(path, obj):
    """Write a JSON file (UTF-8) for the engine."""
    data = json.dumps(obj, indent=1, sort_keys=True)
    if isinstance(data, text_type) and not isinstance(data, bytes):
        data = data.encode("utf-8")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


# -------------------------------------------------------------------------------------------- PNG writing

def to_rgba(data, channels):
    """8-bit pixel bytes with 1-4 channels (GRAY, GRAYA, RGB, RGBA) -> RGBA bytes, at C speed (slices)."""
    data = bytearray(data)
    if channels == 4:
        return data
    count = len(data) // channels
    out = bytearray(count * 4)
    if channels in (1, 2):
        for c in range(3):
            out[c::4] = data[0::channels]
    else:
        for c in range(3):
            out[c::4] = data[c::channels]
    out[3::4] = data[channels - 1::channels] if channels in (2, 4) else b"\xff" * count
    return out


def channel_of(data, channels, index=0):
    """One channel's bytes (e.g. the gray of a loaded mask layer, whatever the layer's type)."""
    return bytearray(data)[index::channels]


#: zlib level of the PNGs a host hands the engine: temp files, written once, read once, then deleted. Colour is
#: stored (level 0): zlib level 6 took ~0.3 s for a 1536x1536 crop in real GIMP, stored takes a copy, and the
#: engine decodes it ~4x faster. Masks and selections (mostly flat) at level 1: as fast, kilobytes not megabytes.
COLOUR_PNG_LEVEL = 0
GRAY_PNG_LEVEL = 1


def png_bytes(width, height, data, channels):
    """Encode 8-bit pixels as PNG without row filters, so hosts need no imaging library; zlib level
    ``COLOUR_PNG_LEVEL`` for RGB(A), ``GRAY_PNG_LEVEL`` for gray (see there why)."""
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    level = COLOUR_PNG_LEVEL if channels >= 3 else GRAY_PNG_LEVEL
    data = bytes(bytearray(data)) if not isinstance(data, bytes) else data
    stride = width * channels
    if len(data) != stride * height:
        raise ValueError("pixel data is %d bytes, expected %d" % (len(data), stride * height))
    rows = [b"\x00" + data[y * stride:(y + 1) * stride] for y in range(height)]

    def chunk(kind, payload):
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xffffffff)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), level)) +
            chunk(b"IEND", b""))


def read_png(path):
    """(width, height, channels, pixels) of an 8-bit PNG without row filters (what the engine writes for the
    hosts and what png_bytes writes), or None for any other PNG: hosts then need no imaging library and no
    GEGL operation to take the engine's results."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return None
    width, height, depth, color_type, _compression, _filter, interlace = header
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace:
        return None
    raw = bytearray(zlib.decompress(idat[0] if len(idat) == 1 else b"".join(idat)))
    stride = width * channels + 1
    if len(raw) != stride * height or raw[::stride] != bytearray(height):
        return None  # filtered rows: not one of ours
    del raw[::stride]  # each row's filter byte, in one pass in C (half the time of slicing each row)
    return width, height, channels, bytes(raw)


def write_png(path, width, height, data, channels):
    with open(path, "wb") as handle:
        handle.write(png_bytes(width, height, data, channels))
    return path


# ------------------------------------------------------------------------------------- engine subprocess

class Progress(object):
    """Turns the engine's per-item progress lines into one fraction and one message for one progress bar."""

    def __init__(self, item_ids=()):
        self.fractions = dict((i, 0.0) for i in item_ids)
        self.message = u""

    def update(self, line):
        item = line.get("item") or "_"
        try:
            fraction = float(line.get("fraction") or 0.0)
        except (TypeError, ValueError):
            fraction = 0.0
        if line.get("phase") == "done":
            fraction = 1.0
        self.fractions[item] = max(0.0, min(1.0, fraction))
        if line.get("message"):
            self.message = clean_line(line["message"])
            if len(self.fractions) > 1:
                done = sum(1 for f in self.fractions.values() if f >= 1.0)
                self.message = u"%s (%d of %d images done)" % (self.message, done, len(self.fractions))
        return self.fraction, self.message

    @property
    def fraction(self):
        if not self.fractions:
            return 0.0
        return sum(self.fractions.values()) / len(self.fractions)


def _parse_line(raw):
    try:
        obj = json.loads(raw.decode("utf-8", "replace").strip() or "null")
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def json_lines(stream):
    """The JSON objects an engine writes on ``stream``, one per line, as they arrive (other lines skipped)."""
    for raw in iter(stream.readline, b""):
        obj = _parse_line(raw)
        if obj is not None:
            yield obj


def run_engine(args, python=None, stdin_text=None, env=None):
    """Run ``python -m gimp_openai ARGS`` to its end (``key``, ``config``, ``models``).

    Returns ``(returncode, objects, stderr_text)``. The key goes in the environment (or on stdin for
    ``key set``), never in argv; stderr comes back with any key hidden.
    """
    python = python or find_engine_python()
    errfile = tempfile.TemporaryFile()
    try:
        proc = _start_engine(python, args, env if env is not None else engine_env(), errfile)
        try:
            if stdin_text is not None:
                proc.stdin.write(to_text(stdin_text).encode("utf-8"))
            proc.stdin.close()
            objects = list(json_lines(proc.stdout))
            proc.stdout.close()
            code = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        errfile.seek(0)
        return code, objects, redact(errfile.read().decode("utf-8", "replace"), env_secrets())
    finally:
        errfile.close()


def _start_engine(python, args, env, stderr):
    """``python -m gimp_openai ARGS`` with pipes for stdin and stdout, or a HostError saying what to do."""
    command = [_argv_word(a) for a in [python, "-m", "gimp_openai"] + list(args)]
    try:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env)
    except OSError as exc:
        raise HostError(u"The plug-in could not start its engine (%s): %s" % (to_text(python), to_text(exc)),
                        u"Run scripts/install again; it records the engine's Python for the plug-in.",
                        "engine_missing")


def _argv_word(word):
    """Python 2's subprocess wants byte strings (UTF-8 here); Python 3's wants text."""
    if sys.version_info[0] == 2 and isinstance(word, text_type):
        return word.encode("utf-8")
    return word


def _stop(proc):
    """Stop an engine run the host gave up on (cancel, error in a callback)."""
    try:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    except OSError:
        pass


def _wait_then_stop(proc, seconds):
    """Give an engine whose input ended the time to finish what it must (an image being saved), then stop it."""
    deadline = time.time() + seconds
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    _stop(proc)


def _tail(text, lines=6):
    text = to_text(text).strip().splitlines()
    return u"\n".join(text[-lines:])


def _no_answer(what, code, stderr_text):
    detail = _tail(stderr_text)
    message = u"The engine stopped without an answer to the %s (exit code %s)." % (what, code)
    if detail:
        message += u"\n" + detail
    return HostError(message, u"Run 'gimp-openai doctor' in a terminal to see what is wrong.", "engine_failed")


class EngineSession(object):
    """One engine process for one GIMP run (``python -m gimp_openai session``): the plan and the job are
    requests on its stdin, answered as JSON lines on its stdout. Starting Python with numpy and OpenCV costs
    about half a second; one process per run pays it once. Use it as a context manager: leaving the block
    ends the engine (at once, when leaving with an exception such as a cancel)."""

    def __init__(self, python=None, api_key=None):
        self.python = python or find_engine_python()
        self.api_key = api_key
        self.proc = None
        self.errfile = None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close(abort=kind is not None)
        return False

    def _start(self):
        started = _take_prestarted(self.python) if self.api_key is None else None
        if started is None:
            started = _open_engine(self.python, self.api_key)
        self.proc, self.errfile = started

    def request(self, command, path, is_answer, on_line=None, on_sent=None):
        """Send one request; call ``on_sent()`` once it is on its way and ``on_line(obj)`` for each JSON line
        until ``is_answer(obj)``; return that answer, or None when the engine ended first. If a callback raises
        (a cancel), the engine is stopped and the exception propagates.

        The engine takes the request's folder for the host's job folder and removes it if the host is killed
        before it says done; ``on_sent`` is where a host may start its progress (GIMP's Cancel button), so
        that no Cancel can come while the folder exists unknown to the engine."""
        if self.proc is None:
            self._start()
        line = json.dumps({"cmd": command, "path": to_text(path)}) + "\n"
        trace("send " + command)
        try:
            self.proc.stdin.write(line.encode("utf-8"))
            self.proc.stdin.flush()
        except (IOError, OSError):  # the engine is gone already: its stderr says why
            return None
        try:
            if on_sent is not None:
                on_sent()
            for obj in json_lines(self.proc.stdout):
                trace("engine %s %s" % (obj.get("phase") or "answer", obj.get("message") or ""))
                if is_answer(obj):
                    return obj
                if on_line is not None:
                    on_line(obj)
        except BaseException:
            self.close(abort=True)
            raise
        return None

    def stderr_text(self):
        if self.errfile is None:
            return u""
        self.errfile.seek(0)
        return redact(self.errfile.read().decode("utf-8", "replace"), [self.api_key] if self.api_key else ())

    def exit_code(self):
        """The engine's exit code once its output has ended (it is exiting then)."""
        return self.proc.wait() if self.proc is not None else None

    def close(self, abort=False):
        """End the engine: at end of input it exits by itself; ``abort`` stops it at once. A normal end says
        ``done`` first; without it the engine takes the end of input for a cancel (the host killed while it
        inserted the results) and removes the job folder and notes the paid images for the next run."""
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if not abort:  # the results are where they belong: the end of input is not a cancel
                    proc.stdin.write(b'{"cmd": "done"}\n')
                    proc.stdin.flush()
            except (IOError, OSError):
                pass
            try:
                proc.stdin.close()  # end of input: the engine ends, or abandons a running job itself
            except (IOError, OSError):
                pass
            if abort:
                _wait_then_stop(proc, 5.0)
            else:
                proc.wait()
            proc.stdout.close()
        if self.errfile is not None:
            self.errfile.close()
            self.errfile = None


#: (engine_identity, process, stderr file) of the engine session started with the plug-in (prestart_engine)
_PRESTARTED = []


def timings_file():
    """The file ``GIMP_OPENAI_HOST_TIMINGS`` names (set by the benchmarks and GUI tests, never by an install)."""
    return os.environ.get("GIMP_OPENAI_HOST_TIMINGS")


def record_timing(entry):
    """One JSON line in the timings file, when there is one; a measurement never stops a run."""
    path = timings_file()
    if path:
        try:
            with open(path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")
        except (IOError, OSError):
            pass


def trace(event):
    """Where a run's time goes, phase by phase, in the process that runs it: a timestamped timings line."""
    record_timing({"what": "trace", "event": event, "t": time.time()})


def prestart_engine(python_dirs=None):
    """Start the engine session as soon as GIMP starts the plug-in to run a procedure, before GIMP's own
    Python modules load and before the dialog opens: the engine's start (Python, numpy, OpenCV: about half a
    second) then overlaps them instead of following them. The run's first EngineSession takes it; a run that
    needs no engine (Settings, a refusal) leaves it, and it ends with the plug-in (end of its input).
    Never raises: a missing engine is reported by the run that needs it, with what to do."""
    try:
        python = find_engine_python(python_dirs or ())
        proc, errfile = _open_engine(python, None)
    except Exception:  # noqa: BLE001 - said later, by the run that needs the engine
        return
    _PRESTARTED.append((engine_identity(python), proc, errfile))


#: Held while a dialog's estimate talks to the prestarted session, and by the run that takes it over: the two
#: never write requests or read answers of the one process at the same time.
_PRESTARTED_LOCK = threading.Lock()


def _take_prestarted(python):
    with _PRESTARTED_LOCK:  # an estimate in flight is answered first (its answer is not the run's)
        while _PRESTARTED:
            identity, proc, errfile = _PRESTARTED.pop()
            if identity == engine_identity(python) and proc.poll() is None:
                return proc, errfile
            try:
                proc.stdin.close()  # end of input: an engine started for another environment ends
            except (IOError, OSError):
                pass
            if errfile is not None:
                errfile.close()
    return None


def estimate(plan_dict, python=None):
    """The engine's estimate for a plan (``{"cmd": "estimate", "plan": ...}``), asked of the engine prestarted
    with the plug-in (opened here if there is none, and left for the run to take): what a dialog shows while
    the artist changes n, quality, model or size. Blocks until the answer: call it off the GUI's thread. None
    when the engine cannot say (not installed, ended, a malformed answer): a dialog then shows no figure and
    the run itself still asks before paying."""
    try:
        python = python or find_engine_python()
    except HostError:
        return None
    with _PRESTARTED_LOCK:
        started = _PRESTARTED[-1] if _PRESTARTED else None
        if started is None or started[0] != engine_identity(python) or started[1].poll() is not None:
            try:
                proc, errfile = _open_engine(python, None)
            except (HostError, IOError, OSError):
                return None
            started = (engine_identity(python), proc, errfile)
            _PRESTARTED.append(started)
        proc = started[1]
        line = json.dumps({"cmd": "estimate", "plan": dict(plan_dict, version=PROTOCOL_VERSION)}) + "\n"
        try:
            proc.stdin.write(line.encode("utf-8"))
            proc.stdin.flush()
            for obj in json_lines(proc.stdout):
                if obj.get("type") in ("estimate", "session"):
                    return obj if obj.get("ok") else None
        except (IOError, OSError, ValueError):
            pass
    return None


def _open_engine(python, api_key):
    """(process, stderr file) of an engine session: the warm engine an earlier run left, when one waits for
    this environment; else a new process that leaves one behind when its session ends."""
    socket_path = warm_socket(python) if api_key is None else None
    if socket_path is not None:
        connection = _WarmConnection.open(socket_path)
        if connection is not None:
            return connection, None
    args = ["session"]
    if socket_path is not None:
        args += ["--warm", socket_path, "--warm-seconds", str(warm_seconds())]
    errfile = tempfile.TemporaryFile()
    return _start_engine(python, args, engine_env(api_key), errfile), errfile


# ------------------------------------------------------------------------------------------ warm engine

#: Seconds a warm engine waits for the next run (0: none is kept). An engine kept warm holds ~150 MB.
WARM_SECONDS_ENV = "GIMP_OPENAI_WARM_SECONDS"
DEFAULT_WARM_SECONDS = 900
#: What the engine's behaviour depends on besides its code: a warm engine serves only runs that agree.
_WARM_ENV_PREFIXES = ("OPENAI_", "GIMP_OPENAI_", "AZURE_OPENAI_")
_WARM_ENV_NAMES = ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "REQUESTS_CA_BUNDLE",
                   "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                   "https_proxy", "no_proxy", "PYTHON_KEYRING_BACKEND", "LANG", "LC_ALL")


def engine_identity(python):
    """What an engine process's answers depend on besides the request: the Python, the installation and the
    environment it was started with. A started engine (warm or prestarted) serves only a run that agrees; one
    started for another server, key or settings folder would answer for them. A digest: the facts include the
    key when the environment has one."""
    import hashlib

    facts = [to_text(python)]
    record = os.path.join(_HERE, ENGINE_RECORD)  # rewritten by every installation
    if os.path.isfile(record):
        facts.append(u"%r" % os.stat(record).st_mtime)
    for name in sorted(os.environ):
        if name.startswith(_WARM_ENV_PREFIXES) or name in _WARM_ENV_NAMES:
            facts.append(u"%s=%s" % (to_text(name), to_text(os.environ[name])))
    return hashlib.sha256(u"\n".join(facts).encode("utf-8")).hexdigest()


def warm_seconds():
    try:
        return max(0, int(float(os.environ.get(WARM_SECONDS_ENV, DEFAULT_WARM_SECONDS))))
    except ValueError:
        return DEFAULT_WARM_SECONDS


def warm_socket(python):
    """The socket of the warm engine for this Python, installation and environment, in a folder only this
    user can open; None where there are no Unix sockets or no such folder can be had (then every run starts
    its own engine, as before)."""
    import socket

    if not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid") or warm_seconds() <= 0:
        return None
    digest = engine_identity(python)[:20]
    folder = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), "gimp-openai-%d" % os.getuid())
    try:
        if not os.path.isdir(folder):
            os.mkdir(folder, 0o700)
        info = os.lstat(folder)
        if info.st_uid != os.getuid() or info.st_mode & 0o077 or not os.path.isdir(folder):
            return None
    except OSError:
        return None
    return os.path.join(folder, "engine-%s.sock" % digest)


class _SocketInput(object):
    """The engine's input over the socket: closing it ends the input (the socket stays open for answers)."""

    def __init__(self, sock):
        self.sock = sock
        self.handle = sock.makefile("wb")

    def write(self, data):
        self.handle.write(data)

    def flush(self):
        self.handle.flush()

    def close(self):
        import socket

        try:
            self.handle.close()
            self.sock.shutdown(socket.SHUT_WR)
        except (IOError, OSError):
            pass


class _WarmConnection(object):
    """A warm engine's session over its socket, used exactly as an engine process (stdin, stdout, poll,
    wait, terminate): EngineSession does not know the difference."""

    def __init__(self, sock, stdout):
        self.sock, self.stdout = sock, stdout
        self.stdin = _SocketInput(sock)
        self.returncode = None

    @classmethod
    def open(cls, path):
        """The connection, once the engine said hello (it serves one run at a time: a busy one is not waited
        for), or None."""
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(0.5)
            sock.connect(path)
            stdout = sock.makefile("rb")
            hello = json.loads(stdout.readline().decode("utf-8") or "{}")
            if hello.get("type") != "hello":
                raise ValueError(hello)
            sock.settimeout(None)
            return cls(sock, stdout)
        except (IOError, OSError, ValueError):
            sock.close()
            return None

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        """The engine ends the connection when its session is over."""
        try:
            while self.stdout.read(65536):
                pass
        except (IOError, OSError):
            pass
        self._closed(0)
        return 0

    def terminate(self):
        import socket

        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (IOError, OSError):
            pass
        self._closed(-15)

    kill = terminate

    def _closed(self, code):
        if self.returncode is None:
            self.returncode = code
        self.sock.close()


def _in_session(session, python, api_key, work):
    """Run ``work(session)`` in the given session, or in a session of its own that ends afterwards."""
    if session is not None:
        return work(session)
    with EngineSession(python=python, api_key=api_key) as own:
        return work(own)


def _with_notices(error, answer):
    """Keep the notices an engine answer carried (paid results of a cancelled run) on the error it became."""
    error.notices = list(answer.get("notices") or [])
    return error


def plan(plan_dict, workdir, python=None, api_key=None, session=None, on_sent=None):
    """Step 1 of the protocol: ask the engine which region of each item to export. Returns its answer.
    ``on_sent()`` is called once the request is on its way (EngineSession.request)."""
    path = write_json(os.path.join(workdir, "plan.json"), dict(plan_dict, version=PROTOCOL_VERSION))

    def work(engine):
        answer = engine.request("plan", path, lambda obj: obj.get("type") in ("plan", "session"), on_sent=on_sent)
        if answer is None:
            raise _no_answer(u"plan", engine.exit_code(), engine.stderr_text())
        return answer
    answer = _in_session(session, python, api_key, work)
    if not answer.get("ok"):
        raise _with_notices(HostError.from_engine(answer.get("error"), "plan_failed"), answer)
    return answer


def run_job(job_dict, workdir, python=None, api_key=None, on_progress=None, session=None, on_partial=None,
            on_sent=None):
    """Step 2: write JOB.json, run the job, feed progress to ``on_progress(fraction, message)`` and each
    streamed preview line (``{"type": "partial", ...}``, and ``"partial_place"``: where they will go) to
    ``on_partial(line)``; ``on_sent()`` once the request is on its way.

    Returns the result line (``{"type": "result", "ok", "items", "error"}``); per-item failures stay in it
    for the host to report, only a job with no result at all raises.
    """
    path = write_json(os.path.join(workdir, "job.json"), dict(job_dict, version=PROTOCOL_VERSION))
    tracker = Progress([item["id"] for item in job_dict.get("items", [])])

    def on_line(obj):
        if obj.get("type") == "progress" and on_progress is not None:
            on_progress(*tracker.update(obj))
        elif obj.get("type") in ("partial", "partial_place") and on_partial is not None:
            on_partial(obj)

    def work(engine):
        result = engine.request("job", path, lambda obj: obj.get("type") in ("result", "session"), on_line,
                                on_sent)
        if result is None:
            raise _no_answer(u"job", engine.exit_code(), engine.stderr_text())
        if result.get("type") == "session":
            raise _with_notices(HostError.from_engine(result.get("error")), result)
        return result
    return _in_session(session, python, api_key, work)


def failed_items(result):
    """[(item id, error dict)] for every item that failed, and the job error when no item says more."""
    failures = [(i.get("id"), i.get("error") or {}) for i in result.get("items", []) if not i.get("ok")]
    if not failures and not result.get("ok") and result.get("error"):
        failures.append((None, result["error"]))
    return failures


def model_gone(result):
    """The engine's error when the whole job failed because its model was shut down (``model_not_found`` for
    every item, or for the job): a batch can then offer the switch like a single image does. Else None."""
    failures = failed_items(result)
    if not failures or any(i.get("ok") for i in result.get("items", [])):
        return None
    if all((error or {}).get("code") == "model_not_found" for _id, error in failures):
        return failures[0][1]
    return None


def summary(result, names, secrets=(), quality=u""):
    """The batch summary: one line per item, what succeeded (how many layers, what they cost) and what failed
    and why; the head line says what the whole batch cost."""
    lines = []
    for item in result.get("items", []):
        name = to_text(names.get(item.get("id"), item.get("id")))
        if item.get("ok"):
            count = len(item.get("outputs") or [])
            cost = cost_line(item.get("cost"), count, item.get("model") or u"", quality)
            lines.append(u"\u2713 %s: %d layer(s) added%s" % (name, count, u", " + cost if cost else u""))
        else:
            lines.append(u"\u2717 %s: %s" % (name, describe_error(item.get("error") or {}, secrets)))
    done = sum(1 for i in result.get("items", []) if i.get("ok"))
    head = u"OpenAI batch: %d of %d images done." % (done, len(result.get("items", [])))
    images = sum(len(i.get("outputs") or []) for i in result.get("items", []))  # paid, inserted or not
    total = cost_line(result.get("cost") or add_costs([i.get("cost") for i in result.get("items", [])]),
                      images, result.get("model") or u"", quality)
    if total:
        head += u" Cost: %s." % total
    if not result.get("items") and result.get("error"):
        lines.append(describe_error(result["error"], secrets))
    warnings = warnings_text(result, secrets)
    if warnings:
        lines.append(warnings)
    return u"\n".join([head] + lines)


def warnings_text(result, secrets=()):
    """What the artist must read even when everything worked: where paid images went when the history folder
    was full or unwritable. One line per distinct warning; empty when there is none."""
    seen = []
    for warning in list(result.get("warnings") or []) + [w for item in result.get("items") or []
                                                        for w in item.get("warnings") or []]:
        text = warning.get("message") if isinstance(warning, dict) else warning  # {"code", "message"}
        line = clean_line(text, secrets)
        if line and line not in seen:
            seen.append(line)
    return u"\n".join(seen)


def parasite_data(prompt, model, output, secrets=(), cost=None):
    """What the result layer's parasite records: prompt, model, request id, path, history file (no key), and
    ``cost``: this layer's share of what its request cost (``cost_share``), so the layer says what it cost long
    after the run's message is gone."""
    record = {"prompt": redact(prompt, secrets), "model": to_text(model),
              "request_id": output.get("request_id"), "path": output.get("path"),
              "history_png": output.get("history_png"), "notes": redact(output.get("notes") or u"", secrets),
              "report": redact(output.get("report") or u"", secrets)}
    if cost is not None:
        record["cost"] = cost
    return json.dumps(record, sort_keys=True)


# ------------------------------------------------------------------------------------------------------- cost

def dollars(usd):
    """``$1.25``, ``$0.211``, ``$0.0532``: the engine's way (pricing.dollars), so a one-image figure is never
    shown as $0.00 and the dialog, the message and the CLI agree."""
    usd = float(usd)
    if usd >= 1:
        return u"${:,.2f}".format(usd)
    if usd >= 0.1:
        return u"$%.3f" % usd
    return u"$%.4f" % usd


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _tokens(cost):
    return int(round((_number(cost.get("input_tokens")) or 0) + (_number(cost.get("output_tokens")) or 0)))


def cost_line(cost, images, model=u"", quality=u""):
    """One short line for a status bar, a message and a summary: ``$0.0532 (2 images, gpt-image-2, medium)``;
    tokens only when nobody knows the model's price; None when the server said nothing of its usage."""
    if not isinstance(cost, dict):
        return None
    model = clean_line(cost.get("model") or model)
    quality = clean_line(quality)
    what = [u"%d image%s" % (images, u"" if images == 1 else u"s")]
    what += [model] if model else []
    what += [u"auto quality" if quality == u"auto" else quality] if quality else []
    usd = _number(cost.get("usd"))
    if usd is None:
        return u"{:,} tokens ({}; no price known for this model)".format(_tokens(cost), u", ".join(what))
    return u"%s (%s)" % (dollars(usd), u", ".join(what))


def cost_share(cost, parts, model=u"", quality=u""):
    """One layer's share of the cost of the request that made ``parts`` images, for its parasite: the share
    and the whole (the shares add up to what was paid), the tokens, the price's date, the line shown."""
    if not isinstance(cost, dict):
        return None
    parts = max(1, int(parts))
    usd = _number(cost.get("usd"))
    share = {"usd": round(usd / parts, 8) if usd is not None else None,
             "request_usd": usd, "images_in_request": parts,
             "input_tokens": (_number(cost.get("input_tokens")) or 0) / float(parts),
             "output_tokens": (_number(cost.get("output_tokens")) or 0) / float(parts),
             "model": to_text(cost.get("model") or model), "price_as_of": cost.get("price_as_of"),
             "quality": to_text(quality)}
    share["text"] = cost_line(cost, parts, model, quality)
    return share


def add_costs(costs):
    """The sum of several items' costs (a batch): dollars only when every one is priced, else tokens."""
    costs = [c for c in costs if isinstance(c, dict)]
    if not costs:
        return None
    usds = [_number(c.get("usd")) for c in costs]
    models = set(to_text(c.get("model") or u"") for c in costs)
    return {"usd": sum(usds) if None not in usds else None,
            "input_tokens": sum(_number(c.get("input_tokens")) or 0 for c in costs),
            "output_tokens": sum(_number(c.get("output_tokens")) or 0 for c in costs),
            "model": models.pop() if len(models) == 1 else u""}


def estimate_words(estimate):
    """The estimate before sending, in words: ``about $0.0532 (up to $0.211 if the model picks high quality)``,
    or tokens when no price is known."""
    estimate = estimate or {}
    usd, upper = _number(estimate.get("usd")), _number(estimate.get("usd_upper"))
    if usd is None:
        tokens = int((_number(estimate.get("input_tokens")) or 0) + (_number(estimate.get("output_tokens")) or 0))
        return u"about {:,} tokens (no price known for this model)".format(tokens) if tokens else \
            u"cost unknown (no price known for this model)"
    text = u"about %s" % dollars(usd)
    if upper is not None and upper > usd * 1.001:
        text += u" (up to %s if the model picks high quality)" % dollars(upper)
    return text


def estimate_subject(estimate):
    """What an estimate is for, in words: ``3 images``, or for Expand Canvas (one request per tile of the new
    area) ``2 requests``."""
    tiles = int(_number(estimate.get("tiles")) or 0)
    if tiles:
        return u"%d request%s" % (tiles, u"" if tiles == 1 else u"s")
    images = int(_number(estimate.get("images")) or 0)
    return u"%d image%s" % (images, u"" if images == 1 else u"s")


def estimate_label(answer):
    """What a dialog shows before sending, in short lines (a dialog is narrow, and a line broken inside a model
    id reads badly): about what it costs for how many images of which size; the model and quality; what
    ``auto`` quality may cost at most; a warning when that is above the artist's limit. ``answer``: the
    engine's plan (or estimate) answer."""
    estimate = (answer or {}).get("estimate") or {}
    what = estimate_subject(estimate)
    if estimate.get("tiles") is not None:
        tiles = int(_number(estimate.get("tiles")) or 0)
        if not tiles:
            return u"Estimated cost: nothing to send (the canvas would not grow)"
        if tiles > 1:
            what += u" (tiles of the new area)"
    if estimate.get("size"):
        what += u" of %s" % clean_line(estimate["size"])
    quality = clean_line(estimate.get("quality") or u"")
    details = [clean_line(answer.get("model") or estimate.get("model") or u""),
               (u"automatic" if quality == u"auto" else quality) + u" quality" if quality else u""]
    usd, upper = _number(estimate.get("usd")), _number(estimate.get("usd_upper"))
    if usd is None:
        tokens = int((_number(estimate.get("input_tokens")) or 0) + (_number(estimate.get("output_tokens")) or 0))
        lines = [u"Estimated: about {:,} tokens for {}".format(tokens, what), u", ".join(d for d in details if d),
                 u"No price is known for this model, so no dollar figure."]
    else:
        lines = [u"Estimated cost: about %s for %s" % (dollars(usd), what), u", ".join(d for d in details if d)]
        if upper is not None and upper > usd * 1.001:
            lines.append(u"Up to %s if the model picks high quality." % dollars(upper))
    if estimate.get("over_limit") and _number(estimate.get("max_cost")) is not None:
        lines.append(u"Above your limit of %s: you will be asked before it is sent." % dollars(estimate["max_cost"]))
    return u"\n".join(line for line in lines if line)


def reports_text(outputs, secrets=()):
    """What alignment and tone match found and corrected, one line for a status bar or message:
    ``OpenAI: shifted 5.8, -3.9 px; scale 1.012; tone dE 7.4 -> 1.1`` (``k/n: ...`` per result when they differ)."""
    reports = [(i + 1, clean_line(o.get("report") or u"", secrets)) for i, o in enumerate(outputs)]
    reports = [(k, r) for k, r in reports if r]
    if not reports:
        return u""
    if len(set(r for _k, r in reports)) == 1:
        return u"OpenAI: " + reports[0][1]
    return u"OpenAI: " + u" | ".join(u"%d/%d: %s" % (k, len(outputs), r) for k, r in reports)


def history_list(python=None, limit=None, thumbnails=False):
    """The newest results in the history folder (``gimp-openai history list --json``): ``{"entries": [...],
    "notes": [...], "folder", "more"}``; a HostError when the engine cannot say."""
    args = ["--json", "history", "list"] + (["--limit", str(int(limit))] if limit else []) + \
        (["--thumbnails"] if thumbnails else [])
    code, objects, stderr_text = run_engine(args, python=python, env=engine_env(None))
    answer = objects[-1] if objects else {}
    if code != 0 or not answer.get("ok"):
        raise _engine_said(answer, stderr_text, u"The history could not be read.")
    return answer


def history_layer(entry_id, path, python=None):
    """One history result as the layer it was (``gimp-openai history layer ID -o PATH --json``): its PNG (one
    of the engine's, readable by read_png), where it goes, its name and description."""
    code, objects, stderr_text = run_engine(["--json", "history", "layer", to_text(entry_id), "-o", path],
                                            python=python, env=engine_env(None))
    answer = objects[-1] if objects else {}
    if code != 0 or not answer.get("ok"):
        raise _engine_said(answer, stderr_text, u"The result could not be read from the history folder.")
    return answer


def _engine_said(answer, stderr_text, fallback):
    error = answer.get("error") if isinstance(answer.get("error"), dict) else None
    if error:
        return HostError.from_engine(error, "history_error")
    return HostError(fallback + (u"\n" + _tail(stderr_text, 3) if _tail(stderr_text, 3) else u""),
                     u"Run 'gimp-openai history list' in a terminal to see what is wrong.", "history_error")


def store_key(key, python=None):
    """Store the API key through the engine (``key set`` reads it from stdin): keyring, else a 0600 file.
    Returns where it went, in words for the artist."""
    code, objects, stderr_text = run_engine(["--json", "key", "set"], python=python, stdin_text=key,
                                            env=engine_env(None))
    if code != 0:
        raise HostError(u"The key could not be stored: %s" % (redact(_tail(stderr_text, 3), [key]) or code),
                        u"Check that the engine is installed (gimp-openai doctor).", "key_not_stored")
    where = to_text(next((o.get("stored_in") for o in objects if o.get("stored_in")), u""))
    if where == u"keyring":
        return u"the system keyring"
    return u"%s (readable only by you)" % where if where else u"the engine's settings"


#: The engine's default server; the Settings dialog shows it as an empty field ("empty = OpenAI").
OPENAI_URL = u"https://api.openai.com/v1"


def saved_settings(python=None):
    """The settings the engine has on file (``config show``), as the Settings dialog shows them: OpenAI's
    server as an empty URL."""
    code, objects, _stderr = run_engine(["config", "show", "--json"], python=python, env=engine_env(None))
    answer = objects[-1] if objects and code == 0 else {}
    settings = dict(answer.get("settings") or {})
    if to_text(settings.get("base_url") or u"").rstrip(u"/") == OPENAI_URL:
        settings["base_url"] = u""
    return settings


def config_args(changes):
    """``config set`` arguments for non-secret settings: one ``KEY=VALUE`` word each (sorted, one line each)."""
    args = ["config", "set"]
    for name in sorted(changes):
        if name == "api_key":
            raise HostError(u"The API key is never passed as a setting.", u"Use the key field instead.",
                            "settings_error")
        value = changes[name]
        if isinstance(value, (list, tuple)):
            value = u",".join(to_text(v) for v in value)
        args.append(u"%s=%s" % (to_text(name), clean_line(value)))
    return args


def save_settings(changes, python=None):
    """Save non-secret settings (base_url, default_model, history_dir, ...) with the engine's
    ``gimp-openai config set KEY=VALUE ...``; the key is never one of them (``store_key`` sends it on stdin)."""
    if not changes:
        return
    code, _objects, stderr_text = run_engine(config_args(changes), python=python, env=engine_env(None))
    if code != 0:
        detail = _tail(stderr_text, 2).replace(u"gimp-openai: error: ", u"")
        raise HostError(u"The settings could not be saved: %s" % (redact(detail) or code),
                        u"Check the values (the server URL must start with https://, or http:// on this "
                        u"computer).", "settings_error")


def test_connection(python=None):
    """Ask the server for its image models now (never the cached list). Returns (ok, text for the artist
    naming the server asked, model ids)."""
    code, objects, stderr_text = run_engine(["--json", "models", "--refresh"], python=python)
    answer = objects[-1] if objects else {}
    url = to_text(answer.get("base_url") or u"the server")
    if code == 0 and answer.get("ok") and not answer.get("from_cache"):
        models = [m for m in answer.get("models") or [] if isinstance(m, dict)]
        names = []
        for m in models:
            name = to_text(m.get("id"))
            if m.get("shutdown_date"):
                name += u" (retires %s)" % to_text(m["shutdown_date"])
            names.append(name)
        return (True, u"Connected to %s. Image models offered: %s" % (url, u", ".join(names) or u"none"),
                [to_text(m.get("id")) for m in models])
    if code == 0 and answer.get("from_cache"):
        return False, (u"%s did not answer just now; the models listed are from an earlier visit." % url), []
    error = answer.get("error") if isinstance(answer.get("error"), dict) else None
    if error:
        return False, describe_error(error), []
    return False, u"The connection test failed.\n" + (_tail(stderr_text) or u"(no details)"), []
