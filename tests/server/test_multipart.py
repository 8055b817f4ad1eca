"""The bounded multipart parser on real bodies (built by urllib3, as requests sends them) and broken ones."""

from __future__ import annotations

import pytest
import requests
from gimp_openai.server.multipart import MAX_PARTS, MultipartError, header_params, parse_multipart
from urllib3 import encode_multipart_formdata

from tests.server.helpers import AUTH


def test_fields_and_files_round_trip():
    body, content_type = encode_multipart_formdata(
        [("prompt", "a kite ☂"), ("n", "2"), ("image[]", ("a.png", b"\x89PNG\r\n--not-a-boundary", "image/png")),
         ("image[]", ("b.webp", b"RIFF....", "image/webp")), ("mask", ("m.png", b"", "image/png"))]
    )
    form = parse_multipart(body, content_type)
    assert form.fields == {"prompt": ["a kite ☂"], "n": ["2"]}
    assert [(f.field, f.filename, f.content_type, f.data) for f in form.files] == [
        ("image[]", "a.png", "image/png", b"\x89PNG\r\n--not-a-boundary"),
        ("image[]", "b.webp", "image/webp", b"RIFF...."),
        ("mask", "m.png", "image/png", b""),
    ]


@pytest.mark.parametrize(
    "value,expected",
    [
        ('form-data; name="image"; filename="a b.png"', ("form-data", {"name": "image", "filename": "a b.png"})),
        ("form-data; name=prompt", ("form-data", {"name": "prompt"})),
        ('form-data; name="x"; filename*=utf-8\'\'%C3%A9t%C3%A9.png', ("form-data", {"name": "x",
                                                                                    "filename": "été.png"})),
        ('form-data; name="q\\"uote"', ("form-data", {"name": 'q"uote'})),
    ],
)
def test_header_params(value, expected):
    assert header_params(value) == expected


BOUNDARY = "multipart/form-data; boundary=b0"


@pytest.mark.parametrize(
    "body,content_type,message",
    [
        (b"--b0\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue", BOUNDARY, "ends before"),
        (b"no boundary here", BOUNDARY, "does not contain"),
        (b"--b0\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0--", BOUNDARY, "Content-Disposition"),
        (b"--b0\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\nx\r\n--b0--", BOUNDARY, "too long"),
        (b"", "application/json", "expected multipart"),
        (b"", "multipart/form-data", "boundary"),
        (b"".join(b"--b0\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 1))
         + b"--b0--", BOUNDARY, "parts"),
    ],
    ids=["unterminated", "no boundary", "no disposition", "huge header", "not multipart", "no boundary param",
         "too many parts"],
)
def test_broken_bodies(body, content_type, message):
    with pytest.raises(MultipartError, match=message):
        parse_multipart(body, content_type)


def test_broken_multipart_is_a_400(local_server):
    response = requests.post(local_server.url + "/images/edits", headers={**AUTH, "Content-Type": BOUNDARY},
                             data=b"--b0\r\nbroken", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("Could not parse")


def test_chunked_body(local_server):
    def chunks():
        yield b'{"model": "dall-e-2", "prompt": "a kite", '
        yield b'"size": "256x256", "response_format": "b64_json"}'

    response = requests.post(local_server.url + "/images/generations", data=chunks(), timeout=30,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    record = local_server.stats()["requests"][-1]
    assert record["headers"]["transfer-encoding"] == "chunked" and record["fields"]["size"] == "256x256"
