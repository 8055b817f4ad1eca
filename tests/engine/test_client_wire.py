"""What the client puts on the wire, read from the bytes a real loopback server received."""

from __future__ import annotations

import pytest
from gimp_openai.client import ClientConfig, ImagesClient

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import b64, client_for, images_answer, jpeg, png
from tests.support.wire_server import Reply, WireServer

IMG = png(16, 16)
MASK = png(16, 16, alpha_hole=True)


@pytest.fixture
def server():
    with WireServer(default=Reply.json(images_answer(png(4, 4)))) as srv:
        yield srv


def test_single_image_edit_multipart_as_received(server):
    result = client_for(server.url).edit(
        model="gpt-image-1.5", prompt="a red kite", image=IMG, mask=MASK, n=2, size="1536x1024", quality="high",
        input_fidelity="high", background="opaque", output_format="png",
    )
    assert len(result.images) == 1 and result.images[0].data == png(4, 4)
    (req,) = server.requests
    assert req.method == "POST" and req.path == "/v1/images/edits"
    parts = {p.name: p for p in req.parts()}
    assert parts["image"].filename.endswith(".png") and parts["image"].content_type == "image/png"
    assert parts["image"].data == IMG
    assert parts["mask"].filename == "mask.png" and parts["mask"].content_type == "image/png"
    assert parts["mask"].data == MASK  # alpha (0 = edit) arrives untouched
    fields = {name: p.data.decode() for name, p in parts.items() if p.filename is None}
    assert fields == {"model": "gpt-image-1.5", "prompt": "a red kite", "n": "2", "size": "1536x1024",
                      "quality": "high", "input_fidelity": "high", "background": "opaque", "output_format": "png"}
    assert int(req.headers["content-length"]) == len(req.body)
    assert "transfer-encoding" not in req.headers


def test_several_images_use_image_array_field(server):
    refs = [png(16, 16, (i, i, i, 255)) for i in range(3)]
    client_for(server.url).edit(model="gpt-image-2", prompt="p", image=IMG, extra_images=[refs[0], jpeg(), refs[2]])
    parts = server.requests[0].parts()
    files = [p for p in parts if p.filename]
    assert [p.name for p in files] == ["image[]"] * 4
    assert [p.content_type for p in files] == ["image/png", "image/png", "image/jpeg", "image/png"]
    assert files[2].filename.endswith(".jpg")
    assert all(p.filename for p in files)


@pytest.mark.parametrize(
    "model, kwargs, expected_fields",
    [
        ("dall-e-2", dict(response_format="b64_json", size="256x256"),
         {"model", "prompt", "response_format", "size"}),
        ("gpt-image-2", dict(size="2048x1152", quality="low", output_format="webp", output_compression=80),
         {"model", "prompt", "size", "quality", "output_format", "output_compression"}),
        ("gpt-image-1-mini", dict(background="transparent"), {"model", "prompt", "background"}),
        ("my-server-model", dict(size="1024x1024"), {"model", "prompt", "size"}),  # unknown id: gpt-image-2 rules
    ],
)
def test_fields_per_family(server, model, kwargs, expected_fields):
    client_for(server.url).edit(model=model, prompt="p", image=IMG, **kwargs)
    names = {p.name for p in server.requests[0].parts() if p.filename is None}
    assert names == expected_fields


def test_variation_multipart(server):
    client_for(server.url).variation(model="dall-e-2", image=IMG, n=3, size="512x512", response_format="b64_json")
    req = server.requests[0]
    assert req.path == "/v1/images/variations"
    parts = {p.name: p for p in req.parts()}
    assert parts["image"].content_type == "image/png" and parts["image"].filename
    assert {k: p.data.decode() for k, p in parts.items() if not p.filename} == {
        "model": "dall-e-2", "n": "3", "size": "512x512", "response_format": "b64_json"}


def test_generation_is_json(server):
    client_for(server.url).generate(model="gpt-image-2", prompt="a fox", n=2, size="1024x1536", moderation="low",
                                    output_compression=50, output_format="jpeg")
    req = server.requests[0]
    assert req.path == "/v1/images/generations" and req.headers["content-type"] == "application/json"
    assert req.json() == {"model": "gpt-image-2", "prompt": "a fox", "n": 2, "size": "1024x1536",
                          "moderation": "low", "output_compression": 50, "output_format": "jpeg"}


def test_openai_headers(server):
    client_for(server.url, organization="org-1", project="proj_2").generate(model="gpt-image-2", prompt="x")
    h = server.requests[0].headers
    assert h["authorization"] == f"Bearer {FAKE_KEY}"
    assert h["openai-organization"] == "org-1" and h["openai-project"] == "proj_2"
    assert h["user-agent"].startswith("gimp-openai/")
    assert h["x-stainless-retry-count"] == "0"
    assert "api-key" not in h


def test_azure_deployment_url_and_api_key_header(server):
    client = client_for(server.origin, azure_api_version="2025-04-01-preview", azure_deployment="my-img")
    client.edit(model="gpt-image-1", prompt="p", image=IMG)
    client_for(server.origin + "/openai", azure_api_version="2025-04-01-preview").generate(model="gpt-image-2",
                                                                                          prompt="p")
    first, second = server.requests
    assert first.path == "/openai/deployments/my-img/images/edits"
    assert first.query == {"api-version": ["2025-04-01-preview"]}
    assert first.headers["api-key"] == FAKE_KEY and "authorization" not in first.headers
    assert second.path == "/openai/deployments/gpt-image-2/images/generations"  # model names the deployment


def test_loopback_without_key_sends_no_authorization(server):
    ImagesClient(ClientConfig(base_url=server.url)).generate(model="gpt-image-2", prompt="x")
    assert "authorization" not in server.requests[0].headers


def test_list_models(server):
    server.push(Reply.json({"object": "list", "data": [{"id": "gpt-image-2", "created": 5}, {"nope": 1}]}))
    assert client_for(server.url).list_models() == [{"id": "gpt-image-2", "created": 5}]
    assert server.requests[0].method == "GET" and server.requests[0].path == "/v1/models"


def test_progress_events_in_order(server):
    events: list = []
    client_for(server.url, events=events).edit(model="gpt-image-2", prompt="p", image=IMG)
    kinds = [e.kind for e in events]
    assert kinds[0] == "sending" and "waiting" in kinds and kinds[-1] == "done"
    assert kinds.index("waiting") < kinds.index("receiving")
    assert [e.fraction for e in events if e.kind == "sending"][-1] == 1.0


def test_partly_damaged_answer_keeps_the_valid_images(server):
    good = png(4, 4)
    truncated = good[: len(good) // 2]
    server.push(Reply.json({"created": 1, "data": [
        {"b64_json": b64(good)}, {"b64_json": "!!not base64!!"}, {"b64_json": b64(truncated)},
        {"b64_json": b64(b"hello")}, {}, {"b64_json": b64(good), "revised_prompt": "r"}]}))
    result = client_for(server.url).generate(model="gpt-image-2", prompt="x", n=6)
    assert [img.index for img in result.images] == [0, 5]
    assert result.images[1].revised_prompt == "r"
    assert len(result.problems) == 4
    assert "image 2" in result.problems[0] and "base64" in result.problems[0]
    assert "truncated" in result.problems[1]
    assert not result.ok


@pytest.mark.parametrize("reply", [
    Reply(200, {"Content-Type": "application/json"}, b"{not json"),
    Reply.json({"created": 1}),
    Reply.json({"created": 1, "data": [{"b64_json": "%%%"}]}),
])
def test_unusable_answer_raises_malformed(server, reply):
    from gimp_openai.errors import MalformedResponseError

    server.push(reply)
    with pytest.raises(MalformedResponseError):
        client_for(server.url).generate(model="gpt-image-2", prompt="x")
    assert len(server.requests) == 1  # not retried


def test_url_results_are_downloaded_without_the_key(server):
    image = png(4, 4)
    server.routes["/files/a.png"] = Reply(200, {"Content-Type": "image/png"}, image)
    server.push(Reply.json({"created": 1, "data": [{"url": server.origin + "/files/a.png?sig=secret"}]}))
    result = client_for(server.url).variation(model="dall-e-2", image=IMG)
    assert result.images[0].data == image
    download = server.requests[1]
    assert download.method == "GET" and download.path == "/files/a.png"
    assert "authorization" not in download.headers and FAKE_KEY.encode() not in download.raw_head


@pytest.mark.parametrize("url, reason", [
    ("http://example.com/a.png", "images are fetched only from its own address"),
    ("ftp://127.0.0.1/a.png", "only http and https URLs"),
    ("file:///etc/passwd", "only http and https URLs"),
])
def test_url_download_refused_unless_the_api_origin(server, url, reason):
    from gimp_openai.errors import UnsafeURLError

    server.push(Reply.json({"created": 1, "data": [{"url": url}]}))
    with pytest.raises(Exception) as info:
        client_for(server.url).variation(model="dall-e-2", image=IMG)
    assert f"Refused to download an image from {url}: " in str(info.value) and reason in str(info.value)
    assert len(server.requests) == 1  # nothing fetched
    with pytest.raises(UnsafeURLError):
        client_for(server.url).download(url)


def test_url_download_size_limited(server):
    from gimp_openai.errors import ResponseTooLargeError

    server.routes["/big.png"] = Reply(200, {}, png(4, 4) + b"\0" * 5000)
    with pytest.raises(ResponseTooLargeError):
        client_for(server.url, max_download_bytes=1000).download(server.origin + "/big.png")


def test_redirect_to_plain_http_elsewhere_is_refused(server):
    from gimp_openai.errors import UnsafeURLError

    server.routes["/r.png"] = Reply(302, {"Location": "http://example.com/x.png"})
    with pytest.raises(UnsafeURLError):
        client_for(server.url).download(server.origin + "/r.png")
    assert len(server.requests) == 1


def test_one_client_shared_by_threads(server):
    from concurrent.futures import ThreadPoolExecutor

    client = client_for(server.url)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: client.generate(model="gpt-image-2", prompt=f"p{i}"), range(8)))
    assert all(len(r.images) == 1 for r in results)
    assert sorted(r.json()["prompt"] for r in server.requests) == [f"p{i}" for i in range(8)]


def test_retry_event_says_when_and_which_attempt(server):
    events: list = []
    server.push(Reply.error(429, "Rate limit reached", headers={"retry-after": "2"}))
    client_for(server.url, events=events).generate(model="gpt-image-2", prompt="x")
    (retry,) = [e for e in events if e.kind == "retry"]
    assert (retry.delay, retry.attempt, retry.status) == (2.0, 2, 429)
    assert retry.message == "Rate limit reached. Retry in 2 s (attempt 2 of 3)"
