"""Make a model result sit seamlessly in the original: alignment, tone match, gradient-domain blend (issue 10).

`make_seamless` is the one entry point (operations.py calls it for every returned image, after scaling it
back to the crop and before compositing through the layer mask). It never modifies its inputs; when nothing
needs correcting and blend is "feather", `image` is byte-identical to `result`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .align import apply_alignment, estimate_alignment
from .blend import poisson_blend
from .tone import lab_ready, match_tone, ring_window, warm_up_lab

__all__ = ["BLEND_MODES", "SeamlessResult", "make_seamless"]

BLEND_MODES = ("feather", "poisson")


@dataclass
class SeamlessResult:
    """`image`: place-sized RGBA uint8, the result aligned and tone-matched (Poisson-blended inside the
    selection in blend="poisson"); `report`: one human sentence; `details`: JSON-able, for history sidecars."""

    image: np.ndarray
    report: str
    details: dict = field(default_factory=dict)


def _check(original: np.ndarray, result: np.ndarray, selection: np.ndarray, blend: str) -> None:
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, not {blend!r}")
    for name, arr in (("original", original), ("result", result)):
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
            raise ValueError(f"{name} must be RGBA uint8 (H, W, 4), got {arr.dtype} {arr.shape}")
    if original.shape != result.shape:
        raise ValueError(f"original {original.shape[:2]} and result {result.shape[:2]} differ in size")
    if selection.dtype != np.uint8 or selection.shape != original.shape[:2]:
        raise ValueError(f"selection must be uint8 {original.shape[:2]}, got {selection.dtype} {selection.shape}")


def _sharp_window(selection: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) to resample bicubic: the selection's bounding box (the only pixels the layer mask
    shows: it is 0 outside the selection, always) grown to hold the tone-match ring (sampled from it)."""
    selected = selection > 0
    if not selected.any():
        return 0, 0, 0, 0
    return ring_window(selected)[1]


def make_seamless(original: np.ndarray, result: np.ndarray, selection: np.ndarray, *, align: bool = True,
                  tone_match: bool = True, blend: str = "feather") -> SeamlessResult:
    """Align `result` to `original` over the context, match its tone, and optionally Poisson-blend it.

    `original`, `result`: same-sized RGBA uint8; `selection`: uint8, 255 = selected (soft edges allowed).
    """
    _check(original, result, selection, blend)
    if tone_match and not selection.all():  # without context there is no tone to match: no Lab work at all
        warm_up_lab()   # OpenCV's Lab tables, set up on another core while the alignment runs
    try:
        return _corrected(original, result, selection, align, tone_match, blend)
    finally:
        lab_ready()  # never leave the warm-up running: an engine exiting under it aborts (see lab_ready)


def _corrected(original: np.ndarray, result: np.ndarray, selection: np.ndarray, align: bool, tone_match: bool,
               blend: str) -> SeamlessResult:
    image = result
    parts: list[str] = []
    details: dict = {"alignment": None, "tone": None, "blend": blend}
    valid = None
    window = _sharp_window(selection)

    if align:
        found = estimate_alignment(original, result, selection)
        details["alignment"] = found.to_dict()
        if found.applied:
            image, valid = apply_alignment(result, found.matrix, window)
            text = f"shifted {found.dx:.1f}, {found.dy:.1f} px; scale {found.scale:.3f}"
            if abs(found.angle_deg) >= 0.05:
                text += f"; rotated {found.angle_deg:.2f}°"
            parts.append(text)
        elif found.note == "aligned already":
            parts.append("aligned already")
        else:
            parts.append(f"not aligned: {found.note} — composited as returned")

    if tone_match:
        tone = match_tone(original, image, selection, valid, window, in_place=image is not result)
        details["tone"] = tone.to_dict()
        if tone.applied:
            image = tone.image
            parts.append(f"tone ΔE {tone.delta_e_before:.1f} → {tone.delta_e_after:.1f}")
        elif tone.delta_e_before is not None:
            parts.append(f"tone ΔE {tone.delta_e_before:.1f} (no change)")
        else:
            parts.append(f"tone not matched: {tone.note}")

    if blend == "poisson":
        # align and tone hand back fresh arrays: blend into those in place (only `result` must stay untouched)
        image = poisson_blend(original, image, selection, in_place=image is not result)
        parts.append("Poisson-blended")

    if image is result:
        image = result.copy()
    report = "; ".join(parts) if parts else "no corrections requested"
    return SeamlessResult(image=image, report=report, details=details)
