"""What each image-model family accepts: the one table the client, the CLI, the hosts and the local server read.

Rules are keyed by *family*, never by an exact model id, because OpenAI keeps adding dated snapshots and new
ids (``gpt-image-2-2026-04-21``, ``gpt-image-2.5-...``) and retiring old ones. Every limit of the families up
to gpt-image-2 comes from ``tests/fixtures/openai_images_contract.yaml`` (2026-08-21);
``tests/server/test_rules_contract.py`` checks them against that file so the client and the server cannot drift
apart silently. The 2.5 and 2.6 families came after that spec: their rows cite the public reports they rest on
(the fixture's ``reported`` section), and a server that refuses one of their optional parameters costs one
dropped parameter and a notice, not a failed run (``OPTIONAL_PARAMS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MB = 1024 * 1024

DALL_E_2 = "dall-e-2"
DALL_E_3 = "dall-e-3"
GPT_IMAGE_1 = "gpt-image-1"
GPT_IMAGE_2 = "gpt-image-2"
GPT_IMAGE_2_5 = "gpt-image-2.5"
GPT_IMAGE_2_6 = "gpt-image-2.6"

ENDPOINT_EDITS = "edits"
ENDPOINT_VARIATIONS = "variations"
ENDPOINT_GENERATIONS = "generations"

#: Input MIME types the GPT image models accept; dall-e-2 takes PNG only.
GPT_INPUT_MIMETYPES = ("image/png", "image/jpeg", "image/webp")
PNG_ONLY = ("image/png",)

#: Output formats of the GPT families up to 2.5 (the contract's ``output_format`` enum); 2.6 adds more.
GPT_OUTPUT_FORMATS = ("png", "jpeg", "webp")
GPT_QUALITIES = ("low", "medium", "high", "auto")

#: Parameters the engine may leave out when a server refuses them as unknown (400 ``unknown_parameter``): the
#: request means the same without them, so the run goes on with a notice instead of failing. What the artist
#: asked for and cannot do without (the prompt, the images, the mask, ``markup``, ``quality``, ``size``) is
#: never dropped.
OPTIONAL_PARAMS = ("complexity", "moderation", "input_fidelity", "output_compression", "background")


@dataclass(frozen=True)
class FreeSizeRule:
    """gpt-image-2's arbitrary sizes: both sides multiples of ``multiple``, aspect within ``max_aspect``:1,
    total pixels within [min_pixels, max_pixels], long edge at most ``max_edge``."""

    multiple: int = 16
    max_aspect: float = 3.0
    min_pixels: int = 655_360
    max_pixels: int = 8_294_400
    max_edge: int = 3840

    def check(self, width: int, height: int) -> str | None:
        """Return None when (width, height) is allowed, else a sentence saying which rule it breaks."""
        if width <= 0 or height <= 0:
            return f"{width}x{height} is not a size: both sides must be positive"
        if width % self.multiple or height % self.multiple:
            return f"{width}x{height}: width and height must both be multiples of {self.multiple}"
        long_side, short_side = max(width, height), min(width, height)
        if long_side > self.max_edge:
            return f"{width}x{height}: the long side may be at most {self.max_edge} px"
        if long_side > self.max_aspect * short_side:
            return f"{width}x{height}: the aspect ratio must be between 1:{self.max_aspect:g} and {self.max_aspect:g}:1"
        pixels = width * height
        if pixels < self.min_pixels or pixels > self.max_pixels:
            return (
                f"{width}x{height} has {pixels:,} pixels; it must have between {self.min_pixels:,} "
                f"and {self.max_pixels:,}"
            )
        return None


@dataclass(frozen=True)
class Family:
    """Everything the engine needs to know to build a valid request for one family of models."""

    name: str
    endpoints: frozenset[str]
    #: Fixed sizes (``WxH``); empty when ``free_sizes`` governs.
    sizes: tuple[str, ...]
    free_sizes: FreeSizeRule | None
    allows_auto_size: bool
    prompt_max: int
    max_images: int  # how many input images one edit may carry (``image[]``)
    max_upload_bytes: int  # per input file
    input_mimetypes: tuple[str, ...]
    square_input: bool  # dall-e-2 takes square PNGs only
    qualities: tuple[str, ...]
    n_max: int
    response_format: bool  # may the request carry ``response_format``?
    gpt_params: bool  # background, output_format, output_compression, moderation
    input_fidelity: bool  # family-level; see :func:`supports_input_fidelity` for per-id exceptions
    transparent_background: str  # "yes", "preview" or "no"
    mask_from_input_alpha: bool  # does the model read transparency in the input image as the mask?
    #: Rough seconds per image at (low, medium, high) quality for 1024x1024; drives the honest progress bar.
    seconds_by_quality: tuple[float, float, float]
    #: Does /images/edits and /images/generations take ``stream: true`` (server-sent events) for this family?
    streams: bool
    #: The most ``partial_images`` (previews streamed before the result) a request may ask for; 0 without streams.
    max_partial_images: int
    #: Qualities above ``high`` and their seconds per 1024x1024 image (2.5 and later: xhigh, max).
    extra_quality_seconds: tuple[tuple[str, float], ...] = ()
    #: ``output_format`` values (families with ``gpt_params``).
    output_formats: tuple[str, ...] = GPT_OUTPUT_FORMATS
    #: ``complexity`` values; empty when the family does not take the parameter.
    complexities: tuple[str, ...] = ()
    #: Does /images/edits take ``markup`` (a transparent layer painted with instructions)? It is never sent with
    #: a mask: the painted marks say where to edit.
    markup: bool = False

    def check_size(self, size: str) -> str | None:
        """None when the family takes ``size`` (``WxH`` or ``auto``), else why not."""
        if size == "auto":
            return None if self.allows_auto_size else f"size 'auto' is not supported by {self.name}"
        parsed = parse_size(size)
        if parsed is None:
            return f"{size!r} is not a size; write it as WIDTHxHEIGHT, e.g. 1024x1024"
        if self.free_sizes is not None:
            return self.free_sizes.check(*parsed)
        if size not in self.sizes:
            return f"{size} is not a size {self.name} takes; use one of {', '.join(self.sizes)}"
        return None


FAMILIES: dict[str, Family] = {
    DALL_E_2: Family(
        name=DALL_E_2,
        endpoints=frozenset({ENDPOINT_EDITS, ENDPOINT_VARIATIONS, ENDPOINT_GENERATIONS}),
        sizes=("256x256", "512x512", "1024x1024"),
        free_sizes=None,
        allows_auto_size=False,
        prompt_max=1000,
        max_images=1,
        max_upload_bytes=4 * MB,
        input_mimetypes=PNG_ONLY,
        square_input=True,
        qualities=("standard",),
        n_max=10,
        response_format=True,
        gpt_params=False,
        input_fidelity=False,
        transparent_background="no",
        mask_from_input_alpha=True,
        seconds_by_quality=(5.0, 8.0, 12.0),
        streams=False,
        max_partial_images=0,
    ),
    DALL_E_3: Family(
        name=DALL_E_3,
        endpoints=frozenset({ENDPOINT_GENERATIONS}),
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        free_sizes=None,
        allows_auto_size=False,
        prompt_max=4000,
        max_images=0,
        max_upload_bytes=0,
        input_mimetypes=(),
        square_input=False,
        qualities=("standard", "hd"),
        n_max=1,
        response_format=True,
        gpt_params=False,
        input_fidelity=False,
        transparent_background="no",
        mask_from_input_alpha=False,
        seconds_by_quality=(10.0, 15.0, 25.0),
        streams=False,
        max_partial_images=0,
    ),
    GPT_IMAGE_1: Family(
        name=GPT_IMAGE_1,
        endpoints=frozenset({ENDPOINT_EDITS, ENDPOINT_GENERATIONS}),
        sizes=("1024x1024", "1536x1024", "1024x1536"),
        free_sizes=None,
        allows_auto_size=True,
        prompt_max=32000,
        max_images=16,
        max_upload_bytes=50 * MB,
        input_mimetypes=GPT_INPUT_MIMETYPES,
        square_input=False,
        qualities=("low", "medium", "high", "auto"),
        n_max=10,
        response_format=False,
        gpt_params=True,
        input_fidelity=True,
        transparent_background="yes",
        mask_from_input_alpha=True,
        seconds_by_quality=(15.0, 35.0, 75.0),
        streams=True,
        max_partial_images=3,
    ),
    GPT_IMAGE_2: Family(
        name=GPT_IMAGE_2,
        endpoints=frozenset({ENDPOINT_EDITS, ENDPOINT_GENERATIONS}),
        sizes=("1024x1024", "1536x1024", "1024x1536"),  # the standard sizes; any size passing free_sizes is fine
        free_sizes=FreeSizeRule(),
        allows_auto_size=True,
        prompt_max=32000,
        max_images=16,
        max_upload_bytes=50 * MB,
        input_mimetypes=GPT_INPUT_MIMETYPES,
        square_input=False,
        qualities=("low", "medium", "high", "auto"),
        n_max=10,
        response_format=False,
        gpt_params=True,
        input_fidelity=False,
        transparent_background="preview",
        mask_from_input_alpha=False,  # gpt-image-2 ignores input transparency: the mask must be its own PNG
        seconds_by_quality=(20.0, 60.0, 180.0),
        streams=True,
        max_partial_images=3,
    ),
    # Released 2026-09-08 (gpt-image-2.5-flare / -sunburst, snapshots -2026-09-08): gpt-image-2's request
    # format and sizes, two more quality tiers (xhigh, max), which gpt-image-2 refuses with a 400.
    GPT_IMAGE_2_5: Family(
        name=GPT_IMAGE_2_5,
        endpoints=frozenset({ENDPOINT_EDITS, ENDPOINT_GENERATIONS}),
        sizes=("1024x1024", "1536x1024", "1024x1536"),
        free_sizes=FreeSizeRule(),
        allows_auto_size=True,
        prompt_max=32000,
        max_images=16,
        max_upload_bytes=50 * MB,
        input_mimetypes=GPT_INPUT_MIMETYPES,
        square_input=False,
        qualities=("low", "medium", "high", "xhigh", "max", "auto"),
        n_max=10,
        response_format=False,
        gpt_params=True,
        input_fidelity=False,
        transparent_background="preview",
        mask_from_input_alpha=False,
        # no published timings: gpt-image-2's, and 1.5x / 2x its high for the tiers above (shown as a range)
        seconds_by_quality=(20.0, 60.0, 180.0),
        extra_quality_seconds=(("xhigh", 270.0), ("max", 360.0)),
        streams=True,  # gpt-image-2's request format, streams included ("swap the model name", the reports say)
        max_partial_images=3,
    ),
    # Released 2026-11-04 (gpt-image-2.6-flare / -sunburst): 2.5's rules plus ``complexity`` (low, medium,
    # high; high when omitted), GIF and SVG output, and markup edits (never together with a mask).
    GPT_IMAGE_2_6: Family(
        name=GPT_IMAGE_2_6,
        endpoints=frozenset({ENDPOINT_EDITS, ENDPOINT_GENERATIONS}),
        sizes=("1024x1024", "1536x1024", "1024x1536"),
        free_sizes=FreeSizeRule(),
        allows_auto_size=True,
        prompt_max=32000,
        max_images=16,
        max_upload_bytes=50 * MB,
        input_mimetypes=GPT_INPUT_MIMETYPES,
        square_input=False,
        qualities=("low", "medium", "high", "xhigh", "max", "auto"),
        n_max=10,
        response_format=False,
        gpt_params=True,
        input_fidelity=False,
        transparent_background="yes",  # the 2.6 prompting guide: both models support transparent backgrounds
        mask_from_input_alpha=False,
        seconds_by_quality=(20.0, 60.0, 180.0),
        extra_quality_seconds=(("xhigh", 270.0), ("max", 360.0)),
        output_formats=("png", "jpeg", "webp", "gif", "svg"),
        complexities=("low", "medium", "high"),
        markup=True,
        streams=True,
        max_partial_images=3,
    ),
}

#: Which family an id belongs to, by pattern, first match wins. Dated snapshots and later point releases
#: (``gpt-image-2.5-sunburst``) fall into their family without a code change.
_FAMILY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^dall-e-2$"), DALL_E_2),
    (re.compile(r"^dall-e-3$"), DALL_E_3),
    (re.compile(r"^chatgpt-image-latest$"), GPT_IMAGE_1),
    (re.compile(r"^gpt-image-1(\.\d+)?(-mini)?(-\d{4}-\d{2}-\d{2})?$"), GPT_IMAGE_1),
    (re.compile(r"^gpt-image-2\.5([.\-].*)?$"), GPT_IMAGE_2_5),
    (re.compile(r"^gpt-image-2\.6([.\-].*)?$"), GPT_IMAGE_2_6),
    (re.compile(r"^gpt-image-2([.\-].*)?$"), GPT_IMAGE_2),
)

#: Prefixes that mark an id in ``GET /models`` as an image model (OpenAI's naming).
IMAGE_MODEL_PREFIXES = ("gpt-image", "chatgpt-image", "dall-e")

#: Family whose rules an id nobody has seen gets, unless the user set a rule for it.
DEFAULT_FAMILY_FOR_UNKNOWN = GPT_IMAGE_2


def parse_size(size: str) -> tuple[int, int] | None:
    """``"1536x1024"`` -> (1536, 1024); anything else -> None."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*", size or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def known_family_name(model_id: str) -> str | None:
    """The family an OpenAI id belongs to by its name, or None for an id the engine has never seen."""
    for pattern, family in _FAMILY_PATTERNS:
        if pattern.match(model_id):
            return family
    return None


def family_for(model_id: str, user_rules: Mapping[str, str] | None = None) -> Family:
    """The family whose rules apply to ``model_id``.

    ``user_rules`` maps a model id to a family name (from settings, or remembered after a server refused a
    size): it wins, so a user can teach the engine about an OpenAI-compatible server's own models. An id
    nobody knows gets the gpt-image-2 rules, the most permissive ones that OpenAI's current models follow.
    """
    if user_rules and model_id in user_rules and user_rules[model_id] in FAMILIES:
        return FAMILIES[user_rules[model_id]]
    return FAMILIES[known_family_name(model_id) or DEFAULT_FAMILY_FOR_UNKNOWN]


def is_image_model_id(model_id: str, extra_ids: tuple[str, ...] = ()) -> bool:
    """Does ``GET /models`` list this id as an image model (or did the user name it as one)?"""
    return model_id.startswith(IMAGE_MODEL_PREFIXES) or model_id in extra_ids


def supports_input_fidelity(model_id: str, family: Family) -> bool:
    """``input_fidelity`` is for gpt-image-1 and gpt-image-1.5 (and chatgpt-image-latest), not the -mini."""
    return family.input_fidelity and "-mini" not in model_id


def supports_endpoint(family: Family, endpoint: str) -> bool:
    return endpoint in family.endpoints


def expected_seconds(family: Family, quality: str, width: int, height: int) -> tuple[float, float]:
    """(typical, worst) seconds one request should take; used to show time against a range, not a frozen bar.

    Scales with pixel count relative to 1024x1024; 'auto' is treated as medium.
    """
    low, medium, high = family.seconds_by_quality
    base = {"low": low, "medium": medium, "high": high, **dict(family.extra_quality_seconds)}.get(quality, medium)
    scale = max(1.0, (width * height) / (1024 * 1024))
    typical = base * scale
    return typical, typical * 1.8
