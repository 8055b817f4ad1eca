"""``gimp-openai expand``: the canvas grown by margins or to an aspect ratio, the new area painted by the model.

Writes NAME-expanded.png (the grown picture: the old pixels unchanged, the new area filled), and the result
layer as GIMP gets it: NAME-expanded-layer.png at its offset (said in the report) with NAME-expanded-mask.png.
Before the first tile is paid, the plan's estimate (the sum of its tiles' requests) is printed and held against
``--max-cost`` like an edit's (asked on a terminal, refused unpaid otherwise unless ``--yes``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gimp_openai import expand
from gimp_openai.errors import InvalidInputError


def add_parser(sub: Any, common: Any, bounded: Any) -> None:
    p = sub.add_parser("expand", help="grow the canvas and let the model paint the new area")
    p.add_argument("image")
    for side in expand.SIDES:
        p.add_argument(f"--{side}", type=bounded("amount", f"--{side}"), default=0, metavar="PX",
                       help=f"pixels to add on the {side}")
    p.add_argument("--aspect", default="", metavar="W:H",
                   help="grow to this aspect ratio instead (e.g. 16:9); --sides says which sides grow")
    p.add_argument("--sides", default="", help="with --aspect: comma-separated sides that may grow (default: "
                                               "both sides of the axis that grows)")
    p.add_argument("--band", type=bounded("band", "--band"), default=16,
                   help="px of the old picture the model repaints along its edge to blend (0-256; hidden by the "
                        "layer mask)")
    p.add_argument("--prompt", "-p", default="", help="what the new area shows (default: continue the scene)")
    common(p)


def margins_from(args: argparse.Namespace, width: int, height: int) -> expand.Margins:
    given = {side: int(getattr(args, side) or 0) for side in expand.SIDES}
    if args.aspect:
        if any(given.values()):
            raise InvalidInputError("Give either --aspect or pixels per side, not both.")
        sides = [s.strip() for s in (args.sides or "").split(",") if s.strip()]
        return expand.margins_for_aspect(width, height, expand.parse_aspect(args.aspect), sides)
    if args.sides:
        raise InvalidInputError("--sides goes with --aspect; give pixels with --left/--right/--top/--bottom.")
    return expand.Margins(**given)


def run(args: argparse.Namespace, prepare: Any, options_from: Any, load_image: Any, progress_factory: Any) -> int:
    from gimp_openai import imaging
    from gimp_openai.atomic import write_bytes_unique

    pixels, notes = load_image(args.image)
    height, width = pixels.shape[:2]
    margins = margins_from(args, width, height)  # refused before anything is set up or paid
    _settings, engine, model, out = prepare(args, "edit")
    options = options_from(args, model, args.prompt or "", source=str(args.image))
    # the whole plan's price before the first tile is paid: shown, and asked (or refused) above --max-cost once
    planned = expand.estimate(model, engine.family(model), engine.price(model), width=width, height=height,
                              margins=margins, quality=options.quality, prompt=options.prompt,
                              size_mode=options.size_mode, band=args.band, shown=pixels[..., 3] > 0)
    if engine.cost_gate is not None:
        engine.cost_gate(planned, "")
    engine.cost_gate = None  # agreed for the plan: its tiles are not asked about one by one
    progress = progress_factory(enabled=not args.quiet)
    try:
        outcome = expand.expand(engine, options, pixels, margins, band=args.band, progress=progress)
    finally:
        progress.finish()
    stem = Path(args.image).stem or "image"
    full = outcome.composite(pixels)
    o = outcome.output
    written = {
        "expanded": str(write_bytes_unique(out, f"{stem}-expanded", ".png", imaging.encode_png(full))),
        "layer": str(write_bytes_unique(out, f"{stem}-expanded-layer", ".png", imaging.encode_png(o.pixels))),
        "mask": str(write_bytes_unique(out, f"{stem}-expanded-mask", ".png", imaging.encode_png(o.mask))),
    }
    cost = outcome.cost
    report = {
        "ok": True, "model": outcome.model, "canvas": {"width": outcome.canvas.width, "height": outcome.canvas.height},
        "old": outcome.old.to_dict(), "margins": margins.to_dict(),
        "layer": {"x": o.x, "y": o.y, "width": o.width, "height": o.height},
        "tiles": [{"request": t.request.to_dict(), "fill": t.fill.to_dict(), "side": t.side} for t in outcome.tiles],
        "files": written, "history": outcome.history,
        "notes": [*notes, *outcome.notes, *(w.message for w in outcome.warnings)],
        "cost": cost.to_dict() if cost is not None else None,
        "estimate": planned.to_dict(),
    }
    if getattr(args, "json", False):
        print(json.dumps(report))
    else:
        print(f"{written['expanded']}: {width}x{height} -> {outcome.canvas.width}x{outcome.canvas.height} "
              f"({len(outcome.tiles)} request(s) to {outcome.model})")
        print(f"  layer {written['layer']} at {o.x},{o.y} with mask {written['mask']}")
        text = str(getattr(cost, "text", "") or "") if cost is not None else ""
        if text:
            print(f"  cost: {text}")
    return 0
