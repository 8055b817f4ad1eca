"""Every image the server returns, on disk at once, with a JSON sidecar: nothing paid for is ever lost.

File names are ``<UTC timestamp>-<slug of the prompt>-<k>of<n>.<ext>``. The slug keeps only ASCII letters,
digits and hyphens after Unicode NFKC normalisation, so no prompt (``../``, absolute paths, NUL, right-to-left
overrides, full-width dots) can name a file outside the folder. An existing file is never overwritten: a
numeric suffix is added instead. Sidecars never carry the API key: key-like fields are dropped and every
string is passed through :func:`errors.redact`.

When the history folder is full or not writable, :func:`save_all` keeps the images anyway, down a rescue chain:
the fallback folders the caller names (the CLI's out folder, the job's rescue folder), then this user's private
``<system temp>/gimp-openai-rescue-<uid>`` (checked not to be another user's folder or symlink;
``GIMP_OPENAI_RESCUE_DIR`` overrides it; created only when an image goes there), and as a last resort in memory
only (the operation still completes and the host still inserts the layers). Its note says plainly where the
images went and why ("History folder X is full; the 2 images were saved to Y instead.").
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic, write_json_atomic
from .errors import OutputNotWritableError, redact

_SLUG_MAX = 48
#: Fields never written to a sidecar. ``token`` but not the ``usage`` counts (``input_tokens``, ``..._details``).
_SECRET_FIELD = re.compile(r"(api[_-]?key|authorization|secret|password|token(?!s(_details)?$)|^key$)", re.IGNORECASE)


def default_history_dir() -> Path:
    """``settings.history_dir()`` (env override, setting, user data dir)."""
    try:
        from . import settings

        return Path(settings.history_dir())
    except (ImportError, AttributeError):  # settings not there: the same rule, inline
        env = os.environ.get("GIMP_OPENAI_HISTORY_DIR", "").strip()
        if env:
            return Path(env).expanduser()
        import platformdirs

        return Path(platformdirs.user_data_dir("gimp-openai", appauthor=False)) / "history"


def slugify(text: str, max_length: int = _SLUG_MAX, *, lower: bool = True, empty: str = "image") -> str:
    """A safe, readable file-name part: ``"A red kite!"`` -> ``"a-red-kite"``; empty -> ``"image"``.

    The one file-name rule of the engine (history names, the CLI's output names, a job's temp files): ASCII
    letters, digits and single hyphens after Unicode normalisation, so no text (``../``, an absolute path, NUL,
    a newline, right-to-left overrides, full-width dots) can name a file outside its folder or a hidden one.
    ``lower=False`` keeps the case (a user's own file name reads better as it was)."""
    normal = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text or ""))
    ascii_only = normal.encode("ascii", "ignore").decode("ascii")
    if lower:
        ascii_only = ascii_only.lower()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_only).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or empty


def _safe_ext(ext: str) -> str:
    ext = (ext or "").lower().lstrip(".")
    return ext if re.fullmatch(r"[a-z0-9]{1,5}", ext) else "png"


def clean_meta(value: Any) -> Any:
    """Copy of ``value`` fit for a sidecar: no key-like fields, every string redacted."""
    if isinstance(value, dict):
        return {str(k): clean_meta(v) for k, v in value.items() if not _SECRET_FIELD.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [clean_meta(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return clean_meta(to_dict())
    return redact(str(value))


class History:
    """The history folder. ``save`` is safe to call from several threads (names are claimed atomically)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_history_dir()

    def _stem(self, meta: dict[str, Any], now: datetime) -> str:
        stamp = now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"
        slug = slugify(redact(str(meta.get("prompt") or meta.get("operation") or "image")))
        k, n = meta.get("k"), meta.get("n")
        suffix = f"-{int(k)}of{int(n)}" if isinstance(k, int) and isinstance(n, int) else ""
        index = meta.get("partial_image_index")
        if meta.get("partial") is True:  # a kept preview: its name says so, next to the results' names
            suffix += f"-partial{int(index) + 1}" if isinstance(index, int) else "-partial"
        return f"{stamp}-{slug}{suffix}"

    def save(self, image_bytes: bytes, *, meta: dict[str, Any], ext: str = "png") -> Path:
        """Write the image, then its sidecar ``<same name>.json``; return the image's path.

        Raises :class:`OutputNotWritableError` naming the folder (with ``saved`` listing the image if only the
        sidecar failed). Never leaves a partial file behind.
        """
        now = datetime.now(timezone.utc)
        try:
            # 0700: file names carry prompt slugs, and the images are the user's; other users see neither.
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritableError(
                f"Cannot create the history folder {str(self.folder)!r}: {exc.strerror or exc}."
            ) from exc
        stem = self._stem(meta, now)
        extension = _safe_ext(ext)
        path = self.folder / f"{stem}.{extension}"
        for attempt in range(2, 10_000):
            if not path.with_suffix(".json").exists():
                try:
                    write_bytes_atomic(path, image_bytes, overwrite=False)
                    break
                except FileExistsError:
                    pass
            path = self.folder / f"{stem}-{attempt}.{extension}"
        else:  # pragma: no cover - ten thousand images in one millisecond
            raise OutputNotWritableError(f"No free file name for {stem!r} in {str(self.folder)!r}.")
        assert path.parent == self.folder
        sidecar = dict(clean_meta(meta))
        sidecar.update(
            file=path.name,
            bytes=len(image_bytes),
            saved_at=now.isoformat(timespec="milliseconds"),
        )
        sidecar.setdefault("time", sidecar["saved_at"])
        try:
            write_json_atomic(path.with_suffix(".json"), sidecar, overwrite=False)
        except (OutputNotWritableError, FileExistsError) as exc:
            raise OutputNotWritableError(
                f"The image was saved as {str(path)!r} but its description (JSON sidecar) could not be "
                f"written: {getattr(exc, 'message', exc)}",
                saved=[str(path)],
            ) from exc
        return path


# --- A result's layer mask, beside it ------------------------------------------------------------------------

#: ``<image stem>.mask.png``: the dot keeps it out of listings (an id has none), the stem ties it to its image.
MASK_SUFFIX = ".mask.png"


def mask_path(image: Path) -> Path:
    """Where the layer mask of the history image ``image`` is kept."""
    return image.with_name(image.stem + MASK_SUFFIX)


def save_mask(image: Path, mask_png: bytes) -> Path | None:
    """Write a result's layer mask (an 8-bit gray PNG the size of its place) beside its image, so that history
    can put the result back as the layer the run inserted, mask and all. Written after the image (the paid part)
    is safe; a mask that cannot be written costs only the mask (None): the entry then comes back without one,
    as entries written before masks were kept do."""
    path = mask_path(image)
    try:
        write_bytes_atomic(path, mask_png)
    except (OSError, OutputNotWritableError):
        return None
    return path


# --- The rescue chain ----------------------------------------------------------------------------------------

RESCUE_FOLDER_NAME = "gimp-openai-rescue"

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def rescue_dir(*, create: bool = True) -> Path:
    """The last folder tried: ``GIMP_OPENAI_RESCUE_DIR`` when set, else this user's private folder in the system
    temp folder (:func:`private_temp_folder`). ``create=False`` only names it: a folder made before anything
    needs rescuing would be left empty in the temp folder by every run."""
    env = os.environ.get("GIMP_OPENAI_RESCUE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    return private_temp_folder() if create else _private_temp_path()


class RescueHistory(History):
    """The rescue folder as a link of the chain: named at once, created (and checked to be this user's own)
    only when an image has to go there."""

    def __init__(self) -> None:
        super().__init__(rescue_dir(create=False))

    def save(self, image_bytes: bytes, *, meta: dict[str, Any], ext: str = "png") -> Path:
        self.folder = rescue_dir()
        return super().save(image_bytes, meta=meta, ext=ext)


#: The fresh folder used when the usual private one is not safe, once per process (one run's images together).
_fresh_rescue: list[Path] = []


def private_temp_folder() -> Path:
    """``<system temp>/gimp-openai-rescue-<uid>``, created 0700 and checked with ``lstat`` to be a real folder
    (not a symlink), owned by this user and closed to others.

    Why: the system temp folder is shared; another user can create that name first, as a symlink to a folder
    they read or as their own folder, and receive the images (prompts and pictures). When the check fails, a
    fresh folder from ``tempfile.mkdtemp`` (0700, a name nobody could predict) is used instead."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = _private_temp_path()
    name = path.name
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return _fresh_rescue_folder(name)
    return path if _is_private(path, uid) else _fresh_rescue_folder(name)


def _private_temp_path() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else None
    name = RESCUE_FOLDER_NAME if uid is None else f"{RESCUE_FOLDER_NAME}-{uid}"
    return Path(tempfile.gettempdir()) / name


def _is_private(path: Path, uid: int | None) -> bool:
    """A real folder (lstat: a symlink is not followed), ours and closed to others; a folder that is ours but
    open to others is closed (chmod 0700) first."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        return False
    if uid is not None and info.st_mode & 0o077:
        try:
            os.chmod(path, 0o700, follow_symlinks=False)
        except (OSError, NotImplementedError):
            return False
    return True


def _fresh_rescue_folder(name: str) -> Path:
    if not _fresh_rescue:
        _fresh_rescue.append(Path(tempfile.mkdtemp(prefix=f"{name}-")))
    return _fresh_rescue[0]


def why_not_written(exc: BaseException) -> str:
    """``"is full"``, ``"is not writable"`` or ``"could not be written (reason)"`` from the OSError behind ``exc``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            if seen.errno in _FULL:
                return "is full"
            if seen.errno in _DENIED:
                return "is not writable"
            return f"could not be written ({seen.strerror or seen})"
        seen = seen.__cause__ or seen.__context__
    return f"could not be written ({getattr(exc, 'message', exc)})"


#: The code of the warning a host must show, not only record: paid images went elsewhere than history.
RESULTS_ELSEWHERE = "results_elsewhere"


@dataclass(frozen=True)
class Notice:
    """A warning the artist must read even though the run worked, as a code (what a program tests) and its
    sentence (what a person reads). Programs recognise it by the code, never by the wording."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class Kept:
    """Where one response's images went: ``paths[i]`` is None for an image kept only in memory."""

    paths: list[Path | None]
    history: Path
    #: folder -> why it could not take the images ("is full", "is not writable", ...)
    failed: dict[Path, str] = field(default_factory=dict)
    #: images written whole but whose JSON sidecar could not be written
    without_sidecar: list[Path] = field(default_factory=list)

    @property
    def saved(self) -> list[str]:
        return [str(p) for p in self.paths if p is not None]

    @property
    def rescued(self) -> bool:
        return any(p is None or p.parent != self.history for p in self.paths) or bool(self.without_sidecar)

    @property
    def notices(self) -> list[Notice]:
        """The warning that paid images went elsewhere, when they did."""
        note = self.note
        return [Notice(RESULTS_ELSEWHERE, note)] if note else []

    @property
    def note(self) -> str:
        """One plain sentence (or two) when anything went elsewhere than the history folder; "" otherwise."""
        if not self.rescued:
            return ""
        total = len(self.paths)
        why = self.failed.get(self.history) or "could not take them"
        groups: dict[Path | None, int] = {}
        for path in self.paths:
            key = None if path is None else path.parent
            if key != self.history:
                groups[key] = groups.get(key, 0) + 1
        disk = [(folder, count) for folder, count in groups.items() if folder is not None]
        parts: list[str] = []
        if disk:
            moved = sum(count for _folder, count in disk)
            if moved == total:
                subject = "the image was" if total == 1 else f"the {total} images were"
            else:
                subject = f"{moved} of the {total} images {'was' if moved == 1 else 'were'}"
            if len(disk) == 1:
                parts.append(f"History folder {self.history} {why}; {subject} saved to {disk[0][0]} instead.")
            else:
                where = ", ".join(f"{_count(count)} to {folder}" for folder, count in disk)
                parts.append(f"History folder {self.history} {why}; {subject} saved elsewhere instead: {where}.")
        others = [f"{folder} {reason}" for folder, reason in self.failed.items() if folder != self.history]
        memory = groups.get(None, 0)
        if memory:
            tried = "; ".join([f"history folder {self.history} {why}", *others])
            parts.append(
                f"{_count(memory)} could not be written anywhere ({tried}): "
                f"{'it exists' if memory == 1 else 'they exist'} only in this result, so save your image now."
            )
        elif others:
            parts.append("Also tried: " + "; ".join(others) + ".")
        if self.without_sidecar:
            parts.append(
                f"History folder {self.history} {why}: "
                + ", ".join(str(p) for p in self.without_sidecar)
                + " kept whole there, but without its description (JSON sidecar)."
            )
        return " ".join(parts)


def _count(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def save_all(
    history: Any, images: Sequence[tuple[bytes, dict[str, Any]]], fallbacks: Sequence[Path | str | History] = ()
) -> Kept:
    """Save every image down the chain history -> ``fallbacks`` -> :func:`rescue_dir` -> memory; never raises
    for a folder that cannot be written. A folder that failed once is not tried again for the next images, so
    one response's images stay together. Each write is atomic (no partial file anywhere). A fallback may be a
    :class:`RescueHistory`, to try the rescue folder earlier; no folder of the chain is created before an
    image goes into it."""
    home = Path(getattr(history, "folder", "") or ".")
    chain: list[Any] = [history]
    seen = {_key(home)}
    for entry in [*fallbacks, RescueHistory()]:
        target = entry if isinstance(entry, History) else History(Path(entry))
        if _key(target.folder) not in seen:
            seen.add(_key(target.folder))
            chain.append(target)
    kept = Kept(paths=[], history=home)
    start = 0
    for data, meta in images:
        path: Path | None = None
        for index in range(start, len(chain)):
            target = chain[index]
            item_meta = meta if index == 0 else dict(meta, rescued_from=str(home),
                                                     rescue_reason=f"history folder {kept.failed.get(home, '')}")
            try:
                path = Path(target.save(data, meta=item_meta))
            except OutputNotWritableError as exc:
                kept.failed.setdefault(Path(getattr(target, "folder", home)), why_not_written(exc))
                start = index + 1
                if exc.saved:  # the image is whole; only its sidecar failed
                    path = Path(exc.saved[0])
                    kept.without_sidecar.append(path)
                    break
                continue
            break
        kept.paths.append(path)
    return kept


def _key(folder: Path) -> str:
    try:
        return str(folder.expanduser().resolve())
    except OSError:
        return str(folder)
