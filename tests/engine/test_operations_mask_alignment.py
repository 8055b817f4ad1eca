"""The API mask lines up with the request image: its editable area is exactly where the selection lands in
``request_pixels`` (the place scaled into the rounded ``place_in_target``), not half a target pixel off."""

from __future__ import annotations

import numpy as np
import pytest
from gimp_openai import composite, masks, operations
from gimp_openai.geometry import Rect, RegionPlan
from gimp_openai.history import History
from gimp_openai.settings import Settings

from tests.engine.test_operations import FakeClient, unpng


@pytest.mark.parametrize("offset", [5, 7, 9, 11])
def test_api_mask_edge_coincides_with_the_request_images_selection_edge(tmp_path, monkeypatch, offset):
    monkeypatch.setattr(masks, "API_MASK_DILATE", 0)  # compare the edge itself, not the safety margin
    # An odd-sized place inside a padded request, scaled by a non-integer factor: place_in_target is rounded.
    plan = RegionPlan(place=Rect(offset, offset, 301, 299), request=Rect(0, 0, 333, 333), target=(1024, 1024))
    selection = np.zeros((299, 301), np.uint8)
    selection[40:141, 60:163] = 255  # 103 x 101: odd, away from the place's edges (the padding mirrors)
    pixels = np.zeros((299, 301, 4), np.uint8)
    pixels[..., 3] = 255
    pixels[selection > 0, :3] = 255  # the selection is visible in the image the model gets
    client = FakeClient()
    engine = operations.Engine(Settings(), client, History(tmp_path / "history"))
    options = operations.Options(model="gpt-image-2", prompt="a patch", align=False, tone_match=False)
    operations.edit(engine, options, place_pixels=pixels, selection=selection,
                    layer=Rect(0, 0, 400, 400), plan=plan)
    (kind, sent), = client.calls
    image, mask = unpng(sent["image"]), unpng(sent["mask"])
    assert kind == "edit" and image.shape[:2] == mask.shape[:2] == (1024, 1024)
    np.testing.assert_array_equal(image, composite.request_pixels(pixels, plan))
    selected_in_image = image[..., 0] >= 128
    editable = mask[..., 3] == 0
    assert editable.any()
    assert (editable != selected_in_image).sum() == 0
