"""Edit, variation and generate on in-memory arrays: the one place the pieces are put together.

``jobs.py`` (the hosts' protocol) and ``cli.py`` both call these functions, so a GIMP user and a shell user get
exactly the same request, the same history and the same pixels. The order inside :func:`edit` matters:

1. check everything that can be checked before paying (prompt, n, size, endpoint, upload size);
2. send the request while a :class:`progress.Ticker` says how long it has been;
3. save EVERY returned image to history the moment the response is parsed, before decoding or compositing,
   so nothing paid for is lost even when a later step fails;
4. decode, map back to the exported region, make it seamless (GPT models shift and re-tone the whole crop),
   and build the layer mask.

Two recoveries live here because they need both the planner and the client: a free-size family answering
400 on ``size`` is retried ONCE at a standard size (and the rule remembered), and ``model_not_found`` is
never retried but turned into a message that names the live replacement.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gimp_openai import capabilities
from gimp_openai.capabilities import ENDPOINT_EDITS, ENDPOINT_GENERATIONS, ENDPOINT_VARIATIONS, Family
from gimp_openai.errors import (
    APIError,
    GimpOpenAIError,
    InvalidInputError,
    MalformedResponseError,
    ModelNotFoundError,
    UnsupportedSizeError,
)
from gimp_openai.history import Notice
from gimp_openai.pricing import Cost, Estimate
from gimp_openai.progress import PHASE_START, Progress, ProgressCallback, Ticker, no_progress
from gimp_openai.request_checks import (
    check_endpoint,
    check_n,
    check_prompt,
    check_quality,
    check_size,
    check_upload_size,
)
from gimp_openai.settings import DEFAULT_VARIATION_PROMPT

if TYPE_CHECKING:
    from gimp_openai.client import ImagesClient
    from gimp_openai.discovery import ModelList
    from gimp_openai.history import History
    from gimp_openai.settings import Settings

#: Warning code: the client adjusted an odd answer at no cost to the artist (e.g. dropped extra images).
ANSWER_ADJUSTED = "answer_adjusted"


PATH_EDIT = "edit"
PATH_VARIATION_ENDPOINT = "variation-endpoint"
PATH_VARIATION_EDIT = "variation-edit"
PATH_GENERATE = "generate"

NAME_PROMPT_CHARS = 48
#: The largest canvas a generation is scaled to cover (8000x5000): beyond it the layer keeps the generated size.
MAX_FILL_PIXELS = 40_000_000


# --- Inputs and outputs -------------------------------------------------------------------------------------


@dataclass
class Options:
    """What the artist chose; the same fields as the job file and the CLI flags."""

    model: str
    prompt: str = ""
    n: int = 1
    quality: str = "auto"
    size_mode: str = "auto"
    size: str | None = None  # explicit WxH for generate (and variation endpoint); None -> planned/auto
    background: str = "auto"
    feather: float = 0.0
    padding: float = 0.25
    align: bool = True
    tone_match: bool = True
    blend: str = "feather"
    source_name: str = ""
    variation_prompt: str = ""
    extra_images: Sequence[bytes] = ()
    #: the references' names (a GIMP layer's, a file's), in the order of ``extra_images``: for the notes that
    #: say which were sent and for the history sidecar
    reference_names: Sequence[str] = ()
    #: generate into an image: its (width, height). Without an explicit size the request takes the canvas's
    #: aspect and each result is scaled to cover the canvas exactly.
    canvas: tuple[int, int] | None = None
    #: previews to stream while the model works (0: none; families that do not stream never send any)
    partial_images: int = 0
    complexity: str = ""  # "" = not sent (the model's default); families with ``complexities`` only
    #: a markup edit (families with ``markup``): RGBA the size of the image/place, transparent except the painted
    #: marks; sent instead of a mask, the selection still says which pixels the result may replace
    markup: np.ndarray | None = None


class Placed:
    """Pixels placed in the image with their layer mask: what a host inserts (a result or a preview)."""

    pixels: np.ndarray  # (H, W, 4) u8
    mask: np.ndarray  # (H, W) u8, the layer mask

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def layer_pixels(self, add_mask: bool = True) -> np.ndarray:
        """The layer as a host inserts it: when there is no separate layer mask, the alpha carries the mask."""
        if add_mask:
            return self.pixels
        out = self.pixels.copy()
        out[..., 3] = (out[..., 3].astype(np.uint16) * self.mask.astype(np.uint16) + 127) // 255
        return out


@dataclass
class Output(Placed):
    """One returned image, ready for a host: crop-sized RGBA, its layer mask and where it goes."""

    index: int  # 1-based k of n
    count: int
    name: str
    pixels: np.ndarray  # (H, W, 4) u8, place-sized (edit/variation) or as returned (generate)
    mask: np.ndarray  # (H, W) u8, the layer mask
    x: int
    y: int
    history_png: Path | None  # None: history and every rescue folder failed; the bytes live only in memory
    request_id: str | None
    path: str
    notes: list[str] = field(default_factory=list)
    report: str = ""



@dataclass
class Preview(Placed):
    """A streamed preview placed like the result will be (same place, same layer mask), without the alignment and
    tone match the result gets: shown while the model works, replaced by the result, never a paid image."""

    item: str
    index: int  # the server's partial_image_index (0-based)
    sequence: int  # 1-based count of previews for this item
    image: int  # 1-based: which of the n results it previews (the API's events carry no image number: a guess)
    pixels: np.ndarray  # (H, W, 4) u8, place-sized (edit) or as returned (generate)
    mask: np.ndarray  # (H, W) u8, the layer mask the result will get
    x: int
    y: int
    path: str



PreviewCallback = Callable[[Preview], None]


@dataclass
class PreviewPlace:
    """Where an edit's previews will show, told as soon as the request is on its way (before the first preview,
    seconds later): a host makes the preview layer and its mask while the model works, so each preview then
    only changes pixels (docs/performance.md: the first preview cost 3-4 times an update when it made them)."""

    item: str
    mask: np.ndarray  # (H, W) u8: the layer mask every preview (and the result) of the item gets
    x: int
    y: int

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])


PreviewPlaceCallback = Callable[[PreviewPlace], None]


@dataclass
class Outcome:
    """Everything one operation produced, with the plan it actually used (the size fallback may change it)."""

    outputs: list[Output]
    model: str
    path: str
    plan: Any = None  # geometry.RegionPlan for edit/variation
    notes: list[str] = field(default_factory=list)
    #: what the artist must be told even though the run worked (history.Notice: code and sentence)
    warnings: list[Notice] = field(default_factory=list)
    #: what the request used and cost, from the answer's ``usage`` (None: the answer had none)
    cost: Cost | None = None
    #: what it was expected to cost before sending
    estimate: Estimate | None = None
    #: the references asked for: {"sent": [names], "left_out": ["name (why)"]}; None when there were none
    references: dict[str, list[str]] | None = None


# --- The engine context -------------------------------------------------------------------------------------


class Engine:
    """Settings, an API client and the history folder, shared by every item of a batch (thread-safe)."""

    def __init__(self, settings: Settings, client: ImagesClient, history: History | None = None) -> None:
        self.settings = settings
        self.client = client
        self._history = history
        self._models: ModelList | None = None
        self._lock = threading.Lock()
        #: How often a waiting ticker fires (seconds); tests may lower it.
        self.tick_interval = 1.0
        #: Where returned images go when the history folder is full or not writable, before the system temp
        #: rescue folder (history.save_all): the CLI's out folder, a job's out folder (or a
        #: history.RescueHistory, to try the rescue folder first).
        self.fallback_dirs: list[Any] = []
        #: Held while paid images are written: a run abandoned by its host (jobs.run_session) waits for it, so
        #: an image that was being saved is on disk whole before the process ends.
        self.saving = threading.Lock()
        #: Every image this engine saved (history or rescue folder), for what an abandoned run reports.
        self.saved: list[str] = []
        #: Called with each request's estimate (and the item) after every check and before anything is sent or
        #: encoded; raising stops the request unpaid (the CLI's cost threshold). None: nothing asked.
        self.cost_gate: Callable[[Estimate, str], None] | None = None

    @property
    def history(self) -> History:
        """The history folder, opened on first use (planning and checks never need it)."""
        with self._lock:
            if self._history is None:
                from gimp_openai.history import History

                folder = getattr(self.settings, "history_dir", "") or None
                self._history = History(Path(folder) if folder else None)
            return self._history

    @classmethod
    def from_settings(cls, settings: Settings, api_key: str | None, *, history: History | None = None) -> Engine:
        from gimp_openai.client import ClientConfig, ImagesClient

        config = ClientConfig.from_settings(settings, api_key=api_key or "")
        return cls(settings, ImagesClient(config), history)

    def family(self, model: str) -> Family:
        return capabilities.family_for(model, getattr(self.settings, "model_rules", None) or {})

    def price(self, model: str) -> Any:
        from gimp_openai import pricing

        return pricing.price_for(model, getattr(self.settings, "prices", None) or {},
                                 getattr(self.settings, "model_rules", None) or {})

    def estimate(self, model: str, *, n: int, size: tuple[int, int], quality: str, prompt: str = "",
                 input_images: Sequence[tuple[int, int]] = ()) -> Estimate:
        """What one request should cost, at this engine's prices (the table, or the user's)."""
        from gimp_openai import pricing

        return pricing.estimate(model, self.family(model), n=n, size=size, quality=quality or "auto",
                                prompt=prompt, input_images=input_images, price=self.price(model))

    def cost(self, model: str, result: Any) -> Cost | None:
        """What a result's ``usage`` cost at this engine's prices."""
        from gimp_openai import pricing

        return pricing.cost_of((getattr(result, "meta", None) or {}).get("usage"), model, self.price(model))

    def before_paying(self, estimate: Estimate, item: str) -> None:
        if self.cost_gate is not None:
            self.cost_gate(estimate, item)

    def models(self, *, refresh: bool = False) -> ModelList:
        """The image models the server lists (cached per base URL by discovery)."""
        from gimp_openai import discovery

        with self._lock:
            if self._models is None or refresh:
                self._models = discovery.list_image_models(self.client, self.settings, refresh=refresh)
            return self._models


# --- Checks before paying -----------------------------------------------------------------------------------


def quality_to_send(quality: str, family: Family) -> str | None:
    """The quality to send, after checking the family takes it; None when the family has a single quality
    (dall-e-2 takes no such field)."""
    if not quality or quality == "auto":
        return "auto" if "auto" in family.qualities else None
    check_quality(quality, family)
    return quality if len(family.qualities) > 1 else None


def layer_name(prompt: str, k: int, n: int, *, prefix: str = "OpenAI") -> str:
    """``OpenAI: <prompt…> (k/n)``: short enough for GIMP's layers dialog, and says which one of n."""
    text = " ".join((prompt or "").split())
    if len(text) > NAME_PROMPT_CHARS:
        text = text[: NAME_PROMPT_CHARS - 1].rstrip() + "…"
    return f"{prefix}: {text} ({k}/{n})"


# --- Shared steps -------------------------------------------------------------------------------------------


def _rect_dict(rect: Any) -> dict[str, int] | None:
    return rect.to_dict() if rect is not None else None


def _emit(progress: ProgressCallback, item: str, phase: str, message: str, fraction: float | None = None,
          **extra: Any) -> None:
    try:
        progress(Progress(phase=phase, fraction=PHASE_START[phase] if fraction is None else fraction,
                          message=message, item=item, extra=extra))
    except Exception:  # noqa: S110 - a broken progress consumer must never lose a paid result
        pass


def _call_with_ticker(
    engine: Engine,
    progress: ProgressCallback,
    item: str,
    model: str,
    family: Family,
    quality: str,
    size: tuple[int, int],
    call: Callable[[], Any],
) -> Any:
    expected = capabilities.expected_seconds(family, quality or "auto", size[0], size[1])
    with Ticker(progress, model=model, expected=expected, item=item, interval=engine.tick_interval) as ticker:
        _RETRY_REPORTER.current = (ticker, progress)
        try:
            return call()
        finally:
            _RETRY_REPORTER.current = None


class _RetryReporter(threading.local):
    """The client's retry and rate-limit waits, shown in the progress of the item whose request waits."""

    current: tuple[Ticker, ProgressCallback] | None = None

    def __call__(self, event: Any) -> None:
        if self.current is None or getattr(event, "kind", "") not in ("retry", "pacing"):
            return
        ticker, progress = self.current
        waiting = ticker.event()
        waiting.message = str(getattr(event, "message", "") or "Retrying")
        try:
            progress(waiting)
        except Exception:  # noqa: S110 - progress must never break a paid request
            pass


_RETRY_REPORTER = _RetryReporter()


def _when_sent(action: Callable[[], None]) -> Callable[[Any], None]:
    """The client's event callback for one request: retries reported as always, and `action` run once, when the
    body has been handed to the connection (the first "waiting" event): from then on the engine only waits for
    the server, so result-independent work started there costs the artist nothing. Started earlier it would
    compete with encoding and sending the upload (measured: ~50 ms more engine time per 2048² edit)."""
    fired = threading.Event()

    def on_event(event: Any) -> None:
        _RETRY_REPORTER(event)
        if getattr(event, "kind", "") == "waiting" and not fired.is_set():
            fired.set()
            try:
                action()
            except Exception:  # noqa: BLE001, S110 - side work must never break a paid request
                pass

    return on_event


def _save_all(engine: Engine, result: Any, meta: dict[str, Any], cost: Cost | None = None) -> Any:
    """Write every returned image to history at once; the first thing done with a response.

    A full or unwritable history folder never loses a paid image: ``history.save_all`` goes down the rescue
    chain (the engine's fallback folders, the system temp rescue folder, memory) and returns a ``Kept`` whose
    ``note`` says where the images went; the operation goes on."""
    from gimp_openai import pricing
    from gimp_openai.history import save_all

    images = list(getattr(result, "images", []) or [])
    n = len(images)
    pending: list[tuple[bytes, dict[str, Any]]] = []
    usage = (getattr(result, "meta", None) or {}).get("usage")
    for k, image in enumerate(images, start=1):
        item_meta = dict(meta)
        if usage is not None:
            item_meta["usage"] = usage  # the request's, as the server said it
        if cost is not None:  # this image's share: the shares of one request add up to its cost
            item_meta["cost"] = pricing.share(cost, n)
        item_meta.update(
            k=k,
            n=n,
            index=getattr(image, "index", k - 1),
            request_id=getattr(result, "request_id", None),
            revised_prompt=getattr(image, "revised_prompt", None),
            time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        pending.append((image.data, item_meta))
    with engine.saving:
        kept = save_all(engine.history, pending, list(getattr(engine, "fallback_dirs", None) or []))
        engine.saved.extend(kept.saved)
    return kept


def _notices(kept: Any, result: Any) -> list[Notice]:
    """What the artist must be told although the run worked: paid images kept elsewhere than history, and
    what the client did about an odd answer (extra images the server sent unasked, dropped unread)."""
    return [*kept.notices, *(Notice(ANSWER_ADJUSTED, text) for text in getattr(result, "warnings", []) or []),
            *(Notice(code, text) for code, text in getattr(result, "notes", []) or [])]


def _check_problems(result: Any, saved: list[str], note: str = "") -> None:
    problems = list(getattr(result, "problems", []) or [])
    if problems or not getattr(result, "images", None):
        what = "; ".join(problems) if problems else "the answer contained no images"
        raise MalformedResponseError(
            f"The server's answer was not usable: {what}." + (f" {note}" if note else ""),
            saved=list(saved),
            request_id=getattr(result, "request_id", None),
        )


def _decode_saved(data: bytes, saved: list[str], request_id: str | None) -> np.ndarray:
    from gimp_openai import imaging

    try:
        return imaging.decode_image(data, what="returned image")
    except GimpOpenAIError as exc:
        raise MalformedResponseError(
            f"A returned image could not be read: {exc.message}", saved=list(saved), request_id=request_id
        ) from exc


def _keep_masks(paths: Sequence[Path | None], layer_mask: np.ndarray) -> dict[Path, Path | None]:
    """The layer mask beside each result kept on disk (``history.save_mask``), encoded once for all of them:
    what lets history put a result back with the mask the run gave it. {image path: mask path or None}."""
    from gimp_openai import imaging
    from gimp_openai.history import save_mask

    on_disk = [p for p in paths if p is not None]
    if not on_disk:
        return {}
    data = imaging.encode_png(layer_mask, png_filter="up")
    return {path: save_mask(path, data) for path in on_disk}


def update_sidecar(engine: Engine, image_path: Path | None, extra: dict[str, Any]) -> None:
    """Add the seamless details (transform, colour fit) to an image's sidecar once they are known."""
    if image_path is None:  # kept in memory only: there is no sidecar
        return
    updater = getattr(engine.history, "update", None)
    if callable(updater):
        try:
            updater(image_path, extra)
            return
        except Exception:  # noqa: S110 - fall back to editing the sidecar ourselves
            pass
    for sidecar in (image_path.with_suffix(".json"), image_path.with_name(image_path.name + ".json")):
        if sidecar.exists():
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
                data.update(extra)
                from gimp_openai.atomic import write_json_atomic

                write_json_atomic(sidecar, data)
            except Exception:  # noqa: S110 - the image is safe; a missing detail in a sidecar is not fatal
                pass
            return


def _is_size_refusal(exc: APIError) -> bool:
    if isinstance(exc, UnsupportedSizeError):
        return True
    return exc.status == 400 and (exc.param or "") == "size"


def _remember_size_rule(engine: Engine, model: str) -> str:
    """After a 400 on size: this model takes the standard sizes only. Stored so the next plan is right at once."""
    from gimp_openai import discovery

    try:
        with engine._lock:
            discovery.remember_size_rule(model, capabilities.GPT_IMAGE_1, engine.settings)
        return "remembered"
    except Exception as exc:  # noqa: BLE001 - not remembering costs one refused request next time, nothing more
        rules = dict(getattr(engine.settings, "model_rules", None) or {})
        rules[model] = capabilities.GPT_IMAGE_1
        engine.settings.model_rules = rules
        return f"kept for this run only ({type(exc).__name__})"


def _model_gone(engine: Engine, exc: ModelNotFoundError, model: str) -> ModelNotFoundError:
    """One message naming the model and its live replacement; the model list is refreshed on the way."""
    from gimp_openai import discovery

    if not exc.model:
        exc.model = model
    try:
        explained = discovery.handle_model_not_found(exc, engine.client, engine.settings)
    except Exception:  # noqa: BLE001 - without a list we still say what happened
        explained = exc
    with engine._lock:
        engine._models = None
    if not explained.hint:
        explained.hint = "Choose a live model (see `gimp-openai models --refresh`)."
    return explained


def _request_call(engine: Engine, model: str, call: Callable[[], Any], meta: dict[str, Any] | None = None) -> Any:
    try:
        return call()
    except ModelNotFoundError as exc:
        raise _model_gone(engine, exc, model) from exc
    except GimpOpenAIError as exc:
        if exc.partial_preview is not None and meta is not None:
            _keep_preview(engine, exc, meta)
        raise


def _keep_preview(engine: Engine, exc: GimpOpenAIError, meta: dict[str, Any]) -> None:
    """A streamed request failed for good after previews: the last preview is the only picture the artist got,
    so it goes to history like a result, named and described as a partial, and the error says where it is.
    On success previews never go there: they are not results."""
    from gimp_openai.history import save_all

    part = exc.partial_preview
    exc.partial_preview = None
    item_meta = dict(meta)
    item_meta.update(
        partial=True,
        partial_image_index=part.index,
        request_id=exc.request_id,
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        note="the last preview streamed before the request failed; not the finished image",
    )
    try:
        with engine.saving:
            kept = save_all(engine.history, [(part.data, item_meta)], list(getattr(engine, "fallback_dirs", [])))
            engine.saved.extend(kept.saved)
    except Exception:  # noqa: BLE001 - the error the artist must read matters more than the preview
        return
    if kept.saved:
        exc.saved.append(kept.saved[0])
        exc.message = (f"{exc.message.rstrip('. ')}. The last preview (partial {part.index + 1}) was kept in "
                       f"{kept.saved[0]}; it is a preview, not the finished image.")


def _preview_sink(
    on_preview: PreviewCallback | None, item: str, path: str, n: int,
    place: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, int, int] | None],
) -> Callable[[Any], None] | None:
    """The client's partial-image callback: decode the preview, ``place`` it (None: cannot be placed, skipped)
    and hand it to ``on_preview``. Runs on the thread reading the stream; a failure skips the preview."""
    if on_preview is None:
        return None

    def on_partial(part: Any) -> None:
        from gimp_openai import imaging

        try:
            pixels = imaging.decode_image(part.data, what="preview")
            placed = place(pixels)
        except Exception:  # noqa: BLE001 - a preview that cannot be shown is skipped, the request goes on
            return
        if placed is None:
            return
        layer, mask, x, y = placed
        on_preview(Preview(item=item, index=int(part.index), sequence=int(part.sequence),
                           image=min(n, int(part.image) + 1), pixels=layer, mask=mask, x=x, y=y, path=path))

    return on_partial


def _stream_kwargs(options: Options, family: Family, on_partial: Callable[[Any], None] | None) -> dict[str, Any]:
    """What the client needs to stream previews: only when some were asked for and the family streams (the
    table's fact); the client checks the count against the family's maximum."""
    if options.partial_images <= 0 or not family.streams:
        return {}
    return {"partial_images": min(options.partial_images, family.max_partial_images), "on_partial": on_partial}


# --- Edit ---------------------------------------------------------------------------------------------------


def edit(
    engine: Engine,
    options: Options,
    *,
    place_pixels: np.ndarray,
    selection: np.ndarray,
    layer: Any,
    plan: Any | None = None,
    item: str = "",
    progress: ProgressCallback = no_progress,
    on_preview: PreviewCallback | None = None,
    known: np.ndarray | None = None,
    on_preview_place: PreviewPlaceCallback | None = None,
) -> Outcome:
    """Edit the selected part of ``place_pixels`` (the exported region at ``layer``/``plan.place``).

    ``selection`` is place-sized u8 (255 = selected). Without ``plan`` the region is planned here from the
    selection (the CLI passes the whole image as ``place_pixels`` with ``layer`` = the image rectangle).
    ``on_preview``: each streamed preview (``options.partial_images``), placed like the result, as it arrives;
    ``on_preview_place``: where they will go, once the request is sent (only when previews will come).
    ``known``: place-sized bool, False where there are no pixels (an expanded canvas's new area); by default
    every pixel of ``place`` outside ``layer`` (a selection reaching past the layer). Those pixels are filled
    for the model and always repainted (see :mod:`beyond`); the layer mask still follows ``selection``.
    """
    from gimp_openai import beyond, geometry, masks

    model = options.model
    family = engine.family(model)
    check_endpoint(model, family, ENDPOINT_EDITS)
    check_prompt(options.prompt, family)
    check_n(options.n, family)
    quality = quality_to_send(options.quality, family)
    check_complexity(options.complexity, family, model)
    _check_pixels(place_pixels, selection)
    markup = check_markup_layer(options.markup, place_pixels, family, model)
    if plan is None:
        origin = (layer.x, layer.y)
        bounds = geometry.selection_bounds(selection, origin)
        if bounds is None:
            raise InvalidInputError("The selection is empty.", hint="Select the part of the image to change first.")
        plan = geometry.plan_region(layer, bounds, family, padding=options.padding, size_mode=options.size_mode)
        if markup is not None:
            markup = _crop_to(markup, selection, layer, plan.place)[0]
        place_pixels, selection = _crop_to(place_pixels, selection, layer, plan.place)
    if not selection.any():
        raise InvalidInputError("The selection is empty.", hint="Select the part of the image to change first.")
    if known is None and isinstance(layer, geometry.Rect):
        known = beyond.known_mask(plan.place, layer)
    layer_selection = selection  # what the result layer shows; `selection` becomes what the model repaints
    if known is not None:
        place_pixels = beyond.fill_unknown(place_pixels, known)
        selection = beyond.edit_selection(selection, known)
    if markup is not None and bool(selection.all()):
        # the whole region is the edit: there is no context around it to align or match tones against
        options = replace(options, align=False, tone_match=False)
    options = replace(options, markup=markup)
    from gimp_openai import imaging, references

    reference_notes: list[str] = []
    reference_report = None
    if options.extra_images:
        fitted, sent_names, left_out, reference_notes = references.fit_named(
            options.extra_images, family, tuple(plan.target), names=options.reference_names)
        options = replace(options, extra_images=fitted, reference_names=sent_names)
        reference_report = {"sent": sent_names, "left_out": left_out}
    extra_sizes = [imaging.image_size_of(bytes(data)) for data in options.extra_images]
    estimate = engine.estimate(model, n=options.n, size=tuple(plan.target), quality=quality or "auto",
                               prompt=options.prompt,
                               input_images=[tuple(plan.target), *extra_sizes,
                                             *([tuple(plan.target)] if markup is not None else [])])
    engine.before_paying(estimate, item)

    notes: list[str] = [_no_stream_note(model, family)] if options.partial_images > 0 and not family.streams else []
    notes.extend(reference_notes)
    ahead: list[Any] = []  # the seamless preparation, running while the server works (see _prepare_ahead)

    def on_sent(pixels: np.ndarray, sel: np.ndarray) -> None:
        ahead[:] = [_prepare_ahead(pixels, sel, options)]

    try:
        result, plan, place_pixels, selection = _send_edit(
            engine, options, family, quality, plan, place_pixels, selection, item, progress, notes, on_sent,
            on_preview, on_preview_place,
        )
    except APIError as exc:
        if not (_is_size_refusal(exc) and family.free_sizes is not None):
            raise
        # The server refused a free size: once, at a standard size, and remember that this model needs one.
        fallback = geometry.plan_region(
            plan.place,
            geometry.selection_bounds(selection, (plan.place.x, plan.place.y)),
            family,
            padding=options.padding,
            size_mode=options.size_mode,
            fallback_standard_size=True,
        )
        remembered = _remember_size_rule(engine, model)
        notes.append(
            f"the server refused size {plan.target[0]}x{plan.target[1]}; retried once at "
            f"{fallback.target[0]}x{fallback.target[1]} (standard size rule {remembered} for {model})"
        )
        if options.markup is not None:
            options = replace(options, markup=_crop_to(options.markup, selection, plan.place, fallback.place)[0])
        layer_selection = _crop_to(place_pixels, layer_selection, plan.place, fallback.place)[1]
        place_pixels, selection = _crop_to(place_pixels, selection, plan.place, fallback.place)
        result, plan, place_pixels, selection = _send_edit(
            engine, options, family, quality, fallback, place_pixels, selection, item, progress, notes, on_sent,
            on_preview, on_preview_place,
        )

    meta = _meta(options, model, PATH_EDIT, plan, item)
    cost = engine.cost(model, result)
    _emit(progress, item, "saving", "Saving the results to history")
    kept = _save_all(engine, result, meta, cost)
    saved = kept.saved
    if kept.note:
        notes.append(kept.note)
    _check_problems(result, saved, kept.note)

    _emit(progress, item, "compositing", "Fitting the results into the picture")
    layer_mask = masks.layer_mask(layer_selection, options.feather)
    mask_files = _keep_masks(kept.paths, layer_mask)
    outputs: list[Output] = []
    n = len(result.images)
    for k, (image, path) in enumerate(zip(result.images, kept.paths, strict=True), start=1):
        returned = _decode_saved(image.data, saved, result.request_id)
        returned, size_notes = _fit_returned(returned, plan.target, path, saved, result.request_id)
        placed = imaging_result_to_place(returned, plan)
        del returned  # placed may be the same buffer; otherwise it is one crop-sized buffer less at the peak
        final, report, details, seam_notes = _seamless(place_pixels, placed, selection, options, ahead)
        del placed
        extra: dict[str, Any] = {"seamless": details, "report": report}
        mask_file = mask_files.get(path) if path is not None else None
        if mask_file is not None:
            extra["mask"] = mask_file.name
        update_sidecar(engine, path, extra)
        outputs.append(
            Output(
                index=k,
                count=n,
                name=layer_name(options.prompt, k, n),
                pixels=final,
                mask=layer_mask,
                x=plan.place.x,
                y=plan.place.y,
                history_png=path,
                request_id=result.request_id,
                path=PATH_EDIT,
                notes=notes + size_notes + seam_notes,
                report=report,
            )
        )
    _emit(progress, item, "done", f"{n} result{'s' if n != 1 else ''} ready")
    return Outcome(outputs=outputs, model=model, path=PATH_EDIT, plan=plan, notes=notes,
                   warnings=_notices(kept, result), cost=cost, estimate=estimate, references=reference_report)


def _send_edit(
    engine: Engine,
    options: Options,
    family: Family,
    quality: str | None,
    plan: Any,
    place_pixels: np.ndarray,
    selection: np.ndarray,
    item: str,
    progress: ProgressCallback,
    notes: list[str],
    on_sent: Callable[[np.ndarray, np.ndarray], None] | None = None,
    on_preview: PreviewCallback | None = None,
    on_preview_place: PreviewPlaceCallback | None = None,
) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    from gimp_openai import composite, imaging, masks

    # place_rows: the rows the result will replace (a CLI deflates the others' PNG bands while the server works)
    _emit(progress, item, "upload", "Preparing the image and the " + ("marks" if options.markup is not None else
                                                                      "mask"),
          place_rows=(plan.place.y, plan.place.y + plan.place.height))
    pixels = composite.request_pixels(place_pixels, plan)
    # The selection scaled into exactly the rectangle request_pixels scaled the place into (place_in_target),
    # so the mask's edge lies on the image's selection edge (scaling the request-sized selection instead can
    # put it up to half a target pixel off when place_in_target is rounded).
    sel_target = composite.target_selection(selection, plan)
    # A markup edit carries no mask: the marks say where to edit.
    markup = options.markup
    image_png = imaging.encode_upload_png(pixels, limit=family.max_upload_bytes or None)
    if markup is not None:
        mask_png = imaging.encode_upload_png(markup_target(markup, plan))
    else:
        mask_png = imaging.encode_upload_png(masks.api_mask(sel_target, plan.target))
    check_upload_size(image_png, family, "the image sent to the model")
    size = f"{plan.target[0]}x{plan.target[1]}"
    layer_masks: list[np.ndarray] = []

    def preview_mask() -> np.ndarray:
        """The layer mask of every preview of this item, computed once (the host writes it once, too)."""
        if not layer_masks:
            layer_masks.append(masks.layer_mask(selection, options.feather))
        return layer_masks[0]

    previews_come = on_preview is not None and options.partial_images > 0 and family.streams
    tell_place = on_preview_place if previews_come else None

    def when_sent() -> None:
        if tell_place is not None:  # first: the host makes the layer while the seamless work is prepared
            try:
                tell_place(PreviewPlace(item=item, mask=preview_mask(), x=plan.place.x, y=plan.place.y))
            except Exception:  # noqa: BLE001, S110 - a courtesy: the previews still come, made when they do
                pass
        if on_sent is not None:
            on_sent(place_pixels, selection)

    kwargs: dict[str, Any] = dict(
        model=options.model,
        prompt=options.prompt,
        image=image_png,
        n=options.n,
        size=size,
        quality=quality,
        on_event=_RETRY_REPORTER if on_sent is None and tell_place is None else _when_sent(when_sent),
    )
    kwargs["markup" if markup is not None else "mask"] = mask_png
    if options.complexity:
        kwargs["complexity"] = options.complexity
    if options.extra_images:
        kwargs["extra_images"] = list(options.extra_images)
    background = request_background(family, options.background)
    if background:
        kwargs["background"] = background
    if family.response_format:
        kwargs["response_format"] = "b64_json"

    def place(returned: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int] | None:
        """A preview where the result goes: scaled to the target (same aspect only) and mapped to the place;
        no alignment or tone match (the result gets them), the layer mask computed once for all previews."""
        h, w = returned.shape[:2]
        tw, th = plan.target
        if (w, h) != (tw, th) and abs((w / h) / (tw / th) - 1.0) > 0.01:
            return None
        return imaging_result_to_place(returned, plan), preview_mask(), plan.place.x, plan.place.y

    kwargs.update(_stream_kwargs(options, family, _preview_sink(on_preview, item, PATH_EDIT, options.n, place)))
    meta = _meta(options, options.model, PATH_EDIT, plan, item)

    def call() -> Any:
        return _request_call(engine, options.model, lambda: engine.client.edit(**kwargs), meta)

    result = _call_with_ticker(engine, progress, item, options.model, family, quality or "auto", plan.target, call)
    return result, plan, place_pixels, selection


def check_complexity(complexity: str, family: Family, model: str) -> None:
    """``complexity`` only for the families that take it, and one of their values."""
    if not complexity:
        return
    if not family.complexities:
        raise InvalidInputError(f"{model} does not take complexity (a gpt-image-2.6 setting).",
                                hint="Leave complexity out, or choose a gpt-image-2.6 model.")
    if complexity not in family.complexities:
        raise InvalidInputError(f"complexity must be one of {', '.join(family.complexities)}; got {complexity!r}.")


def check_markup_layer(markup: np.ndarray | None, place_pixels: np.ndarray, family: Family,
                       model: str) -> np.ndarray | None:
    """A markup layer the size of the image, for a model that takes markup edits; refused before any pixel work
    or payment otherwise."""
    if markup is None:
        return None
    if not family.markup:
        takers = ", ".join(name for name, f in capabilities.FAMILIES.items() if f.markup)
        raise InvalidInputError(
            f"{model} does not take markup edits (a painted layer as instructions).",
            hint=f"Choose a model of the {takers} family (see `gimp-openai models`), or edit with a selection.",
        )
    if markup.ndim != 3 or markup.shape[2] != 4 or markup.dtype != np.uint8:
        raise InvalidInputError("The markup layer must be an RGBA image (transparent, with the marks painted on it).")
    if markup.shape[:2] != place_pixels.shape[:2]:
        raise InvalidInputError(
            f"The markup layer is {markup.shape[1]}x{markup.shape[0]} but the image is "
            f"{place_pixels.shape[1]}x{place_pixels.shape[0]}; they must be the same size.",
            hint="Paint the marks on a transparent layer of the same image and export that layer.",
        )
    if not bool((markup[..., 3] > 0).any()):
        raise InvalidInputError("The markup layer is fully transparent: there are no marks to follow.",
                                hint="Paint the marks (circles, arrows, notes) on the layer, then run again.")
    if bool((markup[..., 3] == 255).all()):
        raise InvalidInputError("The markup layer has no transparent pixels, so it cannot be told from the picture.",
                                hint="Paint the marks on a new transparent layer and export that layer alone "
                                     "(PNG with transparency).")
    return markup


def markup_target(markup: np.ndarray, plan: Any) -> np.ndarray:
    """The place-sized marks at target size, where :func:`composite.request_pixels` puts the place; transparent
    in the padding (marks are not mirrored into it)."""
    from gimp_openai.imaging import resize

    inner = plan.place_in_target
    out = np.zeros((plan.target[1], plan.target[0], 4), np.uint8)
    out[inner.y : inner.bottom, inner.x : inner.right] = resize(markup, inner.size)
    return out


_SIDE_POOL: ThreadPoolExecutor | None = None


def _side_pool() -> ThreadPoolExecutor:
    """Two threads for work that runs beside the main line of an item (the seamless preparation while the server
    works): bounded, shared by a batch's items, started on first use."""
    global _SIDE_POOL
    with _SIDE_LOCK:
        if _SIDE_POOL is None:
            _SIDE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="side")
        return _SIDE_POOL


_SIDE_LOCK = threading.Lock()


def imaging_result_to_place(returned: np.ndarray, plan: Any) -> np.ndarray:
    from gimp_openai import composite, imaging

    if (returned.shape[1], returned.shape[0]) != tuple(plan.target):
        returned = imaging.resize(returned, tuple(plan.target))
    return composite.result_to_place(returned, plan)


def _fit_returned(
    returned: np.ndarray,
    target: Sequence[int],
    history_png: Path | None,
    saved: list[str],
    request_id: str | None,
) -> tuple[np.ndarray, list[str]]:
    """A returned image of the size asked for, or a clear refusal. Called after the image is in history.

    The client does not check sizes. Another size with the same aspect (within 1%) is scaled back to the
    target, with a note; another aspect cannot be mapped back without distortion or a shift, so it is not
    composited: MalformedResponseError names the saved file (the paid image is kept, never lost).
    """
    h, w = returned.shape[:2]
    tw, th = int(target[0]), int(target[1])
    if (w, h) == (tw, th):
        return returned, []
    if w > 0 and h > 0 and abs((w / h) / (tw / th) - 1.0) <= 0.01:
        from gimp_openai import imaging

        return imaging.resize(returned, (tw, th)), [
            f"the server returned {w}x{h} for a {tw}x{th} request; scaled back to {tw}x{th} (same aspect)"
        ]
    raise MalformedResponseError(
        f"The server returned a {w}x{h} image for a {tw}x{th} request (another aspect), so it cannot be placed "
        f"over the selection; it was not composited. "
        + (f"The image is saved in {history_png}." if history_png is not None
           else "The image could not be saved to any folder (see the notes)."),
        hint="Open the saved file as a layer if it is useful, or run again." if history_png is not None
        else "Run again.",
        saved=[str(p) for p in saved],
        request_id=request_id,
    )


def _prepare_ahead(original: np.ndarray, selection: np.ndarray, options: Options) -> Any:
    """Start seamless.prepare_seamless on the side pool (None when there is nothing to prepare or no module).

    Every edit runs in a fresh engine process, so its one-time costs (importing the module, OpenCV's Lab
    tables) and everything that depends only on the crop and the selection (the tone ring and the original's
    Lab, the alignment's work level and context) are paid here, hidden in the server's seconds, instead of
    after the response arrives."""
    if not (options.align or options.tone_match):
        return None

    def prepare() -> Any:
        # imported here, off the thread that is sending the request (~20 ms of module set-up)
        from gimp_openai.seamless import prepare_seamless

        return prepare_seamless(original, selection, align=options.align, tone_match=options.tone_match)

    return _side_pool().submit(prepare)


def _seamless(
    original: np.ndarray, placed: np.ndarray, selection: np.ndarray, options: Options, ahead: Sequence[Any] = ()
) -> tuple[np.ndarray, str, dict[str, Any], list[str]]:
    """Alignment, tone match and blend; when it is missing or fails, the result is used as returned, and said so.
    `ahead`: the future of `_prepare_ahead` (its answer is used only when it was made from these arrays)."""
    prepared = None
    for future in ahead:
        if future is None:
            continue
        try:
            prepared = future.result()
        except Exception:  # noqa: BLE001, S110 - make_seamless computes it all itself
            prepared = None
    from gimp_openai.seamless import make_seamless

    try:
        res = make_seamless(
            original, placed, selection, align=options.align, tone_match=options.tone_match, blend=options.blend,
            prepared=prepared,
        )
    except Exception as exc:  # noqa: BLE001 - a failed refinement must not lose the result
        return placed, "", {"applied": False, "why": f"{type(exc).__name__}: {exc}"}, [
            f"alignment/tone match failed ({type(exc).__name__}); the result is composited as returned"
        ]
    image = np.asarray(res.image)
    if image.shape != placed.shape or image.dtype != np.uint8:
        return placed, "", {"applied": False, "why": "seamless returned a different shape"}, [
            "alignment/tone match gave an unusable image; the result is composited as returned"
        ]
    details = getattr(res, "details", None) or {}
    return image, str(getattr(res, "report", "") or ""), dict(details), []


def _crop_to(pixels: np.ndarray, selection: np.ndarray, at: Any, rect: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``rect`` (image coordinates, inside ``at``) out of arrays that start at ``at``."""
    x0, y0 = rect.x - at.x, rect.y - at.y
    if x0 < 0 or y0 < 0 or x0 + rect.width > pixels.shape[1] or y0 + rect.height > pixels.shape[0]:
        raise InvalidInputError(f"Internal: region {rect} is not inside the exported pixels at {at}.")
    return (
        np.ascontiguousarray(pixels[y0 : y0 + rect.height, x0 : x0 + rect.width]),
        np.ascontiguousarray(selection[y0 : y0 + rect.height, x0 : x0 + rect.width]),
    )


def _check_pixels(pixels: np.ndarray, selection: np.ndarray | None) -> None:
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype != np.uint8:
        raise InvalidInputError(f"Internal: image must be RGBA u8, got {pixels.dtype} {pixels.shape}.")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise InvalidInputError("The image has no pixels (0 px wide or high).")
    if selection is not None and selection.shape != pixels.shape[:2]:
        raise InvalidInputError(
            f"The selection is {selection.shape[1]}x{selection.shape[0]} but the image is "
            f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size."
        )


def _meta(options: Options, model: str, path: str, plan: Any, item: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "operation": path,
        "prompt": options.prompt,
        "model": model,
        "source": options.source_name,
        "item": item,
        "quality": options.quality,
    }
    if options.complexity:
        meta["complexity"] = options.complexity
    if options.markup is not None:
        meta["markup"] = True
    if options.extra_images:  # the names of what was sent (see references.fit_named)
        meta["references"] = list(options.reference_names) or len(options.extra_images)
    if plan is not None:
        meta.update(
            size=f"{plan.target[0]}x{plan.target[1]}",
            place=_rect_dict(plan.place),
            request=_rect_dict(plan.request),
        )
    elif options.size:
        meta["size"] = options.size
    return meta


# --- Variation ----------------------------------------------------------------------------------------------


def variation(
    engine: Engine,
    options: Options,
    *,
    place_pixels: np.ndarray,
    layer: Any,
    plan: Any | None = None,
    item: str = "",
    progress: ProgressCallback = no_progress,
) -> Outcome:
    """Variations of the whole region: /images/variations where the model serves it, else an edit without mask.

    Every GPT image model lacks the variations endpoint (dall-e-2 was its last model on OpenAI), so for them
    this is an edit of the image with no mask and the variation prompt; outputs and names say which path ran.
    """
    from gimp_openai import composite, geometry, imaging

    model = options.model
    family = engine.family(model)
    via_endpoint = capabilities.supports_endpoint(family, ENDPOINT_VARIATIONS)
    if not via_endpoint:
        check_endpoint(model, family, ENDPOINT_EDITS)
    check_n(options.n, family)
    _check_pixels(place_pixels, None)
    # a model without a variations endpoint (every GPT image model) gets an edit of the whole image without a
    # mask: the artist's prompt, else the saved one, else the engine's one default (settings)
    prompt = options.variation_prompt or DEFAULT_VARIATION_PROMPT
    if not via_endpoint:
        check_prompt(prompt, family)
    quality = None if via_endpoint else quality_to_send(options.quality, family)
    if plan is None:
        plan = geometry.plan_region(layer, None, family, padding=0.0, size_mode=options.size_mode)
        full = np.full(place_pixels.shape[:2], 255, np.uint8)
        place_pixels, _ = _crop_to(place_pixels, full, layer, plan.place)

    estimate = engine.estimate(model, n=options.n, size=tuple(plan.target), quality=quality or "auto",
                               prompt="" if via_endpoint else prompt, input_images=[tuple(plan.target)])
    engine.before_paying(estimate, item)
    _emit(progress, item, "upload", "Preparing the image")
    pixels = composite.request_pixels(place_pixels, plan)
    image_png = imaging.encode_upload_png(pixels, limit=family.max_upload_bytes or None)
    check_upload_size(image_png, family, "the image sent to the model")
    size = f"{plan.target[0]}x{plan.target[1]}"
    if via_endpoint:
        path = PATH_VARIATION_ENDPOINT
        kwargs: dict[str, Any] = dict(model=model, image=image_png, n=options.n, size=size, on_event=_RETRY_REPORTER)
        if family.response_format:
            kwargs["response_format"] = "b64_json"

        def call() -> Any:
            return _request_call(engine, model, lambda: engine.client.variation(**kwargs))
    else:
        path = PATH_VARIATION_EDIT
        ekwargs: dict[str, Any] = dict(model=model, prompt=prompt, image=image_png, n=options.n, size=size,
                                       quality=quality, on_event=_RETRY_REPORTER)
        background = request_background(family, options.background)
        if background:
            ekwargs["background"] = background

        def call() -> Any:
            return _request_call(engine, model, lambda: engine.client.edit(**ekwargs))

    result = _call_with_ticker(engine, progress, item, model, family, quality or "auto", plan.target, call)
    meta_options = replace(options, prompt=prompt if not via_endpoint else "")
    meta = _meta(meta_options, model, path, plan, item)
    cost = engine.cost(model, result)
    _emit(progress, item, "saving", "Saving the results to history")
    kept = _save_all(engine, result, meta, cost)
    saved = kept.saved
    rescue_notes = [kept.note] if kept.note else []
    _check_problems(result, saved, kept.note)
    _emit(progress, item, "compositing", "Placing the variations")
    n = len(result.images)
    label = "variation via edit" if path == PATH_VARIATION_EDIT else "variation"
    full_mask = np.full((plan.place.height, plan.place.width), 255, np.uint8)
    outputs = []
    for k, (image, hist) in enumerate(zip(result.images, kept.paths, strict=True), start=1):
        returned = _decode_saved(image.data, saved, result.request_id)
        returned, size_notes = _fit_returned(returned, plan.target, hist, saved, result.request_id)
        placed = imaging_result_to_place(returned, plan)
        outputs.append(
            Output(
                index=k,
                count=n,
                name=f"OpenAI: {label} ({k}/{n})",
                pixels=placed,
                mask=full_mask,
                x=plan.place.x,
                y=plan.place.y,
                history_png=hist,
                request_id=result.request_id,
                path=path,
                notes=[f"made by {model} through {'/images/variations' if via_endpoint else 'an edit without mask'}",
                       *size_notes, *rescue_notes],
            )
        )
    _emit(progress, item, "done", f"{n} variation{'s' if n != 1 else ''} ready ({label})")
    return Outcome(outputs=outputs, model=model, path=path, plan=plan, notes=rescue_notes,
                   warnings=_notices(kept, result), cost=cost, estimate=estimate)


# --- Generate -----------------------------------------------------------------------------------------------


def generate(
    engine: Engine, options: Options, *, item: str = "", progress: ProgressCallback = no_progress,
    on_preview: PreviewCallback | None = None,
) -> Outcome:
    """New images from the prompt (and ``options.extra_images``, references), full size as returned (a host
    opens them as new layers or images). ``on_preview``: each streamed preview (``options.partial_images``) as
    it arrives.

    With references the request goes to the edits endpoint without a mask: that is how the Images API
    generates from input images (``image[]``, no ``mask``: nothing is kept, everything is new). The references
    are fitted to the family first (:func:`references.fit_named`: scaled to the output size, within its input
    count), and the notes say which were sent."""
    from gimp_openai import references

    model = options.model
    family = engine.family(model)
    check_endpoint(model, family, ENDPOINT_EDITS if options.extra_images else ENDPOINT_GENERATIONS)
    check_prompt(options.prompt, family)
    check_n(options.n, family)
    quality = quality_to_send(options.quality, family)
    check_complexity(options.complexity, family, model)
    canvas = options.canvas if not options.size else None
    # a huge canvas keeps the generated size (centred by the host), not gigabytes of layer
    fill_canvas = canvas if canvas and canvas[0] * canvas[1] <= MAX_FILL_PIXELS else None
    if canvas:
        from gimp_openai import geometry

        size = "{}x{}".format(*geometry.generation_size_for_canvas(*canvas, family))
    else:
        size = options.size or ("auto" if family.allows_auto_size else family.sizes[0])
    check_size(size, family)
    parsed = capabilities.parse_size(size) or (1024, 1024)  # 'auto': estimated as a square 1024x1024
    reference_notes: list[str] = []
    reference_report = None
    if options.extra_images:
        fitted, sent_names, left_out, reference_notes = references.fit_named(
            options.extra_images, family, parsed, used=0, names=options.reference_names)
        reference_report = {"sent": sent_names, "left_out": left_out}
        if not fitted:
            raise InvalidInputError("None of the reference images could be sent: " + "; ".join(reference_notes),
                                    hint="Use smaller references, or fewer of them.")
        options = replace(options, extra_images=fitted, reference_names=sent_names)
    kwargs: dict[str, Any] = dict(model=model, prompt=options.prompt, n=options.n, size=size, quality=quality,
                                  on_event=_RETRY_REPORTER)
    if options.complexity:
        kwargs["complexity"] = options.complexity
    from gimp_openai import imaging

    estimate = engine.estimate(model, n=options.n, size=parsed, quality=quality or "auto", prompt=options.prompt,
                               input_images=[imaging.image_size_of(bytes(d)) for d in options.extra_images])
    engine.before_paying(estimate, item)
    background = request_background(family, options.background)
    if background:
        kwargs["background"] = background
    if family.response_format:
        kwargs["response_format"] = "b64_json"

    def place(returned: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        if fill_canvas:  # where the result will be: scaled to cover the canvas like it
            from gimp_openai import imaging

            returned = imaging.cover(returned, fill_canvas)
        return returned, np.full(returned.shape[:2], 255, np.uint8), 0, 0

    kwargs.update(_stream_kwargs(options, family, _preview_sink(on_preview, item, PATH_GENERATE, options.n, place)))
    meta = _meta(replace(options, size=size), model, PATH_GENERATE, None, item)
    _emit(progress, item, "upload", "Sending the prompt")

    def call() -> Any:
        if options.extra_images:  # generation from references: the edits endpoint, no mask
            refs = list(options.extra_images)
            return _request_call(engine, model, lambda: engine.client.edit(image=refs[0], extra_images=refs[1:],
                                                                           **kwargs), meta)
        return _request_call(engine, model, lambda: engine.client.generate(**kwargs), meta)

    result = _call_with_ticker(engine, progress, item, model, family, quality or "auto", parsed, call)
    cost = engine.cost(model, result)
    _emit(progress, item, "saving", "Saving the results to history")
    kept = _save_all(engine, result, meta, cost)
    saved = kept.saved
    rescue_notes = [kept.note] if kept.note else []
    rescue_notes.extend(reference_notes)
    if options.partial_images > 0 and not family.streams:
        rescue_notes.append(_no_stream_note(model, family))
    _check_problems(result, saved, kept.note)
    outputs = []
    n = len(result.images)
    for k, (image, hist) in enumerate(zip(result.images, kept.paths, strict=True), start=1):
        returned = _decode_saved(image.data, saved, result.request_id)
        notes = list(rescue_notes)
        if fill_canvas:
            from gimp_openai import imaging

            got = (int(returned.shape[1]), int(returned.shape[0]))
            returned = imaging.cover(returned, fill_canvas)
            notes.append(f"generated at {got[0]}x{got[1]} and scaled to the {fill_canvas[0]}x{fill_canvas[1]} canvas")
        outputs.append(
            Output(
                index=k,
                count=n,
                name=layer_name(options.prompt, k, n),
                pixels=returned,
                mask=np.full(returned.shape[:2], 255, np.uint8),
                x=0,
                y=0,
                history_png=hist,
                request_id=result.request_id,
                path=PATH_GENERATE,
                notes=notes,
            )
        )
    _emit(progress, item, "done", f"{n} image{'s' if n != 1 else ''} ready")
    return Outcome(outputs=outputs, model=model, path=PATH_GENERATE, notes=rescue_notes,
                   warnings=_notices(kept, result), cost=cost, estimate=estimate, references=reference_report)


def _no_stream_note(model: str, family: Family) -> str:
    return f"{model} does not stream previews ({family.name} models answer in one piece); none were shown"


def request_background(family: Family, chosen: str | None) -> str | None:
    """The ``background`` to send: the user's choice, except that 'auto' means opaque for families whose
    transparency is only a preview (gpt-image-2: users report refusals and cut-outs they did not ask for).
    None: leave the parameter out (families without GPT parameters, or 'auto' where the model's own choice is fine).
    """
    if not family.gpt_params:
        return None
    if chosen and chosen != "auto":
        return chosen
    return "opaque" if family.transparent_background == "preview" else None
