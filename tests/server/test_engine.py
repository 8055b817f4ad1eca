"""What the offline engine paints: inpainting inside the mask only, distinct n results, variations,
deterministic generations, url results, output formats, and the GPT-like re-rendering."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

from tests.server.helpers import (
    AUTH,
    b64_image,
    decode,
    mask_png,
    object_hole,
    photo,
    png,
    post_edit,
    post_generation,
    post_variation,
)


def edit_with_mask(server, size=256, n=1, model="dall-e-2", extra=None, headers=None):
    pixels, hole = photo(size, size), object_hole(size, size)
    data = {"model": model, "prompt": "remove the rock", "n": str(n), **(extra or {})}
    if model == "dall-e-2":
        data.update(size=f"{size}x{size}", response_format="b64_json")
    response = post_edit(server, data=data, headers=headers,
                         files=[("image", ("p.png", png(pixels), "image/png")),
                                ("mask", ("m.png", mask_png(hole), "image/png"))])
    assert response.status_code == 200, response.text
    return pixels, hole, [b64_image(item) for item in response.json()["data"]], response


def test_inpainting_changes_inside_only(local_server):
    pixels, hole, (result,), _ = edit_with_mask(local_server)
    assert np.array_equal(result[~hole], pixels[~hole])  # bit-identical outside the mask
    inside_before = pixels[..., :3][hole].astype(int)
    inside_after = result[..., :3][hole].astype(int)
    assert np.abs(inside_after - inside_before).mean() > 30
    # the dark object is gone: the fill looks like the grass around it
    ring = object_hole(256, 256, grow=1.6) & ~hole
    grass = pixels[..., :3][ring].astype(float).mean(axis=0)
    assert np.abs(inside_after.mean(axis=0) - grass).max() < 25
    assert inside_after.std(axis=0).mean() > 4  # textured, not a flat smear


def test_n_results_differ(local_server):
    pixels, hole, results, _ = edit_with_mask(local_server, n=3)
    assert len(results) == 3
    for i in range(3):
        assert np.array_equal(results[i][~hole], pixels[~hole])
        for j in range(i + 1, 3):
            assert np.abs(results[i][hole].astype(int) - results[j][hole].astype(int)).mean() > 1.0


def test_gpt_image_2_auto_keeps_native_size(local_server):
    pixels = photo(1536, 864)
    hole = object_hole(1536, 864)
    response = post_edit(local_server, data={"model": "gpt-image-2", "prompt": "remove"},
                         files=[("image", ("p.png", png(pixels), "image/png")),
                                ("mask", ("m.png", mask_png(hole), "image/png"))])
    body = response.json()
    assert body["size"] == "1536x864"
    result = b64_image(body["data"][0])
    assert result.shape == (864, 1536, 4)
    assert np.array_equal(result[~hole], pixels[~hole])


def test_input_alpha_is_the_mask_for_gpt_image_1(local_server):
    pixels = photo(1024, 1024)
    hole = object_hole(1024, 1024)
    pixels[..., 3][hole] = 0
    response = post_edit(local_server, data={"model": "gpt-image-1", "prompt": "fill", "size": "1024x1024"},
                         files=[("image", ("p.png", png(pixels), "image/png"))])
    result = b64_image(response.json()["data"][0])
    assert (result[..., 3] == 255).all()
    assert np.array_equal(result[~hole], pixels[~hole])


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_output_formats(local_server, fmt, magic):
    response = post_generation(local_server, {"model": "gpt-image-1", "prompt": "a kite", "quality": "low",
                                              "output_format": fmt, "output_compression": 70})
    body = response.json()
    assert body["output_format"] == fmt and body["quality"] == "low" and body["background"] == "opaque"
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(magic)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert abs(usage["output_tokens"] - 272) <= 272 * 0.08 + 1  # gpt-image-1's low 1024^2 figure, spread by <= 8 %


def test_generation_is_deterministic_per_prompt(local_server):
    def one(prompt):
        return post_generation(local_server, {"model": "gpt-image-2", "prompt": prompt, "size": "1024x1024"}).json()

    first, again, other = one("a red kite"), one("a red kite"), one("a blue boat")
    assert first["data"][0]["b64_json"] == again["data"][0]["b64_json"]
    assert first["data"][0]["b64_json"] != other["data"][0]["b64_json"]


def test_variations_default_to_url_and_download(local_server):
    response = post_variation(local_server, data={"model": "dall-e-2", "n": "2", "size": "512x512"})
    body = response.json()
    assert set(body) == {"created", "data"}
    urls = [item["url"] for item in body["data"]]
    assert all(url.startswith(local_server.root + "/v1/_files/") for url in urls)
    images = [decode(requests.get(url, timeout=10).content) for url in urls]  # no auth, like signed blob URLs
    assert all(image.shape == (512, 512, 4) for image in images)
    assert np.abs(images[0].astype(int) - images[1].astype(int)).mean() > 2
    assert requests.get(local_server.root + "/v1/_files/img-unknown.png", timeout=10).status_code == 404


def test_transparent_background_has_alpha(local_server):
    body = post_generation(local_server, {"model": "gpt-image-1", "prompt": "a sticker", "background": "transparent",
                                          "quality": "low"}).json()
    assert body["background"] == "transparent"
    assert (b64_image(body["data"][0])[..., 3] == 0).any()


def measured_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    import cv2

    ga = cv2.cvtColor(a[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
    return dx, dy


def test_render_header_shift_is_measurable(local_server):
    pixels, hole, (result,), response = edit_with_mask(
        local_server, size=1024, model="gpt-image-1", headers={"X-Render": "shift=5.8,-3.9;edit=0"},
        extra={"size": "1024x1024"},
    )
    source = pixels
    dx, dy = measured_shift(source, result)
    assert abs(dx - 5.8) < 0.3 and abs(dy + 3.9) < 0.3
    record = local_server.stats()["requests"][-1]
    assert record["render"][0]["shift"] == [5.8, -3.9]
    assert record["render"][0]["matrix"][0][2] == pytest.approx(5.8)


def test_render_gpt_like_flag_changes_everything(start_local_server):
    server = start_local_server("--render", "gpt-like")
    source, hole, (result,), _ = edit_with_mask(server, size=1024, model="gpt-image-2",
                                                extra={"size": "1024x1024"})
    outside = ~hole
    assert not np.array_equal(result[outside], source[outside])  # re-rendered, not composited
    brighter = result[..., :3][outside].astype(float).mean() / source[..., :3][outside].astype(float).mean()
    assert 1.02 < brighter < 1.12
    record = server.stats()["requests"][-1]["render"][0]
    assert record["scale"] == pytest.approx(1.012) and record["edit"] is True
    # an explicit header wins over the flag
    _, _, (plain,), _ = edit_with_mask(server, size=1024, model="gpt-image-2", extra={"size": "1024x1024"},
                                       headers={"X-Render": "inpaint"})
    assert np.array_equal(plain[outside], source[outside])


def test_json_edit_with_data_url(local_server):
    data_url = "data:image/png;base64," + base64.b64encode(png(photo())).decode()
    response = requests.post(local_server.url + "/images/edits", headers=AUTH, timeout=30,
                             json={"model": "gpt-image-1", "prompt": "p", "images": [{"image_url": data_url}]})
    assert response.status_code == 200, response.text
    assert local_server.stats()["requests"][-1]["files"][0]["image"]["width"] == 256
