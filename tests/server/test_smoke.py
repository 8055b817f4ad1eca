"""The server answers the three endpoints with the real response shape."""

from __future__ import annotations

import numpy as np
import requests

from tests.server.helpers import AUTH, b64_image, mask_png, object_hole, photo, png, post_edit, post_generation


def test_listening_line_and_models(local_server):
    assert local_server.url.startswith("http://127.0.0.1:") and local_server.url.endswith("/v1")
    body = requests.get(local_server.url + "/models", headers=AUTH, timeout=10).json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "gpt-image-2" in ids and "gpt-4o" in ids


def test_edit_shape(local_server):
    hole = object_hole()
    response = post_edit(local_server, files=[("image", ("p.png", png(photo()), "image/png")),
                                              ("mask", ("m.png", mask_png(hole), "image/png"))],
                         data={"model": "gpt-image-1", "prompt": "remove the rock", "n": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"].startswith("req_")
    assert set(body) == {"created", "data", "background", "output_format", "size", "quality", "usage"}
    assert body["size"] == "1024x1024"  # gpt-image-1 without size: 1024x1024 (the input is square)
    assert len(body["data"]) == 2 and "revised_prompt" not in body["data"][0]
    first = b64_image(body["data"][0])
    assert first.shape == (1024, 1024, 4)


def test_generation_shape(local_server):
    response = post_generation(local_server, {"model": "gpt-image-2", "prompt": "a lighthouse", "size": "1536x864"})
    assert response.status_code == 200, response.text
    image = b64_image(response.json()["data"][0])
    assert image.shape == (864, 1536, 4)
    assert np.ptp(image[..., :3]) > 50
