"""Pixels in and out of the model, and the result composited through the layer mask.

``request_pixels`` and ``result_to_place`` use the same integer rectangle (``plan.place_in_target``) in both
directions, so an identity model maps every place pixel back onto itself: no shift, whatever the scale.
Padding (the part of the request past the layer) is built at target scale by mirroring (numpy "symmetric"):
it continues texture and tone across the layer's edge, so the model does not paint a frame there, and it is
discarded on the way back. Building it at target scale keeps memory at the target's size even for a
30000x200 strip whose request is 30000x10000.
"""

from __future__ import annotations

import numpy as np

from .geometry import RegionPlan
from .imaging import resize


def _check_rgba(pixels: np.ndarray, what: str) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise ValueError(f"{what} must be RGBA uint8 (H, W, 4); got {pixels.dtype} {pixels.shape}")


def request_pixels(place_pixels: np.ndarray, plan: RegionPlan) -> np.ndarray:
    """Target-sized RGBA for the model: the place pixels scaled into ``plan.place_in_target``, mirrored around."""
    _check_rgba(place_pixels, "place pixels")
    if place_pixels.shape[:2] != (plan.place.height, plan.place.width):
        raise ValueError(
            f"place pixels are {place_pixels.shape[1]}x{place_pixels.shape[0]}, the plan's place is "
            f"{plan.place.width}x{plan.place.height}"
        )
    inner = plan.place_in_target
    tw, th = plan.target
    scaled = resize(place_pixels, inner.size)
    if inner.size == (tw, th):
        return scaled
    pads = ((inner.y, th - inner.bottom), (inner.x, tw - inner.right), (0, 0))
    return np.pad(scaled, pads, mode="symmetric")


def target_selection(place_selection: np.ndarray, plan: RegionPlan) -> np.ndarray:
    """The selection at target size, aligned with :func:`request_pixels` (0 in the padding)."""
    inner = plan.place_in_target
    out = np.zeros((plan.target[1], plan.target[0]), np.uint8)
    out[inner.y : inner.bottom, inner.x : inner.right] = resize(place_selection, inner.size)
    return out


def result_to_place(result: np.ndarray, plan: RegionPlan) -> np.ndarray:
    """Model output (target-sized; another size is first scaled to the target) -> place-sized RGBA.
    When the target is the place itself (no padding, no scaling) this is `result`, not a copy: a crop-sized
    buffer less at the engine's peak."""
    _check_rgba(result, "result")
    tw, th = plan.target
    if result.shape[:2] != (th, tw):
        result = resize(result, (tw, th))
    inner = plan.place_in_target
    if (inner.x, inner.y, inner.width, inner.height) == (0, 0, tw, th) and (tw, th) == tuple(plan.place.size):
        return result
    cut = result[inner.y : inner.bottom, inner.x : inner.right]
    return resize(cut, plan.place.size)


# sRGB <-> linear light, as GIMP's babl does for 8-bit "perceptual" images.
_SRGB_TO_LINEAR = np.array(
    [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (i / 255.0 for i in range(256))],
    dtype=np.float32,
)


def _linear_to_srgb_u8(linear: np.ndarray) -> np.ndarray:
    c = np.clip(linear, 0.0, 1.0)
    srgb = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)
    return np.rint(srgb * 255.0).astype(np.uint8)


def composite(original: np.ndarray, result: np.ndarray, mask: np.ndarray, *, linear: bool = True) -> np.ndarray:
    """What GIMP shows for ``result`` with layer mask ``mask`` above ``original`` (Normal mode, 100 % opacity).

    With a = result alpha x mask / 255^2 and b = original alpha / 255 (Porter-Duff "over", GIMP's union
    composite): out_alpha = a + b (1 - a); out_colour = (a C_result + b (1 - a) C_original) / out_alpha,
    computed in linear light (``linear=True``: GIMP 2.10/3 "Normal", composite space RGB linear) or on the
    sRGB values (``linear=False``: GIMP 2.10's "Normal (legacy)"). Where mask is 0 the original's bytes are
    copied unchanged; where mask is 255 over an opaque result the result's bytes are copied.
    """
    _check_rgba(original, "original")
    _check_rgba(result, "result")
    if original.shape != result.shape or mask.shape != original.shape[:2]:
        raise ValueError(f"composite needs equal sizes: {original.shape}, {result.shape}, mask {mask.shape}")
    out = original.copy()
    full = (mask == 255) & (result[..., 3] == 255)
    out[full] = result[full]
    blend = (mask > 0) & ~full
    if not blend.any():
        return out
    r = result[blend]
    o = original[blend]
    a = (r[:, 3].astype(np.float32) * mask[blend].astype(np.float32) / (255.0 * 255.0))[:, None]
    b = (o[:, 3].astype(np.float32) / 255.0)[:, None]
    out_a = a + b * (1.0 - a)
    if linear:
        cr, co = _SRGB_TO_LINEAR[r[:, :3]], _SRGB_TO_LINEAR[o[:, :3]]
    else:
        cr, co = r[:, :3].astype(np.float32) / 255.0, o[:, :3].astype(np.float32) / 255.0
    colour = (a * cr + b * (1.0 - a) * co) / np.maximum(out_a, 1e-12)
    colour_u8 = _linear_to_srgb_u8(colour) if linear else np.rint(np.clip(colour, 0, 1) * 255.0).astype(np.uint8)
    pixels = np.concatenate([colour_u8, np.rint(out_a * 255.0).astype(np.uint8)], axis=1)
    pixels[out_a[:, 0] <= 0] = 0
    out[blend] = pixels
    return out
