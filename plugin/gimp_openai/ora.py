"""Layered OpenRaster (.ora) output that GIMP and Krita open as separate layers.

Layout (OpenRaster 0.0.x): ``mimetype`` first and stored uncompressed (so ``file`` can sniff it), then
``stack.xml``, ``data/layer<i>.png``, ``mergedimage.png`` (the flattened picture, for viewers) and
``Thumbnails/thumbnail.png`` (at most 256 px). Layers are given **bottom first** (the original, then results);
``stack.xml`` lists them top first as the spec asks. Layer names are redacted of anything key-like and of
characters XML 1.0 cannot hold; ElementTree escapes the rest. The archive is written atomically.
"""

from __future__ import annotations

import io
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .atomic import write_bytes_atomic
from .composite import composite
from .errors import redact
from .imaging import encode_png, resize

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
THUMBNAIL_MAX = 256


def clean_name(name: str, max_length: int = 200) -> str:
    """A layer name safe for XML and free of keys."""
    return _XML_BAD.sub("", redact(str(name)))[:max_length]


def _normalise(layer: Any) -> tuple[str, np.ndarray, int, int, bool]:
    if isinstance(layer, Mapping):
        return (
            str(layer.get("name", "")),
            layer["pixels"],
            int(layer.get("x", 0)),
            int(layer.get("y", 0)),
            bool(layer.get("visible", True)),
        )
    name, pixels, x, y, *rest = layer
    return str(name), pixels, int(x), int(y), bool(rest[0]) if rest else True


def flatten(width: int, height: int, layers: Sequence[tuple[str, np.ndarray, int, int, bool]]) -> np.ndarray:
    """Visible layers composited bottom to top (Normal mode, as GIMP shows them) on a transparent canvas."""
    canvas = np.zeros((height, width, 4), np.uint8)
    for _, pixels, x, y, visible in layers:
        if not visible:
            continue
        h, w = pixels.shape[:2]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
        if x0 >= x1 or y0 >= y1:
            continue
        region = canvas[y0:y1, x0:x1]
        src = pixels[y0 - y : y1 - y, x0 - x : x1 - x]
        canvas[y0:y1, x0:x1] = composite(region, src, np.full(src.shape[:2], 255, np.uint8))
    return canvas


def ora_bytes(width: int, height: int, layers: Sequence[Any]) -> bytes:
    """The .ora archive in memory."""
    items = [_normalise(layer) for layer in layers]
    for name, pixels, *_ in items:
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 4:
            raise ValueError(f"layer {name!r} must be RGBA uint8, got {pixels.dtype} {pixels.shape}")
    root = ET.Element("image", {"version": "0.0.3", "w": str(width), "h": str(height), "xres": "72", "yres": "72"})
    stack = ET.SubElement(root, "stack")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "image/openraster", compress_type=zipfile.ZIP_STORED)
        for index in reversed(range(len(items))):  # stack.xml: top layer first
            name, pixels, x, y, visible = items[index]
            src = f"data/layer{index}.png"
            ET.SubElement(
                stack,
                "layer",
                {
                    "name": clean_name(name),
                    "src": src,
                    "x": str(x),
                    "y": str(y),
                    "opacity": "1.000",
                    "visibility": "visible" if visible else "hidden",
                    "composite-op": "svg:src-over",
                },
            )
        xml = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        archive.writestr("stack.xml", xml, compress_type=zipfile.ZIP_DEFLATED)
        for index, (_, pixels, *_rest) in enumerate(items):
            archive.writestr(f"data/layer{index}.png", encode_png(pixels), compress_type=zipfile.ZIP_STORED)
        merged = flatten(width, height, items)
        archive.writestr("mergedimage.png", encode_png(merged), compress_type=zipfile.ZIP_STORED)
        scale = min(1.0, THUMBNAIL_MAX / max(width, height))
        thumb = resize(merged, (max(1, round(width * scale)), max(1, round(height * scale))))
        archive.writestr("Thumbnails/thumbnail.png", encode_png(thumb), compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def write_ora(
    path: str | os.PathLike[str],
    width: int | tuple[int, int],
    height: int | Sequence[Any] | None = None,
    layers: Sequence[Any] | None = None,
) -> None:
    """Write a layered .ora atomically.

    Called as ``write_ora(path, width, height, layers)`` or ``write_ora(path, (width, height), layers)``.
    Each layer, **bottom first**, is ``(name, rgba, x, y, visible)`` or a mapping with ``name``, ``pixels``,
    ``x``, ``y`` and optional ``visible``.
    """
    stack: Any
    w: Any
    h: Any
    if isinstance(width, tuple):
        (w, h), stack = width, height
    else:
        w, h, stack = width, height, layers
    if not isinstance(w, int) or not isinstance(h, int) or stack is None or isinstance(stack, int):
        raise TypeError("write_ora(path, width, height, layers) or write_ora(path, (width, height), layers)")
    write_bytes_atomic(path, ora_bytes(w, h, list(stack)))
