"""What the server received, for wire tests: counts per endpoint and per fault key, and recent requests.

Nothing secret is kept: ``Authorization`` and ``api-key`` values are replaced by ``[redacted]`` (the
record says only that they were present); uploads are described (field, filename, type, bytes, image size
and mode, alpha), never stored.
"""

from __future__ import annotations

import io
import threading
from collections import Counter, deque

from PIL import Image

from gimp_openai.server.multipart import FilePart

SECRET_HEADERS = ("authorization", "api-key", "cookie", "proxy-authorization")


def sanitize_headers(items: list[tuple[str, str]]) -> dict[str, str]:
    headers = {}
    for name, value in items:
        lower = name.lower()
        headers[lower] = "[redacted]" if lower in SECRET_HEADERS else value
    return headers


def describe_file(part: FilePart) -> dict[str, object]:
    """Header-only look at an upload (cheap: no pixel decoding)."""
    entry: dict[str, object] = {
        "field": part.field,
        "filename": part.filename,
        "content_type": part.content_type,
        "bytes": len(part.data),
        "image": None,
    }
    try:
        with Image.open(io.BytesIO(part.data)) as image:
            entry["image"] = {
                "width": image.size[0],
                "height": image.size[1],
                "mode": image.mode,
                "format": image.format,
                "has_alpha": image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info,
            }
    except Exception:  # noqa: BLE001,S110 - not an image: the record says so with image=None
        pass
    return entry


class Stats:
    def __init__(self, keep: int = 500) -> None:
        self._lock = threading.Lock()
        self._recent: deque[dict] = deque(maxlen=keep)
        self._endpoints: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()

    def record(self, entry: dict) -> None:
        with self._lock:
            self._recent.append(entry)
            self._endpoints[entry.get("endpoint") or entry.get("path", "?")] += 1
            self._statuses[str(entry.get("status"))] += 1

    def snapshot(self, faults: dict[str, dict[str, int]]) -> dict[str, object]:
        with self._lock:
            return {
                "total": sum(self._endpoints.values()),
                "endpoints": dict(self._endpoints),
                "statuses": dict(self._statuses),
                "faults": faults,
                "requests": list(self._recent),
            }

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self._endpoints.clear()
            self._statuses.clear()
