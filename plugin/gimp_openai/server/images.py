"""Decode uploads and encode results for the local server (its own small codec layer, independent of the
engine's ``imaging.py`` so the test double never shares a bug with the client it tests).

Decoding refuses decompression bombs from the header before any pixels are allocated, and reads only the
three formats the API takes (PNG, JPEG, WebP), so none of Pillow's other decoders is reachable from a request.
The pixel limits below are the server's one decoded-pixel budget (``rules.check_pixel_budget`` applies it to a
whole request from the headers; :func:`decode` repeats the per-image limit as its own guard).
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: The largest image this server decodes: 4096x4096 (the API's largest output, 3840x2160, fits with room).
#: Decoded as RGBA that is 64 MB; the engine's working copies make it several times that.
MAX_IMAGE_PIXELS = 4096 * 4096
#: All images and the mask of one request together: one image and its mask at the largest size.
MAX_REQUEST_PIXELS = 2 * MAX_IMAGE_PIXELS
FORMATS = ("PNG", "JPEG", "WEBP")


class UndecodableImage(ValueError):
    """The bytes are not an image this server can read."""


@dataclass
class Decoded:
    """An upload as RGBA pixels plus what the client actually sent (for /_stats and validation)."""

    pixels: np.ndarray  # (H, W, 4) uint8
    format: str  # "PNG", "JPEG", "WEBP", ...
    mode: str  # PIL mode of the file as sent
    has_alpha: bool  # does the file carry an alpha channel (or PNG transparency)?

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def describe(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "format": self.format,
            "has_alpha": self.has_alpha,
        }


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the file's header, no pixels decoded; None when it is not a PNG/JPEG/WebP."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for bad input; decode() reports it
        return None
    return int(width), int(height)


def decode(data: bytes) -> Decoded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UndecodableImage(f"{width}x{height} is more than {MAX_IMAGE_PIXELS:,} pixels")
            image.load()
    except UndecodableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad input
        raise UndecodableImage(str(exc)) from exc
    mode = image.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8).copy()
    return Decoded(pixels=rgba, format=image.format or "", mode=mode, has_alpha=has_alpha)


def encode(pixels: np.ndarray, output_format: str = "png", compression: int | None = None) -> bytes:
    """RGBA -> file bytes. Fully opaque images are written as RGB (as the real API returns them)."""
    opaque = bool((pixels[..., 3] == 255).all())
    image = Image.fromarray(np.ascontiguousarray(pixels[..., :3] if opaque else pixels))
    buffer = io.BytesIO()
    quality = 100 if compression is None else max(0, min(100, int(compression)))
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=max(1, min(95, quality)))
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=quality, lossless=quality == 100)
    elif output_format == "gif":  # gpt-image-2.6: a one-frame GIF here (the real model may animate)
        image.convert("RGB").quantize(256).save(buffer, format="GIF")
    elif output_format == "svg":  # gpt-image-2.6: an SVG document; here the picture embedded as a PNG
        image.save(buffer, format="PNG", compress_level=1)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        width, height = image.size
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'viewBox="0 0 {width} {height}"><image width="{width}" height="{height}" '
                f'href="data:image/png;base64,{data}"/></svg>').encode("ascii")
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Exact-size high-quality resize of an RGBA array (no-op when already that size)."""
    width, height = size
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()
