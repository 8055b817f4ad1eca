"""apply.py's warp (bicubic in the sharp box, bilinear around it) against OpenCV's own whole-image warps; the
threaded, banded Lab map (tone.apply_lab_transform) in a window against the same map of the window alone;
in_bands' threads and errors."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from gimp_openai.seamless import apply, corrected_windows, tone
from gimp_openai.seamless.tone import apply_lab_transform

from tests.seamless.scenes import rgba, similarity, textured_image

BRIGHTER = np.array([[1.02, 0.0, 0.0, 4.0], [0.0, 0.95, 0.02, -2.0], [0.0, 0.01, 1.05, 3.0]])


def _image(h: int = 120, w: int = 150, seed: int = 1) -> np.ndarray:
    img = rgba(textured_image(np.random.default_rng(seed), h, w))
    img[..., 3] = np.random.default_rng(seed + 1).integers(1, 256, (h, w))   # alpha must travel with the pixels
    return img


def _whole(img: np.ndarray, m: np.ndarray, flags: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=flags | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("sharp", [(20, 90, 30, 110), (0, 120, 0, 150), (0, 0, 0, 0), (119, 120, 149, 150)])
def test_warp_is_bicubic_in_the_sharp_box_and_bilinear_around_it(sharp):
    img = _image()
    m = similarity(2.3, -1.7, 1.013, 0.4, (74.5, 59.5))
    out = apply.warp(img, m, sharp)
    cubic, linear = _whole(img, m, cv2.INTER_CUBIC), _whole(img, m, cv2.INTER_LINEAR)
    inside = np.zeros(img.shape[:2], bool)
    y0, y1, x0, x1 = sharp
    inside[y0:y1, x0:x1] = True
    # the same OpenCV warps, only counted from another origin. OpenCV 5 then differs by at most one level;
    # OpenCV 4 rounds source coordinates to 1/32 px, so on this per-pixel random alpha a few values move by
    # up to gradient/32 (max 9 levels seen, 0.4 % of values over 1). Either way each part is far closer to
    # its own interpolation than to the other one.
    for part, same, other in ((inside, cubic, linear), (~inside, linear, cubic)):
        if not part.any():
            continue
        error = np.abs(out[part].astype(int) - same[part])
        assert (error > 1).mean() < 0.01 and error[..., :3].max() <= 2
        assert error.mean() * 50 < np.abs(out[part].astype(int) - other[part]).mean()
    assert not np.array_equal(cubic, linear)   # the two really differ on this texture


def test_lab_map_in_bands_equals_the_plain_transform_in_the_window_and_nothing_else(monkeypatch):
    monkeypatch.setattr(tone, "band_rows", lambda width, height: 7)    # many bands, shared by the threads
    img = _image(130, 90, seed=3)
    window = (11, 101, 5, 80)
    out = img.copy()
    apply_lab_transform(out, BRIGHTER, window=window, out=out)          # in place, as make_seamless does
    y0, y1, x0, x1 = window
    np.testing.assert_array_equal(out[y0:y1, x0:x1], apply_lab_transform(img[y0:y1, x0:x1], BRIGHTER))
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], img[outside])


def test_apply_corrections_returns_the_result_itself_when_there_is_nothing_to_do():
    img = _image()
    assert apply.apply_corrections(img, None, None, (0, 10, 0, 10)) is img
    toned = apply.apply_corrections(img, None, BRIGHTER, (10, 50, 20, 60))
    assert toned is not img
    np.testing.assert_array_equal(toned[:10], img[:10])
    np.testing.assert_array_equal(toned[10:50, 20:60], apply_lab_transform(img[10:50, 20:60], BRIGHTER))


def test_corrected_windows_sharp_box_is_the_selection_and_the_toned_one_holds_it():
    sel = np.zeros((400, 500), np.uint8)
    sel[100:180, 150:300] = 255
    sel[180, 160] = 1                                      # a soft edge pixel still shows through the mask
    sharp, toned = corrected_windows(sel)
    assert sharp == (100, 181, 150, 300)
    assert toned[0] < 100 and toned[1] > 181 and toned[2] < 150 and toned[3] > 300
    assert corrected_windows(np.zeros_like(sel)) == ((0, 0, 0, 0), (0, 0, 0, 0))


def test_in_bands_covers_every_row_once_on_several_threads_and_raises_the_first_error():
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def make():
        def band(y, n):
            with lock:
                seen.append((y, n, threading.current_thread().name))
        return band

    tone.in_bands(3, 50, 8, make, workers=3)
    rows = sorted(r for y, n, _ in seen for r in range(y, y + n))
    assert rows == list(range(3, 50))
    assert len({name for _, _, name in seen}) == 3

    def failing():
        def band(y, n):
            if y >= 20:
                raise RuntimeError(f"band {y}")
        return band

    with pytest.raises(RuntimeError, match="band"):
        tone.in_bands(0, 40, 10, failing, workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("seamless-band")]
