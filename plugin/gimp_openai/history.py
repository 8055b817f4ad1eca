"""Every image the server returns, on disk at once, with a JSON sidecar: nothing paid for is ever lost.

File names are ``<UTC timestamp>-<slug of the prompt>-<k>of<n>.<ext>``. The slug keeps only ASCII letters,
digits and hyphens after Unicode NFKC normalisation, so no prompt (``../``, absolute paths, NUL, right-to-left
overrides, full-width dots) can name a file outside the folder. An existing file is never overwritten: a
numeric suffix is added instead. Sidecars never carry the API key: key-like fields are dropped and every
string is passed through :func:`errors.redact`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic, write_json_atomic
from .errors import OutputNotWritableError, redact

_SLUG_MAX = 48
_SECRET_FIELD = re.compile(r"(api[_-]?key|authorization|secret|password|token|^key$)", re.IGNORECASE)


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


def slugify(text: str, max_length: int = _SLUG_MAX) -> str:
    """A safe, readable file-name part: ``"A red kite!"`` -> ``"a-red-kite"``; empty -> ``"image"``."""
    normal = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text or ""))
    ascii_only = normal.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or "image"


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
        return f"{stamp}-{slug}{suffix}"

    def save(self, image_bytes: bytes, *, meta: dict[str, Any], ext: str = "png") -> Path:
        """Write the image, then its sidecar ``<same name>.json``; return the image's path.

        Raises :class:`OutputNotWritableError` naming the folder (with ``saved`` listing the image if only the
        sidecar failed). Never leaves a partial file behind.
        """
        now = datetime.now(timezone.utc)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
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
