"""Turn a validated :class:`~gimp_openai.server.rules.ImageRequest` into the API's response body.

Shapes follow the contract's ``ImagesResponse``: ``created`` and ``data[]`` always; for the GPT families
also ``background``, ``output_format``, ``size``, ``quality`` and ``usage``; ``revised_prompt`` only for
dall-e-3 generations; ``url`` (served by this server) or ``b64_json`` for dall-e-2/3 (default ``url``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from gimp_openai import capabilities as caps
from gimp_openai.server import images, offline, render, rules

#: Output tokens for a 1024x1024 image at low / medium / high (gpt-image-1's published figures).
OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}


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
    """Where to edit (bool HxW at ``size``): the mask's alpha 0, else the input's alpha 0 for families reading it."""
    if request.mask is not None:
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


def _usage(request: rules.ImageRequest, size: tuple[int, int], quality: str) -> dict:
    text_tokens = max(1, len(request.prompt) // 4)
    image_tokens = sum(65 + 129 * math.ceil(i.width / 512) * math.ceil(i.height / 512) for i in request.images)
    output = int(OUTPUT_TOKENS[quality] * request.n * size[0] * size[1] / (1024 * 1024))
    return {
        "total_tokens": text_tokens + image_tokens + output,
        "input_tokens": text_tokens + image_tokens,
        "output_tokens": output,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
    }


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
    size = rules.output_size(request)
    seed = offline.seed_of(_fingerprint(request))
    notes: dict = {"size": list(size)}
    renders = []
    family = request.family
    gpt = family.gpt_params
    output_format = str(request.get("output_format", "png")) if gpt else "png"
    compression = request.get("output_compression")
    data = []
    partials: list[list[np.ndarray]] = []
    shape = (0, 0)
    for index in range(request.n):
        pixels, record = paint(request, spec, size, seed, index)
        if record is not None:
            renders.append(record)
        if wrong_size is not None:
            pixels = images.resize(pixels, wrong_size)
            notes["wrong_size"] = list(wrong_size)
        shape = pixels.shape[:2]
        level = compression if isinstance(compression, int) else None
        encoded = images.encode(pixels, output_format, level)
        if request.stream:
            partials.append([preview_small(pixels, k, request.partial_images) for k in range(request.partial_images)])
        del pixels
        item: dict[str, object]
        if not gpt and request.get("response_format", "url") == "url":
            item = {"url": store_file(encoded, output_format)}
        else:
            item = {"b64_json": base64.b64encode(encoded).decode("ascii")}
        if family.name == caps.DALL_E_3:
            item["revised_prompt"] = f"{request.prompt.strip()}, rendered in a clear, detailed style."
        data.append(item)
    if renders:
        notes["render"] = renders
    body: dict[str, object] = {"created": int(time.time()), "data": data}
    if gpt:
        height, width = shape
        quality = str(request.get("quality", "auto"))
        quality = "medium" if quality not in OUTPUT_TOKENS else quality
        body.update(
            background="transparent" if request.get("background") == "transparent" else "opaque",
            output_format=output_format,
            size=f"{width}x{height}",
            quality=quality,
            usage=_usage(request, size, quality),
        )
    return Outcome(body=body, notes=notes, partials=partials, output_format=output_format,
                   compression=level if request.stream else None)


def stream_events(outcome: Outcome, endpoint: str, latency: float) -> Iterator[tuple[float, dict]]:
    """The server-sent events of a streamed answer, each with the second (from the start of the answer) it is
    due, made one at a time: image i of n owns the slice [i/n, (i+1)/n] of ``latency``; its previews are spread
    evenly inside it (3 previews of one image: at 25, 50 and 75 %) and its completed event ends it, so the result
    arrives when a plain answer of the same latency would. Shapes: the contract's
    Image{Edit,Gen}{PartialImage,Completed}Event; ``usage`` (the request's) on each completed event."""
    prefix = "image_edit" if endpoint == caps.ENDPOINT_EDITS else "image_generation"
    body = outcome.body
    common = {key: body[key] for key in ("size", "quality", "background", "output_format") if key in body}
    items = body.get("data") or []
    n = max(1, len(items))
    for i, item in enumerate(items):
        previews = outcome.partials[i] if i < len(outcome.partials) else []
        size = caps.parse_size(str(body.get("size", ""))) or rules_size(previews)
        for k, small in enumerate(previews):
            due = latency * (i + (k + 1) / (len(previews) + 1)) / n
            yield due, {"type": f"{prefix}.partial_image",
                        "b64_json": preview_b64(small, size, outcome.output_format, outcome.compression),
                        "created_at": int(time.time()), **common, "partial_image_index": k}
        completed: dict[str, object] = {"type": f"{prefix}.completed", "b64_json": item.get("b64_json", ""),
                                        "created_at": int(time.time()), **common}
        if "usage" in body:
            completed["usage"] = body["usage"]
        yield latency * (i + 1) / n, completed


def rules_size(previews: list[np.ndarray]) -> tuple[int, int]:
    """The result's size when the answer does not say it (dall-e bodies carry no ``size``; they never stream)."""
    return (previews[0].shape[1], previews[0].shape[0]) if previews else (1, 1)
