"""Which hosts the engine talks to: the one loopback test, the image-URL policy and the cleartext-key rule.

Why a module of its own: these rules decide where the API key and the user's requests may go, so each must
exist exactly once. Before, a second, narrower loopback test in the job runner disagreed with the client's
(``127.1`` and ``2130706433`` name 127.0.0.1 for the system resolver but were not recognised), and the client
fetched any image URL a server named: any port on this computer, link-local cloud metadata, private networks.

Everything here is a pure function of text and addresses (no network), so tests can cover every range
without sending a packet anywhere but loopback. Resolving a host name is the caller's job
(:func:`resolve_host` is the default), and the caller connects to the address that was checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Names that mean this computer without asking DNS (RFC 6761); other names are resolved and checked.
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
#: Numeric IPv4 forms inet_aton (and so getaddrinfo) accepts: 127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1.
_INET_ATON_FORM = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
#: NAT64's well-known prefix embeds an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_address(host: str) -> IPAddress | None:
    """The IP address a host literal names, in every textual form the system resolver takes without DNS.

    ``127.1``, ``2130706433``, ``0x7f000001`` and ``0177.0.0.1`` are all 127.0.0.1 to ``getaddrinfo``;
    ``[::1]`` and ``::1%lo`` are ::1. IPv4-mapped and NAT64 IPv6 addresses are returned as the IPv4 address
    they reach. None for a host name.
    """
    text = (host or "").strip().strip("[]")
    try:
        return _embedded_ipv4(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _INET_ATON_FORM.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (``::ffff:10.0.0.1``, ``64:ff9b::a00:1``), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _host_of(url_or_host: str) -> str:
    text = (url_or_host or "").strip()
    if "://" not in text:
        return text.lower()
    try:
        return (urlsplit(text).hostname or "").lower()
    except ValueError:
        return ""


def is_loopback(url_or_host: str) -> bool:
    """True when a URL (or a bare host) names this computer: localhost, 127.0.0.0/8 in any textual form, ::1.

    The engine's one definition: the local server may run without a key, plain http is fine to it, and an
    image URL on it is fetched only from the API's own origin.
    """
    host = _host_of(url_or_host)
    if host in LOOPBACK_NAMES:
        return True
    address = host_address(host)
    return address is not None and address.is_loopback


def address_refusal(address: IPAddress | str) -> str | None:
    """Why an image must not be fetched from ``address`` ("a private address", ...); None for a public one.

    The order matters only for the wording: 169.254.0.0/16 is private too, but "link-local" says more.
    """
    addr = _embedded_ipv4(ipaddress.ip_address(address) if isinstance(address, str) else address)
    checks = (
        ("unspecified", addr.is_unspecified),
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("private", addr.is_private),
        ("reserved", addr.is_reserved),
        ("non-public", not addr.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    return None


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None for an unusable URL."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def origin_text(url: str) -> str:
    found = origin(url)
    if found is None:
        return "(no URL)"
    scheme, host, port = found
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def image_url_refusal(url: str, base_url: str) -> str | None:
    """Why an image URL named in an answer must not be fetched, judged by its text alone; None when it may be
    (subject, unless it is the API's own origin, to :func:`address_refusal` of every address its host
    resolves to; see :func:`needs_address_check`).

    Allowed: the API's own origin (scheme, host and port of the base URL); otherwise, when the API is not on
    this computer, https URLs. With a server on this computer, only its own origin: anything else on loopback
    would let it send requests to any local port in the user's name.
    """
    target = origin(url)
    if target is None:
        return "only http and https URLs with a host are fetched"
    if target == origin(base_url):
        return None
    if is_loopback(base_url):
        return f"with a server on this computer, images are fetched only from its own address {origin_text(base_url)}"
    if target[0] != "https":
        return "images from other hosts are fetched only over https"
    literal = host_address(target[1])
    if literal is not None:
        return address_refusal(literal)
    if target[1] in LOOPBACK_NAMES:
        return "a loopback address"
    return None


def needs_address_check(url: str, base_url: str) -> bool:
    """False only for the API's own origin (the user chose that server; it is checked like every request)."""
    return origin(url) != origin(base_url)


def addresses_refusal(host: str, addresses: Sequence[str]) -> str | None:
    """Why a host that resolved to ``addresses`` must not be contacted: any disallowed address refuses it (a
    name that resolves to a public and a private address could be answered from either)."""
    if not addresses:
        return f"{host} did not resolve to any address"
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            return f"{host} resolves to {address}, {reason}"
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order, without duplicates."""
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in seen:
            seen.append(address)
    return seen


def insecure_key_refusal(base_url: str, *, has_key: bool, allow_insecure_http: bool) -> str | None:
    """Why the key must not be sent to ``base_url``: plain http to a host that is not this computer carries it
    in cleartext past every router on the way. None when https, loopback, no key, or explicitly allowed.
    The message names ``base_url`` as configured (check_base_url keeps credentials out of it)."""
    found = origin(base_url)
    if not has_key or allow_insecure_http or found is None or found[0] != "http" or is_loopback(base_url):
        return None
    return (
        f"Refused to send the API key over plain http to {base_url}: anyone on the network "
        "between here and that server could read it"
    )
