"""The seamless figures over 100 random cases each (asserted); the benchmark prints them with the baseline."""

import io
import time

import numpy as np
import pytest
from gimp_openai.seamless import make_seamless
from PIL import Image

from tests.seamless.figures import aligned_figures, alignment_figures, noise_figures, tone_figures
from tests.seamless.scenes import make_case

N = 100


def test_alignment_residual_is_at_most_half_a_pixel():
    fig = alignment_figures(N)
    assert fig.applied == N
    assert max(fig.values) <= 0.5, fig.line("alignment", "px")


def test_exactly_aligned_results_get_no_correction():
    fig = aligned_figures(N)
    assert fig.applied == 0
    assert fig.identical == N


def test_tone_shift_is_matched_to_within_delta_e_2():
    fig = tone_figures(N)
    assert max(fig.values) <= 2.0, fig.line("tone", "ΔE2000")
    assert np.mean(fig.baseline) > 3 * np.mean(fig.values)


def test_noise_gets_no_correction_and_a_reason():
    fig = noise_figures(N)
    assert fig.applied == 0
    assert all(note.startswith("the result does not match the original outside the selection")
               for note in fig.notes), set(fig.notes)


def _png_round_trip(rgba: np.ndarray) -> float:
    start = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    Image.open(io.BytesIO(buf.getvalue())).load()
    return time.perf_counter() - start


@pytest.mark.bench
def test_bench_figures(capsys):
    align = alignment_figures(N)
    aligned = aligned_figures(N)
    tone = tone_figures(N)
    tone_warped = tone_figures(N, seed=5000, warp=True)
    noise = noise_figures(N)
    lines = [align.line("alignment residual over the context (max per case)", "px"),
             f"exactly aligned: corrections applied {aligned.applied}/{N}; "
             f"image byte-identical {aligned.identical}/{N}",
             tone.line("tone ΔE2000 over unchanged selected pixels (mean per case)", ""),
             tone_warped.line("tone + shift/scale ΔE2000 over unchanged selected pixels", ""),
             f"noise: corrections applied {noise.applied}/{N}; notes {sorted(set(noise.notes))[:2]}"]
    # Cost on a 2048² crop, beside a PNG encode+decode of it (a proxy for the engine's own work).
    case = make_case(np.random.default_rng(7), (2048, 2048), max_shift=40, max_scale=0.02, max_angle=0.5,
                     tone=(0.06, 4.0, 0.1))
    timings = {}
    for blend in ("feather", "poisson"):
        best = min(_timed(case, blend) for _ in range(3))
        timings[blend] = best
    png = min(_png_round_trip(case.result) for _ in range(3))
    lines.append(f"2048² crop: make_seamless feather {timings['feather']:.3f} s, poisson {timings['poisson']:.3f} s; "
                 f"PNG encode+decode {png:.3f} s (ratio poisson/png {timings['poisson'] / png:.2f})")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def _timed(case, blend):
    start = time.perf_counter()
    make_seamless(case.original, case.result, case.selection, blend=blend)
    return time.perf_counter() - start
