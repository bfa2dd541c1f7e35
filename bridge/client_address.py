"""Who sent a request: the peer's address, or the client a trusted reverse proxy names.

A request's peer is the address its TCP connection comes from. Behind a reverse proxy that
is the proxy; the proxy names the client in `X-Forwarded-For: client, proxy1, ...` or
`Forwarded: for=client, for=proxy1` (RFC 7239), appending the address it saw to what came
in. Anyone can send those headers, so they count only from `server.trusted_proxies`: the
list is read from the right, each trusted hop revealing the one before it, and the first
address that is not a trusted proxy is the client. When the peer is not trusted, the
headers are ignored. An entry that is no IP address (`unknown`, an obfuscated name), or
both headers naming different clients, leaves the client unknown (None), which no
`allow_from` admits. Pure functions; imports nothing of the bridge.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RawHeaders = Iterable[tuple[bytes, bytes]]

_FORWARDED_FOR = re.compile(r'(?i)(?:^|[;,\s])for\s*=\s*(?:"([^"]*)"|([^;,\s]+))')
_IPV4_WITH_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):\d+\Z")


def parse_address(text: str | None) -> IPAddress | None:
    """The IP address in `text` (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:80`, `::1`), an
    IPv4-mapped IPv6 address as the IPv4 one; None when it holds no IP address."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text, closed, _port = text[1:].partition("]")
        if not closed:
            return None
    elif match := _IPV4_WITH_PORT.match(text):
        text = match.group(1)
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_in(address: IPAddress | None, networks: Sequence[Network]) -> bool:
    """True when `address` is known and inside one of `networks`."""
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def _values(headers: RawHeaders, name: bytes) -> str | None:
    """Every value of header `name`, joined by commas in order; None when it is absent."""
    found = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ", ".join(found) if found else None


def x_forwarded_for(headers: RawHeaders) -> list[str] | None:
    """The hops of `X-Forwarded-For`, first (the client) to last; None without the header."""
    joined = _values(headers, b"x-forwarded-for")
    return None if joined is None else [hop.strip() for hop in joined.split(",")]


def forwarded_for(headers: RawHeaders) -> list[str] | None:
    """The `for=` hops of `Forwarded`, first to last; None without the header."""
    joined = _values(headers, b"forwarded")
    if joined is None:
        return None
    return [quoted or bare for quoted, bare in _FORWARDED_FOR.findall(joined)]


def _walk(peer: IPAddress, hops: list[str], trusted: Sequence[Network]) -> IPAddress | None:
    current: IPAddress | None = peer
    for hop in reversed(hops):
        if not is_in(current, trusted):
            break
        current = parse_address(hop)
    return current


def client_address(
    peer: str | None, headers: RawHeaders, trusted: Sequence[Network]
) -> IPAddress | None:
    """The client of a request from `peer` with `headers`, trusting the proxies in `trusted`."""
    address = parse_address(peer)
    if address is None or not is_in(address, trusted):
        return address
    headers = list(headers)
    answers = {
        _walk(address, hops, trusted)
        for hops in (x_forwarded_for(headers), forwarded_for(headers))
        if hops is not None
    }
    if not answers:
        return address  # the proxy sent it itself
    return answers.pop() if len(answers) == 1 else None
