"""Who sent a request (`bridge/client_address.py`): the peer, or what trusted proxies say;
and the config keys `allow_from` and `server.trusted_proxies`."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bridge.client_address import client_address, is_in, parse_address
from bridge.config import parse_config
from bridge.errors import ConfigError

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def client(peer: str, **headers: str) -> str | None:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    found = client_address(peer, raw, PROXIES)
    return None if found is None else str(found)


def test_an_untrusted_peer_is_the_client_whatever_its_headers_say() -> None:
    assert client("192.0.2.9", x_forwarded_for="10.1.1.1") == "192.0.2.9"
    assert client("192.0.2.9", forwarded="for=198.51.100.1") == "192.0.2.9"
    assert client("::ffff:192.0.2.9") == "192.0.2.9"


def test_a_trusted_proxy_names_the_client_read_from_the_right() -> None:
    assert client("10.0.0.1") == "10.0.0.1"
    assert client("10.0.0.1", x_forwarded_for="198.51.100.7") == "198.51.100.7"
    # A client that sends its own X-Forwarded-For only adds entries on the left.
    assert client("10.0.0.1", x_forwarded_for="10.9.9.9, 198.51.100.7") == "198.51.100.7"
    assert client("10.0.0.1", x_forwarded_for="198.51.100.7, 10.0.0.2") == "198.51.100.7"
    assert client("10.0.0.1", x_forwarded_for="10.0.0.3, 10.0.0.2") == "10.0.0.3"
    assert client("10.0.0.1", forwarded='for="[2001:db8::7]:4711";proto=https') == "2001:db8::7"
    assert client("10.0.0.1", forwarded="for=198.51.100.7:80, for=10.0.0.2") == "198.51.100.7"
    agree = {"x_forwarded_for": "198.51.100.7", "forwarded": "for=198.51.100.7"}
    assert client("10.0.0.1", **agree) == "198.51.100.7"


def test_an_unknown_or_contradicted_client_is_none() -> None:
    assert client("10.0.0.1", x_forwarded_for="unknown") is None
    assert client("10.0.0.1", forwarded="for=_hidden") is None
    assert client("10.0.0.1", x_forwarded_for="198.51.100.7", forwarded="for=192.0.2.1") is None
    assert client_address(None, [], PROXIES) is None
    assert not is_in(None, PROXIES)


def test_parse_address_forms() -> None:
    pairs = [("192.0.2.1", "192.0.2.1"), ("192.0.2.1:80", "192.0.2.1"), ("[::1]:80", "::1"),
             ("fe80::1%eth0", "fe80::1"), (" ::1 ", "::1")]  # fmt: skip
    for text, expected in pairs:
        assert str(parse_address(text)) == expected
    for text in ("", None, "name.example", "1.2.3", "[::1"):
        assert parse_address(text) is None
    assert is_in(parse_address("10.2.3.4"), PROXIES)
    assert not is_in(parse_address("11.2.3.4"), PROXIES)
    assert not is_in(parse_address("::ffff:11.2.3.4"), PROXIES)


def test_the_config_reads_networks_and_names_a_bad_one(tmp_path: Path) -> None:
    config = parse_config(
        "server: {trusted_proxies: [10.0.0.0/8, '::1']}\n"
        "sources:\n  s:\n    webhook:\n"
        "      {verify: none, allow_unsigned: true, allow_from: 192.0.2.0/24}\n",
        path=tmp_path / "c.yaml",
    )
    assert [str(n) for n in config.server.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    hook = config.sources["s"].webhook
    assert hook is not None and [str(n) for n in hook.allow_from] == ["192.0.2.0/24"]
    with pytest.raises(ConfigError, match=r"server.trusted_proxies.0"):
        parse_config("server: {trusted_proxies: [10.0.0.1/8]}\n", path=tmp_path / "c.yaml")
