"""Where the client sends requests: the one loopback test, the image-URL policy (a pure function over
addresses, table-driven), real loopback fetches allowed and refused, the checked address connected to, and
no key over plain http to another computer unless the user allows it.

No test sends a packet anywhere but 127.0.0.1: remote hosts are judged from text and injected resolver
answers, and a tripwire adapter stands in for the network where a request to a remote host could happen."""

from __future__ import annotations

import pytest
import requests
from gimp_openai import client as C
from gimp_openai import errors as E
from gimp_openai import session, settings, urlpolicy
from gimp_openai.client import ClientConfig, ImagesClient
from gimp_openai.transport import ClientAdapter

from tests.conftest import FAKE_KEY
from tests.engine._client_helpers import client_for, png
from tests.support.wire_server import Reply, WireServer, make_tls_files, server_tls_context

# --- 4. one loopback test ------------------------------------------------------------------------------------------


def test_there_is_one_loopback_definition():
    assert session.is_loopback is C.is_loopback is settings.is_loopback_url is urlpolicy.is_loopback


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8000/v1", True), ("http://127.1:8000/v1", True), ("http://2130706433/v1", True),
    ("http://0x7f000001/v1", True), ("http://0177.0.0.1/v1", True), ("http://127.255.255.254/v1", True),
    ("http://[::1]:9/v1", True), ("http://[::ffff:127.0.0.1]/v1", True), ("http://localhost/v1", True),
    ("http://LOCALHOST./v1", True), ("127.1", True), ("::1", True),
    ("https://api.openai.com/v1", False), ("http://10.0.0.1/v1", False), ("http://128.0.0.1/v1", False),
    ("http://localhost.example.com/v1", False), ("http://127.0.0.1.nip.io/v1", False), ("http://1/v1", False),
    ("http://[::2]/v1", False), ("", False), ("http://[::1/v1", False),
])
def test_loopback_in_every_form_the_resolver_takes(url, loopback):
    assert urlpolicy.is_loopback(url) is loopback


@pytest.mark.parametrize("form", ["127.1", "2130706433", "localhost"])
def test_a_loopback_base_url_in_another_form_gets_the_key_over_http(form):
    with WireServer([Reply.json({"created": 1, "data": [{"b64_json": ""}]})]) as server:
        with pytest.raises(E.MalformedResponseError):  # the empty image; what matters is what was sent
            client_for(f"http://{form}:{server.port}/v1").generate(model="gpt-image-2", prompt="x")
        assert server.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"


# --- 4. no key in cleartext to another computer ---------------------------------------------------------------------


class Tripwire(ClientAdapter):
    """Stands in for the network: records what would have been sent to a remote host, sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):  # type: ignore[override]
        self.sent.append(request)
        raise requests.exceptions.ConnectionError("tripwire: nothing leaves this computer")


def tripwired(base_url: str, **overrides) -> tuple[ImagesClient, Tripwire]:
    session = requests.Session()
    wire = Tripwire()
    session.mount("http://", wire)
    session.mount("https://", wire)
    config = ClientConfig(base_url=base_url, api_key=FAKE_KEY, max_retries=0, sleep=lambda s: None, **overrides)
    return ImagesClient(config, session), wire


@pytest.mark.parametrize("base", ["http://example.com/v1", "http://10.0.0.5:8080/v1", "http://128.0.0.1/v1"])
def test_key_over_plain_http_to_another_host_is_refused_before_anything_is_sent(base):
    client, wire = tripwired(base)
    with pytest.raises(E.InsecureTransportError) as info:
        client.generate(model="gpt-image-2", prompt="x")
    assert wire.sent == []
    assert info.value.message == (f"Refused to send the API key over plain http to {base}: anyone on the network "
                                  "between here and that server could read it")
    assert "https://" in info.value.hint and "allow_insecure_http=true" in info.value.hint
    assert info.value.code == "insecure_http" and FAKE_KEY not in str(info.value)


def test_allow_insecure_http_lets_the_user_choose_cleartext():
    client, wire = tripwired("http://example.com/v1", allow_insecure_http=True)
    with pytest.raises(E.ConnectionFailedError):
        client.generate(model="gpt-image-2", prompt="x")
    (sent,) = wire.sent
    assert sent.url == "http://example.com/v1/images/generations"
    assert sent.headers["Authorization"] == f"Bearer {FAKE_KEY}"


def test_https_and_keyless_requests_are_not_refused():
    for base, key in (("https://example.com/v1", FAKE_KEY), ("http://example.com/v1", None)):
        client, wire = tripwired(base)
        client.config.api_key = key
        expected = E.ConnectionFailedError if key else E.MissingKeyError
        with pytest.raises(expected):
            client.generate(model="gpt-image-2", prompt="x")


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("on", True), ("0", False),
                                             ("maybe", False), (True, True)])
def test_allow_insecure_http_setting_is_read_as_yes_or_no(value, expected):
    assert settings.Settings().allow_insecure_http is False
    assert settings.update_settings(allow_insecure_http=value).allow_insecure_http is expected
    assert settings.load_settings().allow_insecure_http is expected
    config = ClientConfig.from_settings(settings.load_settings(), api_key="k")
    assert config.allow_insecure_http is expected


# --- 3. the image-URL policy, as pure functions -------------------------------------------------------------------


@pytest.mark.parametrize("address, reason", [
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("fd12:3456::1", "private"), ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("224.0.0.251", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"), ("100.64.0.1", "non-public"),
    ("8.8.8.8", None), ("93.184.216.34", None), ("172.32.0.1", None), ("2606:4700:4700::1111", None),
])
def test_address_policy(address, reason):
    got = urlpolicy.address_refusal(address)
    assert got == (f"a {reason} address" if reason else None)


REMOTE = "https://api.openai.com/v1"
LOCAL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("url, base, refusal", [
    ("http://127.0.0.1:8000/v1/_files/a.png", LOCAL, None),
    ("http://127.0.0.1:8000/other/a.png?x=1", LOCAL, None),
    ("http://127.0.0.1:22/a.png", LOCAL, "images are fetched only from its own address http://127.0.0.1:8000"),
    ("http://localhost:8000/a.png", LOCAL, "only from its own address"),
    ("https://127.0.0.1:8000/a.png", LOCAL, "only from its own address"),
    ("https://cdn.example.com/a.png", LOCAL, "only from its own address"),
    ("https://cdn.example.com/a.png", REMOTE, None),
    ("https://api.openai.com/files/a.png", REMOTE, None),
    ("https://api.openai.com:8443/a.png", REMOTE, None),
    ("http://cdn.example.com/a.png", REMOTE, "images from other hosts are fetched only over https"),
    ("https://169.254.169.254/latest/meta-data/", REMOTE, "a link-local address"),
    ("https://[fe80::1]/a.png", REMOTE, "a link-local address"),
    ("https://2130706433/a.png", REMOTE, "a loopback address"),
    ("https://127.1/a.png", REMOTE, "a loopback address"),
    ("https://localhost/a.png", REMOTE, "a loopback address"),
    ("https://10.0.0.1/a.png", REMOTE, "a private address"),
    ("https://[::ffff:192.168.0.1]/a.png", REMOTE, "a private address"),
    ("ftp://cdn.example.com/a.png", REMOTE, "only http and https URLs with a host are fetched"),
    ("file:///etc/passwd", REMOTE, "only http and https URLs with a host are fetched"),
    ("https://cdn.example.com:99999/a.png", REMOTE, "only http and https URLs with a host are fetched"),
])
def test_image_url_policy(url, base, refusal):
    got = urlpolicy.image_url_refusal(url, base)
    assert (got is None) if refusal is None else (got is not None and refusal in got), got


def test_every_resolved_address_is_checked():
    assert urlpolicy.addresses_refusal("cdn.example.com", ["93.184.216.34"]) is None
    assert urlpolicy.addresses_refusal("cdn.example.com", ["93.184.216.34", "10.0.0.7"]) == (
        "cdn.example.com resolves to 10.0.0.7, a private address")
    assert urlpolicy.addresses_refusal("cdn.example.com", []) == "cdn.example.com did not resolve to any address"
    assert not urlpolicy.needs_address_check("https://api.openai.com/x.png", REMOTE)
    assert urlpolicy.needs_address_check("https://cdn.example.com/x.png", REMOTE)


@pytest.mark.parametrize("answers, words", [
    (["10.0.0.7"], "cdn.example.com resolves to 10.0.0.7, a private address"),
    (["93.184.216.34", "169.254.169.254"], "cdn.example.com resolves to 169.254.169.254, a link-local address"),
    (["127.0.0.1"], "cdn.example.com resolves to 127.0.0.1, a loopback address"),
    ([], "cdn.example.com did not resolve to any address"),
])
def test_download_refuses_a_host_that_resolves_inside_before_connecting(answers, words):
    client, wire = tripwired(REMOTE, resolve=lambda host, port: list(answers))
    with pytest.raises(E.UnsafeURLError) as info:
        client.download("https://cdn.example.com/a.png?sig=secret")
    assert info.value.message == f"Refused to download an image from https://cdn.example.com/a.png: {words}"
    assert wire.sent == []


# --- 3. real loopback fetches ----------------------------------------------------------------------------------------


def test_image_from_the_api_origin_is_fetched_and_another_local_port_is_not():
    image = png(4, 4)
    with WireServer(routes={"/secret": Reply(200, {}, b"internal admin page")}) as other:
        with WireServer(routes={"/files/a.png": Reply(200, {"Content-Type": "image/png"}, image)}) as api:
            api.push(Reply.json({"created": 1, "data": [{"url": api.origin + "/files/a.png"},
                                                        {"url": other.origin + "/secret"}]}))
            result = client_for(api.url).variation(model="dall-e-2", image=png(8, 8), n=2)
        assert [i.data for i in result.images] == [image]
        assert result.problems == [f"image 2: Refused to download an image from {other.origin}/secret: with a "
                                   f"server on this computer, images are fetched only from its own address "
                                   f"{api.origin}"]
        assert other.requests == []  # not one byte to the other port


def test_a_redirect_from_the_api_origin_to_another_local_port_is_not_followed():
    with WireServer() as other:
        with WireServer() as api:
            api.routes["/r.png"] = Reply(302, {"Location": other.origin + "/x"})
            with pytest.raises(E.UnsafeURLError) as info:
                client_for(api.url).download(api.origin + "/r.png")
        assert other.requests == [] and f"from {other.origin}/x:" in info.value.message


def test_endless_redirects_end_after_five():
    with WireServer() as api:
        api.routes["/loop.png"] = Reply(302, {"Location": "/loop.png"})
        with pytest.raises(E.UnsafeURLError) as info:
            client_for(api.url).download(api.origin + "/loop.png")
        assert info.value.message == "Refused to follow more than 5 redirects while downloading an image"
        assert len(api.requests) == 6


@pytest.fixture(scope="module")
def named_tls(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"), dns_names=("images.test",))


def test_download_connects_to_the_checked_address_and_verifies_the_host_name(named_tls, monkeypatch):
    """DNS rebinding: the name is resolved once, checked, and that address is connected to; TLS still names
    and verifies images.test. Later resolver answers (here: a private address) are never used."""
    ca, cert, key = named_tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    answers = [["127.0.0.1"], ["10.0.0.7"]]
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answers[min(len(asked) - 1, 1)]

    real = urlpolicy.address_refusal
    monkeypatch.setattr(urlpolicy, "address_refusal",  # this one test lets loopback stand for a public host
                        lambda a: None if str(a) == "127.0.0.1" else real(a))
    image = png(4, 4)
    with WireServer(routes={"/a.png": Reply(200, {}, image)}, tls=server_tls_context(cert, key)) as cdn:
        client = client_for("https://api.test/v1", resolve=resolve)
        assert client.download(f"https://images.test:{cdn.port}/a.png") == image
        assert asked == [("images.test", cdn.port)]
        assert cdn.requests[0].headers["host"] == f"images.test:{cdn.port}"
        assert "authorization" not in cdn.requests[0].headers


def test_a_pinned_download_still_verifies_the_certificate_against_the_name(named_tls, monkeypatch):
    """Same CA, same server, but the URL names other.test, which the certificate does not cover: refused, so the
    name (not the address connected to) is what TLS verifies."""
    ca, cert, key = named_tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    monkeypatch.setattr(urlpolicy, "address_refusal", lambda a: None)
    with WireServer(routes={"/a.png": Reply(200, {}, png(4, 4))}, tls=server_tls_context(cert, key)) as cdn:
        client = client_for("https://api.test/v1", resolve=lambda h, p: ["127.0.0.1"])
        with pytest.raises(E.TLSError) as info:
            client.download(f"https://other.test:{cdn.port}/a.png")
        assert "other.test" in info.value.message and cdn.requests == []
