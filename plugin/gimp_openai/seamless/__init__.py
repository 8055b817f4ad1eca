"""Make a model result sit seamlessly in the original: alignment, tone match, gradient-domain blend.

`make_seamless` is the one entry point (operations.py calls it for every returned image, after scaling it
back to the crop and before compositing through the layer mask). It never modifies its inputs; when nothing
needs correcting and blend is "feather", `image` is byte-identical to `result`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .align import AlignContext, estimate_alignment, prepare_alignment
from .apply import apply_corrections, warp
from .blend import poisson_blend
from .tone import (
    ToneContext,
    ToneFit,
    Window,
    apply_lab_transform,
    bounding_box,
    fit_tone,
    prepare_tone,
    ring_window,
)

__all__ = ["BLEND_MODES", "Prepared", "SeamlessResult", "make_seamless", "prepare_seamless", "replay"]

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


def corrected_windows(selection: np.ndarray) -> tuple[Window, Window]:
    """(sharp, toned): where the corrections reach in full.

    sharp: the selection's bounding box, all the layer mask can show (it is 0 outside the selection, always): an
    aligned result is resampled bicubic there, bilinear elsewhere (OpenCV's bicubic warp of 8-bit RGBA costs ~30
    ns a pixel where bilinear costs ~4, and the bilinear parts show only where the artist paints the mask wider).
    toned: that box grown by the tone ring's reach (a quarter of the selection's side, 8..128 px): tone-mapped, so
    painting the mask a little wider still shows matching colours; beyond it the layer keeps the model's colours.
    """
    selected = selection > 0
    if not selected.any():
        return (0, 0, 0, 0), (0, 0, 0, 0)
    return bounding_box(selected), ring_window(selected)[1]


@dataclass
class Prepared:
    """What make_seamless needs from the original and the selection alone, computed BEFORE the result exists
    (operations.edit runs `prepare_seamless` while the engine waits for the server: seconds, where this is a
    few hundred milliseconds), so only result-dependent work is left when the response arrives. Holds the
    very arrays it was made from: make_seamless uses it only for those (same objects)."""

    original: np.ndarray
    selection: np.ndarray
    sharp: Window
    window: Window
    align: AlignContext | None
    tone: ToneContext | None

    def fits(self, original: np.ndarray, selection: np.ndarray) -> bool:
        return original is self.original and selection is self.selection


def prepare_seamless(original: np.ndarray, selection: np.ndarray, *, align: bool = True,
                     tone_match: bool = True) -> Prepared:
    """The result-independent part of make_seamless: the sharp window, the alignment's work level and context
    of the original, the tone ring and the original's Lab over it; OpenCV's Lab tables are set up on the way
    (its one-time ~90 ms)."""
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 4:
        raise ValueError(f"original must be RGBA uint8 (H, W, 4), got {original.dtype} {original.shape}")
    if selection.dtype != np.uint8 or selection.shape != original.shape[:2]:
        raise ValueError(f"selection must be uint8 {original.shape[:2]}, got {selection.dtype} {selection.shape}")
    align_ctx = prepare_alignment(original, selection) if align else None
    tone_ctx = prepare_tone(original, selection) if tone_match and not selection.all() and selection.any() else None
    return Prepared(original, selection, *corrected_windows(selection), align_ctx, tone_ctx)


def make_seamless(original: np.ndarray, result: np.ndarray, selection: np.ndarray, *, align: bool = True,
                  tone_match: bool = True, blend: str = "feather", prepared: Prepared | None = None) -> SeamlessResult:
    """Align `result` to `original` over the context, match its tone, and optionally Poisson-blend it.

    `original`, `result`: same-sized RGBA uint8; `selection`: uint8, 255 = selected (soft edges allowed).
    `prepared`: `prepare_seamless(original, selection, ...)` computed ahead; ignored unless made from these
    very arrays.
    """
    _check(original, result, selection, blend)
    if prepared is not None and not prepared.fits(original, selection):
        prepared = None
    return _corrected(original, result, selection, align, tone_match, blend, prepared)


def _fit_beside_warp(original: np.ndarray, result: np.ndarray, selection: np.ndarray, matrix: np.ndarray | None,
                     sharp: Window, tone_ctx: ToneContext | None) -> tuple[np.ndarray, ToneFit]:
    """(the result warped by `matrix`, or `result` itself without one; the tone fit). The fit samples the result
    where the map puts the ring, so it does not wait for the warp: it runs on its own core meanwhile (OpenCV's
    warp leaves a core partly idle; the fit is single-threaded numpy)."""
    if matrix is None:
        return result, fit_tone(original, result, selection, None, tone_ctx)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seamless-fit") as pool:
        pending = pool.submit(fit_tone, original, result, selection, matrix, tone_ctx)
        warped = warp(result, matrix, sharp)
        return warped, pending.result()


def _corrected(original: np.ndarray, result: np.ndarray, selection: np.ndarray, align: bool, tone_match: bool,
               blend: str, prepared: Prepared | None = None) -> SeamlessResult:
    """Estimate the alignment; warp by it while the tone is fitted (the fit samples the result where the map puts
    the ring); map the tone in place; then blend."""
    parts: list[str] = []
    details: dict = {"alignment": None, "tone": None, "blend": blend}
    sharp, window = (prepared.sharp, prepared.window) if prepared is not None else corrected_windows(selection)
    matrix = None

    if align:
        found = estimate_alignment(original, result, selection, prepared.align if prepared is not None else None)
        details["alignment"] = found.to_dict()
        if found.applied:
            matrix = found.matrix
            text = f"shifted {found.dx:.1f}, {found.dy:.1f} px; scale {found.scale:.3f}"
            if abs(found.angle_deg) >= 0.05:
                text += f"; rotated {found.angle_deg:.2f}°"
            parts.append(text)
        elif found.note == "aligned already":
            parts.append("aligned already")
        else:
            parts.append(f"not aligned: {found.note} — composited as returned")

    image = result
    tone_m = None
    if tone_match:
        image, tone = _fit_beside_warp(original, result, selection, matrix, sharp,
                                       prepared.tone if prepared is not None else None)
        details["tone"] = tone.to_dict()
        if tone.applied and tone.m is not None:
            tone_m = tone.m
            parts.append(f"tone ΔE {tone.delta_e_before:.1f} → {tone.delta_e_after:.1f}")
            if image is result:   # a new image: the frame copied, the window mapped
                image = apply_corrections(result, None, tone.m, window)
            else:                 # the warped image is ours: mapped in place
                apply_lab_transform(image, tone.m, window=window, out=image)
        elif tone.delta_e_before is not None:
            parts.append(f"tone ΔE {tone.delta_e_before:.1f} (no change)")
        else:
            parts.append(f"tone not matched: {tone.note}")
    elif matrix is not None:
        image = warp(result, matrix, sharp)

    details["replay"] = _replay_record(matrix, tone_m, sharp, window, blend)
    if blend == "poisson":
        # the corrections hand back a fresh array: blend into it in place (only `result` must stay untouched)
        image = poisson_blend(original, image, selection, in_place=image is not result)
        parts.append("Poisson-blended")

    if image is result:
        image = result.copy()
    report = "; ".join(parts) if parts else "no corrections requested"
    return SeamlessResult(image=image, report=report, details=details)


# --- the corrections again, without the original -------------------------------------------------------------

def _replay_record(matrix: np.ndarray | None, lab: np.ndarray | None, sharp: Window, window: Window,
                   blend: str) -> dict:
    """What :func:`replay` needs to put the same corrections into the same result later, in full precision (JSON
    keeps a float's every bit): the history keeps it in the sidecar, so a result brought back from history is the
    layer the run inserted, not the raw answer."""
    return {
        "matrix": None if matrix is None else np.asarray(matrix, np.float64).tolist(),
        "lab": None if lab is None else np.asarray(lab).tolist(),
        "lab_dtype": None if lab is None else str(np.asarray(lab).dtype),
        "sharp": [int(v) for v in sharp], "window": [int(v) for v in window], "poisson": blend == "poisson",
    }


def replay(result: np.ndarray, record: dict) -> np.ndarray:
    """``result`` (place-sized RGBA, as the model returned it and scaled to the place) with the corrections a run
    found (``details["replay"]``), applied exactly as :func:`_corrected` applied them: the warp (bicubic in the
    sharp window), then the Lab map in the toned window. Byte-identical to the run's layer except after a Poisson
    blend, which needs the original (``record["poisson"]``: the caller says so). ValueError for a record that
    does not fit this result."""
    damaged = ValueError("not a record of corrections")
    try:
        if (record.get("lab_dtype") or "float64") not in ("float32", "float64"):
            raise damaged
        matrix = None if record.get("matrix") is None else np.array(record["matrix"], np.float64)
        lab = None if record.get("lab") is None else np.array(record["lab"], np.dtype(record.get("lab_dtype") or
                                                                                       "float64"))
        sharp = tuple(int(v) for v in record["sharp"])
        window = tuple(int(v) for v in record["window"])
    except (AttributeError, KeyError, TypeError, ValueError):
        raise damaged from None
    if matrix is not None and (matrix.shape != (2, 3) or not np.isfinite(matrix).all()) or \
            lab is not None and (lab.shape not in ((3, 3), (3, 4)) or not np.isfinite(lab).all()) or \
            len(sharp) != 4 or len(window) != 4:
        raise damaged
    height, width = result.shape[:2]
    for y0, y1, x0, x1 in (sharp, window):
        if not (0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width):
            raise ValueError("its windows lie outside this result")
    if matrix is None:
        return apply_corrections(result, None, lab, window) if lab is not None else result.copy()
    image = warp(result, matrix, sharp)
    if lab is not None:
        apply_lab_transform(image, lab, window=window, out=image)
    return image
