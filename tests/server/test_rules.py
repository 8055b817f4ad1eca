"""Every validation rule, each with a real request, asserting the exact status, error code and param."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.conftest import FAKE_KEY
from tests.server.helpers import (
    AUTH,
    encoded,
    error_of,
    mask_png,
    object_hole,
    photo,
    png,
    post_edit,
    post_generation,
    post_variation,
)

SQUARE = png(photo(256, 256))
WIDE = png(photo(384, 256))
MASK = mask_png(object_hole(256, 256))


def img(data=SQUARE, ctype="image/png", field="image", name="p.png"):
    return (field, (name, data, ctype))


def big_png(megabytes: float) -> bytes:
    """A valid PNG of about ``megabytes`` (random pixels do not compress)."""
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5) + 8
    pixels = np.random.default_rng(1).integers(0, 256, (side, side, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return png(pixels[..., :3].copy())


# (id, data fields, files, expected (status, code, param))
EDIT_CASES = [
    # the real API on /images/*: "The model 'X' does not exist." (contract: reported.unknown_model_on_images)
    ("unknown model", {"model": "gpt-image-9x", "prompt": "p"}, [img()], (400, "invalid_value", "model")),
    ("non-image model", {"model": "gpt-4o", "prompt": "p"}, [img()], (400, "invalid_value", "model")),
    ("edits with dall-e-3 (generations only)", {"model": "dall-e-3", "prompt": "p"}, [img()],
     (400, "invalid_value", "model")),
    ("missing prompt", {"model": "gpt-image-1"}, [img()], (400, "missing_required_parameter", "prompt")),
    ("empty prompt", {"model": "gpt-image-1", "prompt": "  "}, [img()], (400, "string_below_min_length", "prompt")),
    ("prompt over 32000", {"model": "gpt-image-1", "prompt": "x" * 32001}, [img()],
     (400, "string_above_max_length", "prompt")),
    ("dall-e-2 prompt over 1000", {"model": "dall-e-2", "prompt": "x" * 1001}, [img(), img(MASK, field="mask")],
     (400, "string_above_max_length", "prompt")),
    ("n = 0", {"model": "gpt-image-1", "prompt": "p", "n": "0"}, [img()], (400, "integer_below_min_value", "n")),
    ("n = 11", {"model": "gpt-image-1", "prompt": "p", "n": "11"}, [img()], (400, "integer_above_max_value", "n")),
    ("n not a number", {"model": "gpt-image-1", "prompt": "p", "n": "two"}, [img()], (400, "invalid_type", "n")),
    ("size not taken", {"model": "gpt-image-1", "prompt": "p", "size": "512x512"}, [img()],
     (400, "invalid_value", "size")),
    ("gpt-image-2 free size off 16", {"model": "gpt-image-2", "prompt": "p", "size": "1000x1000"}, [img()],
     (400, "invalid_value", "size")),
    ("gpt-image-2 aspect over 3", {"model": "gpt-image-2", "prompt": "p", "size": "3840x1024"}, [img()],
     (400, "invalid_value", "size")),
    ("dall-e-2 size auto", {"model": "dall-e-2", "prompt": "p", "size": "auto"}, [img(), img(MASK, field="mask")],
     (400, "invalid_value", "size")),
    ("quality not in family", {"model": "gpt-image-1", "prompt": "p", "quality": "hd"}, [img()],
     (400, "invalid_value", "quality")),
    ("dall-e-2 quality high", {"model": "dall-e-2", "prompt": "p", "quality": "high"},
     [img(), img(MASK, field="mask")], (400, "invalid_value", "quality")),
    ("response_format for GPT", {"model": "gpt-image-1", "prompt": "p", "response_format": "b64_json"}, [img()],
     (400, "unknown_parameter", "response_format")),
    ("input_fidelity gpt-image-2", {"model": "gpt-image-2", "prompt": "p", "input_fidelity": "high"}, [img()],
     (400, "unknown_parameter", "input_fidelity")),
    ("input_fidelity -mini", {"model": "gpt-image-1-mini", "prompt": "p", "input_fidelity": "high"}, [img()],
     (400, "unknown_parameter", "input_fidelity")),
    ("input_fidelity bad value", {"model": "gpt-image-1", "prompt": "p", "input_fidelity": "max"}, [img()],
     (400, "invalid_value", "input_fidelity")),
    ("background for dall-e-2", {"model": "dall-e-2", "prompt": "p", "background": "opaque"},
     [img(), img(MASK, field="mask")], (400, "unknown_parameter", "background")),
    ("output_format for dall-e-2", {"model": "dall-e-2", "prompt": "p", "output_format": "png"},
     [img(), img(MASK, field="mask")], (400, "unknown_parameter", "output_format")),
    ("output_format bad", {"model": "gpt-image-1", "prompt": "p", "output_format": "gif"}, [img()],
     (400, "invalid_value", "output_format")),
    ("transparent with jpeg", {"model": "gpt-image-1", "prompt": "p", "background": "transparent",
                               "output_format": "jpeg"}, [img()], (400, "invalid_value", "background")),
    ("compression over 100", {"model": "gpt-image-1", "prompt": "p", "output_format": "jpeg",
                              "output_compression": "101"}, [img()], (400, "integer_above_max_value",
                                                                     "output_compression")),
    ("unknown field", {"model": "gpt-image-1", "prompt": "p", "colour": "red"}, [img()],
     (400, "unknown_parameter", "colour")),
    ("stream for dall-e-2", {"model": "dall-e-2", "prompt": "p", "stream": "true"},
     [img(), img(MASK, field="mask")], (400, "unknown_parameter", "stream")),
    ("partial_images for dall-e-2", {"model": "dall-e-2", "prompt": "p", "partial_images": "1"},
     [img(), img(MASK, field="mask")], (400, "unknown_parameter", "partial_images")),
    ("partial_images over 3", {"model": "gpt-image-1", "prompt": "p", "stream": "true", "partial_images": "4"},
     [img()], (400, "integer_above_max_value", "partial_images")),
    ("stream not a boolean", {"model": "gpt-image-1", "prompt": "p", "stream": "yes"}, [img()],
     (400, "invalid_type", "stream")),
    ("no image", {"model": "gpt-image-1", "prompt": "p"}, [], (400, "missing_required_parameter", "image")),
    ("octet-stream image", {"model": "gpt-image-1", "prompt": "p"}, [img(ctype="application/octet-stream")],
     (400, "unsupported_file_mimetype", "image")),
    ("gif image", {"model": "gpt-image-1", "prompt": "p"}, [img(ctype="image/gif")],
     (400, "unsupported_file_mimetype", "image")),
    ("dall-e-2 jpeg", {"model": "dall-e-2", "prompt": "p"},
     [img(encoded(photo(), "JPEG"), "image/jpeg"), img(MASK, field="mask")], (400, "unsupported_file_mimetype",
                                                                               "image")),
    ("not an image", {"model": "gpt-image-1", "prompt": "p"}, [img(b"definitely not a png")],
     (400, "invalid_image_file", "image")),
    ("truncated png", {"model": "gpt-image-1", "prompt": "p"}, [img(SQUARE[: len(SQUARE) // 2])],
     (400, "invalid_image_file", "image")),
    ("mask size differs", {"model": "gpt-image-1", "prompt": "p"}, [img(WIDE), img(MASK, field="mask")],
     (400, "invalid_value", "mask")),
    ("mask without alpha", {"model": "gpt-image-1", "prompt": "p"},
     [img(), img(png(photo(256, 256), "RGB"), field="mask")], (400, "invalid_image_format", "mask")),
    ("mask as jpeg", {"model": "gpt-image-1", "prompt": "p"},
     [img(), img(encoded(photo(), "JPEG"), "image/jpeg", field="mask")], (400, "unsupported_file_mimetype", "mask")),
    ("dall-e-2 not square", {"model": "dall-e-2", "prompt": "p"}, [img(WIDE), img(mask_png(np.zeros((256, 384),
                                                                                                bool)), field="mask")],
     (400, "invalid_value", "image")),
    ("dall-e-2 two images", {"model": "dall-e-2", "prompt": "p"},
     [img(field="image[]"), img(field="image[]"), img(MASK, field="mask")], (400, "array_above_max_length", "image")),
    ("17 images", {"model": "gpt-image-1", "prompt": "p"}, [img(field="image[]")] * 17,
     (400, "array_above_max_length", "image")),
    ("dall-e-2 no mask, opaque image", {"model": "dall-e-2", "prompt": "p"}, [img(png(photo(), "RGB"))],
     (400, "invalid_image_format", "image")),
]


@pytest.mark.parametrize("data,files,expected", [c[1:] for c in EDIT_CASES], ids=[c[0] for c in EDIT_CASES])
def test_edit_rules(local_server, data, files, expected):
    response = post_edit(local_server, data=data, files=files)
    assert error_of(response) == expected, response.text


def test_dall_e_2_over_4_mb(local_server):
    data = big_png(4.3)
    assert len(data) > 4 * 1024 * 1024
    response = post_edit(local_server, data={"model": "dall-e-2", "prompt": "p"}, files=[img(data)])
    assert error_of(response) == (400, "image_too_large", "image")


VARIATION_CASES = [
    ("gpt model", {"model": "gpt-image-1"}, [img()], (400, "invalid_value", "model")),
    ("size not dall-e-2", {"model": "dall-e-2", "size": "1536x1024"}, [img()], (400, "invalid_value", "size")),
    ("prompt is unknown here", {"model": "dall-e-2", "prompt": "p"}, [img()], (400, "unknown_parameter", "prompt")),
    ("response_format bad", {"model": "dall-e-2", "response_format": "file"}, [img()],
     (400, "invalid_value", "response_format")),
    ("not square", {"model": "dall-e-2"}, [img(WIDE)], (400, "invalid_value", "image")),
    ("webp", {"model": "dall-e-2"}, [img(encoded(photo(), "WEBP"), "image/webp")],
     (400, "unsupported_file_mimetype", "image")),
    ("mask field", {"model": "dall-e-2"}, [img(), img(MASK, field="mask")], (400, "unknown_parameter", "mask")),
]


@pytest.mark.parametrize("data,files,expected", [c[1:] for c in VARIATION_CASES], ids=[c[0] for c in VARIATION_CASES])
def test_variation_rules(local_server, data, files, expected):
    response = post_variation(local_server, data=data, files=files)
    assert error_of(response) == expected, response.text


GENERATION_CASES = [
    ("no prompt", {"model": "gpt-image-1"}, (400, "missing_required_parameter", "prompt")),
    ("n as string in JSON", {"model": "gpt-image-1", "prompt": "p", "n": "2"}, (400, "invalid_type", "n")),
    ("dall-e-2 size 1536x1024", {"model": "dall-e-2", "prompt": "p", "size": "1536x1024"},
     (400, "invalid_value", "size")),
    ("style for GPT", {"model": "gpt-image-1", "prompt": "p", "style": "vivid"}, (400, "unknown_parameter", "style")),
    ("moderation bad", {"model": "gpt-image-1", "prompt": "p", "moderation": "none"},
     (400, "invalid_value", "moderation")),
    ("default model dall-e-2 + GPT param", {"prompt": "p", "output_format": "png"},
     (400, "unknown_parameter", "output_format")),
    ("gpt-image-2 over 3840", {"model": "gpt-image-2", "prompt": "p", "size": "4096x2048"},
     (400, "invalid_value", "size")),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in GENERATION_CASES], ids=[c[0] for c in GENERATION_CASES])
def test_generation_rules(local_server, body, expected):
    assert error_of(post_generation(local_server, body)) == expected


def test_malformed_json_body(local_server):
    response = requests.post(local_server.url + "/images/generations", headers={**AUTH, "Content-Type":
                             "application/json"}, data=b"{not json", timeout=10)
    assert error_of(response) == (400, None, None)


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({}, (401, None, None)),
        ({"Authorization": "Bearer "}, (401, None, None)),
        ({"Authorization": "Basic abc"}, (401, None, None)),
    ],
    ids=["none", "empty bearer", "basic"],
)
def test_auth_refused(local_server, headers, expected):
    response = requests.post(local_server.url + "/images/generations", headers=headers,
                             json={"model": "gpt-image-1", "prompt": "p"}, timeout=10)
    assert error_of(response) == expected


def test_azure_api_key_header_accepted(local_server):
    response = requests.post(local_server.url + "/images/generations", headers={"api-key": FAKE_KEY},
                             json={"model": "gpt-image-1", "prompt": "p", "quality": "low"}, timeout=30)
    assert response.status_code == 200, response.text


def test_required_key_from_environment(start_local_server):
    server = start_local_server(env={"GIMP_OPENAI_SERVER_KEY": "sk-local-right-key-123"})
    wrong = requests.get(server.url + "/models", headers=AUTH, timeout=10)
    assert error_of(wrong) == (401, "invalid_api_key", None)
    assert "sk-test" not in wrong.text
    right = requests.get(server.url + "/models", headers={"Authorization": "Bearer sk-local-right-key-123"}, timeout=10)
    assert right.status_code == 200


def test_no_auth_flag(start_local_server):
    server = start_local_server("--no-auth")
    assert requests.get(server.url + "/models", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "data,files",
    [
        ({"model": "gpt-image-1", "prompt": "p", "input_fidelity": "high", "quality": "low"}, [img(), img(MASK,
                                                                                                       field="mask")]),
        ({"model": "gpt-image-2", "prompt": "p", "size": "1536x864"}, [img(WIDE)]),
        ({"model": "gpt-image-1.5", "prompt": "p"}, [img(field="image[]")] * 16),
        ({"model": "chatgpt-image-latest", "prompt": "p", "output_format": "webp", "output_compression": "80"},
         [img(encoded(photo(), "JPEG"), "image/jpeg")]),
        ({"model": "dall-e-2", "prompt": "p", "size": "256x256", "response_format": "b64_json"},
         [img(), img(MASK, field="mask")]),
        ({"model": "dall-e-2", "prompt": "p", "size": "256x256"}, [img(png(photo()))]),  # alpha channel, no mask
    ],
    ids=["fidelity", "free size", "16 images", "jpeg in webp out", "dall-e-2 b64", "dall-e-2 alpha"],
)
def test_valid_edits_pass(local_server, data, files):
    response = post_edit(local_server, data=data, files=files)
    assert response.status_code == 200, response.text


def test_azure_deployment_path(local_server):
    response = requests.post(
        local_server.root + "/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview",
        headers={"api-key": FAKE_KEY}, json={"prompt": "p", "quality": "low"}, timeout=30,
    )
    assert response.status_code == 200, response.text
    record = local_server.stats()["requests"][-1]
    assert record["model"] == "gpt-image-1" and record["query"] == "api-version=2025-04-01-preview"
