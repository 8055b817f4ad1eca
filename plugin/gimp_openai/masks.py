"""Selections -> the API's mask PNG pixels, and -> the layer mask the result is composited through.

Two different masks on purpose:

* ``api_mask`` tells the model *where it may paint* (alpha 0 = edit). It is binary. A pixel is editable when it
  is at least half selected (``threshold`` 128): from 50 % on, the result is what the artist mostly sees there.
  Then it is dilated by ``API_MASK_DILATE`` target pixels so the model also repaints the soft edge and the
  half-selected ring, where the layer mask still shows part of the result; without that, the result's
  unrepainted (possibly slightly shifted or re-toned) copy of the original would show through as a ghost.
  Its RGB is black: the API reads only alpha, and black compresses to almost nothing.
* ``layer_mask`` decides *how much of the result shows*. It is the selection itself (its own soft edges),
  optionally feathered inward, and it is 0 wherever the selection is 0, so outside stays bit-identical.
"""

from __future__ import annotations

import cv2
import numpy as np

from .imaging import resize

#: Dilation of the editable area, in target pixels (see the module docstring).
API_MASK_DILATE = 2


def api_mask(selection: np.ndarray, size: tuple[int, int], threshold: int = 128) -> np.ndarray:
    """RGBA (H, W, 4) u8 of ``size`` = (width, height): alpha 0 where the model may edit, 255 elsewhere.

    ``selection`` is the selection over the request image (u8, 255 = selected). A selection that is smaller than
    one target pixel after resampling still yields at least its strongest pixel as editable, never an empty mask.
    """
    if selection.ndim != 2:
        raise ValueError(f"api_mask needs a single-channel selection, got shape {selection.shape}")
    width, height = size
    scaled = resize(selection, (width, height)) if selection.shape != (height, width) else selection
    editable = scaled >= threshold
    if not editable.any() and scaled.any():
        editable = scaled >= max(1, int(scaled.max()) // 2)
    if not editable.any() and selection.any():  # resampling averaged it away: keep its centre
        ys, xs = np.nonzero(selection)
        cy = int(ys.mean() * height / selection.shape[0])
        cx = int(xs.mean() * width / selection.shape[1])
        editable[min(cy, height - 1), min(cx, width - 1)] = True
    if API_MASK_DILATE > 0 and editable.any():
        k = 2 * API_MASK_DILATE + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        editable = cv2.dilate(editable.astype(np.uint8), kernel) > 0
    out = np.zeros((height, width, 4), np.uint8)
    out[..., 3] = np.where(editable, 0, 255)
    return out


def layer_mask(selection: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """u8 mask for the result layer: the selection's own soft edges, feathered inward by ``feather`` px.

    Feathering blurs with a Gaussian of sigma ``feather / 2.5`` and keeps only the inner half of the ramp
    (``2 * blur - 1``), so the mask rises from 0 at the selection's edge to full about ``feather`` px inside,
    and is multiplied by the selection: never above it, and exactly 0 wherever it is 0. The crop border is
    replicated, not treated as unselected, so a selection that runs off the crop (to the layer's edge) does
    not fade there.
    """
    if selection.ndim != 2:
        raise ValueError(f"layer_mask needs a single-channel selection, got shape {selection.shape}")
    selection = selection.astype(np.uint8, copy=False)
    if not feather or feather <= 0:
        return selection.copy()
    sigma = float(feather) / 2.5
    blurred = cv2.GaussianBlur(
        selection.astype(np.float32) / 255.0, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE
    )
    ramp = np.clip(2.0 * blurred - 1.0, 0.0, 1.0)
    ramp[ramp > 0.999] = 1.0  # deep inside: exactly the selection
    return np.rint(selection.astype(np.float32) * ramp).astype(np.uint8)
