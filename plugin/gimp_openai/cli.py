"""`gimp-openai`: the engine from a shell (and `python -m gimp_openai`, which the GIMP hosts run).

Subcommands: edit, variation, generate, expand, batch, models, usage, history, doctor, serve, session, warm, plan, job,
key, config.
Everything that can be checked is checked before a request is paid for (the input files, the selection, the
prompt, n, the size, the output folder), and each request's estimated cost is printed before it is sent: above
the limit (``--max-cost``, setting ``max_cost``, $1 by default) a terminal asks, anything else refuses unless
``--yes``. What each run cost (from the answer's ``usage``) is printed after it and kept in history.
Errors are one clear line plus a hint, exit code 1 (2 for usage and
unreadable jobs), never a traceback. The API key is never read from argv: `key set` reads it from stdin or a
hidden prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gimp_openai import __version__, operations
from gimp_openai.errors import (
    CostLimitError,
    GimpOpenAIError,
    InvalidInputError,
    ModelNotFoundError,
    OutputNotWritableError,
    redact,
)
from gimp_openai.history import RESULTS_ELSEWHERE
from gimp_openai.progress import Progress

EXIT_FAILED = 1
EXIT_USAGE = 2


# --- Progress on stderr -------------------------------------------------------------------------------------


class StderrProgress:
    """A one-line bar on a terminal; on a pipe, one line per phase change (logs stay readable)."""

    def __init__(self, stream: Any = None, *, enabled: bool = True, items: int = 1) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.lock = threading.Lock()
        self.fractions: dict[str, float] = {}
        self.items = max(1, items)
        self.last_phase: dict[str, str] = {}
        self.width = 0

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.fractions[event.item] = max(self.fractions.get(event.item, 0.0), event.fraction)
            overall = sum(self.fractions.values()) / self.items
            label = f"{event.item}: " if event.item else ""
            if self.tty:
                filled = int(round(overall * 24))
                text = f"\r[{'#' * filled}{'-' * (24 - filled)}] {overall * 100:3.0f}% {label}{event.message}"[:160]
                self.stream.write(text + " " * max(0, self.width - len(text)))
                self.width = len(text)
                if event.phase == "done" and overall >= 1.0:
                    self.stream.write("\n")
                    self.width = 0
            elif self.last_phase.get(event.item) != event.phase:
                self.stream.write(f"{label}{event.message}\n")
            self.last_phase[event.item] = event.phase
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


# --- Errors -------------------------------------------------------------------------------------------------


class UsageError(InvalidInputError):
    code = "usage"


def fail(exc: GimpOpenAIError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": exc.to_dict()}))
    print(f"gimp-openai: error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {exc.hint}", file=sys.stderr)
    if exc.saved:
        print("  results already saved: " + ", ".join(exc.saved), file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


# --- Inputs -------------------------------------------------------------------------------------------------


def load_image(path: str) -> tuple[np.ndarray, list[str]]:
    """RGBA u8 pixels of ``path`` and notes on any conversion (indexed, grayscale, 16-bit, float)."""
    from gimp_openai import imaging

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"{path} does not exist or is not a file.")
    notes = []
    try:
        import warnings

        from PIL import Image

        with warnings.catch_warnings():  # a bomb's header warns here; imaging refuses it below, in one clear line
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                mode = im.mode
        if mode not in ("RGB", "RGBA"):
            notes.append(f"{p.name}: converted from mode {mode} to 8-bit RGBA")
    except Exception:  # noqa: S110 - imaging.read_image gives the real error below
        pass
    pixels = imaging.read_image(p)
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise InvalidInputError(f"{path} has no pixels.")
    return pixels, notes


def parse_rect(text: str) -> tuple[int, int, int, int]:
    """``X,Y,WIDTH,HEIGHT`` -> four ints, each inside the bounds table's coordinate / region-side range."""
    from gimp_openai import bounds

    parts = text.replace(" ", "").split(",")
    if len(parts) != 4:
        raise UsageError(f"--rect must be X,Y,WIDTH,HEIGHT with a positive size, got {text[:80]!r}; "
                         "e.g. --rect 100,50,400,300.")
    names = (("coordinate", "X"), ("coordinate", "Y"), ("region_side", "WIDTH"), ("region_side", "HEIGHT"))
    try:
        x, y, w, h = (int(bounds.parse(name, part, f"--rect {label}")) for (name, label), part in zip(names, parts,
                                                                                                  strict=True))
    except bounds.OutOfBounds as exc:
        raise UsageError(exc.message, hint="") from None
    return x, y, w, h


def rect_option(text: str) -> tuple[int, int, int, int]:
    """argparse ``type`` of --rect: checked while parsing, before any server is asked anything."""
    try:
        return parse_rect(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def rect_selection(height: int, width: int, rect: tuple[int, int, int, int], ellipse: bool) -> np.ndarray:
    """u8 (H, W) with 255 inside the rectangle (or the ellipse inscribed in it). Only the rectangle's part inside
    the image is computed, so a small ellipse in a huge image costs its own size, not the image's (an
    ``np.mgrid`` over 8000x8000 was 1 GB of int64 indices)."""
    x, y, w, h = rect
    selection = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x0 >= x1 or y0 >= y1:
        return selection
    if not ellipse:
        selection[y0:y1, x0:x1] = 255
        return selection
    cx, cy = x + w / 2 - 0.5, y + h / 2 - 0.5
    xx = ((np.arange(x0, x1, dtype=np.float64) - cx) / (w / 2)) ** 2
    yy = ((np.arange(y0, y1, dtype=np.float64) - cy) / (h / 2)) ** 2
    for row in range(0, y1 - y0, 256):  # in bands: a whole-image ellipse needs no image-sized float temporary
        inside = yy[row : row + 256, None] + xx[None, :] <= 1.0
        selection[y0 + row : y0 + row + inside.shape[0], x0:x1][inside] = 255
    return selection


def selection_for(args: argparse.Namespace, shape: tuple[int, ...], mask_path: str | None) -> np.ndarray:
    """The selection as u8 (H, W): a grayscale/alpha image of the same size, or --rect / --ellipse."""
    from gimp_openai import imaging

    height, width = int(shape[0]), int(shape[1])
    if mask_path:
        if not Path(mask_path).is_file():
            raise InvalidInputError(f"The selection {mask_path} does not exist or is not a file.")
        selection = imaging.read_selection(mask_path)
        if selection.shape != (height, width):
            raise InvalidInputError(
                f"The selection {mask_path} is {selection.shape[1]}x{selection.shape[0]} but the image is "
                f"{width}x{height}; they must be the same size.",
                hint="Export the selection from the same image (same width and height), or use --rect.",
            )
    elif args.rect:
        selection = rect_selection(height, width, args.rect, bool(args.ellipse))
    elif getattr(args, "markup", None):  # the marks say where to edit; the result may replace the whole image
        selection = np.full((height, width), 255, np.uint8)
    else:
        raise UsageError("Say what to edit: --mask SELECTION.png, or --rect X,Y,W,H (with --ellipse for an ellipse); "
                         "or paint the instructions on a layer and pass it as --markup.")
    if not selection.any():
        raise InvalidInputError("The selection is empty.", hint="Select the part of the image to change first.")
    return selection


def read_references(paths: Sequence[str]) -> list[bytes]:
    """The --reference files' bytes, each checked to be a readable image of sane size before anything is paid
    for (a folder or a bomb is one clear line, not an internal error)."""
    from gimp_openai import imaging

    images = []
    for path in paths:
        if not Path(path).is_file():
            raise InvalidInputError(f"The reference image {path} does not exist or is not a file.",
                                    hint="Pass an image file (PNG, JPEG or WebP) to --reference.")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"The reference image {path} could not be read: {exc.strerror or exc}.") from None
        imaging.check_image_bytes(data, what=f"reference image {Path(path).name!r}")
        images.append(data)
    return images


def read_markup(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """The --markup layer as RGBA, the size of the image (transparent except the painted marks)."""
    from gimp_openai import imaging

    if not Path(path).is_file():
        raise InvalidInputError(f"The markup layer {path} does not exist or is not a file.",
                                hint="Export the layer you painted the instructions on as a PNG with transparency.")
    markup = imaging.read_image(path)
    if markup.shape[:2] != tuple(shape[:2]):
        raise InvalidInputError(
            f"The markup layer {path} is {markup.shape[1]}x{markup.shape[0]} but the image is "
            f"{shape[1]}x{shape[0]}; they must be the same size.",
            hint="Export the markup layer from the same image (same width and height).",
        )
    return markup


# --- Cost ---------------------------------------------------------------------------------------------------


class CostGate:
    """Every request's estimate on stderr before it is sent, and the run's limit: while the estimates (their
    upper bounds, summed over a batch) stay within ``limit`` dollars nothing is asked; above it a terminal asks
    once, and anything else refuses the request unpaid unless ``--yes``."""

    def __init__(self, limit: float, *, yes: bool, can_ask: bool, quiet: bool) -> None:
        self.limit, self.yes, self.can_ask, self.quiet = limit, yes, can_ask, quiet
        self.total = 0.0
        self.agreed = False
        self.lock = threading.Lock()

    def __call__(self, estimate: Any, item: str) -> None:
        from gimp_openai.pricing import dollars

        with self.lock:
            label = f"{item}: " if item else ""
            if not self.quiet:
                print(f"{label}estimate: {estimate.text()}", file=sys.stderr, flush=True)
            if estimate.usd_upper is None:
                return  # no price known: nothing to hold against the limit (the tokens were shown)
            self.total += estimate.usd_upper
            if self.total <= self.limit or self.agreed or self.yes:
                return
            what = (f"up to {dollars(self.total)}" + (" for this batch so far" if item else "")
                    + f", above your limit of {dollars(self.limit)}")
            if self.can_ask:
                answer = ask(f"gimp-openai: this run is estimated at {what}. Send it? [y/N] ").strip().lower()
                if answer in ("y", "yes"):
                    self.agreed = True
                    return
            self.total -= estimate.usd_upper
            raise CostLimitError(f"Not sent: the estimate is {what} (--max-cost, setting max_cost).")


def cost_limit(args: argparse.Namespace, settings: Any) -> float:
    value = getattr(args, "max_cost", None)
    return float(value if value is not None else getattr(settings, "max_cost", 1.0))


# --- Engine from options ------------------------------------------------------------------------------------


def load_settings_for(args: argparse.Namespace) -> Any:
    from gimp_openai.settings import check_base_url, load_settings

    settings = load_settings()
    if getattr(args, "base_url", None):
        settings.base_url = check_base_url(args.base_url)
    if getattr(args, "timeout", None) is not None:
        settings.read_timeout = float(args.timeout)
    return settings


def engine_for(args: argparse.Namespace, settings: Any) -> operations.Engine:
    from gimp_openai.session import make_engine

    return make_engine(settings)


def pick_model(engine: operations.Engine, args: argparse.Namespace, operation: str) -> str:
    from gimp_openai import capabilities
    from gimp_openai.session import resolve_model

    model = resolve_model(engine, args.model or "", operation)
    rules = getattr(engine.settings, "model_rules", None) or {}
    if capabilities.known_family_name(model) is None and model not in rules:
        family = capabilities.family_for(model, rules)
        print(
            f"gimp-openai: warning: {model} is not a model this version knows; using the {family.name} rules "
            "(set model_rules in the settings if your server's model needs others)",
            file=sys.stderr,
        )
    return model


def options_from(args: argparse.Namespace, model: str, prompt: str = "", source: str = "") -> operations.Options:
    settings_variation = ""
    return operations.Options(
        model=model,
        prompt=prompt,
        n=args.n,
        quality=args.quality,
        size_mode=args.size if (args.size and args.command != "generate") else "auto",
        size=args.size if args.command == "generate" else None,
        background=args.background,
        feather=args.feather,
        padding=args.padding,
        align=not args.no_align,
        tone_match=not args.no_tone_match,
        blend=args.blend,
        source_name=source,
        variation_prompt=getattr(args, "variation_prompt", None) or settings_variation,
        partial_images=int(getattr(args, "partial_images", 0) or 0),
        complexity=getattr(args, "complexity", "") or "",
    )


def check_size_option(args: argparse.Namespace, engine: operations.Engine, model: str) -> None:
    if not args.size or args.size in ("auto", "native", "standard"):
        return
    family = engine.family(model)
    problem = family.check_size(args.size)
    if problem:
        raise InvalidInputError(f"{problem}.", hint="Use --size auto (the engine picks a size the model takes).")


def out_dir_for(args: argparse.Namespace) -> Path:
    from gimp_openai import jobs

    out = Path(args.out or ".").expanduser().resolve()
    jobs.check_out_dir(out)
    return out


# --- Outputs ------------------------------------------------------------------------------------------------


@dataclass
class Written:
    source: str
    pngs: list[Path] = field(default_factory=list)
    ora: Path | None = None
    outputs: list[operations.Output] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cost: Any = None  # pricing.Cost of the request(s), from the answer's usage
    estimate: Any = None  # pricing.Estimate made before sending
    partials: list[Path] = field(default_factory=list)


class PartialFiles:
    """``--partial-images``: each streamed preview composited like the result (the whole picture for an edit, the
    image for a generation) and written beside the outputs as ``<stem>-partial-<K>.png`` the moment it arrives,
    with a line on stdout (listed in the --json answer instead). Written on one side thread, in arrival order,
    so the stream is read on while a large picture is encoded; :meth:`close` waits for the last one."""

    def __init__(self, out: Path, stem: str, original: np.ndarray | None, written: Written, *, quiet: bool) -> None:
        self.out, self.stem, self.original, self.written, self.quiet = out, stem, original, written, quiet
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview")

    def __call__(self, preview: operations.Preview) -> None:
        self.pool.submit(self._write, preview)

    def _write(self, preview: operations.Preview) -> None:
        from gimp_openai import composite, ora
        from gimp_openai.atomic import write_bytes_unique
        from gimp_openai.imaging import encode_png

        name = f"{self.stem}-partial-{preview.index + 1}"
        try:
            if self.original is None:
                path = write_bytes_unique(self.out, name, ".png", encode_png(preview.pixels), durable=DERIVED_DURABLE)
            else:
                original = self.original
                region = original[preview.y : preview.y + preview.height, preview.x : preview.x + preview.width]
                patch = ora.Patch(preview.x, preview.y, composite.composite(region, preview.pixels, preview.mask))
                path = write_png_unique(self.out, name, original.shape[1], original.shape[0],
                                        ora.pasted_rows(original, [patch]),
                                        changed=[(patch.y, patch.y + patch.pixels.shape[0])])
        except (OSError, GimpOpenAIError) as exc:
            print(f"gimp-openai: warning: preview {preview.index + 1} was not written: "
                  f"{getattr(exc, 'message', None) or type(exc).__name__}", file=sys.stderr)
            return
        self.written.partials.append(path)
        if not self.quiet:
            print(f"partial {preview.index + 1} (preview of result {preview.image}): {path}", flush=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def output_stem(text: str, fallback: str) -> str:
    """A file-name stem for the output folder from an input's name or ``--name``: the engine's one file-name rule
    (history.slugify, case kept), so ``../../x``, an absolute path or a newline never leaves ``--out``."""
    from gimp_openai.history import slugify

    return slugify(text, 80, lower=False, empty=fallback)


TAGS = {"edit": "edit", "variation-endpoint": "variation", "variation-edit": "variation-via-edit",
        "generate": "generated"}


def result_patch(original: np.ndarray, output: operations.Output) -> np.ndarray:
    """The crop of the full-size result that differs from the original: the result composited through its mask
    (edit) or the result itself (variation). Crop-sized: the full-size picture is never copied."""
    from gimp_openai import composite

    if output.path != operations.PATH_EDIT:
        return output.pixels
    region = original[output.y : output.y + output.height, output.x : output.x + output.width]
    return composite.composite(region, output.pixels, output.mask)


#: The outputs (full-size PNGs, .ora) are written whole and renamed into place, but not fsync'ed: what was paid
#: for is the images in history, which are (history.py); these are made from them and the input and can be made
#: again. Their fsyncs cost ~0.5 s on an 8000² edit.
DERIVED_DURABLE = False


def write_png_unique(out: Path, stem: str, width: int, height: int, rows: Any, *, ahead: Any = None,
                     changed: Sequence[tuple[int, int]] = (), channels: int = 4) -> Path:
    """A full-size PNG streamed from ``rows`` (RGBA) into ``out`` under a name claimed atomically (never an
    overwrite); ``channels`` 3 writes an opaque picture as RGB. ``ahead``/``changed``: see pngstrips.write_png."""
    from gimp_openai.atomic import pending_file
    from gimp_openai.pngstrips import write_png

    source = rows if channels == 4 else lambda row0, row1: rows(row0, row1)[..., :3]
    with pending_file(out, stem + ".png", durable=DERIVED_DURABLE) as pending:
        write_png(pending.file, width, height, channels, source, ahead=ahead, changed=changed)
        return pending.publish_unique(stem, ".png")


def opaque(pixels: np.ndarray) -> bool:
    """Every pixel fully opaque: such a picture, and a result that keeps it so, is written as RGB, a quarter less
    to deflate and to store than RGBA (an 8000² photo: 192 instead of 256 MB of rows)."""
    return bool(pixels[..., 3].min() == 255)


def write_results(out: Path, stem: str, original: np.ndarray | None, outcome: operations.Outcome,
                  written: Written, source_png: Path | None = None, ahead: Any = None) -> None:
    """Every result as a full-size PNG (the original with the result's crop pasted in, band by band), then one
    layered .ora. ``source_png``: the input file when it holds exactly ``original`` (copied into the .ora);
    ``ahead``: the original's PNG bands deflated while the server worked (pngstrips.BandsAhead)."""
    from gimp_openai import ora
    from gimp_openai.atomic import write_bytes_unique
    from gimp_openai.imaging import encode_png

    patches = []
    # the bands made ahead were made as RGB exactly when the original is opaque (no second pass over its alpha)
    original_opaque = original is not None and (ahead.channels == 3 if ahead is not None else opaque(original))
    for output in outcome.outputs:
        if original is None:  # generate: --name (or "generated") and the number
            name = f"{stem}-{output.index}"
            path = write_bytes_unique(out, name, ".png", encode_png(output.pixels), durable=DERIVED_DURABLE)
        else:
            name = f"{stem}-{TAGS[output.path]}-{output.index}"
            patch = ora.Patch(output.x, output.y, result_patch(original, output))
            patches.append(patch)
            rows_changed = [(patch.y, patch.y + patch.pixels.shape[0])]
            channels = 3 if original_opaque and opaque(patch.pixels) else 4
            path = write_png_unique(out, name, original.shape[1], original.shape[0], ora.pasted_rows(original, [patch]),
                                    ahead=ahead, changed=rows_changed, channels=channels)
        written.pngs.append(path)
        written.outputs.append(output)
    if original is not None and outcome.outputs:
        merged = None
        if len(patches) == 1:  # the flattened picture is the one result's PNG: copied, not encoded again
            merged = ora.Merged(ora.pasted_rows(original, patches), written.pngs[0])
        written.ora = write_layers(out, stem, original, outcome.outputs, merged, source_png)


def write_layers(out: Path, stem: str, original: np.ndarray, outputs: Sequence[operations.Output],
                 merged: Any = None, source_png: Path | None = None) -> Path:
    """Layered OpenRaster: the original at the bottom, one crop-sized layer per result (masked, at its offsets)
    on top, streamed to a temp file and published under a name claimed atomically."""
    from gimp_openai import ora
    from gimp_openai.atomic import pending_file

    layers = [ora.Layer(stem, original, png_file=source_png)]
    for output in outputs:
        layers.append(ora.Layer(output.name, output.layer_pixels(add_mask=False), output.x, output.y))
    with pending_file(out, f"{stem}-openai.ora", durable=DERIVED_DURABLE) as pending:
        ora.write_archive(pending.file, original.shape[1], original.shape[0], layers, merged)
        return pending.publish_unique(f"{stem}-openai", ".ora")


def total_cost(written: Sequence[Written]) -> Any:
    """The sum of the runs' costs (None when no answer carried usage)."""
    from gimp_openai.pricing import add_costs

    return add_costs(w.cost for w in written)


def report(written: list[Written], args: argparse.Namespace) -> None:
    if args.json:
        total = total_cost(written)
        print(json.dumps({"ok": True, "results": [_written_dict(w) for w in written],
                          "cost": total.to_dict() if total is not None else None}, ensure_ascii=False))
        return
    for w in written:
        for note in w.notes:
            print(f"note: {note}", file=sys.stderr)
        for png, output in zip(w.pngs, w.outputs, strict=False):
            extra = f" [{output.report}]" if output.report else ""
            print(f"{output.name}: {png}{extra}")
            for note in output.notes:
                if note not in w.notes:
                    print(f"  note: {note}")
        if w.ora:
            print(f"layers (OpenRaster, opens in GIMP and Krita): {w.ora}")
        if w.cost is not None:
            print(f"cost: {w.cost.text()}")
    if len(written) > 1 and total_cost(written) is not None:
        print(f"total cost: {total_cost(written).text()}")


def _written_dict(w: Written) -> dict[str, Any]:
    return {
        "source": w.source,
        "ora": str(w.ora) if w.ora else None,
        "notes": w.notes,
        "partials": [str(p) for p in w.partials],
        "cost": w.cost.to_dict() if w.cost is not None else None,
        "estimate": w.estimate.to_dict() if w.estimate is not None else None,
        "outputs": [
            {"png": str(p), "name": o.name, "x": o.x, "y": o.y, "width": o.width, "height": o.height,
             "history_png": str(o.history_png) if o.history_png is not None else None,
             "request_id": o.request_id, "path": o.path, "report": o.report,
             "notes": o.notes}
            for p, o in zip(w.pngs, w.outputs, strict=False)
        ],
    }


# --- Commands -----------------------------------------------------------------------------------------------


def _prepare(args: argparse.Namespace, operation: str) -> tuple[Any, operations.Engine, str, Path]:
    settings = load_settings_for(args)
    out = out_dir_for(args)
    engine = engine_for(args, settings)
    engine.fallback_dirs = [out]  # history full or not writable: the out folder, then the temp rescue folder
    engine.cost_gate = CostGate(cost_limit(args, settings), yes=bool(getattr(args, "yes", False)),
                                can_ask=interactive(), quiet=bool(getattr(args, "quiet", False)))
    model = pick_model(engine, args, operation)
    check_size_option(args, engine, model)
    return settings, engine, model, out


def run_one(
    args: argparse.Namespace,
    engine: operations.Engine,
    model: str,
    out: Path,
    image_path: str,
    mask_path: str | None,
    progress: Any,
    item: str = "",
) -> Written:
    """One input image through the chosen operation; shared by edit, variation and batch."""
    from gimp_openai import imaging
    from gimp_openai.pngstrips import BandsAhead, workers

    written = Written(source=image_path)
    pixels, written.notes = load_image(image_path)
    height, width = pixels.shape[:2]
    stem = output_stem(Path(image_path).stem, "image")
    previews = PartialFiles(out, stem, pixels, written, quiet=bool(getattr(args, "json", False))) if getattr(
        args, "partial_images", 0) else None
    # The full-size results are the original with a crop pasted in: its untouched bands are deflated while the
    # server works (from the moment the request waits), so writing the results later deflates only the crop's.
    if opaque(pixels):
        ahead = BandsAhead(width, height, 3, lambda row0, row1: pixels[row0:row1, :, :3])
    else:
        ahead = BandsAhead(width, height, 4, lambda row0, row1: pixels[row0:row1])

    replaced: list[tuple[int, int]] = []  # the rows the result replaces: their bands are not made ahead

    def progress_and_ahead(event: Progress) -> None:
        if "place_rows" in event.extra:
            replaced[:] = [tuple(event.extra["place_rows"])]
        if event.phase == "waiting" and not ahead.started:  # a batch's items share the cores
            ahead.start(skip=replaced, threads=max(1, workers() // max(1, getattr(args, "concurrency", 1) or 1)))
        progress(event)
    try:
        outcome = _operate(args, engine, model, pixels, image_path, mask_path, progress_and_ahead, item, previews)
    except BaseException:
        ahead.close()
        raise
    finally:
        if previews is not None:
            previews.close()
    written.notes.extend(notice.message for notice in outcome.warnings)
    written.cost, written.estimate = outcome.cost, outcome.estimate
    source_png = Path(image_path) if imaging.is_plain_png_file(image_path) else None
    try:
        write_results(out, stem, pixels, outcome, written, source_png, ahead)
    except GimpOpenAIError as exc:
        raise paid_images_error(exc, outcome, written.pngs) from None
    finally:
        ahead.close()
    return written


def _operate(args: argparse.Namespace, engine: operations.Engine, model: str, pixels: np.ndarray,
             image_path: str, mask_path: str | None, progress: Any, item: str,
             on_preview: operations.PreviewCallback | None = None) -> operations.Outcome:
    """The paid part: the selection, the options, the request and the compositing, crop-sized."""
    from gimp_openai.geometry import Rect

    layer = Rect(0, 0, pixels.shape[1], pixels.shape[0])
    operation = args.operation if args.command == "batch" else args.command
    if operation == "edit":
        opts = options_from(args, model, args.prompt or "", source=str(image_path))
        if getattr(args, "reference", None):
            opts.extra_images = read_references(args.reference)
            opts.reference_names = [Path(path).name for path in args.reference]
        if getattr(args, "markup", None):
            opts.markup = read_markup(args.markup, pixels.shape)
            if not (args.mask or args.rect):
                opts.padding = 0.0
        # The full-size selection is handed over, not kept here: edit() crops it and frees it (64 MB at 8000²).
        return operations.edit(engine, opts, place_pixels=pixels, selection=selection_for(args, pixels.shape,
                               mask_path), layer=layer, item=item, progress=progress, on_preview=on_preview)
    opts = options_from(args, model, "", source=str(image_path))
    return operations.variation(engine, opts, place_pixels=pixels, layer=layer, item=item, progress=progress)


class PaidImagesNotWritten(OutputNotWritableError):
    """The results could not be written after they were paid for; says where each paid image is, or that it
    could not be saved anywhere (``unsaved``)."""

    def __init__(self, message: str, *, hint: str, saved: list[str], unsaved: int) -> None:
        super().__init__(message, hint=hint, saved=saved)
        self.unsaved = unsaved

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["unsaved"] = self.unsaved
        return data


def paid_images_error(exc: GimpOpenAIError, outcome: operations.Outcome,
                      written: Sequence[Path] = ()) -> PaidImagesNotWritten:
    """``exc`` (the outputs could not be written) plus where every paid image of ``outcome`` is: its history
    PNG, wherever the rescue chain put it, or nowhere (then it is lost when this process ends: said so).
    ``written``: result files already written before the failure (listed in ``saved`` too)."""
    saved = [str(o.history_png) for o in outcome.outputs if o.history_png is not None]
    unsaved = sum(1 for o in outcome.outputs if o.history_png is None)
    total = len(outcome.outputs)
    parts = [exc.message.rstrip(".") + "."]
    if saved:
        subject = "The paid image is" if total == 1 else f"{len(saved)} of the {total} paid images are"
        if len(saved) == total and total > 1:
            subject = f"All {total} paid images are"
        parts.append(f"{subject} saved: {', '.join(saved)}.")
    if unsaved:
        parts.append(f"{unsaved} paid image{'s' if unsaved != 1 else ''} could not be saved anywhere "
                     "(history, the output folder and the rescue folder all failed) and "
                     f"{'is' if unsaved == 1 else 'are'} lost.")
    rescue = " ".join(notice.message for notice in outcome.warnings if notice.code == RESULTS_ELSEWHERE)
    hint = (rescue + " " if rescue else "") + "Free some disk space or choose another --out folder."
    return PaidImagesNotWritten(" ".join(parts), hint=hint, saved=saved + [str(p) for p in written] + list(exc.saved),
                                unsaved=unsaved)


def cmd_edit(args: argparse.Namespace) -> int:
    if not (args.prompt or "").strip():
        raise InvalidInputError("The prompt is empty.", hint="Pass --prompt 'what the selection should become'.")
    _settings, engine, model, out = _prepare(args, "edit")
    progress = StderrProgress(enabled=not args.quiet)
    try:
        written = run_one(args, engine, model, out, args.image, args.mask, progress)
    finally:
        progress.finish()
    report([written], args)
    return 0


def cmd_expand(args: argparse.Namespace) -> int:
    from gimp_openai import expand_cli

    return expand_cli.run(args, _prepare, options_from, load_image, StderrProgress)


def cmd_variation(args: argparse.Namespace) -> int:
    _settings, engine, model, out = _prepare(args, "variation")
    progress = StderrProgress(enabled=not args.quiet)
    try:
        written = run_one(args, engine, model, out, args.image, None, progress)
    finally:
        progress.finish()
    report([written], args)
    return 0


#: The most prompts one ``generate --prompts FILE`` takes (the Batch API's limit for one batch).
MAX_PROMPTS = 50_000


def generate_prompts(args: argparse.Namespace) -> list[str]:
    """``--prompt TEXT`` (one), or ``--prompts FILE``: one prompt a line (UTF-8; blank lines and lines starting
    with ``#`` are skipped; ``-`` reads stdin). Refused before anything is sent: an empty prompt, no prompt at
    all, both options, an unreadable file. Read once, then kept on ``args`` (stdin cannot be read twice)."""
    read = getattr(args, "_prompts_read", None)
    if read is not None:
        return list(read)
    args._prompts_read = prompts = _read_prompts(args)
    return list(prompts)


def _read_prompts(args: argparse.Namespace) -> list[str]:
    path = getattr(args, "prompts", None)
    if path and (args.prompt or "").strip():
        raise UsageError("Give --prompt or --prompts FILE, not both.")
    if not path:
        if not (args.prompt or "").strip():
            raise InvalidInputError("The prompt is empty.", hint="Pass --prompt 'what the image shows', or "
                                                                 "--prompts FILE with one prompt a line.")
        return [args.prompt]
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc))
        raise InvalidInputError(f"The prompts file {path} cannot be read: {reason}.",
                                hint="Give a text file with one prompt a line.") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise InvalidInputError(f"The prompts file {path} holds no prompt.", hint="Write one prompt a line.")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInputError(f"The prompts file {path} holds {len(prompts):,} prompts; at most "
                                f"{MAX_PROMPTS:,} at once.", hint="Split it into several files.")
    return prompts


def generation_stems(args: argparse.Namespace, count: int) -> list[str]:
    """File-name stems: ``--name`` or ``generated``; with several prompts ``-K`` for the K-th prompt (its line
    among the prompts, zero-padded so the files sort in the file's order)."""
    stem = output_stem(args.name, "generated") if args.name else "generated"
    if count == 1:
        return [stem]
    width = len(str(count))
    return [f"{stem}-{k:0{width}d}" for k in range(1, count + 1)]


def generate_one(args: argparse.Namespace, engine: operations.Engine, model: str, out: Path, prompt: str,
                 stem: str, progress: Any, item: str = "") -> Written:
    """One prompt through the generation and its outputs written; shared by ``generate`` and a collected Batch
    API generation, so both write the same files and history."""
    opts = options_from(args, model, prompt)
    if getattr(args, "reference", None):
        opts.extra_images = read_references(args.reference)
        opts.reference_names = [Path(path).name for path in args.reference]
    written = Written(source="")
    previews = PartialFiles(out, stem, None, written, quiet=bool(getattr(args, "json", False))) if (
        getattr(args, "partial_images", 0)) else None
    try:
        outcome = operations.generate(engine, opts, item=item, progress=progress, on_preview=previews)
    finally:
        if previews is not None:
            previews.close()
    written.notes = [*outcome.notes, *(n.message for n in outcome.warnings)]
    written.cost, written.estimate = outcome.cost, outcome.estimate
    try:
        write_results(out, stem, None, outcome, written)
    except GimpOpenAIError as exc:
        raise paid_images_error(exc, outcome, written.pngs) from None
    return written


def cmd_generate(args: argparse.Namespace) -> int:
    prompts = generate_prompts(args)
    if getattr(args, "async_", False):
        from gimp_openai import batchcli

        return batchcli.submit(args)
    if getattr(args, "wait", False):
        raise UsageError("--wait goes with --async (the Batch API).")
    _settings, engine, model, out = _prepare(args, "generate")
    stems = generation_stems(args, len(prompts))
    progress = StderrProgress(enabled=not args.quiet, items=len(prompts))
    if len(prompts) == 1:
        try:
            written = generate_one(args, engine, model, out, prompts[0], stems[0], progress)
        finally:
            progress.finish()
        report([written], args)
        return 0
    results: list[Written | GimpOpenAIError] = []
    try:
        for prompt, stem in zip(prompts, stems, strict=True):  # one after another: each asks its price first
            try:
                results.append(generate_one(args, engine, model, out, prompt, stem, progress, stem))
            except CostLimitError as exc:  # the limit is reached: this prompt and the rest are not sent
                results.extend([exc] * (len(prompts) - len(results)))
                break
            except GimpOpenAIError as exc:
                results.append(exc)
    finally:
        progress.finish()
    return report_many(prompts, results, args, "prompts")


def report_many(sources: Sequence[str], results: Sequence[Written | GimpOpenAIError], args: argparse.Namespace,
                what: str) -> int:
    """A run over several inputs (images, prompts): the results, each failure by its input, and the total."""
    done = [r for r in results if isinstance(r, Written)]
    failed = [(src, r) for src, r in zip(sources, results, strict=True) if isinstance(r, GimpOpenAIError)]
    if args.json:
        total = total_cost(done)
        print(json.dumps({
            "ok": not failed,
            "results": [_written_dict(w) for w in done],
            "failed": [{"source": src, "error": e.to_dict()} for src, e in failed],
            "cost": total.to_dict() if total is not None else None,
        }, ensure_ascii=False))
    else:
        report(done, args)
        for src, exc in failed:
            print(f"gimp-openai: {src}: error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
                  file=sys.stderr)
        print(f"batch: {len(done)} of {len(results)} {what} done", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def item_labels(images: Sequence[str]) -> list[str]:
    """Progress labels, one per input, distinct even for same-named files from different folders (a/x.png,
    b/x.png -> x, x-2): each item's progress is its own."""
    labels: list[str] = []
    for image in images:
        stem = output_stem(Path(image).stem, "image")
        label, number = stem, 2
        while label in labels:
            label, number = f"{stem}-{number}", number + 1
        labels.append(label)
    return labels


def cmd_batch(args: argparse.Namespace) -> int:
    if args.async_:
        from gimp_openai import batchcli

        return batchcli.submit(args)
    if args.operation == "edit":
        if not (args.prompt or "").strip():
            raise InvalidInputError("The prompt is empty.", hint="Pass --prompt 'what the selections should become'.")
        if args.mask and len(args.mask) != len(args.images):
            raise UsageError(f"{len(args.images)} images but {len(args.mask)} --mask files; give one per image.")
        if not args.mask and not args.rect:
            raise UsageError("Batch edit needs --mask (once per image) or --rect X,Y,W,H (the same for all).")
    settings, engine, model, out = _prepare(args, args.operation)
    masks = list(args.mask or [None] * len(args.images))
    progress = StderrProgress(enabled=not args.quiet, items=len(args.images))
    concurrency = args.concurrency or int(getattr(settings, "concurrency", 4) or 4)  # both within bounds
    results: list[Written | GimpOpenAIError] = []

    labels = item_labels(args.images)

    def one(pair: tuple[str, str | None, str]) -> Written | GimpOpenAIError:
        try:
            return run_one(args, engine, model, out, pair[0], pair[1], progress, pair[2])
        except GimpOpenAIError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - one image's bug must not lose the others
            return GimpOpenAIError(f"{type(exc).__name__}: {exc}", hint="This is a bug; please report it.")

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(args.images)))) as pool:
        results = list(pool.map(one, zip(args.images, masks, labels, strict=True)))
    progress.finish()
    return report_many(args.images, results, args, "images")


def cmd_models(args: argparse.Namespace) -> int:
    from gimp_openai import discovery

    settings = load_settings_for(args)
    engine = engine_for(args, settings)
    models = engine.models(refresh=args.refresh)
    if args.json:
        print(json.dumps(dict(discovery.models_report(models), ok=True)))
    else:
        print(discovery.format_models(models))
    return 0


def parse_since(text: str) -> Any:
    """``--since``: a date (YYYY-MM-DD) or a number of days back (``7d``, ``30``); None for everything."""
    from datetime import date, datetime, timedelta, timezone

    text = (text or "").strip()
    if not text:
        return None
    days = text[:-1] if text.lower().endswith("d") else text
    if days.isdigit() and len(days) <= 5:
        return datetime.now(timezone.utc).date() - timedelta(days=int(days))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text[:40]!r} is not a date (YYYY-MM-DD) or a number of days (7d).",
                         hint="") from None


def cmd_usage(args: argparse.Namespace) -> int:
    """What the paid images in history cost, by day and model (from their sidecars; no request is made)."""
    from gimp_openai import pricing
    from gimp_openai.settings import history_dir, load_settings

    since = parse_since(args.since)
    folder = history_dir(load_settings())
    rows = pricing.usage_from_history(folder, since)
    if getattr(args, "json", False):
        print(json.dumps({
            "ok": True, "history": str(folder), "since": since.isoformat() if since else None,
            "rows": [r.to_dict() for r in rows],
            "total": {"images": sum(r.images for r in rows), "usd": round(sum(r.usd for r in rows), 6),
                      "input_tokens": round(sum(r.input_tokens for r in rows)),
                      "output_tokens": round(sum(r.output_tokens for r in rows)),
                      "unpriced_images": sum(r.unpriced_images for r in rows)},
        }))
        return 0
    if not rows:
        print(f"No paid images in {folder}" + (f" since {since.isoformat()}" if since else "") + ".")
        return 0
    print(pricing.format_usage(rows))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from gimp_openai import doctor
    from gimp_openai.client import ClientConfig, ImagesClient
    from gimp_openai.settings import is_loopback_url, resolve_api_key

    settings = load_settings_for(args)
    key = resolve_api_key(settings)
    client = None
    if key or is_loopback_url(settings.base_url):
        client = ImagesClient(ClientConfig.from_settings(settings, api_key=key or ""))
    checks = doctor.run(settings, client, plugin_dirs=not args.no_plugin_dirs)
    if args.json:
        print(json.dumps({"ok": doctor.worst(checks) != doctor.ERROR, "checks": [c.to_dict() for c in checks]}))
    else:
        for check in checks:
            print(redact(check.line(), key))
    return EXIT_FAILED if doctor.worst(checks) == doctor.ERROR else 0


def cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from gimp_openai import server

    return int(server.main(rest))


def cmd_plan(args: argparse.Namespace) -> int:
    from gimp_openai import jobs

    return jobs.run_plan(args.file)


def cmd_job(args: argparse.Namespace) -> int:
    from gimp_openai import jobs

    return jobs.run_job(args.file)


def cmd_session(args: argparse.Namespace) -> int:
    from gimp_openai import jobs, warm

    code = jobs.run_session()
    if args.warm and code == jobs.EXIT_OK:  # the next run of this host finds an engine ready
        warm.start(Path(args.warm), args.warm_seconds)
    return code


def cmd_warm(args: argparse.Namespace) -> int:
    from gimp_openai import warm

    return warm.serve(Path(args.socket), args.idle)


def cmd_key(args: argparse.Namespace) -> int:
    from gimp_openai.settings import key_source, load_settings, resolve_api_key, store_api_key

    if args.action == "status":
        settings = load_settings()
        present = bool(resolve_api_key(settings))
        where = key_source(settings)
        if args.json:
            print(json.dumps({"ok": True, "present": present, "source": where}))
        else:
            print(f"API key: {'present' if present else 'not set'} ({where}; never shown)")
        return 0
    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("OpenAI API key (not shown): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise InvalidInputError("No key was given.", hint="Paste the key at the prompt, or pipe it on stdin.")
    where = store_api_key(key)
    if args.json:
        print(json.dumps({"ok": True, "stored_in": where}))
    else:
        print(f"Key stored in {where}.")
    return 0


# --- config ---------------------------------------------------------------------------------------------

#: Settings that are never read or written by `config`: the key has its own command, on stdin only.
CONFIG_REFUSED = ("api_key",)


class ConfigValueError(InvalidInputError):
    code = "settings_error"


def _history_folder(args: argparse.Namespace) -> Path:
    from gimp_openai.history import default_history_dir

    return Path(args.folder).expanduser() if getattr(args, "folder", "") else default_history_dir()


def _entry_line(entry: Any) -> str:
    when = entry.time[:16].replace("T", " ") if entry.time else "?"
    what = entry.what
    cost = f", cost ${entry.cost:.3f}" if entry.cost is not None else ""
    tag = " [preview kept after a failure]" if entry.partial else ""
    tag += " [no description]" if not entry.described else ""
    prompt = " ".join(entry.prompt.split())
    prompt = (prompt[:57] + "…") if len(prompt) > 58 else prompt
    return f"{entry.id}\n  {when}  {entry.model or '?'}  {entry.operation or '?'}{cost}{tag}\n  " + \
        (f"{prompt!r}" if prompt else "(no prompt)") + (f"  — {what}" if what else "")


def cmd_history(args: argparse.Namespace) -> int:
    """Past results, read back from the history folder: nothing here sends a request or costs anything."""
    from gimp_openai import history_index as hx

    as_json = bool(getattr(args, "json", False))
    folder = _history_folder(args)
    action = args.history_command
    if action == "list":
        since = hx.parse_since(args.since) if args.since else None
        listing = hx.list_entries(folder, since=since, limit=int(args.limit) if args.limit else None)
        if args.thumbnails:
            hx.add_thumbnails(listing.entries, listing.notes)
        if as_json:
            print(json.dumps(listing.to_dict()))
        else:
            for entry in listing.entries:
                print(_entry_line(entry))
            if listing.more:
                print(f"({listing.more} older result(s) not shown; --limit shows more)")
            if not listing.entries:
                print(f"No results in {folder}.")
        for note in listing.notes:
            print(f"gimp-openai: note: {note}", file=sys.stderr)
        return 0
    entry = hx.get_entry(args.id, folder)
    if action == "show":
        if as_json:
            print(json.dumps({"ok": True, "entry": entry.to_dict()}))
        else:
            print(_entry_line(entry))
            for name, value in entry.to_dict().items():
                if value not in (None, "", False) and name not in ("id", "prompt"):
                    print(f"  {name}: {value}")
            print(f"  prompt: {entry.prompt}")
        return 0
    placed = hx.placed_layer(entry)
    out = Path(args.out)
    from gimp_openai import imaging
    from gimp_openai.atomic import write_bytes_atomic

    notes = "; ".join(placed.notes)
    if action == "layer":  # for the hosts: the exact pixels (and mask), as fast to read back as their own PNGs
        write_bytes_atomic(out, imaging.encode_host_png(placed.pixels), durable=False)
        answer = {"ok": True, "layer_png": str(out), "mask_png": None, "x": placed.x, "y": placed.y,
                  "width": placed.width, "height": placed.height, "placed": placed.placed,
                  "name": hx.layer_name(entry), "notes": notes, "entry": entry.to_dict()}
        if placed.mask is not None:
            mask_out = out.with_name(out.stem + "-mask.png")
            write_bytes_atomic(mask_out, imaging.encode_host_png(placed.mask), durable=False)
            answer["mask_png"] = str(mask_out)
        print(json.dumps(answer) if as_json else
              f"{out}: {placed.width}x{placed.height} at {placed.x},{placed.y}"
              + (f", mask {answer['mask_png']}" if answer["mask_png"] else "") + (f" ({notes})" if notes else ""))
        return 0
    original, _notes = load_image(args.image)
    height, width = original.shape[:2]
    fits = placed.fits(width, height)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".ora"):
        raise UsageError(f"{out.name}: the output must be a .png or an .ora file.")
    if suffix == ".ora":
        from gimp_openai import ora

        if fits:
            ora.write_ora(out, width, height, [ora.Layer(Path(args.image).name, original),
                                               ora.Layer(hx.layer_name(entry), placed.masked_pixels(), placed.x,
                                                         placed.y)])
        else:
            ora.write_ora(out, placed.width, placed.height, [ora.Layer(hx.layer_name(entry),
                                                                       placed.masked_pixels())])
    else:  # through its mask, as the layer shows in GIMP
        pixels = hx.over(original, placed.masked_pixels(), placed.x, placed.y) if fits else placed.masked_pixels()
        write_bytes_atomic(out, imaging.encode_png(pixels))
    where = (f"at {placed.x},{placed.y} in a copy of {Path(args.image).name}" if fits else
             f"on its own: {'it has no place' if not placed.placed else 'its place is outside'} "
             f"{Path(args.image).name} ({width}x{height})")
    if as_json:
        print(json.dumps({"ok": True, "out": str(out), "placed": fits, "x": placed.x if fits else 0,
                          "y": placed.y if fits else 0, "width": placed.width, "height": placed.height,
                          "masked": placed.mask is not None, "notes": notes, "entry": entry.to_dict()}))
    else:
        print(f"{out}: {entry.id}, {placed.width}x{placed.height}, {where}"
              + (", through its mask" if placed.mask is not None else "") + (f" ({notes})" if notes else ""))
    return 0


def _config_fields() -> list[str]:
    from gimp_openai.settings import Settings

    return list(Settings().to_dict())


def parse_config_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` words -> [(key, value)]; the value may contain '=' (split at the first one). For
    callers that pass ``KEY VALUE`` as two words, a single pair without '=' is accepted too."""
    if len(pairs) == 2 and "=" not in pairs[0]:
        return [(pairs[0].strip(), pairs[1])]
    out = []
    for word in pairs:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise ConfigValueError(f"{word.split('=')[0][:60]!r} is not KEY=VALUE (e.g. default_model=gpt-image-2).",
                                   hint="")
        out.append((key.strip(), value))
    return out


def config_changes(pairs: Sequence[tuple[str, str]], current: Any) -> dict[str, Any]:
    """Typed changes for update_settings, checked strictly: an unknown key or a bad value is an error, never a
    silent default. ``model_rules.<id>=<family>`` adds a rule (empty family removes it)."""
    from gimp_openai import bounds, capabilities
    from gimp_openai.errors import SettingsError
    from gimp_openai.settings import check_base_url

    fields = _config_fields()
    changes: dict[str, Any] = {}
    for key, value in pairs:
        if key in CONFIG_REFUSED or "key" in key.lower() and key not in fields:
            raise ConfigValueError(
                f"{key} cannot be set with `config set`; store the key with `gimp-openai key set` (it reads stdin).",
                hint="")
        if key.startswith("prices."):
            from gimp_openai.pricing import parse_override

            model = key[len("prices."):].strip()
            if not model:
                raise ConfigValueError("prices needs a model id or family: prices.<id>=text_input=5,image_input=8,"
                                       "image_output=30 (dollars per 1M tokens).", hint="")
            prices = dict(changes.get("prices", current.prices))
            if value.strip():
                try:
                    prices[model] = parse_override(value)
                except ValueError as exc:
                    raise ConfigValueError(f"prices.{model}: {exc}.", hint="") from None
            else:
                prices.pop(model, None)
            changes["prices"] = prices
            continue
        if key.startswith("model_rules."):
            model = key[len("model_rules."):].strip()
            family = value.strip()
            if not model:
                raise ConfigValueError("model_rules needs a model id: model_rules.<id>=<family>.", hint="")
            if family and family not in capabilities.FAMILIES:
                raise ConfigValueError(
                    f"model_rules.{model}: {family!r} is not a model family; use one of "
                    f"{', '.join(sorted(capabilities.FAMILIES))} (or nothing to remove the rule).", hint="")
            rules = dict(changes.get("model_rules", current.model_rules))
            if family:
                rules[model] = family
            else:
                rules.pop(model, None)
            changes["model_rules"] = rules
            continue
        if key not in fields or key in ("model_rules", "prices"):
            where = {"model_rules": "model_rules.<id>=<family>",
                     "prices": "prices.<id>=text_input=5,image_input=8,image_output=30"}.get(
                key, f"one of {', '.join(fields)}")
            raise ConfigValueError(f"There is no setting called {key!r}; use {where}.", hint="")
        text = value.strip()
        if key in bounds.BOUNDS:
            try:
                changes[key] = bounds.parse(key, text, key)
            except bounds.OutOfBounds as exc:
                raise ConfigValueError(exc.message, hint="") from None
        elif key == "extra_image_models":
            changes[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "base_url":
            try:
                changes[key] = check_base_url(text)
            except SettingsError as exc:
                raise ConfigValueError(exc.message, hint="") from None
        else:
            if any(not ch.isprintable() for ch in value):
                raise ConfigValueError(f"{key} must be one line of printable text.", hint="")
            changes[key] = text if key != "variation_prompt" else value
    return changes


def _settings_for_show() -> dict[str, Any]:
    from gimp_openai.settings import ENV_OVERRIDES, config_path, key_source, load_settings, resolve_api_key

    settings = load_settings()
    values = settings.to_dict()
    values.pop("api_key", None)
    origin = {name: "environment (" + var + ")" for var, name in ENV_OVERRIDES.items()
              if name in settings.env_overridden}
    return {"ok": True, "config_file": str(config_path()), "settings": values, "from_environment": origin,
            "key": {"configured": bool(resolve_api_key(settings)), "source": key_source(settings)}}


def cmd_config(args: argparse.Namespace) -> int:
    from gimp_openai.settings import config_path, load_settings, resolve_api_key, update_settings

    if args.action == "show":
        if args.pairs:
            raise UsageError("`config show` takes no arguments.")
        shown = _settings_for_show()
        key = resolve_api_key(load_settings())
        if getattr(args, "json", False):
            print(redact(json.dumps(shown, ensure_ascii=False), key))
            return 0
        print(f"config file: {shown['config_file']}")
        for name, value in shown["settings"].items():
            if isinstance(value, dict):
                text = ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
            elif isinstance(value, list):
                text = ",".join(value) or "(none)"
            else:
                text = str(value) if value != "" else "(not set)"
            origin = shown["from_environment"].get(name)
            print(redact(f"{name} = {text}" + (f"   [{origin}]" if origin else ""), key))
        k = shown["key"]
        print(f"api_key: {'configured' if k['configured'] else 'not set'} ({k['source']}; never shown; "
              "change it with `gimp-openai key set`)")
        return 0
    if not args.pairs:
        raise UsageError("Say what to set: gimp-openai config set KEY=VALUE [KEY=VALUE ...]")
    current = load_settings(apply_env=False)
    changes = config_changes(parse_config_pairs(args.pairs), current)
    update_settings(**changes)
    if getattr(args, "json", False):
        print(json.dumps({"ok": True, "saved": sorted(changes), "config_file": str(config_path())}))
    else:
        print(f"Saved {', '.join(sorted(changes))} in {config_path()}.")
    return 0


# --- Parser -------------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse whose refusals go through :func:`fail` (one line, --json honoured, exit code 2) instead of
    argparse's usage block and its own exit."""

    def error(self, message: str) -> Any:  # argparse's contract: never returns
        plain = _plain_argparse_message(message)
        raise UsageError(plain, hint="" if plain != message else f"See `{self.prog} --help`.")


def _plain_argparse_message(message: str) -> str:
    """``"argument --feather: --feather 1e9 is not allowed: ..."`` -> the refusal alone (it names the option)."""
    prefix, sep, rest = message.partition(": ")
    if sep and prefix.startswith("argument ") and rest.startswith(prefix[len("argument "):].split("/")[0]):
        return rest
    return message


def bounded(name: str, flag: str) -> Any:
    """An argparse ``type`` for the numeric option ``flag``, checked against ``bounds.BOUNDS[name]``."""
    from gimp_openai import bounds

    def convert(text: str) -> float:
        try:
            return bounds.parse(name, text, flag)
        except bounds.OutOfBounds as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


#: The numeric command-line options and the bounds-table entries they are checked against.
NUMERIC_OPTIONS = {"-n": "n", "--feather": "feather", "--padding": "context_padding", "--timeout": "read_timeout",
                   "--concurrency": "concurrency", "--partial-images": "partial_images", "--max-cost": "max_cost",
                   "--limit": "history_limit", "--left": "amount", "--right": "amount", "--top": "amount",
                   "--bottom": "amount", "--band": "band", "--warm-seconds": "warm_seconds", "--idle": "warm_seconds",
                   "--poll": "poll"}


def _partial_images_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partial-images", type=bounded("partial_images", "--partial-images"), default=0,
                   help="previews to stream while the model works, 0-3 (GPT image models); each is written "
                        "beside the outputs as NAME-partial-K.png as it arrives")


def _common(p: argparse.ArgumentParser, *, images: bool = True) -> None:
    p.add_argument("--model", default="", help="model id (default: your saved choice, else the newest live GPT "
                                               "image model)")
    p.add_argument("-n", type=bounded("n", "-n"), default=1, help="how many results (1-10)")
    p.add_argument("--size", default="", help="WxH, or auto (default: planned from the selection)")
    p.add_argument("--quality", default="auto", help="low, medium, high, auto (xhigh, max: gpt-image-2.5 and later)")
    p.add_argument("--complexity", default="", choices=("", "low", "medium", "high"),
                   help="how much planning the model does (gpt-image-2.6; default: the model's, high)")
    p.add_argument("--background", default="auto", help="auto, opaque or transparent (GPT models)")
    p.add_argument("--max-cost", type=bounded("max_cost", "--max-cost"), default=None,
                   help="dollars above which the run asks first, or refuses without --yes (default: setting "
                        "max_cost, 1)")
    p.add_argument("--yes", "-y", action="store_true", help="send even when the estimate is above --max-cost")
    p.add_argument("--out", default="", help="output folder (default: the current folder)")
    p.add_argument("--base-url", default="", help="API base URL (default: settings, OPENAI_BASE_URL)")
    _timeout_flag(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    _json_flag(p)
    if images:
        p.add_argument("--feather", type=bounded("feather", "--feather"), default=0.0,
                       help="extra feather radius of the layer mask, px (0-200)")
        p.add_argument("--padding", type=bounded("context_padding", "--padding"), default=0.25,
                       help="context around the selection, share of its size (0-2)")
        p.add_argument("--no-align", action="store_true", help="do not align the result to the original")
        p.add_argument("--no-tone-match", action="store_true", help="do not match the result's tones")
        p.add_argument("--blend", choices=("feather", "poisson"), default="feather", help="blend mode")
    else:
        p.set_defaults(feather=0.0, padding=0.25, no_align=False, no_tone_match=False, blend="feather")


def _timeout_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=bounded("read_timeout", "--timeout"), default=None,
                   help="read timeout in seconds, 1-3600 (default: settings, 600)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")


def _selection_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    p.add_argument("--mask", action="append" if many else "store",
                   help="selection image of the same size (white/opaque = selected)" + (", once per image" if many
                                                                                        else ""))
    p.add_argument("--rect", type=rect_option, help="select the rectangle X,Y,W,H instead of a mask image")
    p.add_argument("--ellipse", action="store_true", help="with --rect: select the ellipse inside it")


def _async_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--async", dest="async_", action="store_true",
                   help="send through the Batch API (half the price, results within 24 h); then "
                        "`batch status|collect|cancel ID`, `batch list`")
    p.add_argument("--wait", action="store_true", help="with --async: wait for the results and collect them")
    p.add_argument("--poll", type=bounded("poll", "--poll"), default=10.0,
                   help="with --wait: seconds between status checks")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gimp-openai",
        description="Edit a selection in place, make variations and generate images with the OpenAI Images API "
                    "(or any compatible server, such as `gimp-openai serve`).",
    )
    parser.add_argument("--version", action="version", version=f"gimp-openai {__version__}")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("edit", help="change the selected part of an image")
    p.add_argument("image")
    _selection_args(p)
    p.add_argument("--prompt", "-p", default="", help="what the selection should become")
    p.add_argument("--reference", action="append", help="extra reference image (GPT models; repeatable)")
    _partial_images_flag(p)
    p.add_argument("--markup", metavar="FILE",
                   help="a transparent layer the size of the image with the instructions painted on it, sent "
                        "instead of a mask (gpt-image-2.6); --mask/--rect then only limit what the result replaces")
    _common(p)

    from gimp_openai import expand_cli

    expand_cli.add_parser(sub, _common, bounded)

    p = sub.add_parser("variation", help="variations of an image")
    p.add_argument("image")
    p.add_argument("--variation-prompt", default="", help="prompt when the model makes variations by editing")
    _common(p)

    p = sub.add_parser("generate", help="new images from a prompt (or a file of prompts)")
    p.add_argument("--prompt", "-p", default="")
    p.add_argument("--prompts", metavar="FILE", default="",
                   help="one prompt a line (blank lines and #comments skipped; - reads stdin), instead of --prompt; "
                        "outputs NAME-K, one after another, or all at once with --async")
    p.add_argument("--reference", action="append",
                   help="an image the result should follow (GPT models, sent to the edits endpoint without a mask; "
                        "repeatable)")
    p.add_argument("--name", default="", help="file name stem (default: generated)")
    _partial_images_flag(p)
    _async_flags(p)
    _common(p, images=False)

    p = sub.add_parser("batch", help="the same edit or variation on many images, concurrently")
    p.add_argument("images", nargs="+")
    p.add_argument("--operation", choices=("edit", "variation"), default="edit")
    _selection_args(p, many=True)
    p.add_argument("--prompt", "-p", default="")
    p.add_argument("--variation-prompt", default="")
    p.add_argument("--concurrency", type=bounded("concurrency", "--concurrency"), default=None,
                   help="requests at once, 1-16 (default: settings, 4)")
    _async_flags(p)
    _common(p)

    p = sub.add_parser("models", help="image models the server offers, with their sizes and shutdown dates")
    p.add_argument("--refresh", action="store_true", help="ask the server now instead of using the cache")
    _json_flag(p)
    p.add_argument("--base-url", default="")
    _timeout_flag(p)

    p = sub.add_parser("usage", help="what the images in history cost, by day and model")
    p.add_argument("--since", default="", help="YYYY-MM-DD, or a number of days back (7d)")
    _json_flag(p)

    p = sub.add_parser("doctor", help="check the key, the server, TLS, versions and GIMP's plug-in folders")
    p.add_argument("--base-url", default="")
    _timeout_flag(p)
    p.add_argument("--no-plugin-dirs", action="store_true", help="skip the GIMP plug-in folder checks")
    _json_flag(p)

    sub.add_parser("serve", help="the local OpenAI-compatible server (options: gimp-openai serve --help)",
                   add_help=False)

    p = sub.add_parser("plan", help="host protocol: which region to export (PLAN.json)")
    p.add_argument("file")
    p = sub.add_parser("job", help="host protocol: run JOB.json, progress as JSON lines")
    p.add_argument("file")
    p = sub.add_parser("session", help="host protocol: plan and job requests as JSON lines on stdin, one process")
    p.add_argument("--warm", metavar="SOCKET", help="afterwards, keep an engine ready for the next run on SOCKET")
    p.add_argument("--warm-seconds", type=bounded("warm_seconds", "--warm-seconds"), default=900.0, metavar="SECONDS",
                   help="how long that engine waits for the next run (default 900)")
    p = sub.add_parser("warm", help="host protocol: an engine waiting on SOCKET for the next run's session")
    p.add_argument("--socket", required=True)
    p.add_argument("--idle", type=bounded("warm_seconds", "--idle"), default=900.0, metavar="SECONDS")

    p = sub.add_parser("key", help="store the API key (read from stdin or a hidden prompt) or show its status")
    p.add_argument("action", choices=("set", "status"))
    _json_flag(p)

    p = sub.add_parser("history", help="past results: list, show one, or put one back into an image (no new request)")
    _json_flag(p)
    hist = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    h = hist.add_parser("list", help="the results in the history folder, newest first")
    h.add_argument("--since", default="",
                   help="only results from then on: a date (2026-03-01), a time, or 7d, 12h, 30m")
    h.add_argument("--limit", type=bounded("history_limit", "--limit"), default=None, help="at most N results")
    h.add_argument("--thumbnails", action="store_true", help="make (or reuse) a thumbnail for each listed result")
    h.add_argument("--folder", default="", help="another history folder (default: settings)")
    _json_flag(h)
    h = hist.add_parser("show", help="one result's description")
    h.add_argument("id")
    h.add_argument("--folder", default="")
    _json_flag(h)
    h = hist.add_parser("insert", help="a result at its place in a copy of IMAGE (.png: composited; .ora: layers)")
    h.add_argument("id")
    h.add_argument("image")
    h.add_argument("-o", "--out", required=True, help="the file to write (.png or .ora)")
    h.add_argument("--folder", default="")
    _json_flag(h)
    h = hist.add_parser("layer", help="host protocol: a result as the layer it was (PNG; its mask beside it, "
                                          "-mask.png) and where it goes")
    h.add_argument("id")
    h.add_argument("-o", "--out", required=True, help="the PNG to write")
    h.add_argument("--folder", default="")
    _json_flag(h)

    p = sub.add_parser("config", help="show the settings (never the key) or set some: config set KEY=VALUE ...")
    p.add_argument("action", choices=("show", "set"))
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    _json_flag(p)
    return parser


PAID_COMMANDS = ("edit", "variation", "generate", "batch", "expand")


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def ask(question: str) -> str:
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline()


def offer_switch(exc: ModelNotFoundError) -> bool:
    """Interactive runs: offer the live replacement of a shut-down model, and remember it if accepted."""
    if not exc.replacement or not interactive():
        return False
    print(f"gimp-openai: {exc.message}", file=sys.stderr)
    answer = ask(f"Use {exc.replacement} now, and from now on? [Y/n] ").strip().lower()
    if answer not in ("", "y", "yes"):
        return False
    from gimp_openai.settings import update_settings

    update_settings(default_model=exc.replacement)
    print(f"gimp-openai: {exc.replacement} is now your default model.", file=sys.stderr)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from gimp_openai.memory import return_freed_buffers

    return_freed_buffers()  # before the first image buffer: peaks stay near the live data (see memory.py)
    parser = build_parser()
    # `batch status|collect|list|cancel` are actions, not image names (unless such a file exists).
    if "batch" in argv:
        at = argv.index("batch")
        rest = argv[at + 1 :]
        if rest and rest[0] in ("status", "collect", "list", "cancel") and not Path(rest[0]).exists() and all(
                a.startswith("-") for a in argv[:at]):
            from gimp_openai import batchcli

            try:
                return batchcli.action(argv[:at], rest)
            except KeyboardInterrupt:
                print("gimp-openai: interrupted; `gimp-openai batch collect` resumes", file=sys.stderr)
                return 130
            except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
                return internal_error(exc)
    # `serve` passes everything after it to the server's own parser.
    if "serve" in argv:
        at = argv.index("serve")
        if all(a.startswith("-") for a in argv[:at]):
            return cmd_serve(argparse.Namespace(), argv[at + 1 :])
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return fail(exc, "--json" in argv[: argv.index("--") if "--" in argv else len(argv)])
    except Exception as exc:  # noqa: BLE001 - a bug in an option's check: still one line
        return internal_error(exc)
    as_json = bool(getattr(args, "json", False))
    commands = {"edit": cmd_edit, "variation": cmd_variation, "generate": cmd_generate, "batch": cmd_batch,
                "models": cmd_models, "usage": cmd_usage, "doctor": cmd_doctor, "plan": cmd_plan, "job": cmd_job,
                "session": cmd_session, "warm": cmd_warm, "key": cmd_key, "expand": cmd_expand,
                "config": cmd_config, "history": cmd_history}
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        try:
            return commands[args.command](args)
        except ModelNotFoundError as exc:
            if args.command not in PAID_COMMANDS or as_json or not offer_switch(exc):
                raise
            args.model = exc.replacement
            return commands[args.command](args)
    except GimpOpenAIError as exc:
        return fail(exc, as_json)
    except KeyboardInterrupt:
        print("gimp-openai: interrupted; results already received are in the history folder", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        return internal_error(exc)


def internal_error(exc: Exception) -> int:
    """A bug: one line naming it and how to report it (GIMP_OPENAI_DEBUG=1 re-raises for the traceback)."""
    if os.environ.get("GIMP_OPENAI_DEBUG"):
        raise exc
    print(f"gimp-openai: internal error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
    print("  hint: this is a bug; run again with GIMP_OPENAI_DEBUG=1 for details and report it", file=sys.stderr)
    return EXIT_FAILED
