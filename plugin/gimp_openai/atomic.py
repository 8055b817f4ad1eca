"""Write-then-rename: a file is either absent or complete, never half-written.

The data goes to a hidden temp file in the *same* folder (so the rename cannot cross file systems), is
fsync'ed, then renamed into place; the folder is fsync'ed too so the rename survives a power cut. On any
error the temp file is removed and an :class:`OutputNotWritableError` names the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
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


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically. ``overwrite=False`` raises FileExistsError instead of replacing
    an existing file (the check and the rename are one step where hard links exist: ``os.link`` fails if the
    name is taken). ``durable=False`` skips the fsyncs (still write-then-rename, so no reader ever sees a
    partial file): for temp files another process reads at once and deletes, never for history."""
    target = Path(path)
    folder = target.parent
    tmp_name: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name[:40]}.", suffix=".part", dir=folder)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp_name, target)
        else:
            try:
                os.link(tmp_name, target)
            except FileExistsError:
                raise
            except OSError:  # no hard links here (FAT, some network shares): check, then rename
                if target.exists():
                    raise FileExistsError(str(target)) from None
                os.replace(tmp_name, target)
            else:
                os.unlink(tmp_name)
        tmp_name = None
        if durable:
            _fsync_dir(folder)
    except FileExistsError:
        raise
    except OSError as exc:
        raise OutputNotWritableError(
            f"Cannot write {target.name!r} in the folder {str(folder)!r}: {exc.strerror or exc}."
        ) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = True) -> None:
    """JSON (UTF-8, indented, non-ASCII kept readable) written atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)
