"""Regions with no pixels: a selection reaching past its layer, the new area of an expanded canvas.

The host exports such a region with transparent pixels where the layer has none. The model must not see a
transparent hole there (a model may keep the transparency, and alignment and tone match would compare against
it), so the engine gives those pixels the colour of the nearest real pixel and always lets the model repaint
them: they are added to the request's mask, whatever the selection says, because nothing there may be kept.
The result layer's mask still follows the artist's selection, so an unselected pixel past the layer stays
transparent in what GIMP shows.
"""

from __future__ import annotations

import numpy as np

from .geometry import Rect


def known_mask(place: Rect, layer: Rect) -> np.ndarray | None:
    """(H, W) bool over ``place``: True where ``layer`` has pixels; None when the layer covers all of it."""
    inside = place.intersect(layer)
    if inside == place:
        return None
    known = np.zeros((place.height, place.width), bool)
    local = inside.translate(-place.x, -place.y)
    if not local.is_empty:
        known[local.y : local.bottom, local.x : local.right] = True
    return known


def fill_unknown(pixels: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``pixels`` (RGBA u8) with every unknown pixel set to the nearest known one, opaque.

    Nearest-pixel replication continues every edge straight out, which is what a model or an inpainting needs
    to read the surroundings from; it is never shown (those pixels are always in the mask). With no known
    pixel at all the region is left as it is.
    """
    import cv2

    if known.shape != pixels.shape[:2]:
        raise ValueError(f"known mask {known.shape} does not match pixels {pixels.shape[:2]}")
    unknown = ~known
    if not unknown.any() or not known.any():
        return pixels
    # every known pixel gets its own label, in raster order; each unknown pixel the label of the nearest one
    _dist, labels = cv2.distanceTransformWithLabels(unknown.astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
    ky, kx = np.nonzero(known)
    nearest = labels[unknown] - 1
    out = pixels.copy()
    out[unknown] = pixels[ky[nearest], kx[nearest]]
    out[..., 3][unknown] = 255
    return out


def edit_selection(selection: np.ndarray, known: np.ndarray | None) -> np.ndarray:
    """What the model repaints: the selection plus every pixel without a source (255 there)."""
    if known is None:
        return selection
    out = selection.copy()
    out[~known] = 255
    return out
