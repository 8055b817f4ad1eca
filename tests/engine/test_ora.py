"""OpenRaster output read back: zip layout, stack.xml, pixels, names."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
from gimp_openai.atomic import pending_file
from gimp_openai.ora import Layer, clean_name, write_archive
from PIL import Image

from tests.conftest import FAKE_KEY


def _rgba(h, w, colour):
    a = np.zeros((h, w, 4), np.uint8)
    a[...] = colour
    return a


def write_ora(path, width, height, layers):
    """The archive as the CLI writes it (cli.write_layers): streamed into a pending file, then published;
    ``layers`` as (name, pixels, x, y, visible), bottom first."""
    with pending_file(path.parent, path.name) as pending:
        write_archive(pending.file, width, height, [Layer(*layer) for layer in layers])
        pending.publish(path)


def _png(archive, name):
    return np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGBA"))


@pytest.fixture
def layers():
    return [
        ("photo", _rgba(40, 60, (10, 20, 30, 255)), 0, 0, True),
        ("OpenAI: a <red> & \"kite\" (1/2)", _rgba(10, 20, (200, 0, 0, 255)), 5, 7, True),
        ("hidden one", _rgba(10, 10, (0, 255, 0, 255)), -3, 35, False),
    ]


def test_structure_and_pixels(tmp_path, layers):
    path = tmp_path / "out.ora"
    write_ora(path, 60, 40, layers)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert infos[0].filename == "mimetype" and infos[0].compress_type == zipfile.ZIP_STORED
        assert archive.read("mimetype") == b"image/openraster"
        assert path.read_bytes()[30:38] == b"mimetype"  # no extra field: sniffable at offset 30
        names = set(archive.namelist())
        assert {"stack.xml", "mergedimage.png", "Thumbnails/thumbnail.png"} <= names
        root = ET.fromstring(archive.read("stack.xml"))
        assert (root.get("w"), root.get("h")) == ("60", "40")
        stack = root.find("stack").findall("layer")
        assert [layer.get("name") for layer in stack] == [layers[2][0], layers[1][0], layers[0][0]]  # top first
        assert [layer.get("visibility") for layer in stack] == ["hidden", "visible", "visible"]
        for layer, (_, pixels, x, y, _) in zip(stack, reversed(layers)):
            assert (int(layer.get("x")), int(layer.get("y"))) == (x, y)
            assert np.array_equal(_png(archive, layer.get("src")), pixels)
        merged = _png(archive, "mergedimage.png")
        assert merged.shape == (40, 60, 4)
        assert merged[0, 0].tolist() == [10, 20, 30, 255]
        assert merged[10, 10].tolist() == [200, 0, 0, 255]
        assert merged[38, 2].tolist() == [10, 20, 30, 255]  # hidden layer not merged
        assert max(_png(archive, "Thumbnails/thumbnail.png").shape[:2]) <= 256


def test_names_are_clean(tmp_path):
    path = tmp_path / "k.ora"
    write_ora(path, 4, 4, [(f"kite {FAKE_KEY}\x00\x07 ok", _rgba(4, 4, (0, 0, 0, 255)), 0, 0, True)])
    data = path.read_bytes()
    assert FAKE_KEY.encode() not in data
    with zipfile.ZipFile(path) as archive:
        name = ET.fromstring(archive.read("stack.xml")).find("stack/layer").get("name")
    assert name == "kite [redacted key] ok"


@pytest.mark.parametrize("name, expected", [("a\x01b", "ab"), ("<&>", "<&>"), ("x" * 300, "x" * 200)])
def test_clean_name(name, expected):
    assert clean_name(name) == expected


def test_rejects_non_rgba(tmp_path):
    with pytest.raises(ValueError):
        write_ora(tmp_path / "x.ora", 4, 4, [("a", np.zeros((4, 4, 3), np.uint8), 0, 0, True)])
    assert not list(tmp_path.iterdir())


def test_transparent_layers_flatten_and_thumbnail_in_bands(tmp_path, monkeypatch):
    """The flattened picture is built per band (a transparent bottom layer is copied, not composited in float)
    and equals compositing the whole canvas at once; the thumbnail has no fringe from hidden colour."""
    from gimp_openai import ora
    from gimp_openai.composite import composite

    monkeypatch.setattr(ora, "STREAM_BAND_BYTES", 2048)
    monkeypatch.setattr("gimp_openai.pngstrips.STREAM_BAND_BYTES", 2048)
    rng = np.random.default_rng(3)
    bottom = rng.integers(0, 256, (300, 500, 4), dtype=np.uint8)
    bottom[:, :250, 3] = 0  # invisible left half with bright colour
    top = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    path = tmp_path / "t.ora"
    write_ora(path, 500, 300, [("b", bottom, 0, 0, True), ("t", top, 300, 100, True)])
    expected = composite(np.zeros_like(bottom), bottom, np.full((300, 500), 255, np.uint8))
    region = expected[100:140, 300:360]
    expected[100:140, 300:360] = composite(region, top, np.full((40, 60), 255, np.uint8))
    with zipfile.ZipFile(path) as archive:
        assert np.array_equal(_png(archive, "mergedimage.png"), expected)
        thumb = _png(archive, "Thumbnails/thumbnail.png")
    assert thumb.shape == (154, 256, 4)
    assert thumb[:, :120, 3].max() == 0  # the invisible half stays invisible
