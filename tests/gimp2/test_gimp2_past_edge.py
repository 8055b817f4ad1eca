"""The GIMP 2.10 host's export of a region that runs past its layer (an edit's selection may): pixel regions
only read inside the layer, so the host pads; the padding must be transparent and the layer's pixels exact."""

import numpy as np
from PIL import Image

from tests.gimp2.conftest import make_image


def test_export_region_pads_past_the_layer_with_transparent_pixels(g2, tmp_path):
    image, layer = make_image(g2, 200, 150, layer_box=(0, 0, 100, 100), layer_type=1)  # RGBA
    path = str(tmp_path / "region.png")
    g2.plugin.export_region(layer, {"x": 60, "y": 20, "width": 100, "height": 60}, path)
    got = np.asarray(Image.open(path).convert("RGBA"))
    assert got.shape == (60, 100, 4)
    assert np.array_equal(got[:, :40], layer.pixels[20:80, 60:100])  # inside the layer: its bytes
    assert not got[:, 40:].any()  # past it: transparent


def test_export_region_inside_the_layer_is_unchanged(g2, tmp_path):
    image, layer = make_image(g2, 200, 150, layer_box=(10, 5, 120, 100), layer_type=1)
    path = str(tmp_path / "region.png")
    g2.plugin.export_region(layer, {"x": 20, "y": 15, "width": 50, "height": 40}, path)
    got = np.asarray(Image.open(path).convert("RGBA"))
    assert np.array_equal(got, layer.pixels[10:50, 10:60])
