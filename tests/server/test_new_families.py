"""The 2.5 and 2.6 families on the local server: their qualities, complexity, output formats and markup edits, as
the rules table says (the facts are in the contract fixture's ``reported`` section)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.server.helpers import decode, error_of, object_hole, photo, png, post_edit, post_generation

PHOTO = png(photo())


def marks(width: int = 256, height: int = 256) -> bytes:
    """A transparent layer with a red ring painted around the dark object of :func:`photo`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = width * 0.55, height * 0.62, min(width, height) * 0.12
    distance = np.hypot(xx - cx, yy - cy)
    layer = np.zeros((height, width, 4), np.uint8)
    ring = np.abs(distance - r * 1.3) < 2.5
    layer[ring] = [255, 0, 0, 255]
    return png(layer)


@pytest.mark.parametrize("model,quality,expected", [
    ("gpt-image-2", "xhigh", (400, "invalid_value", "quality")),
    ("gpt-image-2", "max", (400, "invalid_value", "quality")),
    ("gpt-image-2.5-flare", "xhigh", 200),
    ("gpt-image-2.5-sunburst", "max", 200),
    ("gpt-image-2.6-flare-2026-11-04", "max", 200),
])
def test_quality_tiers(local_server, model, quality, expected):
    answer = post_generation(local_server, {"model": model, "prompt": "a kite", "quality": quality,
                                            "size": "1024x1024"})
    if expected == 200:
        assert answer.status_code == 200, answer.text
        assert answer.json()["quality"] == quality
    else:
        assert error_of(answer) == expected


@pytest.mark.parametrize("model,value,expected", [
    ("gpt-image-2.6-sunburst", "low", 200),
    ("gpt-image-2.6-sunburst", "extreme", (400, "invalid_value", "complexity")),
    ("gpt-image-2.5-sunburst", "low", (400, "unknown_parameter", "complexity")),
    ("gpt-image-2", "high", (400, "unknown_parameter", "complexity")),
])
def test_complexity(local_server, model, value, expected):
    answer = post_generation(local_server, {"model": model, "prompt": "a kite", "complexity": value,
                                            "quality": "low"})
    if expected == 200:
        assert answer.status_code == 200, answer.text
    else:
        assert error_of(answer) == expected


@pytest.mark.parametrize("model,fmt,magic", [
    ("gpt-image-2.6-flare", "gif", b"GIF8"),
    ("gpt-image-2.6-flare", "svg", b"<svg"),
    ("gpt-image-2.5-flare", "webp", b"RIFF"),
])
def test_output_formats(local_server, model, fmt, magic):
    answer = post_generation(local_server, {"model": model, "prompt": "a kite", "output_format": fmt,
                                            "quality": "low"})
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.json()["data"][0]["b64_json"]).startswith(magic)
    assert answer.json()["output_format"] == fmt


def test_formats_beyond_the_family_are_refused(local_server):
    answer = post_generation(local_server, {"model": "gpt-image-2.5-flare", "prompt": "a kite", "output_format": "svg"})
    assert error_of(answer) == (400, "invalid_value", "output_format")


def test_markup_edit_changes_the_marked_object_only(local_server):
    answer = post_edit(local_server, data={"model": "gpt-image-2.6-sunburst", "prompt": "remove the circled rock",
                                           "size": "1024x1024", "quality": "low"},
                       files=[("image", ("p.png", PHOTO, "image/png")), ("markup", ("m.png", marks(), "image/png"))])
    assert answer.status_code == 200, answer.text
    result = decode(base64.b64decode(answer.json()["data"][0]["b64_json"]))
    assert result.shape[:2] == (1024, 1024)
    source = np.asarray(decode(PHOTO))
    import cv2

    source = cv2.resize(source, (1024, 1024), interpolation=cv2.INTER_AREA)
    hole = cv2.resize(object_hole(grow=1.0).astype(np.uint8), (1024, 1024), interpolation=cv2.INTER_NEAREST) > 0
    inside = np.abs(result[hole][..., :3].astype(int) - source[hole][..., :3].astype(int)).mean()
    far = np.zeros_like(hole)
    far[:200, :200] = True  # far from the marks: the sky, untouched
    outside = np.abs(result[far][..., :3].astype(int) - source[far][..., :3].astype(int)).mean()
    assert inside > 20 > outside + 5  # the dark object was painted over; the far sky was not


@pytest.mark.parametrize("model,extra,expected", [
    ("gpt-image-2.6-flare", "mask", (400, "invalid_value", "markup")),
    ("gpt-image-2.5-sunburst", None, (400, "unknown_parameter", "markup")),
    ("gpt-image-2", None, (400, "unknown_parameter", "markup")),
])
def test_markup_refusals(local_server, model, extra, expected):
    files = [("image", ("p.png", PHOTO, "image/png")), ("markup", ("m.png", marks(), "image/png"))]
    if extra == "mask":
        mask = np.zeros((256, 256, 4), np.uint8)
        files.append(("mask", ("mask.png", png(mask), "image/png")))
    answer = post_edit(local_server, data={"model": model, "prompt": "remove it"}, files=files)
    assert error_of(answer) == expected


def test_markup_must_match_the_image(local_server):
    files = [("image", ("p.png", PHOTO, "image/png")), ("markup", ("m.png", marks(128, 128), "image/png"))]
    answer = post_edit(local_server, data={"model": "gpt-image-2.6-flare", "prompt": "remove it"}, files=files)
    assert error_of(answer) == (400, "invalid_value", "markup")
