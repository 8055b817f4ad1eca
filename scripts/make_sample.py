#!/usr/bin/env python3
"""Make the demo's sample photo and its selection: plugin/gimp_openai/data/lake-balloon.png (+ -selection.png).

A photo-like 1024x768 landscape (sky gradient with soft clouds, two ranges of textured hills, a lake with a
blurred reflection and ripples, a grassy shore) and one obvious object to remove: a red balloon on a string
over the lake. The selection covers the balloon and its string with a margin, as an artist would lasso it.
Deterministic (fixed seed), so the committed PNGs can be regenerated bit for bit: `python scripts/make_sample.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 1024, 768
OUT = Path(__file__).resolve().parent.parent / "plugin" / "gimp_openai" / "data"
BALLOON = (690, 250, 58, 72)  # centre x, centre y, radius x, radius y


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Value noise in 0..1: random values on a coarse grid, resized smoothly (cheap, PNG-friendly texture)."""
    h, w = shape
    coarse = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w + 2 * cell, h + 2 * cell), Image.BICUBIC)
    return np.asarray(img, np.float32)[cell : cell + h, cell : cell + w] / 255.0


def fractal(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    weight = 1.0
    total = 0.0
    for cell in cells:
        out += weight * smooth_noise(rng, shape, cell)
        total += weight
        weight *= 0.5
    return out / total


def ridge(rng: np.random.Generator, base: float, amplitude: float, cells: tuple[int, ...]) -> np.ndarray:
    line = fractal(rng, (8, WIDTH), cells)[4]
    return base - amplitude * (line - 0.5) * 2


def make() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(20261125)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    horizon = 470

    # Sky: deep blue at the top to a warm haze at the horizon, with soft clouds.
    t = np.clip(yy / horizon, 0, 1)[..., None]
    top, low = np.array([62, 118, 196], np.float32), np.array([214, 226, 236], np.float32)
    img = top * (1 - t) + low * t
    clouds = fractal(rng, (HEIGHT, WIDTH), (160, 80, 40, 20))
    cloud_amount = np.clip((clouds - 0.52) * 3.0, 0, 1) * np.clip(1 - yy / horizon, 0, 1)
    img = img * (1 - cloud_amount[..., None] * 0.8) + 250 * cloud_amount[..., None] * 0.8

    # Two ranges of hills: far (bluish, hazy) and near (green), each with its own texture.
    for base, amp, cells, colour, tex_cell, tex_amt in (
        (395.0, 70.0, (256, 128, 64), (96, 124, 140), (24, 12), 18.0),
        (440.0, 45.0, (200, 100, 50, 25), (58, 104, 50), (12, 6, 3), 40.0),
    ):
        edge = ridge(rng, base, amp, cells)
        inside = (yy >= edge[None, :]) & (yy < horizon)
        texture = fractal(rng, (HEIGHT, WIDTH), tex_cell) - 0.5
        shade = np.clip((yy - edge[None, :]) / 80.0, 0, 1)[..., None]
        hill = np.array(colour, np.float32) * (1.0 - 0.25 * shade) + tex_amt * texture[..., None]
        img = np.where(inside[..., None], hill, img)

    # Lake: the scene above the horizon mirrored, darkened, blurred, with horizontal ripples.
    lake_top, shore_top = horizon, 640
    depth = shore_top - lake_top
    mirror_rows = np.clip(2 * lake_top - np.arange(lake_top, shore_top), 0, lake_top - 1)
    reflection = img[mirror_rows].copy()
    ripple = fractal(rng, (depth, WIDTH), (6, 3))
    shift = ((ripple - 0.5) * 10).astype(np.int32)
    cols = np.clip(np.arange(WIDTH)[None, :] + shift, 0, WIDTH - 1)
    reflection = reflection[np.arange(depth)[:, None], cols]
    water = np.array([40, 78, 110], np.float32)
    fade = np.linspace(0.55, 0.8, depth, dtype=np.float32)[:, None, None]
    lake = reflection * (1 - fade) + water * fade
    lake = np.asarray(Image.fromarray(np.clip(lake, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)),
                      np.float32)
    img[lake_top:shore_top] = lake

    # Shore: grass in the foreground, with fine texture.
    grass_tex = fractal(rng, (HEIGHT - shore_top, WIDTH), (8, 4, 2)) - 0.5
    depth_shade = np.linspace(0.9, 1.15, HEIGHT - shore_top, dtype=np.float32)[:, None, None]
    grass = np.array([78, 118, 46], np.float32) * depth_shade + 70 * grass_tex[..., None]
    img[shore_top:] = grass

    pixels = np.clip(img, 0, 255).astype(np.uint8)
    photo = Image.fromarray(pixels, "RGB")

    # The object to remove: a red balloon with a highlight and a string.
    cx, cy, rx, ry = BALLOON
    draw = ImageDraw.Draw(photo)
    draw.line([(cx, cy + ry), (cx - 6, cy + ry + 40), (cx + 4, cy + ry + 85), (cx - 2, cy + ry + 130)],
              fill=(60, 50, 45), width=2)
    balloon = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(balloon).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    dist = np.hypot((xx - (cx - rx * 0.35)) / rx, (yy - (cy - ry * 0.4)) / ry)
    red = np.stack([200 - 60 * np.clip(dist - 0.3, 0, 1), 24 + 0 * dist, 30 + 0 * dist], -1)
    red += 120 * np.clip(1 - dist / 0.25, 0, 1)[..., None]
    red_img = Image.fromarray(np.clip(red, 0, 255).astype(np.uint8), "RGB")
    photo.paste(red_img, (0, 0), balloon.filter(ImageFilter.GaussianBlur(0.8)))
    draw.polygon([(cx - 5, cy + ry - 1), (cx + 5, cy + ry - 1), (cx, cy + ry + 7)], fill=(150, 20, 24))

    # The selection: balloon and string, grown by a margin, as a lasso would be.
    sel = Image.new("L", (WIDTH, HEIGHT), 0)
    sd = ImageDraw.Draw(sel)
    margin = 14
    sd.ellipse([cx - rx - margin, cy - ry - margin, cx + rx + margin, cy + ry + margin], fill=255)
    sd.rectangle([cx - 16, cy + ry, cx + 14, cy + ry + 130 + margin], fill=255)
    return photo, sel


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    photo, sel = make()
    photo.save(OUT / "lake-balloon.png", optimize=True)
    sel.save(OUT / "lake-balloon-selection.png", optimize=True)
    for name in ("lake-balloon.png", "lake-balloon-selection.png"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
