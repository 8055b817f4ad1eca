"""Strict request validation for the local server: ONE table of parameters, read from ``capabilities.py``.

Every parameter of the three images endpoints is a :class:`ParamRule` in :data:`PARAMS`: where it exists
(endpoints), for which models it is allowed (else ``unknown_parameter``), its type and its allowed values or
range (from the model's :class:`~gimp_openai.capabilities.Family`). Image rules (mimetypes, count, bytes,
square, mask) follow the table in :func:`check_images`. ``tests/server/test_rules_contract.py`` checks the
table against ``tests/fixtures/openai_images_contract.yaml``, so client and server cannot drift apart.

Error codes are OpenAI's where known (``invalid_value``, ``unknown_parameter``, ``integer_above_max_value``,
``string_above_max_length``, ``array_above_max_length``, ``missing_required_parameter``,
``unsupported_file_mimetype``, ``invalid_image_file``, ``image_too_large``, ``invalid_image_format``).
Where the real code is unknown this server uses ``invalid_value`` with the offending ``param``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gimp_openai import capabilities as caps
from gimp_openai.capabilities import Family
from gimp_openai.server import apierror
from gimp_openai.server.images import (
    MAX_IMAGE_PIXELS,
    MAX_REQUEST_PIXELS,
    Decoded,
    UndecodableImage,
    decode,
    header_size,
)
from gimp_openai.server.multipart import FilePart

EDITS, VARIATIONS, GENERATIONS = caps.ENDPOINT_EDITS, caps.ENDPOINT_VARIATIONS, caps.ENDPOINT_GENERATIONS
ALL = frozenset({EDITS, VARIATIONS, GENERATIONS})
PROMPTED = frozenset({EDITS, GENERATIONS})

OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
RESPONSE_FORMATS = ("url", "b64_json")
MODERATIONS = ("low", "auto")
INPUT_FIDELITIES = ("high", "low")
STYLES = ("vivid", "natural")
N_MIN = 1
N_MAX_CONTRACT = 10
MAX_IMAGES_CONTRACT = 16
MASK_MAX_BYTES = 4 * caps.MB  # contract: "Must be a valid PNG file, less than 4MB"
PARTIAL_IMAGES_MAX = 3  # the contract's PartialImages maximum; each family's own is max_partial_images

#: Model used when a request names none (the contract's defaults).
DEFAULT_MODEL = {EDITS: "gpt-image-1.5", VARIATIONS: caps.DALL_E_2, GENERATIONS: caps.DALL_E_2}

Allowed = Callable[[str, Family], bool]


def _always(model: str, family: Family) -> bool:
    return True


def _gpt(model: str, family: Family) -> bool:
    return family.gpt_params


def _streams(model: str, family: Family) -> bool:
    """``stream`` and ``partial_images``: the GPT image models only (contract: "This parameter is only supported
    for the GPT image models"); the family table's ``streams`` fact says which those are."""
    return family.streams


def _response_format(model: str, family: Family) -> bool:
    return family.response_format


def _fidelity(model: str, family: Family) -> bool:
    return caps.supports_input_fidelity(model, family)


def _dalle3(model: str, family: Family) -> bool:
    return family.name == caps.DALL_E_3


def _complexity(model: str, family: Family) -> bool:
    return bool(family.complexities)


def qualities(family: Family) -> tuple[str, ...]:
    """The family's qualities plus ``auto`` (every family takes the default value)."""
    return family.qualities + (() if "auto" in family.qualities else ("auto",))


@dataclass(frozen=True)
class ParamRule:
    name: str
    endpoints: frozenset[str]
    kind: str  # "text" | "int" | "enum" | "size" | "bool"
    allowed: Allowed = _always
    values: Callable[[Family], tuple[str, ...]] | None = None
    minimum: int | None = None
    maximum: Callable[[Family], int] | None = None
    required: frozenset[str] = frozenset()


PARAMS: tuple[ParamRule, ...] = (
    ParamRule("prompt", PROMPTED, "text", maximum=lambda f: f.prompt_max, required=PROMPTED),
    ParamRule("n", ALL, "int", minimum=N_MIN, maximum=lambda f: f.n_max),
    ParamRule("size", ALL, "size"),
    ParamRule("quality", PROMPTED, "enum", values=qualities),
    ParamRule("response_format", ALL, "enum", allowed=_response_format, values=lambda f: RESPONSE_FORMATS),
    ParamRule("output_format", PROMPTED, "enum", allowed=_gpt, values=lambda f: f.output_formats),
    ParamRule("output_compression", PROMPTED, "int", allowed=_gpt, minimum=0, maximum=lambda f: 100),
    ParamRule("background", PROMPTED, "enum", allowed=_gpt, values=lambda f: BACKGROUNDS),
    ParamRule("moderation", PROMPTED, "enum", allowed=_gpt, values=lambda f: MODERATIONS),
    ParamRule("input_fidelity", frozenset({EDITS}), "enum", allowed=_fidelity, values=lambda f: INPUT_FIDELITIES),
    ParamRule("style", frozenset({GENERATIONS}), "enum", allowed=_dalle3, values=lambda f: STYLES),
    ParamRule("complexity", PROMPTED, "enum", allowed=_complexity, values=lambda f: f.complexities),
    ParamRule("stream", PROMPTED, "bool", allowed=_streams),
    ParamRule("partial_images", PROMPTED, "int", allowed=_streams, minimum=0, maximum=lambda f: f.max_partial_images),
    ParamRule("user", ALL, "text"),
)

FILE_FIELDS = {EDITS: ("image", "image[]", "mask", "markup"), VARIATIONS: ("image",), GENERATIONS: ()}


@dataclass
class ImageRequest:
    """A validated request with every default filled in."""

    endpoint: str
    model: str
    family: Family
    params: dict[str, object] = field(default_factory=dict)
    images: list[Decoded] = field(default_factory=list)
    mask: Decoded | None = None
    markup: Decoded | None = None  # 2.6: marks painted on a transparent layer say what to change, and where

    @property
    def n(self) -> int:
        return int(self.params.get("n") or 1)  # type: ignore[call-overload]

    @property
    def prompt(self) -> str:
        return str(self.params.get("prompt") or "")

    def get(self, name: str, default: object = None) -> object:
        value = self.params.get(name)
        return default if value is None else value

    @property
    def stream(self) -> bool:
        return self.params.get("stream") is True

    @property
    def partial_images(self) -> int:
        return int(self.params.get("partial_images") or 0) if self.stream else 0  # type: ignore[call-overload]


def model_of(endpoint: str, fields: Mapping[str, object]) -> str:
    value = fields.get("model")
    if value is None or value == "":
        return DEFAULT_MODEL[endpoint]
    if not isinstance(value, str):
        raise apierror.invalid_type("model", "a string", type(value).__name__)
    return value


def check_params(endpoint: str, model: str, family: Family, fields: Mapping[str, object], multipart: bool) -> dict:
    """Apply :data:`PARAMS` to the request's non-file fields; return the typed values given."""
    known = {rule.name for rule in PARAMS if endpoint in rule.endpoints} | {"model"}
    for name in fields:
        if name not in known:
            raise apierror.unknown_parameter(name)
    values: dict[str, object] = {}
    for rule in PARAMS:
        if endpoint not in rule.endpoints:
            continue
        raw = fields.get(rule.name)
        if raw is None:
            if endpoint in rule.required:
                raise apierror.missing_parameter(rule.name)
            continue
        if not rule.allowed(model, family):
            raise apierror.unknown_parameter(rule.name, f"This parameter is not supported for {model}.")
        values[rule.name] = _typed(rule, raw, family, multipart)
    _cross_checks(model, family, values)
    return values


def _typed(rule: ParamRule, raw: object, family: Family, multipart: bool) -> object:
    name = rule.name
    if rule.kind == "int":
        if multipart and isinstance(raw, str):
            try:
                raw = int(raw.strip())
            except ValueError:
                raise apierror.invalid_type(name, "an integer", "a string") from None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise apierror.invalid_type(name, "an integer", type(raw).__name__)
        maximum = rule.maximum(family) if rule.maximum else raw
        minimum = rule.minimum if rule.minimum is not None else raw
        if raw < minimum or raw > maximum:
            raise apierror.integer_out_of_range(name, raw, minimum, maximum)
        return raw
    if rule.kind == "bool":
        if multipart and isinstance(raw, str) and raw.lower() in ("true", "false"):
            raw = raw.lower() == "true"
        if not isinstance(raw, bool):
            raise apierror.invalid_type(name, "a boolean", type(raw).__name__)
        return raw
    if not isinstance(raw, str):
        raise apierror.invalid_type(name, "a string", type(raw).__name__)
    if rule.kind == "text":
        if rule.maximum is not None:
            if not raw.strip():
                raise apierror.string_too_short(name)
            if len(raw) > rule.maximum(family):
                raise apierror.string_too_long(name, len(raw), rule.maximum(family))
        return raw
    if rule.kind == "enum":
        allowed = rule.values(family) if rule.values else ()
        if raw not in allowed:
            raise apierror.invalid_value(name, raw, allowed)
        return raw
    problem = family.check_size(raw)
    if problem:
        if family.free_sizes is not None:
            raise apierror.invalid_value(name, raw, detail=problem)
        allowed_sizes = family.sizes + (("auto",) if family.allows_auto_size else ())
        raise apierror.invalid_value(name, raw, allowed_sizes)
    return raw


def _cross_checks(model: str, family: Family, values: dict[str, object]) -> None:
    if values.get("background") == "transparent" and values.get("output_format", "png") == "jpeg":
        raise apierror.ApiError(
            400,
            "Transparent background is not supported for output format 'jpeg'. Use 'png' or 'webp'.",
            param="background",
            code="invalid_value",
        )
    if values.get("background") == "transparent" and family.transparent_background == "no":
        raise apierror.invalid_value("background", "transparent", detail=f"{model} has no transparent backgrounds.")


def _mimetype_error(param: str, part: FilePart, allowed: tuple[str, ...]) -> apierror.ApiError:
    kinds = ", ".join(f"'{m}'" for m in allowed)
    return apierror.ApiError(
        400,
        f"Invalid file '{param}': unsupported mimetype ('{part.content_type}'). Supported file formats are {kinds}.",
        param=param,
        code="unsupported_file_mimetype",
    )


def _decode(param: str, index: int, part: FilePart) -> Decoded:
    try:
        return decode(part.data)
    except UndecodableImage:
        raise apierror.ApiError(
            400,
            f"Invalid image file or mode for image {index + 1}, please check your image file.",
            param=param,
            code="invalid_image_file",
        ) from None


def _too_large(param: str, size: int, limit: int) -> apierror.ApiError:
    return apierror.ApiError(
        400,
        f"Invalid input image - image must be less than {limit // caps.MB} MB, got {size / caps.MB:.1f} MB.",
        param=param,
        code="image_too_large",
    )


def check_pixel_budget(parts: list[FilePart]) -> None:
    """Refuse, from the files' headers and before decoding any, an image over :data:`MAX_IMAGE_PIXELS` or a
    request whose images and mask together are over :data:`MAX_REQUEST_PIXELS`: a 600 KB PNG can declare
    9000x9000 and would cost gigabytes once decoded. Undecodable files are left to :func:`_decode`."""
    total = 0
    for part in parts:
        size = header_size(part.data)
        if size is None:
            continue
        param = "mask" if part.field == "mask" else "image"
        width, height = size
        if width * height > MAX_IMAGE_PIXELS:
            raise apierror.ApiError(
                400,
                f"Invalid input image - {width}x{height} is {width * height:,} pixels; this server decodes at most "
                f"{MAX_IMAGE_PIXELS:,} pixels (4096x4096) per image.",
                param=param,
                code="image_too_large",
            )
        total += width * height
        if total > MAX_REQUEST_PIXELS:
            raise apierror.ApiError(
                400,
                f"Invalid input images - the images and mask of one request may have {MAX_REQUEST_PIXELS:,} pixels "
                f"together; these have more than {total:,}.",
                param=param,
                code="image_too_large",
            )


def check_images(endpoint: str, family: Family, files: list[FilePart]) -> tuple[list[Decoded], Decoded | None]:
    """The image rules: which fields, how many, mimetype, bytes, decodable, square, mask alpha and size."""
    allowed_fields = FILE_FIELDS[endpoint]
    for part in files:
        if part.field not in allowed_fields or part.field == "markup":  # markup: see validate
            raise apierror.unknown_parameter(part.field)
    image_parts = [p for p in files if p.field in ("image", "image[]")]
    mask_parts = [p for p in files if p.field == "mask"]
    if not image_parts:
        raise apierror.missing_parameter("image")
    if len(image_parts) > family.max_images:
        raise apierror.array_too_long("image", len(image_parts), family.max_images)
    if len(mask_parts) > 1:
        raise apierror.invalid_value("mask", f"{len(mask_parts)} files", detail="Send one mask.")
    check_pixel_budget(image_parts + mask_parts)
    images = []
    for index, part in enumerate(image_parts):
        if part.content_type not in family.input_mimetypes:
            raise _mimetype_error("image", part, family.input_mimetypes)
        if len(part.data) > family.max_upload_bytes:
            raise _too_large("image", len(part.data), family.max_upload_bytes)
        decoded = _decode("image", index, part)
        if family.input_mimetypes == caps.PNG_ONLY and decoded.format != "PNG":
            raise apierror.ApiError(
                400, f"Invalid input image - format must be PNG, got {decoded.format}.", param="image",
                code="invalid_image_format",
            )
        if family.square_input and decoded.width != decoded.height:
            raise apierror.ApiError(
                400,
                f"Invalid input image - image must be square, got {decoded.width}x{decoded.height}.",
                param="image",
                code="invalid_value",
            )
        images.append(decoded)
    mask = None
    if mask_parts:
        part = mask_parts[0]
        if part.content_type != "image/png":
            raise _mimetype_error("mask", part, caps.PNG_ONLY)
        if len(part.data) > MASK_MAX_BYTES:
            raise _too_large("mask", len(part.data), MASK_MAX_BYTES)
        mask = _decode("mask", 0, part)
        if not mask.has_alpha:
            raise apierror.ApiError(
                400,
                f"Invalid mask image - format must have an alpha channel (RGBA or LA), got {mask.mode}.",
                param="mask",
                code="invalid_image_format",
            )
        first = images[0]
        if (mask.width, mask.height) != (first.width, first.height):
            raise apierror.ApiError(
                400,
                f"Invalid mask image - mask size ({mask.width}x{mask.height}) does not match image size "
                f"({first.width}x{first.height}).",
                param="mask",
                code="invalid_value",
            )
    elif endpoint == EDITS and family.name == caps.DALL_E_2 and not images[0].has_alpha:
        raise apierror.ApiError(
            400,
            f"Invalid input image - format must be in ['RGBA', 'LA', 'L'] with transparency when no mask is given, "
            f"got {images[0].mode}.",
            param="image",
            code="invalid_image_format",
        )
    return images, mask


def check_markup(parts: list[FilePart], first: Decoded) -> Decoded:
    """One transparent PNG the size of the first image: its painted (non-transparent) pixels are the marks."""
    if len(parts) > 1:
        raise apierror.invalid_value("markup", f"{len(parts)} files", detail="Send one markup image.")
    part = parts[0]
    if part.content_type != "image/png":
        raise _mimetype_error("markup", part, caps.PNG_ONLY)
    if len(part.data) > MASK_MAX_BYTES:
        raise _too_large("markup", len(part.data), MASK_MAX_BYTES)
    markup = _decode("markup", 0, part)
    if not markup.has_alpha:
        raise apierror.ApiError(
            400, f"Invalid markup image - format must have an alpha channel (RGBA or LA), got {markup.mode}.",
            param="markup", code="invalid_image_format",
        )
    if (markup.width, markup.height) != (first.width, first.height):
        raise apierror.ApiError(
            400,
            f"Invalid markup image - markup size ({markup.width}x{markup.height}) does not match image size "
            f"({first.width}x{first.height}).",
            param="markup", code="invalid_value",
        )
    return markup


def validate(
    endpoint: str,
    model: str,
    family: Family,
    fields: Mapping[str, object],
    files: list[FilePart],
    *,
    multipart: bool,
) -> ImageRequest:
    """Check a whole request; raises :class:`~gimp_openai.server.apierror.ApiError` on the first problem."""
    params = check_params(endpoint, model, family, fields, multipart)
    request = ImageRequest(endpoint=endpoint, model=model, family=family, params=params)
    if endpoint in (EDITS, VARIATIONS):
        markup = [p for p in files if p.field == "markup"] if endpoint == EDITS else []
        if markup:
            if not family.markup:
                raise apierror.unknown_parameter("markup", f"This parameter is not supported for {model}.")
            if any(p.field == "mask" for p in files):
                raise apierror.ApiError(
                    400, "Invalid request: 'markup' cannot be combined with 'mask'. Send the marks without a mask.",
                    param="markup", code="invalid_value",
                )
            check_pixel_budget([p for p in files if p.field in ("image", "image[]", "markup")])
        request.images, request.mask = check_images(endpoint, family, [p for p in files if p.field != "markup"])
        if markup:
            request.markup = check_markup(markup, request.images[0])
    elif files:
        raise apierror.unknown_parameter(files[0].field)
    return request


def output_size(request: ImageRequest) -> tuple[int, int]:
    """The pixel size of the results: the requested size, or for ``auto`` what the model would choose."""
    family = request.family
    size = str(request.get("size", "auto" if family.allows_auto_size else "1024x1024"))
    parsed = caps.parse_size(size)
    if parsed:
        return parsed
    if not request.images:
        return 1024, 1024
    width, height = request.images[0].width, request.images[0].height
    if family.free_sizes is not None:
        return _nearest_free_size(family.free_sizes, width, height)
    standard = [caps.parse_size(s) for s in family.sizes]
    return min((s for s in standard if s), key=lambda s: abs(s[0] / s[1] - width / height))


def _nearest_free_size(rule: caps.FreeSizeRule, width: int, height: int) -> tuple[int, int]:
    """gpt-image-2 ``auto`` keeps the input size when it is allowed, else the nearest allowed size."""
    if rule.check(width, height) is None:
        return width, height
    aspect = min(max(width / height, 1 / rule.max_aspect), rule.max_aspect)
    pixels = min(max(width * height, rule.min_pixels), rule.max_pixels)
    for step in range(0, 200):
        for candidate_pixels in (pixels * (1 + 0.01 * step), pixels * (1 - 0.01 * step)):
            h = (candidate_pixels / aspect) ** 0.5
            w = h * aspect
            cw = max(rule.multiple, int(round(w / rule.multiple)) * rule.multiple)
            ch = max(rule.multiple, int(round(h / rule.multiple)) * rule.multiple)
            if rule.check(cw, ch) is None:
                return cw, ch
    return 1024, 1024
