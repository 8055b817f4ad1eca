"""TLS always verified, the key never leaks, bad input refused before any request."""

from __future__ import annotations

import logging

import pytest
from gimp_openai import errors as E
from gimp_openai.client import ClientConfig, ImagesClient

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import client_for, images_answer, jpeg, png
from tests.support.wire_server import Reply, WireServer, make_tls_files, server_tls_context


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tls_files):
    _, cert, key = tls_files
    with WireServer(default=Reply.json(images_answer(png(4, 4))), tls=server_tls_context(cert, key)) as srv:
        yield srv


def test_self_signed_server_is_refused_with_a_clear_tls_error(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(E.TLSError) as info:
        client_for(tls_server.url).generate(model="gpt-image-2", prompt="x")
    assert "TLS verification failed" in info.value.message and "certificate" in info.value.message.lower()
    assert "REQUESTS_CA_BUNDLE" in info.value.hint and info.value.retries == 0
    assert tls_server.requests == []  # nothing (no key, no prompt) reached the server


@pytest.mark.parametrize("var", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_trusted_when_the_ca_is_supplied(tls_server, tls_files, monkeypatch, var):
    ca, _, _ = tls_files
    for other in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "SSL_CERT_DIR"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, ca)
    result = client_for(tls_server.url).generate(model="gpt-image-2", prompt="x")
    assert len(result.images) == 1 and len(tls_server.requests) == 1


def test_a_session_with_verification_off_cannot_turn_it_off(tls_server, monkeypatch):
    import requests

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    session = requests.Session()
    session.verify = False
    client = ImagesClient(ClientConfig(base_url=tls_server.url, api_key=FAKE_KEY, max_retries=0), session)
    with pytest.raises(E.TLSError):
        client.generate(model="gpt-image-2", prompt="x")


def test_missing_ca_file_is_a_tls_error(tls_server, monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nope.pem"))
    with pytest.raises(E.TLSError):
        client_for(tls_server.url).generate(model="gpt-image-2", prompt="x")


def test_key_never_in_errors_repr_logs_or_output(caplog, capsys):
    caplog.set_level(logging.DEBUG)
    config = ClientConfig(base_url="http://127.0.0.1:9/v1", api_key=FAKE_KEY, max_retries=1, sleep=lambda s: None)
    texts = [repr(config), str(config), repr(ImagesClient(config))]
    leaking = Reply.error(401, f"Incorrect API key provided: {FAKE_KEY}", code="invalid_api_key")
    with WireServer([leaking, Reply.error(500, f"echo Bearer {FAKE_KEY}")] * 2) as server:
        for reply_url in (server.url, "http://127.0.0.1:9/v1"):
            for call in range(2):
                client = client_for(reply_url)
                with pytest.raises(E.GimpOpenAIError) as info:
                    client.generate(model="gpt-image-2", prompt="x")
                exc = info.value
                texts += [str(exc), repr(exc), exc.message, exc.hint, str(exc.to_dict()), repr(exc.args)]
        events: list = []
        with pytest.raises(E.GimpOpenAIError):
            client_for(server.url, events=events).generate(model="gpt-image-2", prompt="x")
        texts += [repr(e) for e in events]
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    assert all(FAKE_KEY not in t for t in texts)
    assert any("[redacted key]" in t for t in texts)


def test_missing_key_for_a_remote_server_fails_before_any_request():
    with pytest.raises(E.MissingKeyError):
        ImagesClient(ClientConfig(base_url="https://api.openai.com/v1")).generate(model="gpt-image-2", prompt="x")


IMG = png(16, 16)


@pytest.mark.parametrize(
    "call, kwargs, error",
    [
        ("edit", dict(model="gpt-image-2", prompt="   ", image=IMG), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x" * 1001, image=IMG), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x" * 32001, image=IMG), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="a\x00b", image=IMG), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, n=0), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, n=11), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, n=True), E.InvalidInputError),
        ("edit", dict(model="gpt-image-1", prompt="x", image=IMG, size="1000x1000"), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, size="1000x1000"), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x", image=IMG, size="auto"), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x", image=IMG, background="opaque"), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, input_fidelity="high"), E.InvalidInputError),
        ("edit", dict(model="gpt-image-1-mini", prompt="x", image=IMG, input_fidelity="high"), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, response_format="url"), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, quality="hd"), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, output_compression=101), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x", image=jpeg()), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x", image=png(16, 8)), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x", image=IMG, extra_images=[IMG]), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, extra_images=[IMG] * 16), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=b"not an image"), E.UnreadableImageError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, mask=png(8, 8)), E.InvalidInputError),
        ("edit", dict(model="gpt-image-2", prompt="x", image=IMG, mask=jpeg()), E.InvalidInputError),
        ("edit", dict(model="dall-e-2", prompt="x", image=IMG + b"\0" * (4 * 1024 * 1024)), E.ImageTooLargeError),
        ("edit", dict(model="dall-e-3", prompt="x", image=IMG), E.UnsupportedModelError),
        ("edit", dict(model="", prompt="x", image=IMG), E.InvalidInputError),
        ("variation", dict(model="gpt-image-2", image=IMG), E.UnsupportedModelError),
        ("variation", dict(model="dall-e-2", image=IMG, n=11), E.InvalidInputError),
        ("generate", dict(model="dall-e-3", prompt="x", n=2), E.InvalidInputError),
        ("generate", dict(model="dall-e-3", prompt="x", moderation="low"), E.InvalidInputError),
        ("generate", dict(model="gpt-image-2", prompt="x", moderation="none"), E.InvalidInputError),
    ],
)
def test_bad_input_refused_before_any_request(call, kwargs, error):
    with WireServer(default=Reply.json(images_answer(png(4, 4)))) as server:
        with pytest.raises(error):
            getattr(client_for(server.url), call)(**kwargs)
        assert server.requests == []
