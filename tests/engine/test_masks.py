"""API masks (binary, dilated, alpha 0 = edit) and layer masks (0 outside the selection, always)."""

from __future__ import annotations

import numpy as np
import pytest
from gimp_openai.masks import API_MASK_DILATE, api_mask, layer_mask


def disc(size=64, radius=20, soft=0.0):
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(xx - size / 2 + 0.5, yy - size / 2 + 0.5)
    if soft:
        return np.clip((radius - d) / soft * 255 + 127.5, 0, 255).astype(np.uint8)
    return np.where(d <= radius, 255, 0).astype(np.uint8)


@pytest.mark.parametrize(
    "selection, size, edit_px, keep_px",
    [
        (np.full((8, 8), 255, np.uint8), (16, 16), [(0, 0), (15, 15)], []),
        (np.zeros((8, 8), np.uint8), (16, 16), [], [(0, 0), (8, 8)]),
        (disc(64, 20), (64, 64), [(32, 32), (32, 12 + 1)], [(0, 0), (32, 12 - API_MASK_DILATE - 1)]),
        (disc(64, 20), (128, 128), [(64, 64)], [(0, 0)]),
        # 40 % selected is not editable by itself (threshold 128), 60 % is
        (np.full((8, 8), 102, np.uint8), (8, 8), [], []),
        (np.full((8, 8), 153, np.uint8), (8, 8), [(4, 4)], []),
    ],
)
def test_api_mask(selection, size, edit_px, keep_px):
    mask = api_mask(selection, size)
    assert mask.shape == (size[1], size[0], 4) and mask.dtype == np.uint8
    assert set(np.unique(mask[..., 3])) <= {0, 255}
    assert not mask[..., :3].any(), "RGB is black"
    for y, x in edit_px:
        assert mask[y, x, 3] == 0, (y, x)
    for y, x in keep_px:
        assert mask[y, x, 3] == 255, (y, x)


def test_api_mask_dilates_past_the_threshold_edge():
    sel = np.zeros((32, 32), np.uint8)
    sel[10:20, 10:20] = 255
    mask = api_mask(sel, (32, 32))
    edit = mask[..., 3] == 0
    assert edit[10:20, 10:20].all()
    assert edit[15, 10 - API_MASK_DILATE] and not edit[15, 10 - API_MASK_DILATE - 1]


def test_api_mask_tiny_selection_never_empty():
    sel = np.zeros((4000, 4000), np.uint8)
    sel[1234, 2345] = 255  # one pixel, averaged away when shrunk to 256
    mask = api_mask(sel, (256, 256))
    assert (mask[..., 3] == 0).any()


@pytest.mark.parametrize("feather", [0.0, 1.0, 4.0, 15.0])
@pytest.mark.parametrize("soft", [0.0, 6.0])
def test_layer_mask_zero_outside_and_never_above_selection(feather, soft):
    sel = disc(96, 30, soft)
    mask = layer_mask(sel, feather)
    assert mask.dtype == np.uint8 and mask.shape == sel.shape
    assert not mask[sel == 0].any()
    assert (mask <= sel).all()
    if feather == 0:
        assert np.array_equal(mask, sel)
    else:
        assert mask[48, 48] == sel[48, 48] == 255  # deep inside unchanged


def test_layer_mask_feather_ramps_inward():
    sel = np.zeros((40, 100), np.uint8)
    sel[:, 50:] = 255
    mask = layer_mask(sel, 10.0)
    row = mask[20].astype(int)
    assert row[49] == 0 and row[50] < 60 and row[60] >= 250
    assert (np.diff(row[50:62]) >= 0).all()


def test_layer_mask_does_not_fade_at_the_crop_border():
    sel = np.full((50, 50), 255, np.uint8)
    assert np.array_equal(layer_mask(sel, 12.0), sel)
