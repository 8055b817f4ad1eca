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
#: What one record keeps of a header value or a text field (the deque keeps 500 records: 500 x 50 MB otherwise).
MAX_RECORDED_TEXT = 1024
MAX_RECORDED_FIELDS = 64


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RECORDED_TEXT else text[:MAX_RECORDED_TEXT] + f"... [{len(text):,} chars]"


def sanitize_headers(items: list[tuple[str, str]]) -> dict[str, str]:
    headers = {}
    for name, value in items[:MAX_RECORDED_FIELDS]:
        lower = _clip(name.lower())
        headers[lower] = "[redacted]" if lower in SECRET_HEADERS else _clip(value)
    return headers


def summarize_fields(fields: dict[str, object]) -> dict[str, object]:
    """The request's fields for the record: scalars as sent (long text clipped), containers described by
    type and length only, so a hostile body cannot make the record large."""
    summary: dict[str, object] = {}
    for name, value in list(fields.items())[:MAX_RECORDED_FIELDS]:
        if isinstance(value, str):
            summary[_clip(name)] = _clip(value)
        elif value is None or isinstance(value, (bool, int, float)):
            summary[_clip(name)] = value  # json.loads caps integers at 4,300 digits
        elif isinstance(value, list) and all(isinstance(v, str) for v in value[:MAX_RECORDED_FIELDS]):
            summary[_clip(name)] = [_clip(v) for v in value[:MAX_RECORDED_FIELDS]]
        else:
            summary[_clip(name)] = f"[{type(value).__name__} of {len(value) if hasattr(value, '__len__') else 1}]"
    return summary


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

    def update(self, entry: dict, changes: dict) -> None:
        """Add to a recorded entry (a stream's painting thread, while the events go out)."""
        with self._lock:
            entry.update(changes)

    def snapshot(self, faults: dict[str, dict[str, int]]) -> dict[str, object]:
        """Copies: the answer is serialised after the lock is let go, while entries may still change."""
        with self._lock:
            return {
                "total": sum(self._endpoints.values()),
                "endpoints": dict(self._endpoints),
                "statuses": dict(self._statuses),
                "faults": faults,
                "requests": [dict(entry) for entry in self._recent],
            }

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self._endpoints.clear()
            self._statuses.clear()
