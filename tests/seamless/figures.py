"""The seamless figures (alignment residual, tone ΔE) over random cases; shared by the tests and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gimp_openai.seamless import make_seamless
from gimp_openai.seamless.align import context_mask
from gimp_openai.seamless.tone import delta_e_2000, rgb_to_lab

from tests.seamless.scenes import make_case, noise_result


def composite(original: np.ndarray, image: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """Mask 0 -> original bytes, else blend by the mask (what the caller does through the layer mask)."""
    a = selection.astype(np.float32)[..., None] / 255.0
    mixed = np.clip(original * (1 - a) + image * a + 0.5, 0, 255).astype(np.uint8)
    return np.where(selection[..., None] == 0, original, mixed)


@dataclass
class Figures:
    values: list[float] = field(default_factory=list)      # per case, with correction
    baseline: list[float] = field(default_factory=list)    # per case, without
    applied: int = 0
    notes: list[str] = field(default_factory=list)
    identical: int = 0

    def line(self, name: str, unit: str) -> str:
        v, b = np.array(self.values), np.array(self.baseline)
        text = f"{name}: corrected mean {v.mean():.3f} / max {v.max():.3f} {unit}"
        if b.size:
            text += f"; uncorrected mean {b.mean():.3f} / max {b.max():.3f} {unit}"
        return text + f"; corrections applied in {self.applied}/{len(self.values)}"


def _context_points(selection: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(context_mask(selection, 0))
    return np.column_stack([xs, ys]).astype(float)


def alignment_figures(n: int, seed: int = 1000) -> Figures:
    """Shift up to ±12 px, scale up to ±3 %, rotation up to ±1°: residual max displacement over the context."""
    fig = Figures()
    for i in range(n):
        case = make_case(np.random.default_rng(seed + i))
        out = make_seamless(case.original, case.result, case.selection, tone_match=False)
        a = out.details["alignment"]
        m = np.array(a["matrix"]) if a["applied"] else np.array([[1.0, 0, 0], [0, 1.0, 0]])
        pts = _context_points(case.selection)
        true = pts @ case.forward[:, :2].T + case.forward[:, 2]
        fig.values.append(float(np.linalg.norm(true - (pts @ m[:, :2].T + m[:, 2]), axis=1).max()))
        fig.baseline.append(float(np.linalg.norm(true - pts, axis=1).max()))
        fig.applied += int(a["applied"])
    return fig


def aligned_figures(n: int, seed: int = 2000) -> Figures:
    """Exactly aligned results (the inside changed): how many corrections, how many byte-identical images."""
    fig = Figures()
    for i in range(n):
        case = make_case(np.random.default_rng(seed + i), warp=False)
        out = make_seamless(case.original, case.result, case.selection)
        fig.applied += int(out.details["alignment"]["applied"] or out.details["tone"]["applied"])
        fig.identical += int(np.array_equal(out.image, case.result))
        fig.values.append(0.0)
    return fig


def tone_figures(n: int, seed: int = 3000, warp: bool = False) -> Figures:
    """Brightness ±10 %, hue ±8°, saturation ±15 %: mean ΔE2000 composite vs original over the selected pixels
    the model did not change."""
    fig = Figures()
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        tone = (float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-8, 8)), float(rng.uniform(-0.15, 0.15)))
        case = make_case(rng, warp=warp, tone=tone)
        out = make_seamless(case.original, case.result, case.selection)
        unchanged = (case.selection == 255) & ~case.changed
        ref = rgb_to_lab(case.original[unchanged])
        fixed = composite(case.original, out.image, case.selection)[unchanged]
        raw = composite(case.original, case.result, case.selection)[unchanged]
        fig.values.append(float(delta_e_2000(ref, rgb_to_lab(fixed)).mean()))
        fig.baseline.append(float(delta_e_2000(ref, rgb_to_lab(raw)).mean()))
        fig.applied += int(out.details["tone"]["applied"])
    return fig


def noise_figures(n: int, seed: int = 4000) -> Figures:
    """Pure-noise results: corrections applied (should be none) and the notes saying why."""
    fig = Figures()
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        case = make_case(rng, warp=False)
        out = make_seamless(case.original, noise_result(rng, case.original), case.selection)
        fig.applied += int(out.details["alignment"]["applied"])
        fig.notes.append(out.details["alignment"]["note"])
        fig.values.append(float(out.details["alignment"]["confidence"]))
    return fig
