"""Images and request builders for the local server's tests (real multipart bodies built by ``requests``)."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests
from PIL import Image

from tests.conftest import FAKE_KEY

AUTH = {"Authorization": f"Bearer {FAKE_KEY}"}


def photo(width: int = 256, height: int = 256, seed: int = 7) -> np.ndarray:
    """A photo-like RGBA scene: sky gradient with soft clouds, textured ground, a dark object to remove."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (yy / height)[..., None]
    sky = np.array([90, 140, 220], np.float32) * (1 - t) + np.array([200, 220, 240], np.float32) * t
    clouds = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), width / 20)
    sky += (clouds / (np.abs(clouds).max() + 1e-6) * 40)[..., None]
    fine = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.2)
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 6)
    ground = np.array([70, 120, 50], np.float32) + (fine * 60 + coarse * 120)[..., None] * np.array([0.6, 1, 0.4])
    horizon = height * 0.45 + height * 0.04 * np.sin(xx / width * 6)
    image = np.where((yy > horizon)[..., None], ground, sky)
    cx, cy, r = width * 0.55, height * 0.62, min(width, height) * 0.12
    blob = ((xx - cx) ** 2 + (yy - cy) ** 2) <= r**2
    image[blob] = [40, 30, 35]
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = np.clip(image, 0, 255).astype(np.uint8)
    rgba[..., 3] = 255
    return rgba


def object_hole(width: int = 256, height: int = 256, grow: float = 1.25) -> np.ndarray:
    """The dark object's disc in :func:`photo`, a little larger (bool HxW)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = width * 0.55, height * 0.62, min(width, height) * 0.12 * grow
    return ((xx - cx) ** 2 + (yy - cy) ** 2) <= r**2


def png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., :3]).save(buffer, format=fmt)
    return buffer.getvalue()


def mask_png(hole: np.ndarray) -> bytes:
    """API mask: RGBA, alpha 0 where the model should edit."""
    mask = np.zeros(hole.shape + (4,), np.uint8)
    mask[..., 3] = np.where(hole, 0, 255)
    return png(mask)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def b64_image(item: dict) -> np.ndarray:
    return decode(base64.b64decode(item["b64_json"]))


def post_edit(server, *, files=None, data=None, headers=None, timeout=60):
    """POST /images/edits as multipart. ``files`` is a list of (field, (filename, bytes, content type))."""
    if files is None:
        files = [("image", ("photo.png", png(photo()), "image/png"))]
    return requests.post(
        server.url + "/images/edits", headers={**AUTH, **(headers or {})}, files=files,
        data=data if data is not None else {"model": "gpt-image-1", "prompt": "remove it"}, timeout=timeout,
    )


def post_variation(server, *, files=None, data=None, headers=None, timeout=60):
    if files is None:
        files = [("image", ("photo.png", png(photo()), "image/png"))]
    return requests.post(server.url + "/images/variations", headers={**AUTH, **(headers or {})}, files=files,
                         data=data if data is not None else {"model": "dall-e-2"}, timeout=timeout)


def post_generation(server, body: dict, headers=None, timeout=60):
    return requests.post(server.url + "/images/generations", headers={**AUTH, **(headers or {})}, json=body,
                         timeout=timeout)


def error_of(response: requests.Response) -> tuple[int, str | None, str | None]:
    """(status, code, param) of an error answer, asserting the real body shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"], body["error"]["param"]
