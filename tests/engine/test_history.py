"""History: atomic, never overwrites, safe names, no key in sidecars, clear errors on unwritable folders."""

from __future__ import annotations

import errno
import json
import os
import threading

import pytest
from gimp_openai import atomic
from gimp_openai.atomic import write_bytes_atomic, write_json_atomic
from gimp_openai.errors import OutputNotWritableError
from gimp_openai.history import History, clean_meta, slugify

from tests.conftest import FAKE_KEY

META = {"prompt": "a red kite", "model": "gpt-image-2", "size": "1024x1024", "request_id": "req_1",
        "operation": "edit", "source_name": "photo.xcf", "place": {"x": 1, "y": 2, "width": 3, "height": 4},
        "k": 1, "n": 2}


def test_save_writes_image_and_sidecar(tmp_path):
    path = History(tmp_path).save(b"PNGDATA", meta=META)
    assert path.parent == tmp_path and path.read_bytes() == b"PNGDATA"
    assert path.name.endswith("-a-red-kite-1of2.png")
    sidecar = json.loads(path.with_suffix(".json").read_text("utf-8"))
    for key, value in META.items():
        assert sidecar[key] == value
    assert sidecar["file"] == path.name and sidecar["bytes"] == 7 and "time" in sidecar
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_default_folder_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP_OPENAI_HISTORY_DIR", str(tmp_path / "h"))
    assert History().save(b"x", meta={}).parent == tmp_path / "h"


def test_never_overwrites(tmp_path):
    history = History(tmp_path)
    paths = [history.save(bytes([i]), meta=META) for i in range(5)]
    assert len(set(paths)) == 5
    assert sorted(p.read_bytes() for p in paths) == [bytes([i]) for i in range(5)]


def test_concurrent_saves_keep_every_image(tmp_path):
    history = History(tmp_path)
    out: list = []
    threads = [threading.Thread(target=lambda i=i: out.append(history.save(bytes([i]) * 10, meta=META)))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 16 and len(list(tmp_path.glob("*.png"))) == 16


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("A red kite!", "a-red-kite"),
        ("../../etc/passwd", "etc-passwd"),
        ("/absolute/path", "absolute-path"),
        ("nul\x00byte", "nul-byte"),
        ("\u202eevil\u202d.png", "evil-png"),  # right-to-left override
        ("\uff0e\uff0e\uff0fup", "up"),  # full-width ../
        ("Café crème", "cafe-creme"),
        ("日本語", "image"),
        ("", "image"),
        ("..", "image"),
        ("x" * 300, "x" * 48),
        ("CON", "con"),
    ],
)
def test_slugify(prompt, expected):
    assert slugify(prompt) == expected


@pytest.mark.parametrize("prompt", ["../../escape", "/etc/passwd", "a\x00b", "..\\..\\win", "\u2025/\u2024"])
@pytest.mark.parametrize("ext", ["png", "../png", "/x", "p\x00ng", "verylongext"])
def test_crafted_names_stay_inside(tmp_path, prompt, ext):
    folder = tmp_path / "history"
    path = History(folder).save(b"x", meta={"prompt": prompt}, ext=ext)
    assert path.resolve().parent == folder.resolve()
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} == {folder}


def test_sidecar_never_holds_the_key(tmp_path):
    meta = dict(META, api_key=FAKE_KEY, headers={"Authorization": f"Bearer {FAKE_KEY}"},
                notes=[f"server said key {FAKE_KEY} is bad"], prompt=f"kite {FAKE_KEY}")
    path = History(tmp_path).save(b"x", meta=meta)
    text = path.with_suffix(".json").read_text("utf-8") + path.name
    assert FAKE_KEY not in text and "sk-test" not in text
    assert "[redacted key]" in text


def test_clean_meta_handles_odd_values(tmp_path):
    assert clean_meta({"p": tmp_path, "t": (1, 2), "none": None, "token": "x"}) == {
        "p": str(tmp_path), "t": [1, 2], "none": None}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputNotWritableError) as info:
            History(folder).save(b"x", meta=META)
        assert str(folder) in info.value.message
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_permission_denied_simulated(tmp_path, monkeypatch):
    """The read-only case for a root test runner, where chmod does not bite."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    with pytest.raises(OutputNotWritableError, match="Permission denied") as info:
        History(tmp_path).save(b"x", meta=META)
    assert str(tmp_path) in info.value.message and info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_uncreatable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="history folder"):
        History(blocker / "history").save(b"x", meta=META)


def _disk_full_after(limit: int, monkeypatch):
    real_write = os.write
    state = {"left": limit}

    def fake_write(fd, data):
        if state["left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), state["left"])
        state["left"] -= n
        return real_write(fd, bytes(data[:n]))

    monkeypatch.setattr(atomic.os, "write", fake_write)


@pytest.mark.parametrize("limit", [0, 1000, 100_000])
def test_disk_full_leaves_nothing_half_written(tmp_path, monkeypatch, limit):
    _disk_full_after(limit, monkeypatch)
    image = os.urandom(50_000)
    try:
        path = History(tmp_path).save(image, meta=META)
    except OutputNotWritableError as exc:
        assert str(tmp_path) in exc.message and "No space left" in exc.message
        for p in tmp_path.iterdir():  # whatever exists is complete
            assert not p.name.endswith(".part")
            if p.suffix == ".png":
                assert p.read_bytes() == image and exc.saved == [str(p)]
    else:
        assert limit == 100_000 and path.read_bytes() == image
    assert not list(tmp_path.glob(".*"))


def test_fsync_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OutputNotWritableError):
        write_bytes_atomic(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_overwrite_and_exclusive(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"a": "é"})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text("utf-8")) == {"a": 2}
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"x", overwrite=False)
    assert json.loads(target.read_text("utf-8")) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# --- the rescue chain (history.save_all) ---------------------------------------------------------------------


class _FullAfter:
    """A History double whose folder takes ``room`` images, then reports ENOSPC (as History.save does)."""

    def __init__(self, folder, room=0, sidecar_fails=False):
        self.folder = folder
        self.room = room
        self.sidecar_fails = sidecar_fails

    def save(self, data, *, meta, ext="png"):
        if self.room <= 0:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as exc:
                raise OutputNotWritableError(f"Cannot write in {self.folder}") from exc
        self.room -= 1
        path = History(self.folder).save(data, meta=meta)
        if self.sidecar_fails:
            path.with_suffix(".json").unlink()
            raise OutputNotWritableError("sidecar", saved=[str(path)])
        return path


def test_save_all_all_in_history_says_nothing(tmp_path):
    from gimp_openai.history import save_all

    kept = save_all(History(tmp_path / "h"), [(b"A", META), (b"B", META)], [tmp_path / "out"])
    assert [p.parent for p in kept.paths] == [tmp_path / "h"] * 2 and kept.note == ""
    assert not (tmp_path / "out").exists()


def test_save_all_full_history_goes_to_the_fallback_and_stays_together(tmp_path):
    from gimp_openai.history import save_all

    kept = save_all(_FullAfter(tmp_path / "h", room=1), [(b"A", META), (b"B", META), (b"C", META)],
                    [tmp_path / "out"])
    assert [p.read_bytes() for p in kept.paths] == [b"A", b"B", b"C"]
    assert [p.parent.name for p in kept.paths] == ["h", "out", "out"]
    assert kept.note == (f"History folder {tmp_path / 'h'} is full; 2 of the 3 images were saved to "
                         f"{tmp_path / 'out'} instead.")
    sidecar = json.loads(kept.paths[1].with_suffix(".json").read_text())
    assert sidecar["rescued_from"] == str(tmp_path / "h") and sidecar["rescue_reason"] == "history folder is full"


def test_save_all_sidecar_failure_keeps_the_whole_image_and_says_so(tmp_path):
    from gimp_openai.history import save_all

    kept = save_all(_FullAfter(tmp_path / "h", room=1, sidecar_fails=True), [(b"A", META), (b"B", META)],
                    [tmp_path / "out"])
    assert [p.read_bytes() for p in kept.paths] == [b"A", b"B"]
    assert kept.paths[0].parent == tmp_path / "h" and kept.paths[1].parent == tmp_path / "out"
    assert "without its description" in kept.note and str(kept.paths[0]) in kept.note
    assert kept.saved == [str(p) for p in kept.paths]


def test_save_all_memory_is_the_last_resort(tmp_path, monkeypatch):
    from gimp_openai.history import save_all

    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    monkeypatch.setenv("GIMP_OPENAI_RESCUE_DIR", str(blocker / "rescue"))
    kept = save_all(_FullAfter(tmp_path / "h"), [(b"A", META)], [blocker / "out"])
    assert kept.paths == [None] and kept.saved == []
    assert kept.note.startswith("1 image could not be written anywhere (history folder ")
    assert "it exists only in this result" in kept.note and str(blocker / "rescue") in kept.note


def test_rescue_dir_defaults_to_system_temp(monkeypatch):
    import tempfile

    from gimp_openai.history import rescue_dir

    monkeypatch.delenv("GIMP_OPENAI_RESCUE_DIR", raising=False)
    folder = rescue_dir()
    assert folder == __import__("pathlib").Path(tempfile.gettempdir()) / f"gimp-openai-rescue-{os.getuid()}"
    assert os.lstat(folder).st_uid == os.getuid() and os.lstat(folder).st_mode & 0o777 == 0o700


def test_the_rescue_folder_is_made_only_when_an_image_goes_there(tmp_path, monkeypatch):
    """Every job names the rescue folder first in its chain; a run whose history works must not leave an empty
    ``gimp-openai-rescue-<uid>`` in the system temp folder, and a run that needs it finds it private."""
    import tempfile

    from gimp_openai.history import RescueHistory, save_all

    monkeypatch.delenv("GIMP_OPENAI_RESCUE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    rescue = tmp_path / "tmp" / f"gimp-openai-rescue-{os.getuid()}"
    kept = save_all(History(tmp_path / "h"), [(b"A", META)], [RescueHistory(), tmp_path / "out"])
    assert kept.paths[0].parent == tmp_path / "h" and kept.note == ""
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "out").exists()
    kept = save_all(_FullAfter(tmp_path / "h"), [(b"B", META)], [RescueHistory(), tmp_path / "out"])
    assert kept.paths[0].parent == rescue and kept.paths[0].read_bytes() == b"B"
    assert os.lstat(rescue).st_mode & 0o777 == 0o700 and str(rescue) in kept.note


def test_not_durable_write_skips_fsync_but_is_still_atomic(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append(fd))
    write_bytes_atomic(tmp_path / "layer.png", b"PNG", durable=False)
    assert calls == [] and (tmp_path / "layer.png").read_bytes() == b"PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["layer.png"]
    write_bytes_atomic(tmp_path / "history.png", b"PNG")
    assert calls  # history writes stay durable
