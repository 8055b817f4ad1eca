"""Layered OpenRaster (.ora) output that GIMP and Krita open as separate layers.

Layout (OpenRaster 0.0.x): ``mimetype`` first and stored uncompressed (so ``file`` can sniff it), then
``stack.xml``, ``data/layer<i>.png``, ``mergedimage.png`` (the flattened picture, for viewers) and
``Thumbnails/thumbnail.png`` (at most 256 px). Layers are given **bottom first** (the original, then results);
``stack.xml`` lists them top first as the spec asks. Layer names are redacted of anything key-like and of
characters XML 1.0 cannot hold; ElementTree escapes the rest. The archive is written atomically.

Memory: the archive is streamed into its temp file entry by entry, every PNG is written band by band, and the
flattened picture and thumbnail are built from rows on demand, so writing an 8000² stack costs a few bands,
not copies of the canvas (an 8000² transparent edit once peaked at 7.7 GB here). Result layers are stored
crop-sized at their offsets (stack.xml's x/y), never padded to the canvas.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from .composite import composite
from .errors import redact
from .imaging import encode_png, resize
from .pngstrips import STREAM_BAND_BYTES, RowSource, write_png

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
THUMBNAIL_MAX = 256


def clean_name(name: str, max_length: int = 200) -> str:
    """A layer name safe for XML and free of keys."""
    return _XML_BAD.sub("", redact(str(name)))[:max_length]


@dataclass
class Layer:
    """One layer of the stack: RGBA u8 pixels of its own size, placed at (x, y) on the canvas.

    ``png_file``, when given, is a PNG file that holds exactly these pixels (the CLI's input picture): it is
    copied into the archive as it is instead of being encoded again (an 8000² original: seconds saved)."""

    name: str
    pixels: np.ndarray
    x: int = 0
    y: int = 0
    visible: bool = True
    png_file: Path | None = None


@dataclass
class Merged:
    """The flattened picture, as rows on demand (``rows(row0, row1)``), and optionally as a PNG file that
    already holds it (then copied, not encoded)."""

    rows: RowSource
    png_file: Path | None = None


@dataclass
class Patch:
    """Pixels that replace the base picture's at (x, y) (a result composited through its mask)."""

    x: int
    y: int
    pixels: np.ndarray


def pasted_rows(base: np.ndarray, patches: Sequence[Patch]) -> RowSource:
    """Rows of ``base`` with ``patches`` pasted in, built per band: the full-size result of an edit, without a
    full-size copy (a band that no patch touches is a view of ``base``)."""

    def rows(row0: int, row1: int) -> np.ndarray:
        band = base[row0:row1]
        hits = [p for p in patches if p.y < row1 and p.y + p.pixels.shape[0] > row0]
        if not hits:
            return band
        band = band.copy()
        for patch in hits:
            y0, y1 = max(row0, patch.y), min(row1, patch.y + patch.pixels.shape[0])
            band[y0 - row0 : y1 - row0, patch.x : patch.x + patch.pixels.shape[1]] = patch.pixels[y0 - patch.y : y1 -
                                                                                                patch.y]
        return band

    return rows


def _composite_over(region: np.ndarray, src: np.ndarray) -> None:
    """``src`` over ``region`` in place (Normal mode, full opacity). Where the canvas is still empty this is a
    copy (with fully transparent pixels zeroed, exactly what :func:`composite` gives there), so the usual bottom
    layer costs no float work at all."""
    if not region[..., 3].any():
        region[...] = src
        region[src[..., 3] == 0] = 0
        return
    region[...] = composite(region, src, np.full(src.shape[:2], 255, np.uint8))


def flatten_rows(width: int, layers: Sequence[Layer]) -> RowSource:
    """Rows of the visible layers composited bottom to top (as GIMP shows them) on a transparent canvas, built
    band by band: a full-size canvas never exists."""

    def rows(row0: int, row1: int) -> np.ndarray:
        band = np.zeros((row1 - row0, width, 4), np.uint8)
        for layer in layers:
            if not layer.visible:
                continue
            h, w = layer.pixels.shape[:2]
            x0, y0 = max(0, layer.x), max(row0, layer.y)
            x1, y1 = min(width, layer.x + w), min(row1, layer.y + h)
            if x0 < x1 and y0 < y1:
                src = layer.pixels[y0 - layer.y : y1 - layer.y, x0 - layer.x : x1 - layer.x]
                _composite_over(band[y0 - row0 : y1 - row0, x0:x1], src)
        return band

    return rows


def thumbnail(rows: RowSource, width: int, height: int, max_side: int = THUMBNAIL_MAX) -> np.ndarray:
    """A thumbnail of at most ``max_side`` px, from rows read in bands, each area-averaged premultiplied (no
    fringe from transparent pixels' colour) into a small image first. Why not ``resize`` of the whole picture:
    that made premultiplied float32 copies of the full canvas (an 8000² transparent edit peaked at 7.7 GB).

    Speed: only every ``step``-th row and column is read (``step`` = a quarter of the reduction, so each small
    pixel still averages 16 or more samples, plenty for a 256-px preview), and premultiplying in 8 bits
    (OpenCV, SIMD) loses nothing such a preview can show."""
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    factor = max(1, int(1 / scale) // 2)  # the small image stays >= 2x the thumbnail: the last resize is good
    if factor == 1:
        return resize(rows(0, height), size)
    step = max(1, factor // 4)
    band = factor * max(1, (STREAM_BAND_BYTES // (width * 4)) // factor)
    small_width = max(1, round(width / factor))
    small = [_shrink_band(rows(row0, min(height, row0 + band))[::step, ::step], factor // step, small_width)
             for row0 in range(0, height, band)]
    reduced = np.concatenate(small, axis=0)
    return resize(_unpremultiply(reduced), size)


def _shrink_band(pixels: np.ndarray, factor: int, small_width: int) -> np.ndarray:
    """One band, premultiplied (u8) and area-averaged by ``factor``: small RGBA, colour still premultiplied."""
    pixels = np.ascontiguousarray(pixels)
    alpha = pixels[..., 3]
    if alpha.min() == 255:
        premultiplied = pixels
    else:
        premultiplied = pixels.copy()
        for c in range(3):
            premultiplied[..., c] = cv2.multiply(pixels[..., c], alpha, scale=1 / 255)
    rows = max(1, round(pixels.shape[0] / factor))
    return cv2.resize(premultiplied, (small_width, rows), interpolation=cv2.INTER_AREA)


def _unpremultiply(pixels: np.ndarray) -> np.ndarray:
    alpha = pixels[..., 3:4].astype(np.float32)
    rgb = np.where(alpha > 0, pixels[..., :3] * (255.0 / np.maximum(alpha, 1.0)), 0.0)
    out = pixels.copy()
    out[..., :3] = np.rint(np.clip(rgb, 0, 255)).astype(np.uint8)
    return out


def _check_layer(layer: Layer) -> None:
    pixels = layer.pixels
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise ValueError(f"layer {layer.name!r} must be RGBA uint8, got {pixels.dtype} {pixels.shape}")


def _stack_xml(width: int, height: int, layers: Sequence[Layer]) -> bytes:
    root = ET.Element("image", {"version": "0.0.3", "w": str(width), "h": str(height), "xres": "72", "yres": "72"})
    stack = ET.SubElement(root, "stack")
    for index in reversed(range(len(layers))):  # stack.xml: top layer first
        layer = layers[index]
        ET.SubElement(stack, "layer", {
            "name": clean_name(layer.name), "src": f"data/layer{index}.png", "x": str(layer.x), "y": str(layer.y),
            "opacity": "1.000", "visibility": "visible" if layer.visible else "hidden",
            "composite-op": "svg:src-over",
        })
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _put_png(archive: zipfile.ZipFile, name: str, width: int, height: int, rows: RowSource,
             png_file: Path | None = None) -> None:
    """One stored PNG entry, streamed: copied from ``png_file`` or encoded band by band from ``rows``."""
    with archive.open(zipfile.ZipInfo(name), "w") as entry:
        if png_file is not None:
            with open(png_file, "rb") as source:
                shutil.copyfileobj(source, entry, 1 << 20)
        else:
            write_png(entry, width, height, 4, rows)


def write_archive(out: IO[bytes], width: int, height: int, layers: Sequence[Layer],
                  merged: Merged | None = None) -> None:
    """The .ora archive, streamed into the seekable binary file ``out``; layers bottom first. Without
    ``merged`` the flattened picture is computed from the layers band by band."""
    items = list(layers)
    for layer in items:
        _check_layer(layer)
    merged = merged or Merged(flatten_rows(width, items))
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "image/openraster", compress_type=zipfile.ZIP_STORED)
        archive.writestr("stack.xml", _stack_xml(width, height, items), compress_type=zipfile.ZIP_DEFLATED)
        for index, layer in enumerate(items):
            h, w = layer.pixels.shape[:2]
            _put_png(archive, f"data/layer{index}.png", w, h, _slicer(layer.pixels), layer.png_file)
        _put_png(archive, "mergedimage.png", width, height, merged.rows, merged.png_file)
        archive.writestr("Thumbnails/thumbnail.png", encode_png(thumbnail(merged.rows, width, height)),
                         compress_type=zipfile.ZIP_STORED)


def _slicer(pixels: np.ndarray) -> RowSource:
    return lambda row0, row1: pixels[row0:row1]


def write_ora(path: Path, width: int, height: int, layers: Sequence[Layer]) -> None:
    """A layered .ora (layers bottom first) written whole and renamed over ``path``."""
    from .atomic import pending_file

    with pending_file(path.parent, path.name) as pending:
        write_archive(pending.file, width, height, list(layers))
        pending.publish(path)
