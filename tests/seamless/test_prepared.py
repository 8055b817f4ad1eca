"""prepare_seamless (computed while the engine waits for the server) changes nothing in what make_seamless gives."""

from __future__ import annotations

import numpy as np
from gimp_openai.seamless import make_seamless, prepare_seamless


def _case(shift: tuple[int, int] = (3, -2), tone: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    import cv2

    base = cv2.GaussianBlur((rng.random((320, 320, 3)) * 255).astype(np.uint8), (5, 5), 1.2)
    original = np.dstack([base, np.full((320, 320), 255, np.uint8)])
    result = np.roll(original, shift, axis=(0, 1)).copy()
    result[..., :3] = np.clip(result[..., :3].astype(np.int16) + tone, 0, 255).astype(np.uint8)
    sel = np.zeros((320, 320), np.uint8)
    sel[100:220, 90:230] = 255
    return original, result, sel


def test_prepared_gives_the_same_pixels_and_report() -> None:
    original, result, sel = _case()
    plain = make_seamless(original, result, sel)
    prepared = prepare_seamless(original, sel)
    ahead = make_seamless(original, result, sel, prepared=prepared)
    assert ahead.report == plain.report
    assert np.array_equal(ahead.image, plain.image)
    assert "shifted" in ahead.report and "tone" in ahead.report


def test_prepared_for_other_arrays_is_ignored() -> None:
    original, result, sel = _case()
    other = prepare_seamless(original.copy(), sel.copy())
    out = make_seamless(original, result, sel, prepared=other)
    assert np.array_equal(out.image, make_seamless(original, result, sel).image)


def test_prepared_aligned_result_untouched() -> None:
    original, _, sel = _case()
    out = make_seamless(original, original.copy(), sel, prepared=prepare_seamless(original, sel))
    assert np.array_equal(out.image, original)
