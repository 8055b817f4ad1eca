"""Region planning: selection bounds -> context crop -> model request -> target pixel size, and back.

Pure integer geometry, no pixels (those live in :mod:`composite`). The plan has three rectangles/sizes:

* ``request`` (image coordinates) is what the model sees. It is the selection plus context (``padding`` x the
  selection's larger side on every side), grown to an aspect the model accepts. It grows *inside the layer
  first* (more real context); only where the layer runs out does it extend past it.
* ``place`` = ``request`` ∩ (layer ∪ selection): the pixels the host exports and the region the result is put
  back into. A selection reaching past the layer is filled whole, so ``place`` may extend past the layer too:
  the host exports transparent pixels there and the engine fills them for the model (:mod:`beyond`); the
  result layer then grows past the old layer (the layer itself is never resized). Everything of ``request``
  outside ``place`` is padding the engine invents (see ``composite.request_pixels``).
* ``target`` is the pixel size sent to the model: ``request`` scaled uniformly (exactly, or within half a
  pixel for gpt-image-2's free sizes) to a size the family takes.

Cost follows the selection, not the image: a 300x300 selection in an 8000x8000 layer plans a ~450x450 crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .capabilities import Family, FreeSizeRule, parse_size
from .errors import InvalidInputError


@dataclass(frozen=True)
class Rect:
    """Integer rectangle in image coordinates; ``x``/``y`` may be negative, ``width``/``height`` >= 0."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ValueError(f"Rect with negative size: {self.width}x{self.height}")

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def is_empty(self) -> bool:
        return self.width == 0 or self.height == 0

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @staticmethod
    def from_edges(left: int, top: int, right: int, bottom: int) -> Rect:
        """Rect from edges; inverted edges give an empty rect at (left, top)."""
        return Rect(left, top, max(0, right - left), max(0, bottom - top))

    def intersect(self, other: Rect) -> Rect:
        return Rect.from_edges(
            max(self.x, other.x), max(self.y, other.y), min(self.right, other.right), min(self.bottom, other.bottom)
        )

    def union(self, other: Rect) -> Rect:
        """Bounding box of both; an empty rect contributes nothing."""
        if self.is_empty:
            return other
        if other.is_empty:
            return self
        return Rect.from_edges(
            min(self.x, other.x), min(self.y, other.y), max(self.right, other.right), max(self.bottom, other.bottom)
        )

    def translate(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height)

    def contains(self, other: Rect) -> bool:
        """True when ``other`` lies inside (an empty ``other`` is inside anything)."""
        if other.is_empty:
            return True
        return self.x <= other.x and self.y <= other.y and other.right <= self.right and other.bottom <= self.bottom

    def grow(self, left: int, top: int, right: int, bottom: int) -> Rect:
        return Rect.from_edges(self.x - left, self.y - top, self.right + right, self.bottom + bottom)

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    @staticmethod
    def from_dict(data: Any) -> Rect:
        """Parse ``{"x","y","width","height"}``; anything else is an :class:`InvalidInputError`."""
        try:
            values = [data[k] for k in ("x", "y", "width", "height")]
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(f"A rectangle needs x, y, width and height; got {data!r}") from exc
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise InvalidInputError(f"Rectangle values must be whole numbers; got {data!r}")
        if values[2] < 0 or values[3] < 0:
            raise InvalidInputError(f"Rectangle width and height must not be negative; got {data!r}")
        return Rect(*values)


@dataclass(frozen=True)
class RegionPlan:
    """Where to cut, what the model sees, and at what size. See the module docstring."""

    place: Rect
    request: Rect
    target: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): target pixels per request pixel."""
        return self.target[0] / self.request.width, self.target[1] / self.request.height

    @property
    def place_in_request(self) -> Rect:
        """``place`` in request-local coordinates (where the real pixels sit inside the request image)."""
        return self.place.translate(-self.request.x, -self.request.y)

    @property
    def place_in_target(self) -> Rect:
        """``place`` in target pixels, rounded to whole pixels and at least 1x1.

        ``composite.request_pixels`` resizes the place pixels to exactly this rectangle and
        ``composite.result_to_place`` cuts exactly this rectangle back out, so the round trip has no shift
        whatever the rounding (it only stretches the invented padding by under half a pixel).
        """
        local = self.place_in_request
        sx, sy = self.scale
        tw, th = self.target
        x0 = min(max(0, round(local.x * sx)), tw - 1)
        y0 = min(max(0, round(local.y * sy)), th - 1)
        x1 = min(max(x0 + 1, round(local.right * sx)), tw)
        y1 = min(max(y0 + 1, round(local.bottom * sy)), th)
        return Rect.from_edges(x0, y0, x1, y1)

    @property
    def target_size(self) -> str:
        """``"WxH"`` as the API's ``size`` field wants it."""
        return f"{self.target[0]}x{self.target[1]}"

    def to_dict(self) -> dict[str, Any]:
        return {"place": self.place.to_dict(), "request": self.request.to_dict(), "target": list(self.target)}

    @staticmethod
    def from_dict(data: Any) -> RegionPlan:
        try:
            place = Rect.from_dict(data["place"])
            request = Rect.from_dict(data["request"])
            tw, th = (int(v) for v in data["target"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"A plan needs place, request and target [w, h]; got {data!r}") from exc
        if place.is_empty or request.is_empty or tw <= 0 or th <= 0:
            raise InvalidInputError(f"A plan with an empty region or target cannot be used: {data!r}")
        if not request.contains(place):
            raise InvalidInputError(f"The plan's request {request} does not contain its place {place}")
        return RegionPlan(place, request, (tw, th))


# --- selections --------------------------------------------------------------------------------------------


def selection_bounds(selection: np.ndarray, origin: tuple[int, int] = (0, 0), threshold: int = 1) -> Rect | None:
    """Bounding box (image coordinates) of the pixels >= ``threshold`` in a (H, W) selection, or None if none.

    ``origin`` is where the array's top-left pixel sits in the image (a layer's or crop's offsets).
    """
    if selection.ndim != 2:
        raise InvalidInputError(f"A selection must be a single channel; got an array of shape {selection.shape}")
    hit = selection >= threshold
    rows = np.flatnonzero(hit.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(hit[rows[0] : rows[-1] + 1].any(axis=0))
    return Rect.from_edges(
        origin[0] + int(cols[0]), origin[1] + int(rows[0]), origin[0] + int(cols[-1]) + 1, origin[1] + int(rows[-1]) + 1
    )


# --- sizes ------------------------------------------------------------------------------------------------


def _ceil_to(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple - 1e-9)) * multiple


def grow_to_aspect(
    width: int, height: int, target_w: int, target_h: int, *, exact: bool = True, tolerance: float = 0.5
) -> tuple[int, int]:
    """Smallest (w, h) >= (width, height) whose aspect is ``target_w:target_h``.

    ``exact``: w:h is exactly the reduced ratio (3:2 -> multiples of 3 and 2), so scaling is perfectly uniform.
    Otherwise the height is within ``tolerance`` *request* pixels of the exact aspect: half a pixel of the real
    image is the finest detail there is, so a smaller mismatch is invisible even after an upscale; the exact
    solution is still used when it is no larger. (Alignment never depends on this: the result is mapped back
    through the same rectangles.)
    """
    g = math.gcd(target_w, target_h)
    a, b = target_w // g, target_h // g
    k = max(-(-width // a), -(-height // b))
    exact_size = (k * a, k * b)
    if exact:
        return exact_size
    w = max(width, -(-height * target_w // target_h))
    while w < exact_size[0]:
        h = max(height, round(w * target_h / target_w))
        if abs(w * target_h / target_w - h) <= tolerance:
            return (w, h) if w * h < exact_size[0] * exact_size[1] else exact_size
        w += 1
    return exact_size


def aspect_error_px(request: tuple[int, int], target: tuple[int, int]) -> float:
    """How many request pixels the request's height is off from the target's exact aspect."""
    rw, rh = request
    tw, th = target
    return abs(rw * th / tw - rh)


def _log_aspect_distance(w1: float, h1: float, w2: float, h2: float) -> float:
    return abs(math.log(w1 / h1) - math.log(w2 / h2))


def choose_standard_size(width: int, height: int, sizes: tuple[str, ...]) -> tuple[int, int]:
    """Fixed-size families: the size whose aspect is closest to the crop; among equal aspects (dall-e-2's
    256/512/1024 squares) the smallest that holds the crop without upscaling, else the largest."""
    parsed = [p for p in (parse_size(s) for s in sizes) if p is not None]
    if not parsed:
        raise InvalidInputError("This model lists no sizes; set a size rule for it in Settings.")
    best = min(_log_aspect_distance(w, h, width, height) for w, h in parsed)
    same_aspect = sorted(
        (p for p in parsed if _log_aspect_distance(p[0], p[1], width, height) <= best + 1e-9),
        key=lambda p: p[0] * p[1],
    )
    for w, h in same_aspect:
        if w >= width and h >= height:
            return w, h
    return same_aspect[-1]


def _fix_free_aspect(width: int, height: int, rule: FreeSizeRule) -> tuple[int, int]:
    """Grow the short side until long:short <= max_aspect (a 30000x200 strip becomes 30000x10000)."""
    if width > rule.max_aspect * height:
        height = int(math.ceil(width / rule.max_aspect))
    elif height > rule.max_aspect * width:
        width = int(math.ceil(height / rule.max_aspect))
    return width, height


def _nearest_free_size(
    width: int, height: int, ideal_w: float, ideal_h: float, rule: FreeSizeRule
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(request, target) for the valid free size near (ideal_w, ideal_h) that grows the request least, then
    matches its aspect best, then is nearest in pixel count."""
    m = rule.multiple
    best: tuple[tuple[float, ...], tuple[int, int], tuple[int, int]] | None = None
    for w in range(max(m, int(ideal_w // m) * m - 2 * m), _ceil_to(ideal_w, m) + 3 * m, m):
        for h in range(max(m, int(ideal_h // m) * m - 2 * m), _ceil_to(ideal_h, m) + 3 * m, m):
            if rule.check(w, h) is not None:
                continue
            request = grow_to_aspect(width, height, w, h, exact=False)
            score = (
                request[0] * request[1],
                round(_log_aspect_distance(request[0], request[1], w, h), 6),
                abs(math.log(w * h / (ideal_w * ideal_h))),
            )
            if best is None or score < best[0]:
                best = (score, request, (w, h))
    if best is None:  # cannot happen for sane rules; say so instead of guessing
        raise InvalidInputError(f"No size near {ideal_w:.0f}x{ideal_h:.0f} satisfies the model's size rules.")
    return best[1], best[2]


def free_size_for(width: int, height: int, rule: FreeSizeRule) -> tuple[tuple[int, int], tuple[int, int]]:
    """gpt-image-2: (request size, target size) for a crop of ``width`` x ``height``.

    At native resolution when it fits the limits (request grown to multiples of 16, scale 1); upscaled
    uniformly when smaller than ``min_pixels``; downscaled when over ``max_pixels`` or ``max_edge``.
    """
    aw, ah = _fix_free_aspect(width, height, rule)
    native = (_ceil_to(aw, rule.multiple), _ceil_to(ah, rule.multiple))
    if rule.check(*native) is None:
        return native, native
    pixels = aw * ah
    if pixels < rule.min_pixels:
        scale = math.sqrt(rule.min_pixels / pixels)
    else:
        scale = min(math.sqrt(rule.max_pixels / pixels), rule.max_edge / max(aw, ah))
    return _nearest_free_size(aw, ah, aw * scale, ah * scale, rule)


#: The pixel count a generation for a canvas aims at: the 1024x1024 tier every family prices as its standard,
#: so matching the canvas's shape does not silently multiply the cost of a 6000x4000 canvas.
GENERATION_PIXELS = 1024 * 1024


def generation_size_for_canvas(width: int, height: int, family: Family) -> tuple[int, int]:
    """The size to generate at for a ``width`` x ``height`` canvas: its aspect, at about one megapixel.

    Fixed-size families take the listed size nearest the canvas's aspect; free-size families a valid size of
    that aspect (sides in multiples of the rule's step, long:short clamped to the rule's limit).
    """
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"The canvas is {width}x{height} px; it must have pixels to generate for.")
    rule = family.free_sizes
    if rule is None:
        return choose_standard_size(width, height, family.sizes)
    aw, ah = _fix_free_aspect(width, height, rule)
    scale = math.sqrt(GENERATION_PIXELS / (aw * ah))
    m = rule.multiple
    guess = (max(m, int(round(aw * scale / m)) * m), max(m, int(round(ah * scale / m)) * m))
    if rule.check(*guess) is None:
        return guess
    return _nearest_free_size(aw, ah, aw * scale, ah * scale, rule)[1]


# --- placing the request in the layer ---------------------------------------------------------------------


def _place_span(start: int, length: int, lo: int, hi: int, needed: int) -> int:
    """Start of a span of ``needed`` px containing [start, start+length): centred on it, pushed inside
    [lo, hi) while it fits, centred on the layer when it is longer than the layer."""
    if needed >= hi - lo:
        return lo - (needed - (hi - lo)) // 2
    s = start - (needed - length) // 2
    s = max(lo, min(s, hi - needed))
    return max(start + length - needed, min(s, start))


def position_request(context: Rect, layer: Rect, size: tuple[int, int]) -> Rect:
    """A ``size`` rectangle containing ``context``, inside ``layer`` wherever the layer is big enough."""
    w, h = size
    x = _place_span(context.x, context.width, layer.x, layer.right, w)
    y = _place_span(context.y, context.height, layer.y, layer.bottom, h)
    return Rect(x, y, w, h)


#: Smallest context side (px) when the layer allows: a 1x1 selection with 25 % padding would otherwise show the
#: model 2x2 pixels blown up 400 times, from which it can recognise nothing.
MIN_CONTEXT = 64


def context_rect(selection: Rect, layer: Rect, padding: float, min_context: int = MIN_CONTEXT) -> Rect:
    """The selection plus ``padding`` x its larger side on every side, at least ``min_context`` px a side,
    clamped to the layer.

    Using the larger side (not each axis's own) gives a thin line context across it, not just along it.
    """
    pad = int(math.ceil(max(0.0, padding) * max(selection.width, selection.height)))
    grown = selection.grow(pad, pad, pad, pad)
    need = (max(grown.width, min(min_context, layer.width)), max(grown.height, min(min_context, layer.height)))
    return position_request(grown.intersect(layer), layer, need).intersect(layer)


def _parse_size_mode(size_mode: str, family: Family) -> tuple[int, int] | None:
    mode = (size_mode or "auto").strip().lower()
    if mode == "auto":
        return None
    parsed = parse_size(mode)
    if parsed is None:
        raise InvalidInputError(f"Size {size_mode!r} is not 'auto' or WIDTHxHEIGHT (e.g. 1024x1024).")
    problem = family.check_size(f"{parsed[0]}x{parsed[1]}")
    if problem:
        raise InvalidInputError(f"{family.name} cannot take that size: {problem}")
    return parsed


def plan_region(
    layer: Rect,
    selection: Rect | None,
    family: Family,
    *,
    padding: float = 0.25,
    size_mode: str = "auto",
    fallback_standard_size: bool = False,
    min_context: int = MIN_CONTEXT,
    beyond_layer: bool = True,
) -> RegionPlan:
    """Plan one edit. ``selection`` None means the whole layer (variations, whole-layer edits).

    ``beyond_layer``: a selection reaching past the layer is planned whole (see :func:`extent`); False clips it
    to the layer. Raises :class:`InvalidInputError` for an empty layer, a selection that misses the layer, a
    bad size.
    """
    if layer.is_empty:
        raise InvalidInputError(f"The layer is empty ({layer.width}x{layer.height} px); choose a layer with pixels.")
    area = layer
    if selection is None:
        selected = layer
    else:
        selected = selection.intersect(layer)
        if not selected.is_empty and beyond_layer:
            area = extent(layer, selection)
            selected = selection
        if selected.is_empty:
            where = "is empty" if selection.is_empty else "does not touch the active layer"
            raise InvalidInputError(
                f"The selection {where}.",
                hint="Select the area to change on the active layer (or select all), then try again.",
            )
    if not math.isfinite(padding) or padding < 0:
        raise InvalidInputError(f"Context padding must be a number >= 0; got {padding!r}")
    context = context_rect(selected, area, padding, min_context)
    cw, ch = context.size
    explicit = _parse_size_mode(size_mode, family)

    if explicit is not None and (not fallback_standard_size or f"{explicit[0]}x{explicit[1]}" in family.sizes):
        target = explicit
        request_size = grow_to_aspect(cw, ch, *target, exact=family.free_sizes is None)
    elif family.free_sizes is not None and not fallback_standard_size:
        request_size, target = free_size_for(cw, ch, family.free_sizes)
    else:
        if family.square_input:
            cw = ch = max(cw, ch)
        target = choose_standard_size(cw, ch, family.sizes)
        request_size = grow_to_aspect(cw, ch, *target)

    request = position_request(context, area, request_size)
    place = request.intersect(area)
    return RegionPlan(place=place, request=request, target=target)


def extent(layer: Rect, selection: Rect | None) -> Rect:
    """Where an edit may put pixels: the layer, grown to hold a selection that touches it and reaches past it.

    A selection beside the layer (not touching it) gives just the layer: there is nothing to continue from.
    """
    if selection is None or selection.intersect(layer).is_empty:
        return layer
    return layer.union(selection)
