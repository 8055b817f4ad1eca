"""The offline engine: what the local server paints when no model is available.

* :func:`inpaint` fills a hole from its surroundings, like GIMP's Resynthesizer "Heal selection": OpenCV's
  Telea / Navier-Stokes inpainting for structure (on a reduced copy when the hole is wide, so large holes
  stay fast and smooth), then texture: the image's fine detail (a high-pass layer) copied in from a nearby
  known window chosen by a seeded search, faded in from the hole's border so no seam shows. Different
  ``variant`` values pick a different method, radius and texture source, so n > 1 results differ.
* :func:`variation` makes seeded colour / texture / crop perturbations of a picture.
* :func:`generate` paints a deterministic landscape from the prompt's hash.

OpenCV is imported inside the functions: the server must start in well under a second.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def seed_of(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _distance_inside(hole: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)


def _structure(rgb: np.ndarray, hole: np.ndarray, method: int, radius: int) -> np.ndarray:
    """Smooth fill of the hole; wide holes are inpainted on a reduced copy, then the border band at full size."""
    import cv2

    depth = float(_distance_inside(hole).max())
    height, width = hole.shape
    factor = int(min(max(1, math.ceil(depth / 16.0)), max(1, min(height, width) // 24)))
    hole8 = hole.astype(np.uint8) * 255
    if factor <= 1:
        return cv2.inpaint(rgb, hole8, radius, method)
    small_size = (max(8, width // factor), max(8, height // factor))
    small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
    small_area = cv2.resize(hole.astype(np.float32), small_size, interpolation=cv2.INTER_AREA)
    small_hole = (small_area > 0.01).astype(np.uint8) * 255  # any trace of the hole: its colour must not leak in
    # the radius is in reduced pixels: keep the neighbourhood it draws from about as wide as at full size
    filled_small = cv2.inpaint(small, small_hole, max(2, radius // 2), method)
    base = cv2.resize(filled_small, (width, height), interpolation=cv2.INTER_CUBIC)
    merged = rgb.copy()
    merged[hole] = base[hole]
    band = hole & (_distance_inside(hole) <= 3.0)
    return cv2.inpaint(merged, band.astype(np.uint8) * 255, 3, method)


def _texture(rgb: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fine detail for the hole: the high-pass layer copied from a nearby window whose surroundings look like
    the hole's (the best of a few seeded candidates, compared on the ring of known pixels around the hole)."""
    import cv2

    image = rgb.astype(np.float32)
    high = image - cv2.GaussianBlur(image, (0, 0), 2.0)
    known = (~hole).astype(np.float32)
    height, width = hole.shape
    ys, xs = np.nonzero(hole)
    step = max(1, len(xs) // 3000)
    hole_y, hole_x = ys[::step], xs[::step]
    ring = cv2.dilate(hole.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~hole
    ring_y, ring_x = np.nonzero(ring)
    ring_step = max(1, len(ring_x) // 1500)
    ring_y, ring_x = ring_y[::ring_step], ring_x[::ring_step]
    span_x = int(xs.max() - xs.min() + 1)
    span_y = int(ys.max() - ys.min() + 1)
    best, best_cost = (0, 0), float("inf")
    for _ in range(32):
        dx = int(rng.integers(-span_x - 24, span_x + 25))
        dy = int(rng.integers(-span_y - 24, span_y + 25))
        sy, sx = hole_y - dy, hole_x - dx
        inside = (sy >= 0) & (sy < height) & (sx >= 0) & (sx < width)
        if inside.mean() < 0.9:
            continue
        unknown = 1.0 - float(known[sy[inside], sx[inside]].mean())
        ry = np.clip(ring_y - dy, 0, height - 1)
        rx = np.clip(ring_x - dx, 0, width - 1)
        difference = float(np.abs(image[ry, rx] - image[ring_y, ring_x]).mean())
        cost = difference + 200.0 * unknown
        if cost < best_cost:
            best, best_cost = (dx, dy), cost
    shift = np.array([[1, 0, best[0]], [0, 1, best[1]]], dtype=np.float32)
    moved = cv2.warpAffine(high, shift, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    moved_known = cv2.warpAffine(known, shift, (width, height), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_REFLECT)
    fade = np.clip(_distance_inside(hole) / 4.0, 0.0, 1.0)
    return moved * (moved_known * fade)[..., None]


def _mirrored_texture(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fine detail for a hole that reaches the picture's border (an outpainting): each hole pixel takes the
    high-pass detail of the known pixel mirrored across the nearest known pixel, so texture, and every line that
    meets the edge, continue across it instead of fading into a smear; faded in from the border like the rest."""
    import cv2

    image = rgb.astype(np.float32)
    # the structure fill is smooth at the scale it was reduced by (see _structure): carry detail down to it
    sigma = max(2.0, float(_distance_inside(hole).max()) / 16.0)
    high = image - cv2.GaussianBlur(image, (0, 0), sigma)
    known = ~hole
    _dist, labels = cv2.distanceTransformWithLabels(hole.astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
    ky, kx = np.nonzero(known)
    hy, hx = np.nonzero(hole)
    nearest = labels[hy, hx] - 1
    height, width = hole.shape
    # reflect about the nearest known pixel; deeper than the known side, fold back and forth inside the picture
    my = _fold(2 * ky[nearest] - hy, height)
    mx = _fold(2 * kx[nearest] - hx, width)
    out = np.zeros_like(high)
    usable = known[my, mx]
    out[hy[usable], hx[usable]] = high[my[usable], mx[usable]]
    fade = np.clip(_distance_inside(hole) / 4.0, 0.0, 1.0)
    return out * fade[..., None]


def _fold(index: np.ndarray, size: int) -> np.ndarray:
    period = max(1, 2 * size - 2)
    folded = np.abs(index) % period
    return np.where(folded >= size, period - folded, folded).astype(np.intp)


def _touches_border(hole: np.ndarray) -> bool:
    return bool(hole[0].any() or hole[-1].any() or hole[:, 0].any() or hole[:, -1].any())


def inpaint(pixels: np.ndarray, hole: np.ndarray, *, seed: int, variant: int = 0) -> np.ndarray:
    """Fill ``hole`` (bool HxW) of RGBA ``pixels``; pixels outside the hole are returned unchanged, alpha 255 inside."""
    import cv2

    out = pixels.copy()
    if not hole.any():
        return out
    if hole.all():  # nothing to fill from: a seeded soft field in the image's mean colour
        return variation(pixels, (pixels.shape[1], pixels.shape[0]), seed=seed)
    rgb = np.ascontiguousarray(pixels[..., :3])
    method = (cv2.INPAINT_NS, cv2.INPAINT_TELEA)[variant % 2]
    radius = 3 + (variant * 2) % 7
    rng = np.random.default_rng(seed + variant)
    filled = _structure(rgb, hole, method, radius).astype(np.float32)
    filled += _mirrored_texture(rgb, hole) if _touches_border(hole) else _texture(rgb, hole, rng)
    out[..., :3][hole] = np.clip(np.rint(filled), 0, 255).astype(np.uint8)[hole]
    out[..., 3][hole] = 255
    return out


def tone(rgb: np.ndarray, *, brightness: float = 1.0, hue: float = 0.0, saturation: float = 1.0) -> np.ndarray:
    """Brightness (RGB gain), hue rotation (degrees) and saturation gain, on uint8 RGB."""
    import cv2

    image: np.ndarray = rgb.astype(np.float32) / 255.0
    if hue or saturation != 1.0:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + hue) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    image = image * brightness
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def variation(pixels: np.ndarray, size: tuple[int, int], *, seed: int) -> np.ndarray:
    """A plausible variation: seeded crop/zoom, mirror, colour shift and fine grain; RGBA at ``size``."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = pixels.shape[:2]
    zoom = rng.uniform(0.84, 0.96)
    crop_w, crop_h = max(1, int(width * zoom)), max(1, int(height * zoom))
    x0 = int(rng.integers(0, width - crop_w + 1))
    y0 = int(rng.integers(0, height - crop_h + 1))
    crop = pixels[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_CUBIC)
    rgb = tone(out[..., :3], brightness=rng.uniform(0.93, 1.07), hue=rng.uniform(-12, 12),
               saturation=rng.uniform(0.85, 1.15))
    grain = cv2.GaussianBlur(rng.normal(0, 4.0, rgb.shape).astype(np.float32), (0, 0), 0.8)
    result = np.empty((size[1], size[0], 4), np.uint8)
    result[..., :3] = np.clip(rgb.astype(np.float32) + grain, 0, 255).astype(np.uint8)
    result[..., 3] = 255
    return result


def _hsv_colour(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255.0


def generate(prompt: str, size: tuple[int, int], *, index: int = 0) -> np.ndarray:
    """A deterministic landscape for ``prompt``: sky gradient, a sun, layered hills; RGBA, opaque."""
    import cv2

    width, height = size
    rng = np.random.default_rng(seed_of("generate", prompt, index))
    base_hue = (seed_of("hue", prompt) % 1000) / 1000.0 + index * 0.07
    # open grids (H x 1 and 1 x W) broadcast to full size only where needed: a 3840x2160 picture costs a few
    # float32 planes at a time, not the dozen full-size temporaries of dense grids
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    t = (yy / max(1, height - 1))[..., None]
    top, bottom = _hsv_colour(base_hue, 0.55, 0.95), _hsv_colour(base_hue + 0.08, 0.25, 1.0)
    image: np.ndarray = top * (1 - t) + bottom * t
    sun_x, sun_y = rng.uniform(0.2, 0.8) * width, rng.uniform(0.15, 0.4) * height
    radius = rng.uniform(0.06, 0.11) * min(width, height)
    glow = np.exp(-(((xx - sun_x) ** 2 + (yy - sun_y) ** 2) / (2 * (radius * 2.2) ** 2)))[..., None]
    sun = _hsv_colour(base_hue + 0.5, 0.35, 1.0)
    image = image * (1 - 0.5 * glow) + sun * 0.5 * glow
    disc = (((xx - sun_x) ** 2 + (yy - sun_y) ** 2) <= radius**2)[..., None]
    image = np.where(disc, sun, image)
    layers = int(rng.integers(3, 6))
    for layer in range(layers):
        depth = (layer + 1) / layers
        horizon = height * (0.45 + 0.45 * depth * rng.uniform(0.8, 1.0))
        ridge = horizon - height * 0.08 * np.sin(xx[0] / width * rng.uniform(2, 7) * math.pi + rng.uniform(0, 6))
        ridge -= height * 0.03 * np.sin(xx[0] / width * rng.uniform(9, 17) * math.pi + rng.uniform(0, 6))
        colour = _hsv_colour(base_hue + 0.3 + 0.05 * layer, 0.45 + 0.1 * depth, 0.75 - 0.45 * depth)
        below = (yy >= ridge[None, :])[..., None]
        shade = 1.0 - 0.25 * ((yy - ridge[None, :]) / height).clip(0, 1)[..., None]
        image = np.where(below, colour * shade, image)
    grain = cv2.GaussianBlur(rng.normal(0, 3.0, image.shape).astype(np.float32), (0, 0), 1.0)
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = np.clip(image + grain, 0, 255).astype(np.uint8)
    rgba[..., 3] = 255
    return rgba


def visible_edit(pixels: np.ndarray, hole: np.ndarray, *, seed: int) -> np.ndarray:
    """Inpaint, then paint something obvious inside the hole (a seeded coloured disc), as a model edit would."""
    out = inpaint(pixels, hole, seed=seed)
    if not hole.any():
        return out
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(hole)
    cy, cx = ys.mean(), xs.mean()
    radius = 0.35 * max(1.0, min(ys.max() - ys.min(), xs.max() - xs.min()))
    yy, xx = np.ogrid[0 : hole.shape[0], 0 : hole.shape[1]]  # open grids: no two full-size int64 planes
    disc = hole & (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2)
    colour = _hsv_colour(rng.random(), 0.7, 0.9)
    region = out[..., :3][disc].astype(np.float32)
    out[..., :3][disc] = np.clip(region * 0.3 + colour * 0.7, 0, 255).astype(np.uint8)
    return out
