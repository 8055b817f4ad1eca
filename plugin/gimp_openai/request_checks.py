"""The checks of a request against its model family's rules, made before anything is sent or paid for.

One implementation and one wording for every caller: the client runs them as the gate before each paid request,
whoever calls it; the operations run them first, before any pixel work, so a wrong prompt or n is said at once
rather than after the upload was prepared. The rules themselves are the family table in ``capabilities``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from . import capabilities as caps
from . import errors as E


def sniff_mimetype(data: bytes) -> str | None:
    """image/png, image/jpeg or image/webp from the first bytes; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, without decoding; None if not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def check_endpoint(model: str, family: caps.Family, endpoint: str) -> None:
    if not caps.supports_endpoint(family, endpoint):
        raise E.UnsupportedModelError(
            f"{model} ({family.name} family) does not serve /images/{endpoint}",
            hint="Choose another model; variations with GPT image models run as an edit with a variation prompt.",
        )


def check_prompt(prompt: str, family: caps.Family) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise E.InvalidInputError("The prompt is empty", hint="Describe what the selection should become.")
    if "\x00" in prompt:
        raise E.InvalidInputError("The prompt contains a NUL character",
                                  hint="Remove the invisible control character from the prompt and try again.")
    if len(prompt) > family.prompt_max:
        raise E.InvalidInputError(
            f"The prompt has {len(prompt):,} characters; {family.name} models take at most {family.prompt_max:,}",
            hint="Shorten the prompt.",
        )


def check_n(n: int, family: caps.Family) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= family.n_max:
        raise E.InvalidInputError(f"n must be a whole number from 1 to {family.n_max} for {family.name}; got {n!r}",
                                  hint="Ask for fewer images.")


def check_size(size: str | None, family: caps.Family) -> None:
    if size is None:
        return
    problem = family.check_size(size)
    if problem:
        raise E.InvalidInputError(problem, param="size")


def check_quality(quality: str | None, family: caps.Family) -> None:
    if quality is not None and quality not in family.qualities:
        raise E.InvalidInputError(f"quality {quality!r} is not one of {', '.join(family.qualities)} for {family.name}")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise E.InvalidInputError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_upload_size(data: bytes, family: caps.Family, what: str) -> None:
    if family.max_upload_bytes and len(data) > family.max_upload_bytes:
        raise E.ImageTooLargeError(
            f"{what.capitalize()} is {len(data) / 1048576:.1f} MB after encoding; {family.name} takes at most "
            f"{family.max_upload_bytes / 1048576:.0f} MB",
            hint="Select a smaller region, or use a model that accepts larger uploads.",
        )


def check_upload(data: bytes, family: caps.Family, what: str, model: str) -> str:
    """Content type of an input image after checking it is one the family takes, within size and shape."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise E.UnreadableImageError(f"{what.capitalize()} is empty")
    ctype = sniff_mimetype(bytes(data[:16]))
    if ctype is None:
        raise E.UnreadableImageError(f"{what.capitalize()} is not a PNG, JPEG or WebP image")
    if ctype not in family.input_mimetypes:
        raise E.InvalidInputError(f"{model} takes {', '.join(family.input_mimetypes)} input, not {ctype}")
    check_upload_size(data, family, what)
    if family.square_input:
        dims = png_size(data)
        if dims and dims[0] != dims[1]:
            raise E.InvalidInputError(f"{model} takes square images only; {what} is {dims[0]}x{dims[1]}")
    return ctype
