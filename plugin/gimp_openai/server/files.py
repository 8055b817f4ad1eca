"""Images served by URL (``response_format=url``): kept in memory for 60 minutes, at most a few hundred."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

TTL_SECONDS = 3600.0
MAX_FILES = 256


class FileStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[str, tuple[float, bytes, str]] = OrderedDict()

    def put(self, data: bytes, ext: str = "png") -> str:
        """Store ``data``; returns the file name (``<token>.<ext>``) to put in the URL."""
        name = f"img-{secrets.token_urlsafe(18)}.{ext}"
        content_type = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}.get(ext, "image/png")
        with self._lock:
            self._files[name] = (time.monotonic() + TTL_SECONDS, data, content_type)
            while len(self._files) > MAX_FILES:
                self._files.popitem(last=False)
        return name

    def get(self, name: str) -> tuple[bytes, str] | None:
        with self._lock:
            entry = self._files.get(name)
            if entry is None:
                return None
            expires, data, content_type = entry
            if time.monotonic() > expires:
                del self._files[name]
                return None
            return data, content_type
