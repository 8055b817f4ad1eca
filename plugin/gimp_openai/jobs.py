"""The host protocol (docs/architecture.md): ``session`` (one engine process per GIMP run: plan and job requests
on stdin; the end of input during a job means the host is gone, and the job is abandoned), and the one-shot
``plan PLAN.json`` and ``job JOB.json`` it is made of.

The GIMP hosts are thin: they export pixels, run the engine as a subprocess and insert what it returns. So
everything a host could get wrong is checked here, with messages an artist can act on: paths stay inside the
job folder, PNG sizes equal the planned region, ids are unique, every field has its type. A job that cannot be
read still gets a result line (``ok: false``) and exit code 2; a readable job always ends with a result line
and exit code 0, whatever happened to its items. Items of a batch run concurrently and one item's failure
never loses another's outputs.

The API key comes from the environment or the user's settings (never the job file, never argv).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gimp_openai import bounds, operations
from gimp_openai.errors import GimpOpenAIError, InvalidInputError, OutputNotWritableError
from gimp_openai.progress import Progress
from gimp_openai.session import Session

PROTOCOL_VERSION = 1
OPERATIONS = ("edit", "variation", "generate", "expand")
BLENDS = ("feather", "poisson")
MAX_CONCURRENCY = int(bounds.BOUNDS["concurrency"].maximum)
EXIT_OK = 0
EXIT_UNREADABLE = 2


class JobError(InvalidInputError):
    """The job or plan file itself is wrong: the host has a bug, or the file was damaged."""

    code = "invalid_job"
    default_hint = "This is a problem in the GIMP plug-in's job file; please report it with the message."


# --- Field readers: every one says which field is wrong and why ---------------------------------------------


def _field(
    obj: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ..., where: str = "job"
) -> Any:
    if name not in obj or obj[name] is None:
        if default is ...:
            raise JobError(f"The {where} has no '{name}'.")
        return default
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise JobError(f"'{name}' in the {where} must be {_kind_name(kinds)}, not true/false.")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds):
        raise JobError(f"'{name}' in the {where} must be {_kind_name(kinds)}, not {type(value).__name__}.")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
             dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _number(obj: dict[str, Any], name: str, default: Any, where: str = "job") -> Any:
    """A numeric field, typed by its entry in the bounds table and checked against it (NaN and infinity too:
    Python's JSON reader accepts them)."""
    entry = bounds.BOUNDS[name]
    value = _field(obj, name, entry.kind, default, where=where)
    return bounds.check(entry.name, value, f"'{name}' in the {where}", JobError)


def _rect(obj: dict[str, Any], name: str, where: str, *, allow_empty: bool = False) -> Any:
    from gimp_openai.geometry import Rect

    value = _field(obj, name, dict, where=where)
    numbers = {}
    for key in ("x", "y", "width", "height"):
        numbers[key] = _field(value, key, int, where=f"'{name}' of {where}")
    if numbers["width"] < 0 or numbers["height"] < 0 or (
        not allow_empty and (numbers["width"] == 0 or numbers["height"] == 0)
    ):
        raise JobError(f"'{name}' of {where} is {numbers['width']}x{numbers['height']}: it must have pixels.")
    for key in ("x", "y"):
        bounds.check("coordinate", numbers[key], f"'{key}' of '{name}' of {where}", JobError)
    for key in ("width", "height"):
        if numbers[key]:
            bounds.check("region_side", numbers[key], f"'{key}' of '{name}' of {where}", JobError)
    return Rect(**numbers)


def _target(obj: dict[str, Any], where: str) -> tuple[int, int]:
    value = _field(obj, "target", list, where=where)
    if len(value) != 2 or not all(bounds.is_within("target_side", v) for v in value):
        raise JobError(f"'target' of {where} must be [width, height] in pixels, got {value!r}.")
    return int(value[0]), int(value[1])


def _inside(folder: Path, relative: str, what: str) -> Path:
    """A path from the job, resolved against its folder; it may not leave the folder."""
    if not relative or "\x00" in relative:
        raise JobError(f"The path of {what} is empty or invalid.")
    path = (folder / relative).resolve()
    try:
        path.relative_to(folder)
    except ValueError:
        raise JobError(f"The path of {what} ({relative}) is outside the job folder {folder}.") from None
    return path


# --- The job ------------------------------------------------------------------------------------------------


@dataclass
class Item:
    id: str
    image: Path | None = None
    selection: Path | None = None
    references: list[Path] = field(default_factory=list)
    reference_names: list[str] = field(default_factory=list)  # as the artist knows them (a layer's name)
    markup: Path | None = None  # a markup edit's painted layer, place-sized RGBA (sent instead of a mask)
    layer: Any = None
    plan: Any = None  # geometry.RegionPlan


@dataclass
class Job:
    folder: Path
    operation: str
    options: operations.Options
    out_dir: Path
    add_mask: bool
    concurrency: int
    items: list[Item]
    expand: dict[str, Any] = field(default_factory=dict)  # margins or aspect and sides, band (operation expand)


def read_json_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    try:
        p = Path(path).resolve()
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"The file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"The file {path} could not be read: {exc}.") from None
    except ValueError as exc:
        raise JobError(f"The file {path} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise JobError(f"The file {path} must hold one JSON object, not {type(data).__name__}.")
    version = data.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise JobError(
            f"The file {path} is protocol version {version!r}; this engine speaks version {PROTOCOL_VERSION}.",
            hint="Install the plug-in and the engine from the same release.",
        )
    return data, p.parent


def _canvas(data: dict[str, Any]) -> tuple[int, int] | None:
    """A generation for an image carries the image's size: the result takes its aspect and covers it."""
    raw = _field(data, "canvas", dict, None)
    if raw is None:
        return None
    width, height = (bounds.check("region_side", _field(raw, key, int, where="'canvas'"), f"'{key}' of 'canvas'",
                                  JobError) for key in ("width", "height"))
    return width, height


def parse_job(data: dict[str, Any], folder: Path, settings: Any = None) -> Job:
    from gimp_openai.geometry import RegionPlan

    secrets = [name for name in data if isinstance(name, str) and "key" in name.lower() and name != "add_mask"]
    if secrets:
        raise JobError(
            f"The job file has a field {secrets[0]!r}: an API key never goes into a job file.",
            hint="The engine reads the key from OPENAI_API_KEY or the stored settings; remove the field.",
        )
    operation = _field(data, "operation", str)
    if operation not in OPERATIONS:
        raise JobError(f"Unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}.")
    blend = _field(data, "blend", str, "feather")
    if blend not in BLENDS:
        raise JobError(f"Unknown blend {blend!r}; use one of {', '.join(BLENDS)}.")
    feather = _number(data, "feather", 0.0)
    padding = _number(data, "context_padding", 0.25)
    default_concurrency = int(getattr(settings, "concurrency", 4) or 4)
    concurrency = _number(data, "concurrency", min(default_concurrency, MAX_CONCURRENCY))
    variation_prompt = _field(data, "variation_prompt", str, "") or str(
        getattr(settings, "variation_prompt", "") or ""
    )
    options = operations.Options(
        model=_field(data, "model", str, ""),
        prompt=_field(data, "prompt", str, ""),
        n=_number(data, "n", 1),
        quality=_field(data, "quality", str, "auto"),
        size_mode=_field(data, "size_mode", str, "auto"),
        size=_field(data, "size", str, None),
        background=_field(data, "background", str, "auto"),
        feather=feather,
        padding=padding,
        align=_field(data, "align", bool, True),
        tone_match=_field(data, "tone_match", bool, True),
        blend=blend,
        source_name=_field(data, "source_name", str, ""),
        variation_prompt=variation_prompt,
        canvas=_canvas(data) if operation == "generate" else None,
        partial_images=_number(data, "partial_images", 0),
        complexity=_field(data, "complexity", str, ""),
    )
    out_text = _field(data, "out_dir", str)
    if not out_text or "\x00" in out_text:
        raise JobError("'out_dir' is empty or invalid.")
    out_dir = (folder / out_text).resolve()
    raw_items = _field(data, "items", list, [] if operation == "generate" else ...)
    if operation != "generate" and not raw_items:
        raise JobError("The job has no items.")
    if len(raw_items) > 1000:
        raise JobError("The job has more than 1000 items.")
    items: list[Item] = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_items, start=1):
        where = f"item {number}"
        if not isinstance(raw, dict):
            raise JobError(f"Item {number} must be an object, not {type(raw).__name__}.")
        item_id = _field(raw, "id", str, where=where)
        if not item_id or len(item_id) > 200:
            raise JobError(f"Item {number} has an empty or overlong id.")
        if item_id in seen:
            raise JobError(f"Two items have the id {item_id!r}; ids must be unique.")
        seen.add(item_id)
        where = f"item {item_id!r}"
        item = Item(id=item_id)
        if operation == "expand":  # the old canvas as it shows (every visible layer), grown by the engine
            item.image = _inside(folder, _field(raw, "image", str, where=where), f"the image of {where}")
        elif operation != "generate":
            item.image = _inside(folder, _field(raw, "image", str, where=where), f"the image of {where}")
            item.layer = _rect(raw, "layer", where)
            place = _rect(raw, "place", where)
            request = _rect(raw, "request", where)
            # an edit's selection may reach past its layer (the result layer grows past it; the host exports
            # transparent pixels there), but it must overlap the layer: there is nothing to continue from
            if not (item.layer.contains(place) or (operation == "edit" and not place.intersect(item.layer).is_empty)):
                raise JobError(f"'place' of {where} is not inside its layer.")
            if not request.contains(place):
                raise JobError(f"'request' of {where} does not contain 'place'.")
            item.plan = RegionPlan(place=place, request=request, target=_target(raw, where))
            if operation == "edit":
                selection = _field(raw, "selection", str, where=where)
                item.selection = _inside(folder, selection, f"the selection of {where}")
                markup = _field(raw, "markup", str, "", where=where)
                if markup:
                    item.markup = _inside(folder, markup, f"the markup layer of {where}")
        _references(raw, item, folder, where)
        items.append(item)
    if operation == "generate" and not items:
        items.append(Item(id="generate"))
    if operation == "expand" and len(items) != 1:
        raise JobError("An expand job has exactly one item: the picture whose canvas grows.")
    return Job(
        folder=folder,
        operation=operation,
        options=options,
        out_dir=out_dir,
        add_mask=_field(data, "add_mask", bool, True),
        concurrency=concurrency,
        items=items,
        expand=_expand_fields(data) if operation == "expand" else {},
    )


def _references(raw: dict[str, Any], item: Item, folder: Path, where: str) -> None:
    """An item's ``references``: paths in the job folder, or ``{"path", "name"}`` objects whose name (a GIMP
    layer's) the notes and the history sidecar use instead of the file's."""
    refs = _field(raw, "references", list, [], where=where)
    if len(refs) > 64:
        raise JobError(f"{where} has more than 64 references.")
    for r, ref in enumerate(refs, start=1):
        name = ""
        if isinstance(ref, dict):
            name = _field(ref, "name", str, "", where=f"reference {r} of {where}")[:200]
            ref = _field(ref, "path", str, where=f"reference {r} of {where}")
        if not isinstance(ref, str):
            raise JobError(f"Reference {r} of {where} must be a path.")
        path = _inside(folder, ref, f"reference {r} of {where}")
        item.references.append(path)
        item.reference_names.append(name or path.name)


def _expand_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Expand Canvas: ``margins`` ({left, top, right, bottom} px), or ``aspect`` ("16:9") with the ``sides``
    that may grow; ``band`` px of the old picture repainted along its edge. Checked here, before anything is
    paid; the margins of an aspect need the picture's size and are computed when it is read."""
    from gimp_openai import expand

    band = _field(data, "band", int, 16)
    if not 0 <= band <= 256:
        raise JobError(f"'band' must be 0 to 256 px, not {band}.")
    aspect = _field(data, "aspect", str, "")
    sides = _field(data, "sides", list, [])
    if any(side not in expand.SIDES for side in sides):
        raise JobError(f"'sides' must name left, top, right or bottom; got {sides!r}.")
    try:  # the engine's own wording, as a job error: a host wrote this file
        if aspect:
            if data.get("margins") is not None:
                raise JobError("Give either 'margins' or 'aspect', not both.")
            return {"aspect": expand.parse_aspect(aspect), "sides": list(sides), "band": band}
        margins = expand.Margins.from_dict(_field(data, "margins", dict))
    except JobError:
        raise
    except InvalidInputError as exc:
        raise JobError(exc.message) from None
    if margins.is_empty:
        raise JobError("Nothing to expand: every margin is 0.")
    return {"margins": margins, "band": band}


# --- Running ------------------------------------------------------------------------------------------------


class LineWriter:
    """JSON lines on one stream from many threads; one line per object, flushed at once (hosts read live)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, ensure_ascii=False, default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class BatchProgress:
    """Per-item fractions and their mean, so every line carries the overall fraction a host's bar shows."""

    def __init__(self, writer: LineWriter, ids: list[str]) -> None:
        self.writer = writer
        self.fractions = dict.fromkeys(ids, 0.0)
        self.lock = threading.Lock()

    def __call__(self, event: Progress) -> None:
        with self.lock:
            if event.item in self.fractions:
                self.fractions[event.item] = max(self.fractions[event.item], event.fraction)
            overall = sum(self.fractions.values()) / max(1, len(self.fractions))
        data = event.to_dict()
        data["overall"] = round(overall, 4)
        self.writer.write(data)


def check_out_dir(out_dir: Path) -> None:
    """Before paying for anything: can we write the results where they must go?"""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}-{threading.get_ident()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(f"Cannot write into {out_dir}: {exc.strerror or exc}.") from None


def safe_name(text: str) -> str:
    """An item id as a file-name part: the engine's one file-name rule (history.slugify), case kept."""
    from gimp_openai.history import slugify

    return slugify(text, 80, lower=False, empty="item")


def _load_markup(item: Item) -> Any:
    """The item's markup layer (place-sized RGBA), or None."""
    from gimp_openai import imaging

    if item.markup is None:
        return None
    return _read_planned(imaging.read_image, item.markup, item.plan.place, "markup layer")


def _read_planned(read: Callable[[Path], Any], path: Path, place: Any, what: str) -> Any:
    """A PNG the host wrote for the planned region, refused in plain words when unreadable or of another size."""
    try:
        pixels = read(path)
    except OSError as exc:
        raise InvalidInputError(f"The {what} {path.name} could not be read: {exc}.") from None
    if (pixels.shape[1], pixels.shape[0]) != (place.width, place.height):
        raise InvalidInputError(
            f"The {what} {path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the planned region is "
            f"{place.width}x{place.height}.", hint=JobError.default_hint,
        )
    return pixels


def _load_item(job: Job, item: Item) -> tuple[Any, Any, list[bytes]]:
    from gimp_openai import imaging

    assert item.image is not None and item.plan is not None
    pixels = _read_planned(imaging.read_image, item.image, item.plan.place, "exported image")
    place = item.plan.place
    selection = None
    if item.selection is not None:
        selection = imaging.read_selection(item.selection)
        if (selection.shape[1], selection.shape[0]) != (place.width, place.height):
            raise InvalidInputError(
                f"The selection {item.selection.name} is {selection.shape[1]}x{selection.shape[0]} but the planned "
                f"region is {place.width}x{place.height}.",
                hint=JobError.default_hint,
            )
    return pixels, selection, _read_references(item)


def _read_references(item: Item) -> list[bytes]:
    refs = []
    for ref, name in zip(item.references, item.reference_names, strict=True):
        try:
            refs.append(ref.read_bytes())
        except OSError as exc:
            raise InvalidInputError(f"The reference image {name} could not be read: {exc}.") from None
    return refs


def _write_outputs(job: Job, item: Item, outcome: operations.Outcome) -> list[dict[str, Any]]:
    from gimp_openai import imaging
    from gimp_openai.atomic import write_bytes_unique

    results = []
    base = safe_name(item.id)
    for out in outcome.outputs:
        # Temp files the host reads once and deletes: the fastest exact PNGs, no fsync (still write-then-rename).
        # Names are claimed atomically: two ids with the same safe name ('a b', 'a-b') never share a file.
        layer_png = write_bytes_unique(job.out_dir, f"{base}-{out.index}", ".png",
                                       imaging.encode_host_png(out.layer_pixels(job.add_mask)), durable=False)
        mask_png = write_bytes_unique(job.out_dir, f"{base}-{out.index}-mask", ".png",
                                      imaging.encode_host_png(out.mask), durable=False)
        notes = "; ".join([n for n in [out.report, *out.notes] if n])
        results.append(
            {
                "index": out.index,
                "name": out.name,
                "layer_png": str(layer_png),
                "mask_png": str(mask_png),
                "x": out.x,
                "y": out.y,
                "width": out.width,
                "height": out.height,
                "history_png": str(out.history_png) if out.history_png is not None else None,
                "request_id": out.request_id,
                "path": out.path,
                "report": out.report,
                "notes": notes,
            }
        )
    return results


class PreviewLines:
    """Each streamed preview of one item as a PNG in the job's out folder and one ``partial`` line, so a host
    can show it while the model works: ``{"type": "partial", "id", "index", "image", "layer_png", "x", "y",
    "width", "height", "mask_png"?}`` (docs/architecture.md, host protocol). Written while holding
    ``engine.saving``, like the outputs: an abandoned job removes that folder under the same lock."""

    def __init__(self, engine: operations.Engine, job: Job, item: Item, write: Callable[[dict[str, Any]], None]):
        self.engine, self.job, self.item, self.write = engine, job, item, write
        self._mask: tuple[Any, str] | None = None  # the mask array written, and its file

    def _mask_file(self, mask: Any) -> str:
        """The item's preview mask as one PNG, written once (every preview of the item has the same array)."""
        from gimp_openai import imaging
        from gimp_openai.atomic import write_bytes_unique

        if self._mask is None or self._mask[0] is not mask:
            path = write_bytes_unique(self.job.out_dir, f"{safe_name(self.item.id)}-partial-mask", ".png",
                                      imaging.encode_host_png(mask), durable=False)
            self._mask = (mask, str(path))
        return self._mask[1]

    def expect(self, place: operations.PreviewPlace) -> None:
        """Where the previews will go, once the request is sent: ``{"type": "partial_place", "id", "x", "y",
        "width", "height", "mask_png"?}``, so the host makes the preview layer while the model works."""
        job = self.job
        try:
            with self.engine.saving:
                if not job.out_dir.is_dir():
                    return
                line: dict[str, Any] = {"type": "partial_place", "id": self.item.id, "x": place.x, "y": place.y,
                                        "width": place.width, "height": place.height}
                if job.add_mask and job.operation == "edit":
                    line["mask_png"] = self._mask_file(place.mask)
        except (OSError, GimpOpenAIError):
            return
        self.write(line)

    def __call__(self, preview: operations.Preview) -> None:
        from gimp_openai import imaging
        from gimp_openai.atomic import write_bytes_unique

        job, base = self.job, safe_name(self.item.id)
        try:
            with self.engine.saving:
                if not job.out_dir.is_dir():  # the job was abandoned: nobody to show it to
                    return
                layer_png = write_bytes_unique(job.out_dir, f"{base}-partial-{preview.sequence}", ".png",
                                               imaging.encode_host_png(preview.layer_pixels(job.add_mask)),
                                               durable=False)
                line: dict[str, Any] = {
                    "type": "partial", "id": self.item.id, "index": preview.index, "image": preview.image,
                    "layer_png": str(layer_png), "x": preview.x, "y": preview.y, "width": preview.width,
                    "height": preview.height,
                }
                if job.add_mask and job.operation == "edit":
                    line["mask_png"] = self._mask_file(preview.mask)
        except (OSError, GimpOpenAIError):
            return  # a preview that cannot be written is not shown; the result still comes
        self.write(line)


def _run_operation(engine: operations.Engine, job: Job, item: Item,
                   progress: Callable[[Progress], None],
                   on_preview: operations.PreviewCallback | None = None) -> operations.Outcome:
    """The item's operation on its exported pixels. Its own function so that the exported crop and selection are
    freed when it returns, before the outputs are encoded (they would otherwise add to the job's peak memory)."""
    from dataclasses import replace

    options = job.options
    if job.operation == "generate":
        refs = _read_references(item)
        if refs:
            options = replace(options, extra_images=refs, reference_names=item.reference_names)
        return operations.generate(engine, options, item=item.id, progress=progress, on_preview=on_preview)
    pixels, selection, refs = _load_item(job, item)
    if job.operation == "edit":
        assert selection is not None
        if refs:
            options = replace(options, extra_images=refs, reference_names=item.reference_names)
        if item.markup is not None:
            options = replace(options, markup=_load_markup(item))
        return operations.edit(
            engine, options, place_pixels=pixels, selection=selection, layer=item.layer,
            plan=item.plan, item=item.id, progress=progress, on_preview=on_preview,
            on_preview_place=on_preview.expect if isinstance(on_preview, PreviewLines) else None,
        )
    return operations.variation(
        engine, options, place_pixels=pixels, layer=item.layer, plan=item.plan, item=item.id, progress=progress,
    )


def run_item(engine: operations.Engine, job: Job, item: Item, progress: Callable[[Progress], None],
             write_line: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One item, start to end; every failure becomes this item's error (with what was already saved).
    ``write_line``: where the item's ``partial`` lines go (previews are streamed only when the job asks)."""
    try:
        if job.operation == "expand":
            return _run_expand(engine, job, item, progress)
        previews = PreviewLines(engine, job, item, write_line) if write_line and job.options.partial_images else None
        outcome = _run_operation(engine, job, item, progress, previews)
        with engine.saving:  # an abandoned job (run_session) removes the folder these go to, holding this lock
            outputs = _write_outputs(job, item, outcome)
        warnings = [notice.to_dict() for notice in outcome.warnings]
        answer = {"id": item.id, "ok": True, "outputs": outputs, "error": None, "model": outcome.model,
                  "warnings": warnings, "cost": outcome.cost.to_dict() if outcome.cost is not None else None,
                  "_cost": outcome.cost}
        if outcome.references is not None:  # which references the model saw, for the host's message
            answer["references"] = outcome.references
        return answer
    except GimpOpenAIError as exc:
        return {"id": item.id, "ok": False, "outputs": [], "error": exc.to_dict()}
    except Exception as exc:  # noqa: BLE001 - one item's bug must not lose the others' results
        return {
            "id": item.id,
            "ok": False,
            "outputs": [],
            "error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                      "hint": "This is a bug in gimp-openai; please report it.", "saved": []},
        }


def _run_expand(engine: operations.Engine, job: Job, item: Item,
                progress: Callable[[Progress], None]) -> dict[str, Any]:
    """Expand Canvas: the old canvas grown by the margins and the new area filled (:mod:`expand`), answered like
    an edit's item plus where the canvas goes: ``canvas`` (the new size) and ``old`` (where the old canvas sits
    in it). The output's ``x``, ``y`` are in the new canvas; its mask is 255 on what was painted (the new area
    and the old canvas's fully transparent pixels), 0 on every pixel that showed something."""
    from dataclasses import replace
    from types import SimpleNamespace

    from gimp_openai import expand, imaging

    assert item.image is not None
    try:
        pixels = imaging.read_image(item.image)
    except OSError as exc:
        raise InvalidInputError(f"The exported picture {item.image.name} could not be read: {exc}.") from None
    height, width = pixels.shape[:2]
    fields = job.expand
    margins = fields.get("margins") or expand.margins_for_aspect(width, height, fields["aspect"], fields["sides"])
    if margins.is_empty:  # only an aspect the picture already has grows nothing; refused before any request
        aw, ah = fields["aspect"]
        raise InvalidInputError(f"The picture ({width}x{height} px) is already {aw}:{ah}: nothing to expand.",
                                hint="Choose another aspect ratio, or give pixels to add per side.")

    def tile_progress(event: Progress) -> None:  # tiles report as the one item the host asked for
        progress(replace(event, item=item.id))

    outcome = expand.expand(engine, job.options, pixels, margins, band=fields["band"], item=item.id,
                            progress=tile_progress)
    with engine.saving:
        outputs = _write_outputs(job, item, SimpleNamespace(outputs=[outcome.output]))  # type: ignore[arg-type]
    for out in outputs:
        out["history_png"] = outcome.history[-1] if outcome.history else None
        out["notes"] = "; ".join(n for n in [out["notes"], *outcome.notes] if n)
    cost = outcome.cost
    return {"id": item.id, "ok": True, "outputs": outputs, "error": None, "model": outcome.model,
            "canvas": {"width": outcome.canvas.width, "height": outcome.canvas.height},
            "old": outcome.old.to_dict(), "margins": margins.to_dict(),
            "warnings": [notice.to_dict() for notice in outcome.warnings],
            "cost": cost.to_dict() if cost is not None else None, "_cost": cost}


def _result(ok: bool, items: list[dict[str, Any]], error: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    data = {"type": "result", "ok": ok, "items": items, "error": error}
    data.update(extra)
    return data


def run_job(path: str, stream: IO[str] | None = None, *, engine_factory: Callable[[Any], Any] | None = None) -> int:
    """``gimp-openai job JOB.json``: progress lines, then one result line. Returns the exit code."""
    writer = LineWriter(stream or sys.stdout)
    try:
        context = Session(engine_factory=engine_factory)
    except GimpOpenAIError as exc:
        writer.write(_result(False, [], exc.to_dict()))
        return EXIT_UNREADABLE
    return _job(path, writer, context)


def _job(path: str, writer: LineWriter, context: Session, **tags: Any) -> int:
    try:
        data, folder = read_json_file(path)
        job = parse_job(data, folder, context.settings)
    except GimpOpenAIError as exc:
        writer.write(_result(False, [], exc.to_dict(), **tags))
        return EXIT_UNREADABLE
    except Exception as exc:  # noqa: BLE001 - fuzzed files must still get a clean answer
        unreadable = JobError(f"The job could not be read: {type(exc).__name__}: {exc}").to_dict()
        writer.write(_result(False, [], unreadable, **tags))
        return EXIT_UNREADABLE
    try:
        check_out_dir(job.out_dir)
        engine = context.engine()
        # History full or not writable: the system temp rescue folder first, then the job's out folder (a
        # host's out folder lives in its temporary work folder, which it deletes after inserting the layers).
        from gimp_openai.history import RescueHistory

        engine.fallback_dirs = [RescueHistory(), job.out_dir]
        with engine.saving:
            engine.saved.clear()  # what this job saves (an abandoned job reports only its own)
        job.options.model = context.model(job.options.model, "edit" if job.operation == "expand" else job.operation)
    except GimpOpenAIError as exc:
        writer.write(_result(False, [], exc.to_dict(), **tags))
        return EXIT_OK
    progress = BatchProgress(writer, [item.id for item in job.items])
    workers = max(1, min(job.concurrency, len(job.items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="item") as pool:
        futures = [pool.submit(run_item, engine, job, item, progress, writer.write) for item in job.items]
        results = [f.result() for f in futures]
    ok = all(r["ok"] for r in results)
    error = None
    if not ok:
        failed = [r for r in results if not r["ok"]]
        first = failed[0]["error"] or {}
        error = {
            "code": first.get("code", "error") if len(failed) == len(results) else "partial_failure",
            "message": f"{len(failed)} of {len(results)} item(s) failed: " + "; ".join(
                f"{r['id']}: {(r['error'] or {}).get('message', '')}" for r in failed
            ),
            "hint": first.get("hint", ""),
            "saved": [p for r in failed for p in (r["error"] or {}).get("saved", [])],
        }
    warnings = [w for r in results for w in r.get("warnings") or []]
    costs = [r.pop("_cost") for r in results if r.get("_cost") is not None]
    for r in results:
        r.pop("_cost", None)
    from gimp_openai.pricing import add_costs

    total = add_costs(costs)
    writer.write(_result(ok, results, error, model=job.options.model, warnings=warnings,
                         cost=total.to_dict() if total is not None else None, **tags))
    return EXIT_OK


# --- Plan ---------------------------------------------------------------------------------------------------


def plan_answer(data: dict[str, Any], session: Session, folder: Path | None = None) -> dict[str, Any]:
    """The answer object for a parsed PLAN.json (model resolved, one region per item; for ``expand``, the tiles
    of the grown canvas). ``folder``: the plan file's, where an expand plan's exported picture may be."""
    from gimp_openai import capabilities, geometry, pricing

    operation = _field(data, "operation", str, "edit", where="plan")
    if operation not in OPERATIONS:
        raise JobError(f"Unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}.")
    model = _field(data, "model", str, "", where="plan")
    size_mode = _field(data, "size_mode", str, "auto", where="plan")
    padding = _number(data, "context_padding", 0.25, where="plan")
    raw_items = _field(data, "items", list, [], where="plan")
    n = _number(data, "n", 1, where="plan")
    quality = _field(data, "quality", str, "auto", where="plan") or "auto"
    prompt = _field(data, "prompt", str, "", where="plan")
    model = session.model(model, "edit" if operation == "expand" else operation)
    family = capabilities.family_for(model, session.settings.model_rules or {})
    price = pricing.price_for(model, getattr(session.settings, "prices", None) or {},
                              session.settings.model_rules or {})
    if operation == "expand":
        return _expand_plan(data, session, folder, model, family, price, quality, prompt, size_mode)
    estimates = []
    items = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_items, start=1):
        if not isinstance(raw, dict):
            raise JobError(f"Item {number} of the plan must be an object.")
        item_id = _field(raw, "id", str, where=f"plan item {number}")
        if item_id in seen:
            raise JobError(f"Two plan items have the id {item_id!r}; ids must be unique.")
        seen.add(item_id)
        where = f"plan item {item_id!r}"
        layer = _rect(raw, "layer", where)
        selection = None
        if raw.get("selection_bounds") is not None:
            selection = _rect(raw, "selection_bounds", where, allow_empty=True)
            if selection.is_empty:
                selection = None
        if operation == "edit" and selection is None:
            raise InvalidInputError(
                f"The selection of {item_id} is empty.", hint="Select the part of the image to change first."
            )
        region = geometry.plan_region(layer, selection, family, padding=padding, size_mode=size_mode)
        answer = region.to_dict()
        answer["id"] = item_id
        # what this item should cost (n images at the target size and quality): hosts show it before paying
        uploads = [region.target] if operation != "generate" else []
        estimate = pricing.estimate(model, family, n=n, size=region.target, quality=quality, prompt=prompt,
                                    input_images=uploads, price=price)
        estimates.append(estimate)
        answer["estimate"] = estimate.to_dict()
        items.append(answer)
    if operation == "generate" and not items:
        estimates.append(pricing.estimate(model, family, n=n, size=_generate_size(data, family), quality=quality,
                                          prompt=prompt, price=price))
    total = _plan_total(estimates, session, model, quality)
    return {"ok": True, "model": model, "family": family.name, "items": items, "estimate": total}


def _plan_total(estimates: list[Any], session: Session, model: str, quality: str) -> dict[str, Any]:
    """The plan's estimate as hosts show it: the sum, the artist's limit and whether it is above it, in words."""
    from gimp_openai import pricing

    total = pricing.add_estimates(estimates)
    limit = float(getattr(session.settings, "max_cost", pricing.DEFAULT_MAX_COST))
    if total["usd"] is None:
        text = f"{len(estimates)} request(s): no price known for {model}"
    else:
        text = f"about {pricing.dollars(total['usd'])} for {total['images']} image(s)"
        if total["usd_upper"] > total["usd"] * 1.001:
            text += f" (up to {pricing.dollars(total['usd_upper'])} if the model picks high quality)"
    total.update(max_cost=limit, over_limit=bool(total["usd_upper"] is not None and total["usd_upper"] > limit),
                 text=text, model=model, quality=quality)
    sizes = {e.size for e in estimates}
    if len(sizes) == 1:  # one size for all (a generation has no item to carry it): for a dialog's figure
        total["size"] = "{}x{}".format(*sizes.pop())
    return total


def _expand_plan(data: dict[str, Any], session: Session, folder: Path | None, model: str, family: Any,
                 price: Any, quality: str, prompt: str, size_mode: str) -> dict[str, Any]:
    """Expand Canvas's plan: the tiles the grown canvas needs and what they should cost (expand.estimate, the
    CLI's figure). ``canvas`` is the picture's size; ``image`` (a file beside the plan) its exported pixels,
    so tiles for its transparent pixels are counted too (a dialog's estimate, without pixels, counts it
    opaque). Margins as the job takes them (``margins``, or ``aspect`` with ``sides``); ``band``."""
    from gimp_openai import expand, imaging

    canvas = _canvas(data)
    if canvas is None:
        raise JobError("An expand plan needs 'canvas' (the picture's width and height).")
    width, height = canvas
    fields = _expand_fields(data) if data.get("aspect") or data.get("margins") else None
    if fields is None:
        raise JobError("Nothing to expand: every margin is 0.")
    margins = fields.get("margins") or expand.margins_for_aspect(width, height, fields["aspect"], fields["sides"])
    shown = None
    image = _field(data, "image", str, "", where="plan")
    if image and folder is not None:
        pixels = imaging.read_image(_inside(folder, image, "the plan's picture"))
        if pixels.shape[:2] != (height, width):
            raise JobError(f"The plan's picture is {pixels.shape[1]}x{pixels.shape[0]} px, not the canvas "
                           f"{width}x{height}.")
        shown = pixels[..., 3] > 0
    planned = expand.estimate(model, family, price, width=width, height=height, margins=margins, quality=quality,
                              prompt=prompt, size_mode=size_mode, band=fields["band"], shown=shown)
    total = _plan_total(planned.estimates, session, model, quality)
    total.update(tiles=len(planned.tiles), text=planned.text())
    return {"ok": True, "model": model, "family": family.name, "items": [], "margins": margins.to_dict(),
            "tiles": [{"request": t.request.to_dict(), "side": t.side} for t in planned.tiles],
            "estimate": total}


def _generate_size(data: dict[str, Any], family: Any) -> tuple[int, int]:
    """The size a generation's estimate takes: the plan's ``size`` as the job sends it, else the size the engine
    picks for the image's ``canvas``, else a square megapixel (what ``auto`` is estimated as)."""
    from gimp_openai import capabilities, geometry

    size = capabilities.parse_size(_field(data, "size", str, "auto", where="plan") or "auto")
    if size:
        return size
    canvas = _canvas(data)
    return geometry.generation_size_for_canvas(*canvas, family) if canvas else (1024, 1024)


def run_plan(path: str, stream: IO[str] | None = None, *, engine: operations.Engine | None = None) -> int:
    """``gimp-openai plan PLAN.json``: one JSON object on stdout."""
    writer = LineWriter(stream or sys.stdout)
    try:
        context = Session(engine=engine)
    except GimpOpenAIError as exc:
        writer.write({"ok": False, "error": exc.to_dict()})
        return EXIT_UNREADABLE
    return _plan(path, writer, context)


def _plan(path: str | dict[str, Any], writer: LineWriter, context: Session, **tags: Any) -> int:
    """A plan from its file, or (an ``estimate`` request) from the object itself."""
    folder: Path | None = None
    if isinstance(path, dict):
        data = path
    else:
        try:
            data, folder = read_json_file(path)
        except GimpOpenAIError as exc:
            writer.write({**tags, "ok": False, "error": exc.to_dict()})
            return EXIT_UNREADABLE
    try:
        writer.write({**tags, **plan_answer(data, context, folder)})
    except GimpOpenAIError as exc:
        writer.write({**tags, "ok": False, "error": exc.to_dict()})
    except Exception as exc:  # noqa: BLE001
        error = JobError(f"The plan failed: {type(exc).__name__}: {exc}").to_dict()
        writer.write({**tags, "ok": False, "error": error})
    return EXIT_OK


# --- Session ------------------------------------------------------------------------------------------------


def run_session(requests: IO[str] | None = None, stream: IO[str] | None = None, *,
                engine_factory: Callable[[Any], Any] | None = None) -> int:
    """``gimp-openai session``: one engine process for a whole GIMP run, instead of one per step.

    Starting Python with numpy and OpenCV costs about half a second, which a run paid twice (plan, then job).
    Requests come one JSON object per line on stdin: ``{"cmd": "plan", "path": PLAN.json}`` and
    ``{"cmd": "job", "path": JOB.json}``; each is answered with exactly what ``plan`` and ``job`` print (the
    plan's answer tagged ``"type": "plan"``, the job's ending in its ``"type": "result"`` line).
    ``{"cmd": "estimate", "plan": {...PLAN...}}`` is a plan without a file, answered tagged ``"type":
    "estimate"``: a dialog asks it each time the artist changes n, quality, model or size, so it writes no
    file and leaves the cancelled-run notices for the run itself. Settings,
    client and model list are built once. The first answer carries ``notices`` about an earlier run that was
    cancelled after it had been paid for.

    End of input ends the session. The folder of a plan or job request is the host's job folder until the host
    says ``{"cmd": "done"}``; an end of input before that means the host is gone (the artist pressed Cancel and
    GIMP stopped the plug-in, while it planned, exported, waited or inserted) and the folder is removed. When
    a job had started, that happens at once: the request is dropped by ending the process, after any image
    being saved is whole; images already received stay in history, and the next session says where. Before a
    job, the requests already read are answered first (nothing is paid then), and the folder goes at the end.
    """
    writer = LineWriter(stream or sys.stdout)
    try:
        context = Session(engine_factory=engine_factory)
    except GimpOpenAIError as exc:
        writer.write({"type": "session", "ok": False, "error": exc.to_dict()})
        return EXIT_UNREADABLE
    session = _Session(context, requests or sys.stdin)
    if session.idle():  # nothing asked yet: load the job's modules while the host is busy
        _load_job_modules()
    notices: list[dict[str, str]] | None = None  # taken at the first request: a session never asked keeps them
    try:
        for raw in session.requests():
            try:
                request = json.loads(raw)
                command = request["cmd"]
                inline = request["plan"] if command == "estimate" else None
                path = request["path"] if command != "estimate" else ""
                if command not in ("plan", "job", "estimate") or not isinstance(path, str) or (
                        command == "estimate" and not isinstance(inline, dict)):
                    raise ValueError(command)
            except (ValueError, TypeError, KeyError):
                error = JobError('A session request must be {"cmd": "plan" or "job", "path": FILE} or '
                                 '{"cmd": "estimate", "plan": {...}}.').to_dict()
                writer.write({"type": "session", "ok": False, "error": error})
                continue
            if inline is not None:  # a dialog's figure while the artist types: cheap, and it keeps the notices
                _plan(inline, writer, context, type="estimate")  # for the run's first real answer
                continue
            if notices is None:
                notices = take_cancelled_notices()
            tags: dict[str, Any] = {"notices": notices} if notices else {}
            notices = []
            if command == "plan":
                _plan(path, writer, context, type="plan", **tags)
                _load_job_modules()  # at once when loaded; otherwise while the host exports
            elif session.start_job():
                _job(path, _JobWriter(session, writer.stream), context, **tags)
    finally:  # also when the answers cannot be written: the host is gone
        session.finish()
    return EXIT_OK


def _load_job_modules() -> None:
    """Import what a job needs (requests, OpenCV, the image code) while the host is busy: hosts start the
    session as soon as GIMP starts the plug-in, so this runs while GIMP starts the plug-in's own Python, while
    the dialog is open or while the host exports the region, instead of after the artist pressed OK. The plan
    needs none of it."""
    import gimp_openai.client  # noqa: F401  (requests, urllib3: a fifth of the start)
    import gimp_openai.composite  # noqa: F401
    import gimp_openai.imaging  # noqa: F401
    import gimp_openai.masks  # noqa: F401
    import gimp_openai.pngstrips  # noqa: F401
    import gimp_openai.seamless  # noqa: F401
    import gimp_openai.transport  # noqa: F401


class _JobWriter(LineWriter):
    """The job's lines. The job stays the session's until the host says ``{"cmd": "done"}``: a host killed
    after the result line but before the layers were in the image (GIMP's Cancel while it inserts) has left
    the job folder behind and shown nothing, so that end of input is a cancel too."""

    def __init__(self, session: _Session, stream: IO[str]) -> None:
        super().__init__(stream)
        self.session = session


class _Session:
    """The session's input, read on its own thread so that its end is seen while a job runs.

    The reader also keeps the host's job folder: the folder of the last plan or job request, until ``done``.
    Requests are noted as they are read, not as they are served, so a host killed right after sending one
    (GIMP's Cancel while it exports) still has its folder removed."""

    def __init__(self, context: Session, source: IO[str]) -> None:
        import queue

        self.context, self.source = context, source
        self.inbox: queue.Queue[str | None] = queue.Queue()
        self.host_folder: Path | None = None
        self.job_started = False  # a job in the host folder has begun: paid work may be under way
        self.closed = False
        self.lock = threading.Lock()
        threading.Thread(target=self._read, name="session-input", daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.source:
                command, path = _command(raw)
                if command == "done":  # here, not in the request loop: the end of input may follow at once
                    with self.lock:
                        self.host_folder, self.job_started = None, False
                    continue
                if command in ("plan", "job") and path:
                    with self.lock:
                        self.host_folder = _folder_of(path) or self.host_folder
                self.inbox.put(raw)
        finally:  # end of input, or input that cannot be read: the host is done or gone either way
            with self.lock:
                self.closed = True
                if self.job_started and self.host_folder is not None:
                    self._abandon(self.host_folder)
            self.inbox.put(None)

    def start_job(self) -> bool:
        """Mark a job as running; False when the input has ended already (the host is gone: do not pay)."""
        with self.lock:
            if self.closed:
                return False
            self.job_started = True
            return True

    def finish(self) -> None:
        """The end of the requests: a host gone before its job began leaves its folder, which goes now."""
        with self.lock:
            folder = self.host_folder
        if folder is not None:
            _remove_host_folder(folder)

    def idle(self) -> bool:
        """No request waiting."""
        return self.inbox.empty()

    def requests(self) -> Any:
        while True:
            raw = self.inbox.get()
            if raw is None:
                return
            if raw.strip():
                yield raw

    def _abandon(self, folder: Path) -> None:
        """The host went away during a job: keep what was paid for, say it next time, leave nothing behind."""
        engine = self.context.built
        saving = getattr(engine, "saving", None) or threading.Lock()
        with saving:  # an image being written is finished first; no new one starts
            saved = list(getattr(engine, "saved", []) or [])
            if saved:
                remember_cancelled(saved)
            holds_paid = any(Path(p).resolve().is_relative_to(folder) for p in saved)
            if not holds_paid:  # (kept when the rescue chain put paid images in it: the notice names them)
                _remove_host_folder(folder)
            os._exit(EXIT_OK)


def _command(raw: str) -> tuple[str | None, str | None]:
    """(cmd, path) of a request line; None for what a line does not have (the request loop answers it)."""
    try:
        request = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(request, dict):
        return None, None
    command, path = request.get("cmd"), request.get("path")
    return (command if isinstance(command, str) else None), (path if isinstance(path, str) else None)


def _folder_of(path: str) -> Path | None:
    try:
        return Path(path).resolve().parent
    except (OSError, RuntimeError, ValueError):
        return None


def _remove_host_folder(folder: Path) -> None:
    """Remove the host's own temporary job folder. Hosts name it ``gimp-openai-*``; a folder a script keeps its
    requests in is the script's own, and stays."""
    if folder.name.startswith("gimp-openai-") and not folder.name.startswith("gimp-openai-rescue"):
        _remove_now(folder)


def _remove_now(folder: Path) -> None:
    """Remove a folder that other threads may still be writing into: renamed away first, so that no new file
    can appear under its name, then deleted."""
    import shutil

    doomed = folder.with_name(f"{folder.name}.cancelled-{os.getpid()}")
    try:
        os.rename(folder, doomed)
    except OSError:
        doomed = folder
    for _attempt in range(3):
        shutil.rmtree(doomed, ignore_errors=True)
        if not doomed.exists():
            return


CANCELLED_FILE = "cancelled-runs.json"
CANCELLED_RESULTS = "cancelled_results"


def remember_cancelled(saved: list[str]) -> None:
    """Note the paid images of a run its host abandoned, for the next session to report."""
    from gimp_openai.atomic import write_json_atomic
    from gimp_openai.settings import cache_dir

    path = cache_dir() / CANCELLED_FILE
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("saved", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"saved": [*earlier, *saved]})
    except OSError:
        pass  # the images themselves are in history; only the reminder is lost


def take_cancelled_notices() -> list[dict[str, str]]:
    """The reminder about cancelled runs' paid images, once (the file is removed when read)."""
    from gimp_openai.history import Notice
    from gimp_openai.settings import cache_dir

    path = cache_dir() / CANCELLED_FILE
    try:
        saved = [str(p) for p in json.loads(path.read_text(encoding="utf-8")).get("saved", [])]
        path.unlink()
    except (OSError, ValueError, AttributeError):
        return []
    if not saved:
        return []
    count = f"{len(saved)} image{'s' if len(saved) != 1 else ''}"
    where = "it is" if len(saved) == 1 else "they are"
    message = (f"A cancelled run had already received {count} (paid for); {where} saved here:\n"
               + "\n".join(f"  {p}" for p in saved))
    return [Notice(CANCELLED_RESULTS, message).to_dict()]
