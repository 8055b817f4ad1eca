"""Expand Canvas: the canvas grows and the new area is painted by edits that continue the picture.

Geometry first, as pure functions (:func:`margins_for_aspect`, :func:`expanded`, :func:`plan_tiles`), then the
operation (:func:`expand`). The new area is filled by one edit whose mask is the new area plus a band of
``band`` px of the old picture along its edge (so the model repaints across the seam and alignment and tone
match fit the result to the ring of old pixels beyond it). An area larger than the model paints at full
resolution is filled in overlapping tiles, one after the other: each tile sees the old picture and every
tile already filled as its context, repaints ``band`` px of them along its hole, and is blended into them over
that width, so neighbouring tiles agree at their seams. Downscaling a 4000 px strip into one 1536 px request
would blur it; tiles keep the model's native scale.

Fully transparent pixels of the old canvas (a layer smaller than the canvas, holes in the picture) show the
artist nothing, so they are unknown like the new area: the model never sees them as context, they are filled
with it, and the band runs along them over the known pixels only. An artist who grows the canvas expects the
whole visible canvas painted, not a transparent ring left around the old layer.

The result is one layer over what was filled (plus the band, hidden by its mask) whose mask is 255 on the new
area and on the old canvas's transparent pixels, 0 on every pixel that showed something: no visible pixel of
the old canvas changes unless the artist paints the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .capabilities import Family
from .errors import InvalidInputError
from .geometry import Rect, plan_region
from .progress import ProgressCallback, no_progress

SIDES = ("left", "top", "right", "bottom")
#: The prompt when the artist gives none: an outpainting is asked to continue what is there.
DEFAULT_PROMPT = "Extend the picture beyond its edges: continue the scene, its lighting and textures seamlessly."
#: Largest margin on one side (px) and largest new canvas side: bounds for the CLI and the job file.
MAX_MARGIN = 20000
MAX_CANVAS_SIDE = 30000
#: The least context (old or already filled pixels) a tile shows the model across its hole.
MIN_CONTEXT = 64


@dataclass(frozen=True)
class Margins:
    """Pixels added on each side."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    def __post_init__(self) -> None:
        for side in SIDES:
            value = getattr(self, side)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MARGIN:
                raise InvalidInputError(f"The {side} margin must be a whole number of pixels from 0 to {MAX_MARGIN}; "
                                        f"got {value!r}.")

    @property
    def is_empty(self) -> bool:
        return not (self.left or self.top or self.right or self.bottom)

    def to_dict(self) -> dict[str, int]:
        return {side: getattr(self, side) for side in SIDES}

    @staticmethod
    def from_dict(data: Any) -> Margins:
        if not isinstance(data, dict) or set(data) - set(SIDES):
            raise InvalidInputError(f"Margins are an object with left, top, right and bottom; got {data!r}.")
        return Margins(**{side: data.get(side, 0) for side in SIDES})


def parse_aspect(text: str) -> tuple[int, int]:
    """``"16:9"`` (or ``16x9``, ``1.5``) -> (w, h) whole numbers."""
    raw = (text or "").strip().lower().replace("x", ":").replace("/", ":")
    try:
        if ":" in raw:
            a, b = (int(v) for v in raw.split(":", 1))
        else:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            a, b = round(value * 1000), 1000
    except ValueError:
        raise InvalidInputError(f"Aspect ratio {text!r} is not W:H (e.g. 16:9) or a number (e.g. 1.5).") from None
    if a <= 0 or b <= 0 or max(a, b) > 100 * min(a, b):
        raise InvalidInputError(f"Aspect ratio {text!r} must be positive and at most 100:1.")
    g = math.gcd(a, b)
    return a // g, b // g


def margins_for_aspect(width: int, height: int, aspect: tuple[int, int], sides: Sequence[str] = ()) -> Margins:
    """The least growth that gives the canvas the aspect ``w:h``: wider when it is too narrow, else taller.

    ``sides``: which sides of the growing axis take the growth; by default both, split evenly (the odd pixel to
    the right or bottom). A side of the other axis is ignored; naming no side of the growing axis is refused.
    """
    aw, ah = aspect
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"The canvas is {width}x{height} px; it must have pixels to expand.")
    chosen = set(sides)
    unknown = chosen - set(SIDES)
    if unknown:
        raise InvalidInputError(f"Unknown side {sorted(unknown)[0]!r}; use left, top, right or bottom.")
    if width * ah < height * aw:  # too narrow: grow the width
        grow = -(-height * aw // ah) - width
        pair = ("left", "right")
    else:
        grow = -(-width * ah // aw) - height
        pair = ("top", "bottom")
    if grow == 0:
        return Margins()
    use = [s for s in pair if s in chosen] if chosen else list(pair)
    if not use:
        raise InvalidInputError(f"The canvas must grow {'wider' if pair[0] == 'left' else 'taller'} for "
                                f"{aw}:{ah}, but only {', '.join(sorted(chosen))} may grow.",
                                hint=f"Allow {pair[0]} or {pair[1]}, or choose another aspect ratio.")
    if len(use) == 2:
        first = grow // 2
        return Margins(**{pair[0]: first, pair[1]: grow - first})
    return Margins(**{use[0]: grow})


def expanded(width: int, height: int, margins: Margins) -> tuple[Rect, Rect]:
    """(new canvas, old canvas inside it), both in the new canvas's coordinates."""
    new_w, new_h = width + margins.left + margins.right, height + margins.top + margins.bottom
    if max(new_w, new_h) > MAX_CANVAS_SIDE:
        raise InvalidInputError(f"The expanded canvas would be {new_w}x{new_h} px; at most {MAX_CANVAS_SIDE} px a "
                                "side.", hint="Expand by less.")
    return Rect(0, 0, new_w, new_h), Rect(margins.left, margins.top, width, height)


def tile_limit(family: Family) -> int:
    """The largest square side (px) the family paints at native scale: larger areas are tiled, not scaled down."""
    rule = family.free_sizes
    if rule is not None:
        side = int(math.isqrt(rule.max_pixels)) // rule.multiple * rule.multiple
        return max(rule.multiple, min(side, rule.max_edge))
    sides = [min(int(a), int(b)) for a, b in (s.split("x") for s in family.sizes if "x" in s)]
    return max(sides) if sides else 1024


@dataclass(frozen=True)
class Tile:
    """One edit: ``request`` is what the model sees (context and hole); ``fill`` the new pixels it paints."""

    request: Rect
    fill: Rect
    side: str


def _pieces(length: int, limit: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most ``limit`` covering [0, length), neighbours overlapping by ``overlap``."""
    if length <= limit:
        return [(0, length)]
    step = max(1, limit - overlap)
    count = -(-(length - overlap) // step)
    size = -(-(length + (count - 1) * overlap) // count)
    spans = []
    for i in range(count):
        start = min(i * (size - overlap), length - size)
        spans.append((start, start + size))
    return spans


def plan_tiles(canvas: Rect, old: Rect, limit: int, *, overlap: int = 32) -> list[Tile]:
    """The tiles that fill ``canvas`` outside ``old``, in the order they must run.

    A canvas that fits in one tile is one edit of the whole canvas. Otherwise left and right strips first (the
    old picture's rows), then top and bottom across the whole width, so the corners are painted with both
    neighbours known. Across a strip, columns of new pixels step outward from the
    old edge, each showing at least :data:`MIN_CONTEXT` px of known pixels; along it, pieces overlap by
    ``overlap`` px. Every tile's request is at most ``limit`` px a side.
    """
    if limit < 2 * MIN_CONTEXT:
        raise InvalidInputError(f"A tile of {limit} px cannot hold a hole and its context.")
    if canvas.width <= limit and canvas.height <= limit:  # one edit sees the whole picture and fills every side
        return [Tile(canvas, canvas, "all")]
    tiles: list[Tile] = []
    for side in ("left", "right", "top", "bottom"):
        across_axis = side in ("left", "right")
        margin = {"left": old.x, "right": canvas.right - old.right, "top": old.y,
                  "bottom": canvas.bottom - old.bottom}[side]
        if margin <= 0:
            continue
        known_depth = old.width if across_axis else old.height
        along_start, along_len = (old.y, old.height) if across_axis else (canvas.x, canvas.width)
        along = _pieces(along_len, limit, overlap)
        done = 0
        while done < margin:
            new = min(margin - done, limit - MIN_CONTEXT)
            context = min(known_depth + done, limit - new, max(MIN_CONTEXT, new))
            a0, a1 = done - context, done + new  # across: distance from the old edge outward
            for b0, b1 in along:
                tiles.append(Tile(_strip_rect(side, old, a0, a1, along_start + b0, along_start + b1),
                                  _strip_rect(side, old, done, a1, along_start + b0, along_start + b1), side))
            done += new
    return tiles


def _strip_rect(side: str, old: Rect, a0: int, a1: int, b0: int, b1: int) -> Rect:
    """A rectangle given across-distances [a0, a1) from ``old``'s ``side`` edge (outward positive) and an along
    span [b0, b1) in canvas coordinates."""
    if side == "right":
        return Rect.from_edges(old.right + a0, b0, old.right + a1, b1)
    if side == "left":
        return Rect.from_edges(old.x - a1, b0, old.x - a0, b1)
    if side == "bottom":
        return Rect.from_edges(b0, old.bottom + a0, b1, old.bottom + a1)
    return Rect.from_edges(b0, old.y - a1, b1, old.y - a0)


def layer_rect(canvas: Rect, old: Rect, band: int) -> Rect:
    """The result layer: the new area's bounding box plus the band inside the old canvas (hidden by the mask,
    there for the artist to paint in)."""
    box = Rect(0, 0, 0, 0)
    for side in SIDES:
        strip = _side_strip(canvas, old, side)
        if not strip.is_empty:
            box = box.union(strip)
    if box.is_empty:
        return box
    inner = old.intersect(box.grow(band, band, band, band))
    return box.union(inner).intersect(canvas)


def hole_tiles(canvas: Rect, unknown: np.ndarray, limit: int, *, overlap: int = 32) -> list[Tile]:
    """Tiles for the unknown pixels the strips left (``unknown``: canvas-sized bool; the old canvas's
    transparent pixels beyond every strip's reach): their bounding box in pieces of at most ``limit`` px with
    :data:`MIN_CONTEXT` px of context around each, only pieces with something to fill."""
    ys, xs = np.nonzero(unknown)
    if len(xs) == 0:
        return []
    area = Rect.from_edges(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    inner = max(1, limit - 2 * MIN_CONTEXT)
    tiles = []
    for y0, y1 in _pieces(area.height, inner, overlap):
        for x0, x1 in _pieces(area.width, inner, overlap):
            fill = Rect.from_edges(area.x + x0, area.y + y0, area.x + x1, area.y + y1)
            if unknown[fill.y : fill.bottom, fill.x : fill.right].any():
                request = fill.grow(MIN_CONTEXT, MIN_CONTEXT, MIN_CONTEXT, MIN_CONTEXT).intersect(canvas)
                tiles.append(Tile(request, fill, "inside"))
    return tiles


def _side_strip(canvas: Rect, old: Rect, side: str) -> Rect:
    if side == "left":
        return Rect.from_edges(canvas.x, canvas.y, old.x, canvas.bottom)
    if side == "right":
        return Rect.from_edges(old.right, canvas.y, canvas.right, canvas.bottom)
    if side == "top":
        return Rect.from_edges(canvas.x, canvas.y, canvas.right, old.y)
    return Rect.from_edges(canvas.x, old.bottom, canvas.right, canvas.bottom)


# --- what it will cost ---------------------------------------------------------------------------------------


@dataclass
class ExpandEstimate:
    """What an expansion should cost before anything is sent: one estimate per tile, in the order
    :func:`expand` sends them (each tile is one edit of ``n`` = 1)."""

    tiles: list[Tile]
    estimates: list[Any]  # pricing.Estimate, one per tile

    @property
    def usd(self) -> float | None:
        return self.total["usd"]

    @property
    def usd_upper(self) -> float | None:
        return self.total["usd_upper"]

    @property
    def total(self) -> dict[str, Any]:
        from gimp_openai.pricing import add_estimates

        return add_estimates(self.estimates)

    def text(self) -> str:
        """``2 requests (tiles of 1024x1024, 1024x640), gpt-image-2, quality low: about $0.0110``."""
        from gimp_openai.pricing import about

        if not self.estimates:
            return "nothing to paint: the canvas would not grow"
        first = self.estimates[0]
        sizes = list(dict.fromkeys(f"{e.size[0]}x{e.size[1]}" for e in self.estimates))
        count = len(self.estimates)
        what = (f"{count} request{'s' if count != 1 else ''} ({'tile' if count == 1 else 'tiles'} of "
                f"{', '.join(sizes)}), {first.model}, quality {first.quality}")
        total = self.total
        return f"{what}: {about(total['usd'], total['usd_upper'], total['input_tokens'] + total['output_tokens'])}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.total, "tiles": len(self.tiles), "text": self.text(),
                "requests": [e.to_dict() for e in self.estimates]}


def _strips(family: Family, canvas: Rect, old: Rect, band: int, limit: int | None) -> tuple[list[Tile], int, int]:
    """The strips' tiles around ``old`` in ``canvas``, with the side limit and the overlap every later tile
    (those for transparent pixels) uses too: one rule for the run and its estimate."""
    side_limit = limit or tile_limit(family)
    overlap = max(band, 16)
    return plan_tiles(canvas, old, side_limit, overlap=overlap), side_limit, overlap


def planned_tiles(family: Family, width: int, height: int, margins: Margins, *, band: int = 16,
                  limit: int | None = None, shown: np.ndarray | None = None) -> list[Tile]:
    """Every tile :func:`expand` will send for a ``width`` x ``height`` picture, in order, without sending:
    the strips, then (when ``shown``, the picture's alpha > 0, is known) the tiles for the transparent pixels
    the strips do not reach. Without ``shown`` the picture counts as opaque (a dialog has not read its pixels)."""
    canvas, old = expanded(width, height, margins)
    tiles, side_limit, overlap = _strips(family, canvas, old, band, limit)
    if shown is not None and not shown.all():
        filled = np.zeros((canvas.height, canvas.width), bool)
        filled[old.y : old.bottom, old.x : old.right] = shown
        for tile in tiles:
            q = tile.request
            filled[q.y : q.bottom, q.x : q.right] = True
        tiles.extend(hole_tiles(canvas, ~filled, side_limit, overlap=overlap))
    return tiles


def estimate(model: str, family: Family, price: Any, *, width: int, height: int, margins: Margins, quality: str,
             prompt: str = "", size_mode: str = "auto", band: int = 16, limit: int | None = None,
             shown: np.ndarray | None = None) -> ExpandEstimate:
    """The plan's estimate: the sum of its tiles' requests, each priced as :func:`operations.edit` prices the
    edit it sends (one image at the tile's request size, the tile itself uploaded, the prompt or the default
    one). The CLI asks with it before the first tile is paid; GIMP's dialog shows it (jobs.plan_answer)."""
    from gimp_openai import pricing

    if margins.is_empty:
        return ExpandEstimate([], [])
    tiles = planned_tiles(family, width, height, margins, band=band, limit=limit, shown=shown)
    text = (prompt or "").strip() or DEFAULT_PROMPT
    estimates = []
    for tile in tiles:
        target = plan_region(tile.request, None, family, padding=0.0, size_mode=size_mode).target
        estimates.append(pricing.estimate(model, family, n=1, size=target, quality=quality or "auto", prompt=text,
                                          input_images=[target], price=price))
    return ExpandEstimate(tiles, estimates)


# --- the operation ------------------------------------------------------------------------------------------


@dataclass
class ExpandOutcome:
    """The grown canvas, where the old one sits in it, and the one result layer (in new canvas coordinates)."""

    canvas: Rect
    old: Rect
    output: Any  # operations.Output: pixels, mask, x, y over layer_rect
    tiles: list[Tile]
    model: str
    costs: list[Any] = field(default_factory=list)
    estimates: list[Any] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)

    @property
    def cost(self) -> Any:
        from gimp_openai.pricing import add_costs

        return add_costs(self.costs)

    def composite(self, old_pixels: np.ndarray) -> np.ndarray:
        """The whole new canvas as GIMP shows it: old pixels where they were, the layer through its mask."""
        from gimp_openai import composite

        out = np.zeros((self.canvas.height, self.canvas.width, 4), np.uint8)
        out[self.old.y : self.old.bottom, self.old.x : self.old.right] = old_pixels
        o = self.output
        region = out[o.y : o.y + o.height, o.x : o.x + o.width]
        out[o.y : o.y + o.height, o.x : o.x + o.width] = composite.composite(region, o.pixels, o.mask)
        return out


def expand(
    engine: Any,
    options: Any,
    pixels: np.ndarray,
    margins: Margins,
    *,
    band: int = 16,
    limit: int | None = None,
    item: str = "expand",
    progress: ProgressCallback = no_progress,
) -> ExpandOutcome:
    """Grow ``pixels`` (the old canvas, RGBA u8) by ``margins`` and fill the new area (see the module docstring).

    ``limit`` overrides the family's tile side (tests; a smaller server). One result per tile (``options.n`` is
    not used): tiles condition on each other, so there is one picture, not n.
    """
    import cv2

    from gimp_openai import operations

    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype != np.uint8 or 0 in pixels.shape[:2]:
        raise InvalidInputError("The picture to expand must be RGBA with pixels.")
    if margins.is_empty:
        raise InvalidInputError("Nothing to expand: every margin is 0.", hint="Give a side and an amount, or an "
                                                                             "aspect ratio the canvas does not have.")
    if not 0 <= band <= 256:
        raise InvalidInputError(f"The blend band must be 0 to 256 px; got {band}.")
    shown = pixels[..., 3] > 0  # a fully transparent pixel shows nothing: it is filled, never kept
    if not shown.any():
        raise InvalidInputError("The picture is fully transparent: there is nothing to continue.",
                                hint="Show a layer with pixels, then expand the canvas.")
    height, width = pixels.shape[:2]
    canvas, old = expanded(width, height, margins)
    model = options.model
    family = engine.family(model)
    tiles, side_limit, overlap = _strips(family, canvas, old, band, limit)
    options = replace(options, n=1, prompt=(options.prompt or "").strip() or DEFAULT_PROMPT, padding=0.0)

    work = np.zeros((canvas.height, canvas.width, 4), np.uint8)  # the context every next tile sees
    work[old.y : old.bottom, old.x : old.right] = pixels
    filled = np.zeros((canvas.height, canvas.width), bool)
    filled[old.y : old.bottom, old.x : old.right] = shown
    is_old = filled.copy()  # the pixels that are kept: the old canvas's visible ones
    box = layer_rect(canvas, old, band)
    holes = ~shown
    if holes.any():  # the layer covers the transparent pixels of the old canvas too, with the band around them
        ys, xs = np.nonzero(holes)
        inside = Rect.from_edges(old.x + int(xs.min()), old.y + int(ys.min()), old.x + int(xs.max()) + 1,
                                 old.y + int(ys.max()) + 1)
        box = box.union(inside.grow(band, band, band, band).intersect(canvas))
    layer = work[box.y : box.bottom, box.x : box.right].copy()  # the result layer: band pixels replaced below

    outcome = ExpandOutcome(canvas=canvas, old=old, output=None, tiles=tiles, model=model)
    pending, k, strips_done = list(tiles), 0, False
    while pending or not strips_done:
        if not pending:  # the strips are done: what is still unknown inside the old canvas gets its tiles
            strips_done = True
            pending = hole_tiles(canvas, ~filled, side_limit, overlap=overlap)
            tiles.extend(pending)
            continue
        tile = pending.pop(0)
        k += 1
        q = tile.request
        known = filled[q.y : q.bottom, q.x : q.right].copy()
        hole = ~known
        if not hole.any():
            continue
        # distance of every known pixel from the hole: the band it repaints and the weight it blends with
        dist = cv2.distanceTransform(known.astype(np.uint8), cv2.DIST_L2, 5)
        repaint = known & (dist <= max(band, 1 if k == 1 else overlap))
        selection = np.where(repaint, 255, 0).astype(np.uint8)
        plan = plan_region(q, None, family, padding=0.0, size_mode=options.size_mode)
        tile_item = item if len(tiles) == 1 else f"{item}-{k}"
        result = operations.edit(engine, options, place_pixels=work[q.y : q.bottom, q.x : q.right].copy(),
                                 selection=selection, layer=q, plan=plan, item=tile_item, progress=progress,
                                 known=known)
        out = result.outputs[0]
        outcome.costs.append(result.cost)
        outcome.estimates.append(result.estimate)
        outcome.warnings.extend(result.warnings)
        outcome.notes.extend(out.notes)
        if out.history_png is not None:
            outcome.history.append(str(out.history_png))
        tile_pixels = out.pixels
        # new pixels of the hole taken whole; filled new pixels faded from the hole outward; old pixels kept
        new_here = ~is_old[q.y : q.bottom, q.x : q.right]
        weight = np.where(hole, 1.0, np.clip(1.0 - dist / float(max(overlap, 1)), 0.0, 1.0)).astype(np.float32)
        weight[~new_here] = 0.0
        region = work[q.y : q.bottom, q.x : q.right]
        blended = region.astype(np.float32) * (1.0 - weight[..., None]) + tile_pixels.astype(np.float32) * weight[
            ..., None]
        region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        filled[q.y : q.bottom, q.x : q.right] = True
        # the band (old pixels the model repainted) goes to the layer only, hidden by its mask
        in_box = q.intersect(box)
        if not in_box.is_empty:
            sub = (slice(in_box.y - q.y, in_box.bottom - q.y), slice(in_box.x - q.x, in_box.right - q.x))
            band_here = repaint[sub] & ~new_here[sub]
            target = layer[in_box.y - box.y : in_box.bottom - box.y, in_box.x - box.x : in_box.right - box.x]
            target[band_here] = tile_pixels[sub][band_here]

    new_area = ~is_old[box.y : box.bottom, box.x : box.right]  # the new area and the old transparent pixels
    layer[new_area] = work[box.y : box.bottom, box.x : box.right][new_area]
    mask = np.where(new_area, 255, 0).astype(np.uint8)
    if holes.any():
        outcome.notes.append(f"{int(holes.sum())} transparent px of the old canvas filled too")
    name = operations.layer_name(options.prompt if options.prompt != DEFAULT_PROMPT else "expanded canvas", 1, 1)
    outcome.output = operations.Output(index=1, count=1, name=name, pixels=layer, mask=mask, x=box.x, y=box.y,
                                       history_png=None, request_id=None, path="expand",
                                       notes=[f"{len(tiles)} tile(s) of at most {side_limit} px"])
    return outcome
