"""Turn a validated :class:`~gimp_openai.server.rules.ImageRequest` into the API's response body.

Shapes follow the contract's ``ImagesResponse``: ``created`` and ``data[]`` always; for the GPT families
also ``background``, ``output_format``, ``size``, ``quality`` and ``usage``; ``revised_prompt`` only for
dall-e-3 generations; ``url`` (served by this server) or ``b64_json`` for dall-e-2/3 (default ``url``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from gimp_openai import capabilities as caps
from gimp_openai import pricing
from gimp_openai.server import images, offline, render, rules


@dataclass
class Outcome:
    body: dict
    notes: dict = field(default_factory=dict)  # for /_stats: render transforms, sizes
    #: per image of a streamed request, its previews as small images (coarsest first): scaled up and encoded
    #: only when each is sent, so the work before the first event is what a plain answer costs
    partials: list[list[np.ndarray]] = field(default_factory=list)
    output_format: str = "png"
    compression: int | None = None


def preview_small(pixels: np.ndarray, k: int, count: int) -> np.ndarray:
    """Preview ``k`` of ``count`` (0-based) of a finished image, small: the image at 1/2**(count-k+1) of its
    size (1/16 of its pixels at most), so each preview is sharper than the one before and none is the result."""
    import cv2

    height, width = pixels.shape[:2]
    factor = 2 ** (count - k + 1)
    return cv2.resize(pixels, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)


def preview_b64(small: np.ndarray, size: tuple[int, int], output_format: str, compression: int | None) -> str:
    """A preview as sent: scaled up to the result's size and encoded like it."""
    import cv2

    pixels = np.ascontiguousarray(cv2.resize(small, size, interpolation=cv2.INTER_LINEAR))
    return base64.b64encode(images.encode(pixels, output_format, compression)).decode("ascii")


def _fingerprint(request: rules.ImageRequest) -> str:
    digest = hashlib.sha256(request.prompt.encode())
    for image in request.images:
        digest.update(np.ascontiguousarray(image.pixels[::5, ::5]).tobytes())
    return digest.hexdigest()


def _hole(request: rules.ImageRequest, size: tuple[int, int]) -> np.ndarray | None:
    """Where to edit (bool HxW at ``size``): the mask's alpha 0; for a markup edit, around the painted marks;
    else the input's alpha 0 for families reading it."""
    if request.markup is not None:
        import cv2

        marks = (request.markup.pixels[..., 3] > 0).astype(np.uint8) * 255
        if not marks.any():
            return None
        grow = max(3, round(max(marks.shape) / 64)) * 2 + 1
        grown = cv2.dilate(marks, np.ones((grow, grow), np.uint8))
        # what the marks enclose (a circled object) is the edit too, not only the strokes: everything the
        # outside cannot reach without crossing a mark
        free = np.pad(np.where(grown > 0, 0, 255).astype(np.uint8), 1, constant_values=255)
        outside = np.zeros((free.shape[0] + 2, free.shape[1] + 2), np.uint8)
        cv2.floodFill(free, outside, (0, 0), 128)
        enclosed_or_marked = free[1:-1, 1:-1] != 128
        return np.asarray(cv2.resize(enclosed_or_marked.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)
    elif request.mask is not None:
        alpha = request.mask.pixels[..., 3]
    elif request.family.mask_from_input_alpha and request.images and request.images[0].has_alpha:
        alpha = request.images[0].pixels[..., 3]
        if alpha.min() > 0:
            return None
    else:
        return None
    if (alpha.shape[1], alpha.shape[0]) != size:
        import cv2

        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_NEAREST)
    return np.asarray(alpha == 0)


def _edit_one(
    request: rules.ImageRequest, size: tuple[int, int], index: int, seed: int, spec: render.RenderSpec | None
) -> tuple[np.ndarray, dict | None]:
    source = images.resize(request.images[0].pixels, size)
    hole = _hole(request, size)
    if spec is not None:
        return render.render(source, hole if hole is not None else np.zeros(source.shape[:2], bool), spec,
                             seed=seed + index)
    if hole is None:  # the whole picture is the edit: what a model does with no mask
        return offline.variation(source, size, seed=seed + index), None
    return offline.inpaint(source, hole, seed=seed, variant=index), None


def paint(request: rules.ImageRequest, spec: render.RenderSpec | None, size: tuple[int, int], seed: int,
          index: int) -> tuple[np.ndarray, dict | None]:
    """Result image ``index`` (RGBA at ``size``) and its render record for /_stats, if any."""
    record = None
    if request.endpoint == caps.ENDPOINT_EDITS:
        pixels, record = _edit_one(request, size, index, seed, spec)
    elif request.endpoint == caps.ENDPOINT_VARIATIONS:
        pixels = offline.variation(request.images[0].pixels, size, seed=seed + index)
    else:
        pixels = offline.generate(request.prompt, size, index=index)
    if request.get("background") == "transparent" and request.endpoint == caps.ENDPOINT_GENERATIONS:
        pixels = pixels.copy()
        pixels[: size[1] // 8, :, 3] = 0  # a transparent band, so clients see real alpha
    return pixels, record


#: How much one image's output tokens vary around the rule (a model spends more on a busy picture), and the
#: text tokenizer: words and punctuation marks, not the estimate's four characters a token.
OUTPUT_SPREAD = 0.08
_TEXT_TOKEN = re.compile(r"\w+|[^\w\s]")


def _usage(request: rules.ImageRequest, rule: pricing.TokenRule, shapes: list[tuple[int, int]],
           quality: str, seed: int) -> dict:
    """The contract's ImageGenUsage, counted on what this request really carried (the prompt's words, every
    input image and the markup at their decoded sizes) and returned (each image's size, its tokens spread by up
    to 8 % as a real model's are), with the engine's token rules as the base: a client's estimate is held
    against a count it does not make itself."""
    text_tokens = max(1, len(_TEXT_TOKEN.findall(request.prompt)))
    uploads = [*request.images, *([request.markup] if request.markup is not None else [])]
    image_tokens = sum(rule.image_tokens(i.width, i.height) for i in uploads)
    spread = np.random.default_rng(seed).uniform(-OUTPUT_SPREAD, OUTPUT_SPREAD, len(shapes))
    output = sum(int(round(rule.output_tokens(quality, width, height) * (1 + float(jitter))))
                 for (height, width), jitter in zip(shapes, spread, strict=True))
    return {
        "total_tokens": text_tokens + image_tokens + output,
        "input_tokens": text_tokens + image_tokens,
        "output_tokens": output,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
        "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
    }


class Painting:
    """The images of one answer, painted one at a time, with what the events and the body need.

    A plain answer paints them all at once (:func:`respond`). A streamed one paints them on a thread of its
    own (:meth:`start`), started as soon as the request is validated, while the latency clock runs from the
    request's arrival as a real model's does: the events wait for their second and for their image
    (:meth:`get`), so painting costs the stream nothing unless it takes longer than the slice of the latency
    before the image's first preview. The body's fields (size, quality, usage) are known before any image is
    painted: every image of a request has the size asked for (or the ``wrong_size`` fault's)."""

    def __init__(self, request: rules.ImageRequest, *, spec: render.RenderSpec | None,
                 store_file: Callable[[bytes, str], str], wrong_size: tuple[int, int] | None = None,
                 finish: Callable[[int, dict], None] | None = None) -> None:
        self.request, self.spec, self.store_file, self.wrong_size = request, spec, store_file, wrong_size
        self.finish = finish  # (index, item) -> None: the ``after`` faults that change an item's data
        self.size = rules.output_size(request)
        self.seed = offline.seed_of(_fingerprint(request))
        self.notes: dict = {"size": list(self.size)}
        if wrong_size is not None:
            self.notes["wrong_size"] = list(wrong_size)
        self.renders: list[dict] = []
        gpt = request.family.gpt_params
        self.output_format = str(request.get("output_format", "png")) if gpt else "png"
        compression = request.get("output_compression")
        self.level = compression if isinstance(compression, int) else None
        self.painted: list[tuple[dict, list[np.ndarray]]] = []
        self.error: BaseException | None = None
        self._ready = threading.Condition()
        self._record: dict | None = None  # the request's /_stats record, kept up to date (report_to)
        self._update: Callable[[dict, dict], None] = lambda record, notes: None

    def report_to(self, record: dict, update: Callable[[dict, dict], None]) -> None:
        """Keep ``record`` (the request's /_stats entry) up to date with the notes while the images are painted,
        through ``update(record, notes)`` (Stats.update: under the lock /_stats reads it with)."""
        with self._ready:
            self._record, self._update = record, update
            update(record, dict(self.notes))

    @property
    def count(self) -> int:
        return int(self.request.n)

    def paint_one(self, index: int) -> tuple[dict, list[np.ndarray], tuple[int, int]]:
        """Image ``index``: its ``data`` item, its previews (small, for a stream) and its (height, width)."""
        request = self.request
        pixels, record = paint(request, self.spec, self.size, self.seed, index)
        if record is not None:
            with self._ready:
                self.renders.append(record)
                self.notes["render"] = self.renders
                if self._record is not None:
                    self._update(self._record, dict(self.notes))
        if self.wrong_size is not None:
            pixels = images.resize(pixels, self.wrong_size)
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        encoded = images.encode(pixels, self.output_format, self.level)
        previews = [preview_small(pixels, k, request.partial_images) for k in range(request.partial_images)] \
            if request.stream else []
        del pixels
        item: dict[str, object]
        if not request.family.gpt_params and request.get("response_format", "url") == "url":
            item = {"url": self.store_file(encoded, self.output_format)}
        else:
            item = {"b64_json": base64.b64encode(encoded).decode("ascii")}
        if request.family.name == caps.DALL_E_3:
            item["revised_prompt"] = f"{request.prompt.strip()}, rendered in a clear, detailed style."
        if self.finish is not None:
            self.finish(index, item)
        return item, previews, shape

    def body(self, data: list, shapes: list[tuple[int, int]]) -> dict:
        """The answer's body around ``data``; ``shapes``: each image's (height, width)."""
        request, family = self.request, self.request.family
        body: dict[str, object] = {"created": int(time.time()), "data": data}
        if family.gpt_params:
            height, width = shapes[-1] if shapes else (0, 0)
            rule = pricing.token_rule(family) or pricing.TOKEN_RULES[caps.GPT_IMAGE_2]
            quality = str(request.get("quality", "auto"))
            quality = rule.auto_quality if quality not in dict(rule.output_1024) else quality
            body.update(
                background="transparent" if request.get("background") == "transparent" else "opaque",
                output_format=self.output_format,
                size=f"{width}x{height}",
                quality=quality,
                usage=_usage(request, rule, shapes, quality, self.seed),
            )
        return body

    def expected_shapes(self) -> list[tuple[int, int]]:
        width, height = self.wrong_size or self.size
        return [(int(height), int(width))] * self.count

    # --- a streamed answer: painted on a thread while the events wait for their second -----------------------

    def start(self, done: Callable[[], None] = lambda: None) -> None:
        """Paint every image on a daemon thread, in order; ``done()`` when it ends (the work gate's release), or
        at once when no thread can be started."""
        try:
            threading.Thread(target=self._run, args=(done,), name="paint", daemon=True).start()
        except BaseException:
            done()
            raise

    def _run(self, done: Callable[[], None]) -> None:
        try:
            for index in range(self.count):
                item, previews, _shape = self.paint_one(index)
                with self._ready:
                    self.painted.append((item, previews))
                    self._ready.notify_all()
        except BaseException as exc:  # noqa: BLE001 - the stream ends cut short; the handler reports it
            with self._ready:
                self.error = exc
                self._ready.notify_all()
        finally:
            done()

    def get(self, index: int) -> tuple[dict, list[np.ndarray]]:
        """Image ``index`` once it is painted; re-raises what stopped the painting."""
        with self._ready:
            while len(self.painted) <= index and self.error is None:
                self._ready.wait()
            if len(self.painted) > index:
                return self.painted[index]
            raise self.error  # type: ignore[misc]


def respond(
    request: rules.ImageRequest,
    *,
    spec: render.RenderSpec | None,
    store_file: Callable[[bytes, str], str],
    wrong_size: tuple[int, int] | None = None,
) -> Outcome:
    """Produce the images and the response body; ``store_file(bytes, ext)`` returns a URL for url responses.

    One image at a time is painted, encoded and dropped, so memory grows with the encoded files, not with
    n decoded results (n=10 at 3840x2160 would otherwise hold 330 MB of pixels at once)."""
    return respond_with(Painting(request, spec=spec, store_file=store_file, wrong_size=wrong_size))


def respond_with(painting: Painting) -> Outcome:
    """Every image of ``painting`` painted here, one after another, and the plain answer's body."""
    request = painting.request
    data, partials, shapes = [], [], []
    for index in range(request.n):
        item, previews, shape = painting.paint_one(index)
        data.append(item)
        partials.append(previews)
        shapes.append(shape)
    return Outcome(body=painting.body(data, shapes), notes=painting.notes, partials=partials if request.stream else [],
                   output_format=painting.output_format, compression=painting.level if request.stream else None)


def stream_events(painting: Painting, endpoint: str, latency: float,
                  elapsed: Callable[[], float] | None = None) -> Iterator[tuple[float, dict]]:
    """The server-sent events of a streamed answer, each with the second (from the request's arrival) it is
    due, made one at a time as their image is painted (:meth:`Painting.get`): image i of n owns the slice
    [i/n, (i+1)/n] of ``latency``; its previews are spread evenly inside it (3 previews of one image: at 25, 50
    and 75 %) and its completed event ends it, so the result arrives when a plain answer of the same latency
    would. ``elapsed()``: seconds since the arrival; with a latency, a preview whose image's completed event is
    already due is left out (painting fell behind the clock: a late preview would only delay the result).
    Shapes: the contract's Image{Edit,Gen}{PartialImage,Completed}Event; ``usage`` (the request's) on each
    completed event."""
    prefix = "image_edit" if endpoint == caps.ENDPOINT_EDITS else "image_generation"
    body = painting.body([], painting.expected_shapes())
    common = {key: body[key] for key in ("size", "quality", "background", "output_format") if key in body}
    n = max(1, painting.count)
    for i in range(painting.count):
        item, previews = painting.get(i)
        size = caps.parse_size(str(body.get("size", ""))) or rules_size(previews)
        completed_due = latency * (i + 1) / n
        for k, small in enumerate(previews):
            if latency > 0 and elapsed is not None and elapsed() >= completed_due:
                break
            due = latency * (i + (k + 1) / (len(previews) + 1)) / n
            yield due, {"type": f"{prefix}.partial_image",
                        "b64_json": preview_b64(small, size, painting.output_format, painting.level),
                        "created_at": int(time.time()), **common, "partial_image_index": k}
        completed: dict[str, object] = {"type": f"{prefix}.completed", "b64_json": item.get("b64_json", ""),
                                        "created_at": int(time.time()), **common}
        if "usage" in body:
            completed["usage"] = body["usage"]
        yield completed_due, completed


def rules_size(previews: list[np.ndarray]) -> tuple[int, int]:
    """The result's size when the answer does not say it (dall-e bodies carry no ``size``; they never stream)."""
    return (previews[0].shape[1], previews[0].shape[0]) if previews else (1, 1)
