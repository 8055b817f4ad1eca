"""GPT-like re-rendering: the edit result is the WHOLE input re-drawn with a small shift,
scale and rotation and a tone change, plus a visible edit inside the mask, as GPT image models return it.
This lets alignment and tone matching be tested end to end offline.

Selected by ``--render gpt-like`` (server default) or per request by ``X-Render``::

    X-Render: gpt-like                       # the defaults below
    X-Render: inpaint                        # plain inpainting, outside pixels untouched
    X-Render: shift=5.8,-3.9;scale=1.012;rotate=0.3;tone=brightness:1.08,hue:6,saturation:0.9;edit=1

Keys left out of an explicit spec are the identity (no shift, scale 1, no rotation, no tone change, edit 1).
Geometry is in output pixels: a point ``p`` of the (edited, resized) input lands at
``c + scale * R(rotate) (p - c) + shift`` with ``c`` the image centre, ``R`` OpenCV's rotation (positive =
counter-clockwise on screen). ``/_stats`` records the spec and the 2x3 matrix mapping input to output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gimp_openai.server import offline


@dataclass(frozen=True)
class RenderSpec:
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    rotate: float = 0.0
    brightness: float = 1.0
    hue: float = 0.0
    saturation: float = 1.0
    edit: bool = True


GPT_LIKE = RenderSpec(shift=(5.8, -3.9), scale=1.012, rotate=0.3, brightness=1.08, hue=6.0, saturation=0.9)


class RenderSyntaxError(ValueError):
    pass


def parse_render(text: str | None) -> RenderSpec | None:
    """None means plain inpainting."""
    text = (text or "").strip()
    if text in ("", "inpaint", "none", "off"):
        return None
    if text == "gpt-like":
        return GPT_LIKE
    values: dict[str, object] = {}
    try:
        for piece in text.split(";"):
            name, sep, value = piece.strip().partition("=")
            name = name.strip().lower()
            if not sep:
                raise RenderSyntaxError(f"render option {piece!r}: expected NAME=VALUE")
            if name == "shift":
                dx, dy = (float(v) for v in value.split(","))
                values["shift"] = (dx, dy)
            elif name in ("scale", "rotate"):
                values[name] = float(value)
            elif name == "edit":
                values["edit"] = value.strip().lower() not in ("0", "false", "no")
            elif name == "tone":
                for item in value.split(","):
                    key, _, number = item.partition(":")
                    key = key.strip().lower()
                    if key not in ("brightness", "hue", "saturation"):
                        raise RenderSyntaxError(f"tone key {key!r}: use brightness, hue, saturation")
                    values[key] = float(number)
            else:
                raise RenderSyntaxError(f"render option {name!r}: use shift, scale, rotate, tone, edit")
    except ValueError as exc:
        if isinstance(exc, RenderSyntaxError):
            raise
        raise RenderSyntaxError(f"render spec {text!r}: {exc}") from None
    return RenderSpec(**values)  # type: ignore[arg-type]


def matrix(spec: RenderSpec, size: tuple[int, int]) -> np.ndarray:
    import cv2

    width, height = size
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    m = cv2.getRotationMatrix2D(centre, spec.rotate, spec.scale)
    m[0, 2] += spec.shift[0]
    m[1, 2] += spec.shift[1]
    return m


def render(pixels: np.ndarray, hole: np.ndarray, spec: RenderSpec, *, seed: int) -> tuple[np.ndarray, dict]:
    """Edit inside ``hole`` (when ``spec.edit``), then re-render the whole picture; returns (RGBA, record)."""
    import cv2

    height, width = hole.shape
    edited = offline.visible_edit(pixels, hole, seed=seed) if spec.edit else pixels.copy()
    m = matrix(spec, (width, height))
    warped = cv2.warpAffine(edited, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    warped[..., :3] = offline.tone(warped[..., :3], brightness=spec.brightness, hue=spec.hue,
                                   saturation=spec.saturation)
    record = asdict(spec)
    record["shift"] = list(spec.shift)
    record["matrix"] = [[float(v) for v in row] for row in m]
    return warped, record
