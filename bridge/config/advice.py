"""What `bridge check` warns about in a valid config: settings that run, but probably not as
meant. Pure judgements over a `Config`, one line each; none stops the bridge from starting.
"""

from __future__ import annotations

import ipaddress

from bridge.config.models import Config


def _seconds(value: float) -> str:
    return f"{value:g}s"


def is_loopback_host(host: str) -> bool:
    """True when `host` (as written in `server.listen`) can only be reached from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _poll_warnings(config: Config) -> list[str]:
    out = []
    for name, source in config.sources.items():
        poll = source.poll
        if poll is None:
            continue
        where = f"sources.{name}.poll"
        if poll.jitter_s and poll.jitter_s >= poll.min_every_s:
            out.append(
                f"{where}.jitter ({_seconds(poll.jitter_s)}) is at least every"
                f" ({_seconds(poll.min_every_s)}): polls come at random rather than on a beat"
            )
        if poll.ignore and poll.version:
            out.append(
                f"{where}.ignore has no effect together with version: an item changes only"
                " when its version does"
            )
    return out


def _webhook_warnings(config: Config) -> list[str]:
    return [
        f"sources.{name}.webhook.verify is none: anyone who can reach"
        f" {config.webhook_path(name)} can add events"
        for name, source in config.sources.items()
        if source.webhook is not None and source.webhook.verify == "none"
    ]


def _server_warnings(config: Config) -> list[str]:
    server = config.server
    if server.admin_token is None and not is_loopback_host(server.host):
        return [
            f"server.listen ({server.listen}) is not a loopback address and server.admin_token"
            " is not set: the status page and admin routes answer 403 to everyone"
        ]
    if server.admin_token is None and server.trusted_proxies:
        return [
            "server.trusted_proxies is set and server.admin_token is not: the status page and"
            " admin routes answer 403 to every client a proxy forwards (set admin_token to"
            " reach them through the proxy)"
        ]
    return []


def _empty_warnings(config: Config) -> list[str]:
    if config.is_empty:
        return ["no sources and no targets: bridge run refuses this config without --allow-empty"]
    return []


def warnings(config: Config) -> list[str]:
    """Every warning about `config`, and the loader's notes on how it is written."""
    return [
        *config.notes,
        *_empty_warnings(config),
        *_server_warnings(config),
        *_poll_warnings(config),
        *_webhook_warnings(config),
    ]
