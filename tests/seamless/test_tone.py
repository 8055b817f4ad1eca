"""Tone match: ΔE2000 against the published reference pairs, the robust Lab fit, and when it is applied."""

import numpy as np
import pytest
from gimp_openai.seamless.tone import (
    apply_lab_transform,
    context_ring,
    delta_e_2000,
    fit_lab_transform,
    fit_tone,
    lab_to_rgb,
    rgb_to_lab,
)

from tests.seamless.scenes import ellipse_selection, make_case, rgba, textured_image

# Sharma, Wu, Dalal (2005), "The CIEDE2000 color-difference formula", table 1 (a selection of its pairs,
# covering the hue wrap-around, the a' correction near the neutral axis and large differences).
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 2.8361, -74.0200), (50.0, 0.0, -82.7485), 3.4412),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, -0.001, 2.49), (50.0, 0.0009, -2.49), 4.8045),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((50.0, 2.5, 0.0), (58.0, 24.0, 15.0), 19.4535),
    ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
]


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA)
def test_delta_e_2000_matches_reference_pairs(lab1, lab2, expected):
    assert delta_e_2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=1e-4)
    assert delta_e_2000(np.array(lab2), np.array(lab1)) == pytest.approx(expected, abs=1e-4)


def test_delta_e_2000_is_vectorised_and_zero_on_equal():
    lab1 = np.array([p[0] for p in SHARMA]).reshape(2, 7, 3)
    lab2 = np.array([p[1] for p in SHARMA]).reshape(2, 7, 3)
    out = delta_e_2000(lab1, lab2)
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.ravel(), [p[2] for p in SHARMA], atol=1e-4)
    assert np.all(delta_e_2000(lab1, lab1) == 0)


@pytest.mark.parametrize(("rgb", "lab"), [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((128, 128, 128), (53.59, 0.0, 0.0)),
    ((255, 0, 0), (53.24, 80.09, 67.20)),
])
def test_rgb_to_lab_is_srgb_d65(rgb, lab):
    got = rgb_to_lab(np.array([rgb], np.uint8))[0]
    np.testing.assert_allclose(got, lab, atol=0.15)


def test_lab_round_trip_is_within_one_level_on_8_bit():
    """OpenCV's float Lab is not bit-exact (hence: when nothing is applied the result is returned untouched)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    diff = np.abs(lab_to_rgb(rgb_to_lab(rgb)).astype(int) - rgb)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02


@pytest.mark.parametrize("outlier_share", [0.0, 0.2, 0.35])
def test_fit_recovers_a_lab_affine_despite_outliers(outlier_share):
    rng = np.random.default_rng(1)
    src = np.column_stack([rng.uniform(20, 90, 4000), rng.normal(0, 20, 4000), rng.normal(10, 20, 4000)])
    true = np.array([[1.08, 0.0, 0.0, -3.0], [0.0, 0.9, -0.12, 2.0], [0.0, 0.12, 0.9, -1.5]])
    dst = src @ true[:, :3].T + true[:, 3] + rng.normal(0, 0.3, src.shape)
    bad = rng.random(4000) < outlier_share
    dst[bad] = rng.uniform(-60, 100, (int(bad.sum()), 3))   # the model repainted these ring pixels
    m = fit_lab_transform(src, dst)
    np.testing.assert_allclose(m[:, :3], true[:, :3], atol=0.01 if outlier_share == 0 else 0.03)
    predicted = src @ m[:, :3].T + m[:, 3]
    expected = src @ true[:, :3].T + true[:, 3]
    assert np.abs(predicted - expected).mean() < (0.1 if outlier_share == 0 else 0.5)


def test_fit_on_a_single_colour_stays_near_identity():
    """One colour cannot say how other colours change: only the offset moves, the linear part stays ~1."""
    src = np.tile([50.0, 10.0, -5.0], (1000, 1))
    dst = src + [4.0, -2.0, 1.0]
    m = fit_lab_transform(src, dst)
    np.testing.assert_allclose(m[:, :3], np.eye(3), atol=0.06)
    np.testing.assert_allclose(src[:1] @ m[:, :3].T + m[:, 3], dst[:1], atol=0.05)


def test_ring_is_outside_the_selection_and_near_it():
    sel = np.zeros((200, 200), np.uint8)
    sel[80:120, 80:120] = 255
    ring = context_ring(sel)
    assert not (ring & (sel > 0)).any()
    ys, xs = np.nonzero(ring)
    assert ys.min() >= 80 - 20 and ys.max() < 120 + 20 and xs.min() >= 60
    assert not ring[80:120, 78:80].any()               # the 2 px gap next to the edge
    assert not context_ring(np.zeros_like(sel)).any() and not context_ring(np.full_like(sel, 255)).any()


@pytest.mark.parametrize(("tone", "applied"), [
    (None, False),
    ((0.01, 0.0, 0.0), False),          # an invisible change is left alone
    ((0.10, 0.0, 0.0), True),
    ((0.0, 8.0, 0.0), True),
    ((0.0, 0.0, -0.15), True),
    ((-0.1, -8.0, 0.15), True),
])
def test_tone_fit_applies_only_when_it_visibly_helps(tone, applied):
    rng = np.random.default_rng(3)
    case = make_case(rng, (256, 256), warp=False, tone=tone)
    got = fit_tone(case.original, case.result, case.selection)
    assert got.applied is applied
    if applied:
        assert got.delta_e_after is not None and got.delta_e_before is not None
        assert got.delta_e_after < got.delta_e_before / 2
    d = got.to_dict()
    assert set(d) >= {"applied", "delta_e_before", "delta_e_after", "lab_matrix", "samples", "note"}


def test_apply_keeps_alpha_and_identity_keeps_pixels():
    rng = np.random.default_rng(4)
    img = rgba(textured_image(rng, 64, 64))
    img[..., 3] = rng.integers(0, 256, (64, 64))
    same = apply_lab_transform(img, np.hstack([np.eye(3), np.zeros((3, 1))]))
    assert np.abs(same.astype(int) - img).max() <= 1 and np.array_equal(same[..., 3], img[..., 3])
    brighter = apply_lab_transform(img, np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0]]))
    assert np.array_equal(brighter[..., 3], img[..., 3])
    assert brighter[..., :3].astype(int).sum() > img[..., :3].astype(int).sum()


def test_no_context_no_match():
    rng = np.random.default_rng(5)
    img = rgba(textured_image(rng, 64, 64))
    got = fit_tone(img, img, np.full((64, 64), 255, np.uint8))
    assert not got.applied and got.delta_e_before is None and "context" in got.note
    assert ellipse_selection(rng, 64, 64).dtype == np.uint8


def test_fit_tone_samples_the_result_where_the_alignment_puts_the_ring():
    """With the alignment's map the fit sees the ring where the shifted result holds it; without, misaligned
    texture: a far worse start and a fit that cannot remove it. Mapped outside the result: nothing to fit."""
    case = make_case(np.random.default_rng(31), (256, 256), warp=True, tone=(0.08, 5.0, 0.1))
    mapped = fit_tone(case.original, case.result, case.selection, case.forward)
    unmapped = fit_tone(case.original, case.result, case.selection, None)
    assert mapped.applied and mapped.delta_e_after is not None and mapped.delta_e_after < 1.0   # 0.67 measured
    assert unmapped.delta_e_before is not None and mapped.delta_e_before is not None
    assert unmapped.delta_e_before > 2 * mapped.delta_e_before                                  # 11.8 vs 4.2
    away = case.forward.copy()
    away[:, 2] += 1000.0                      # every ring pixel lands outside the result: not one sample
    gone = fit_tone(case.original, case.result, case.selection, away)
    assert not gone.applied and gone.samples == 0 and "too little context" in gone.note
