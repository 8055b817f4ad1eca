"""Shared bits for the client/settings/discovery tests: tiny real PNGs and a client pointed at a server."""

from __future__ import annotations

import base64
import io

from gimp_openai.client import ClientConfig, ImagesClient
from PIL import Image

from tests.conftest import FAKE_KEY


def png(width: int = 8, height: int = 8, color=(200, 30, 30, 255), alpha_hole: bool = False) -> bytes:
    image = Image.new("RGBA", (width, height), color)
    if alpha_hole:
        for x in range(width // 2):
            for y in range(height // 2):
                image.putpixel((x, y), (0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, "JPEG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images_answer(*datas: bytes, **extra) -> dict:
    return {"created": 1, "data": [{"b64_json": b64(d)} for d in datas], **extra}


def client_for(url: str, events: list | None = None, sleeps: list | None = None, **overrides) -> ImagesClient:
    """A client with the fake key whose sleeps are recorded instead of slept (retry waits are asserted)."""
    recorded = sleeps if sleeps is not None else []
    values = dict(base_url=url, api_key=FAKE_KEY, sleep=recorded.append, rand=lambda: 0.0, read_timeout=10.0)
    values.update(overrides)
    return ImagesClient(ClientConfig(**values), on_event=events.append if events is not None else None)
