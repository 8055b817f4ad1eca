"""Write-then-rename: a file is either absent or complete, never half-written.

The data goes to a hidden temp file in the *same* folder (so the rename cannot cross file systems), is
fsync'ed, then renamed into place; the folder is fsync'ed too so the rename survives a power cut (durable
writes, the default: history). Files that can be made again (host temp files, the CLI's outputs) skip the
fsyncs. On any error the temp file is removed and an :class:`OutputNotWritableError` names the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputNotWritableError


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PendingFile:
    """A hidden temp file beside its destination, written through ``file``, then published under a name.

    Why: big results (a full-size PNG, a layered .ora) are streamed to disk instead of being built in memory, and
    a name must be claimed in the same step as the file appears, or two writers of a batch both see a name free
    and one overwrites the other. ``publish(overwrite=False)`` and ``publish_unique`` claim with ``os.link``
    (fails if the name exists); where there are no hard links, with ``O_CREAT | O_EXCL`` and then a rename over
    the placeholder that this writer alone created."""

    def __init__(self, folder: Path, hint: str, durable: bool = True) -> None:
        self.folder = folder
        self.durable = durable
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{hint[:40]}.", suffix=".part", dir=folder)
        self.path: Path | None = Path(name)
        self.file = os.fdopen(fd, "wb")

    def write_all(self, data: bytes) -> None:
        """``data`` straight to the descriptor (unbuffered; a short write is continued, a full disk raises)."""
        self.file.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(self.file.fileno(), view) :]

    def _finish(self) -> Path:
        assert self.path is not None, "already published"
        if not self.file.closed:  # publish_unique comes here once per name it tries
            self.file.flush()
            if self.durable:
                os.fsync(self.file.fileno())
            self.file.close()
        return self.path

    def publish(self, target: Path, *, overwrite: bool = True) -> Path:
        """Give the file its name; FileExistsError if ``overwrite`` is False and the name is taken."""
        tmp = self._finish()
        if overwrite:
            os.replace(tmp, target)
        else:
            _claim(tmp, target)
        self.path = None
        if self.durable:
            _fsync_dir(target.parent)
        return target

    def publish_unique(self, stem: str, suffix: str, limit: int = 10_000) -> Path:
        """Publish as ``stem+suffix``, else ``stem-2+suffix``, ``stem-3+suffix``, ...: never over another file."""
        for number in range(1, limit + 1):
            name = f"{stem}{suffix}" if number == 1 else f"{stem}-{number}{suffix}"
            try:
                return self.publish(self.folder / name, overwrite=False)
            except FileExistsError:
                continue
        raise OutputNotWritableError(f"No free file name for {stem + suffix!r} in {str(self.folder)!r}.")

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


def _claim(tmp: Path, target: Path) -> None:
    """``tmp`` becomes ``target`` only if no file has that name (FileExistsError otherwise), in one step."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares): claim the name, then rename over it
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def pending_file(folder: str | os.PathLike[str], hint: str, *, durable: bool = True) -> Iterator[PendingFile]:
    """A :class:`PendingFile` in ``folder``; removed unless published. OS errors become OutputNotWritableError
    naming the folder (FileExistsError from ``publish(overwrite=False)`` passes through)."""
    pending: PendingFile | None = None
    try:
        pending = PendingFile(Path(folder), hint, durable)
        yield pending
    except FileExistsError:
        raise
    except OSError as exc:
        raise OutputNotWritableError(
            f"Cannot write {hint!r} in the folder {os.fspath(folder)!r}: {exc.strerror or exc}."
        ) from exc
    finally:
        if pending is not None:
            pending.discard()


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically. ``overwrite=False`` raises FileExistsError instead of replacing
    an existing file (the check and the rename are one step: see :class:`PendingFile`). ``durable=False`` skips
    the fsyncs (still write-then-rename, so no reader ever sees a partial file): for temp files another process
    reads at once and deletes, never for history."""
    target = Path(path)
    with pending_file(target.parent, target.name, durable=durable) as pending:
        pending.write_all(data)
        pending.publish(target, overwrite=overwrite)


def write_bytes_unique(folder: Path, stem: str, suffix: str, data: bytes, *, durable: bool = True) -> Path:
    """``data`` under the first free name ``stem[-k]suffix`` in ``folder``, claimed atomically; its path."""
    with pending_file(folder, stem + suffix, durable=durable) as pending:
        pending.write_all(data)
        return pending.publish_unique(stem, suffix)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = True) -> None:
    """JSON (UTF-8, indented, non-ASCII kept readable) written atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)
