"""Synthetic test scenes for the seamless figures: textured photos, selections and "model results".

Why synthetic: the figures must hold over hundreds of random cases, and a 1 px misalignment must be visible
everywhere in the context, so the texture has detail at every scale (random sinusoids, noise, hard edges)
and photo-like colours. A "model result" is the original re-rendered like a GPT model does it: warped by a
small similarity (rendered from a larger canvas, so its borders hold real content), optionally tone-shifted,
with something different painted inside part of the selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def textured_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """RGB uint8 photo-like texture with detail from 2 px to the whole image."""
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)
    rows, cols = [], []
    for _ in range(16):
        period = float(np.exp(rng.uniform(np.log(3.0), np.log(max(width, height)))))
        theta = float(rng.uniform(0, np.pi))
        phase = float(rng.uniform(0, 2 * np.pi))
        k = 2 * np.pi / period
        ax, ay = k * np.cos(theta) * x, k * np.sin(theta) * y + phase
        # sin(ax + ay) = cos(ay) sin(ax) + sin(ay) cos(ax): the whole sum is one small matrix product per field
        rows += [np.cos(ay), np.sin(ay)]
        cols += [np.sin(ax), np.cos(ax)]
    amp = np.repeat(rng.uniform(0.1, 0.5, size=(16, 2)).astype(np.float32), 2, axis=0)   # (32, 2)
    u, v = np.stack(rows, axis=1), np.stack(cols, axis=0)                                  # (h, 32), (32, w)
    # cv2.gemm, not numpy's matmul: a multi-threaded BLAS thrashes on a shared 2-core machine
    # (src3 None with beta 0: no addend; the stubs want an array there)
    fields = np.stack([cv2.gemm(np.ascontiguousarray(u * amp[:, c]), v, 1.0, None, 0.0)  # type: ignore[call-overload]
                       for c in (0, 1)], axis=-1)
    # Hard edges at several scales: random filled discs and boxes, drawn straight into both fields.
    shapes = np.zeros((height, width, 2), np.float32)
    for _ in range(60):
        r = int(rng.integers(2, max(3, min(height, width) // 5)))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(float(v) for v in rng.uniform(-0.8, 0.8, size=2))
        if rng.random() < 0.5:
            cv2.circle(shapes, (cx, cy), r, colour, -1)
        else:
            cv2.rectangle(shapes, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    fields += shapes
    fields = fields.transpose(2, 0, 1)
    # Fine grain: lightly blurred noise (about 1-2 px features).
    grain = cv2.GaussianBlur(rng.standard_normal((height, width, 2), dtype=np.float32), (0, 0), 0.7).transpose(2, 0, 1)
    fields += grain * 0.35
    fields = (fields - fields.mean(axis=(1, 2), keepdims=True)) / (fields.std(axis=(1, 2), keepdims=True) + 1e-6)
    # Photo-like colours: field 0 drives a ramp between a dark and a light colour, field 1 shifts the hue.
    dark = rng.uniform(0.05, 0.35, size=3).astype(np.float32)
    light = rng.uniform(0.55, 0.95, size=3).astype(np.float32)
    tint = rng.uniform(-0.12, 0.12, size=3).astype(np.float32)
    t = np.clip(0.5 + 0.22 * fields[0], 0, 1)[..., None]
    rgb = dark + (light - dark) * t + tint * np.tanh(fields[1])[..., None]
    return np.clip(rgb * 255.0, 0, 255).astype(np.uint8)


def rgba(rgb: np.ndarray) -> np.ndarray:
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


def ellipse_selection(rng: np.random.Generator, height: int, width: int, share: tuple[float, float] = (0.2, 0.35),
                      soft: float = 0.0) -> np.ndarray:
    """uint8 selection: one random ellipse covering `share` of the crop, optionally with soft edges."""
    area = float(rng.uniform(*share)) * height * width
    aspect = float(rng.uniform(0.6, 1.6))
    a = np.sqrt(area / np.pi * aspect)
    b = area / (np.pi * a)
    a, b = min(a, width * 0.45), min(b, height * 0.45)
    cx = float(rng.uniform(a + 2, width - a - 2))
    cy = float(rng.uniform(b + 2, height - b - 2))
    angle = float(rng.uniform(0, 180))
    sel = np.zeros((height, width), np.uint8)
    cv2.ellipse(sel, ((cx, cy), (2 * a, 2 * b), angle), 255, -1)
    if soft > 0:
        sel = np.asarray(cv2.GaussianBlur(sel, (0, 0), soft), np.uint8)
    return sel


def similarity(dx: float, dy: float, scale: float, angle_deg: float, center: tuple[float, float]) -> np.ndarray:
    """2x3 forward map (original -> result coordinates): scale/rotate about `center`, then shift by (dx, dy)."""
    m = cv2.getRotationMatrix2D(center, angle_deg, scale).astype(np.float64)
    m[0, 2] += dx
    m[1, 2] += dy
    return m


@dataclass
class Case:
    original: np.ndarray      # RGBA crop
    result: np.ndarray        # RGBA "model result"
    selection: np.ndarray     # uint8
    changed: np.ndarray       # bool, in original coordinates: where the model painted something else
    forward: np.ndarray       # 2x3 original -> result map


def make_case(rng: np.random.Generator, size: tuple[int, int] | None = None, *, max_shift: float = 12.0,
              max_scale: float = 0.03, max_angle: float = 1.0, warp: bool = True,
              tone: tuple[float, float, float] | None = None, soft: float = 0.0) -> Case:
    """One random case. `tone` = (brightness, hue degrees, saturation) change applied to the whole result."""
    if size is None:
        h, w = int(rng.integers(256, 385)), int(rng.integers(256, 385))
    else:
        h, w = size
    pad = 48
    canvas = textured_image(rng, h + 2 * pad, w + 2 * pad)
    other = np.ascontiguousarray(255 - canvas[::-1, ::-1])   # something else entirely, at no cost
    original = canvas[pad:pad + h, pad:pad + w]
    sel = ellipse_selection(rng, h, w, soft=soft)
    # The model changes only an inner part of the selection, so part of the selection stays unchanged.
    inner = cv2.erode((sel >= 128).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
    changed = inner.astype(bool)
    edited = canvas.copy()
    region = edited[pad:pad + h, pad:pad + w]
    region[changed] = other[pad:pad + h, pad:pad + w][changed]
    if warp:
        dx, dy = rng.uniform(-max_shift, max_shift, size=2)
        scale = 1.0 + float(rng.uniform(-max_scale, max_scale))
        angle = float(rng.uniform(-max_angle, max_angle))
    else:
        dx = dy = 0.0
        scale, angle = 1.0, 0.0
    forward = similarity(float(dx), float(dy), scale, angle, ((w - 1) / 2, (h - 1) / 2))
    if warp:
        # Render from the padded canvas: canvas coordinates = crop coordinates + pad.
        shift = np.array([[1, 0, pad], [0, 1, pad]], np.float64)
        to_canvas = shift.copy()
        # result(q) = edited_canvas(inverse_forward(q) + pad)
        inv = cv2.invertAffineTransform(forward)
        inv_canvas = inv.copy()
        inv_canvas[:, 2] += to_canvas[:, 2]
        result_rgb = cv2.warpAffine(edited, inv_canvas, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REFLECT)
    else:
        result_rgb = region.copy()
    if tone is not None:
        result_rgb = tone_shift(result_rgb, *tone)
    return Case(rgba(original), rgba(result_rgb), sel, changed, forward)


def tone_shift(rgb: np.ndarray, brightness: float, hue_deg: float, saturation: float) -> np.ndarray:
    """Brightness (x(1+b)), hue rotation about the grey axis, saturation (1+s), as photo editors do them."""
    x = rgb.astype(np.float32) / 255.0
    x = x * (1.0 + brightness)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * (1.0 + saturation)
    c, s = np.cos(np.radians(hue_deg)), np.sin(np.radians(hue_deg))
    # The standard luminance-preserving hue rotation matrix (as in SVG feColorMatrix hueRotate).
    m = np.array([
        [0.213 + c * 0.787 - s * 0.213, 0.715 - c * 0.715 - s * 0.715, 0.072 - c * 0.072 + s * 0.928],
        [0.213 - c * 0.213 + s * 0.143, 0.715 + c * 0.285 + s * 0.140, 0.072 - c * 0.072 - s * 0.283],
        [0.213 - c * 0.213 - s * 0.787, 0.715 - c * 0.715 + s * 0.715, 0.072 + c * 0.928 + s * 0.072],
    ], np.float32)
    x = x @ m.T
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def noise_result(rng: np.random.Generator, like: np.ndarray) -> np.ndarray:
    """A "result" with nothing to align to: pure noise of the same size."""
    h, w = like.shape[:2]
    return rgba(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
