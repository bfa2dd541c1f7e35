"""Reloading the config (SIGHUP): re-read and validate the file, then apply it or keep the old.

A new config is applied only whole: it must load and validate first, so a mistake in the
file is logged as one line and the config in force stays as it was. So is a config with no
source and no target (an emptied or truncated file would remove every source, and every
webhook would get 404), unless the daemon was started with `--allow-empty`. Every engine
then gets `reload(new_config)`, which adds, removes and changes its sources and targets
without dropping queued work (deliveries live in the store, not in memory). Two things
cannot change without a restart, because they are resources opened at start: the listening
address and the database; a change to them is logged and waits for the next start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from bridge import logs, metrics
from bridge.config import Config, ServerConfig, load_config
from bridge.errors import ConfigError, config_mistakes
from bridge.events import now_ms
from bridge.runtime import Component, Runtime

log = logging.getLogger("bridge.reload")


def config_changes(old: Config, new: Config) -> list[str]:
    """What differs between two configs, one phrase per change (`target b added`)."""
    changes: list[str] = []
    for group in ("sources", "targets"):
        before, after = getattr(old, group), getattr(new, group)
        kind = group[:-1]
        changes += [f"{kind} {name} added" for name in sorted(after.keys() - before.keys())]
        changes += [f"{kind} {name} removed" for name in sorted(before.keys() - after.keys())]
        changes += [
            f"{kind} {name} changed"
            for name in sorted(before.keys() & after.keys())
            if before[name] != after[name]
        ]
    if old.compare != new.compare:
        changes.append("compare changed")
    if old.server.admin_token != new.server.admin_token:
        changes.append("server.admin_token changed")
    if old.server.log_accepted != new.server.log_accepted:
        changes.append(f"server.log_accepted {'on' if new.server.log_accepted else 'off'}")
    return changes


# The server settings that are read once, when the daemon starts listening: key -> attribute.
_SERVER_AT_START = {
    "listen": "listen",
    "max_connections": "max_connections",
    "header_timeout": "header_timeout_s",
    "body_timeout": "body_timeout_s",
    "idle_timeout": "idle_timeout_s",
    "max_header_bytes": "max_header_bytes",
    # The access log is middleware, put in front of the app once at start.
    "access_log": "access_log",
}


def same_address(listen: ServerConfig, bound: str) -> bool:
    """True when `listen` names the address the server is bound to (`host:port` as bound).

    A name is compared as the address it stands for (`localhost` as 127.0.0.1), and port 0
    (any free port) matches the port it got.
    """
    host, _, port = bound.rpartition(":")
    wanted_port = listen.port
    if wanted_port not in (0, int(port)):
        return False
    return _normal_host(listen.host) == _normal_host(host.strip("[]"))


def _normal_host(host: str) -> str:
    host = host.lower()
    aliases = {"localhost": "127.0.0.1", "": "0.0.0.0", "ip6-localhost": "::1"}  # noqa: S104
    host = aliases.get(host, host)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def restart_needed(old: Config, new: Config, bound: str | None = None) -> list[str]:
    """Keys whose change takes effect only at the next start.

    `listen` is compared with the address actually bound (`bound`, `host:port`) when it is
    known, so setting it back to the address in use is no change.
    """
    out = []
    for key, attribute in _SERVER_AT_START.items():
        if key == "listen" and bound is not None:
            if not same_address(new.server, bound):
                out.append("server.listen")
        elif getattr(old.server, attribute) != getattr(new.server, attribute):
            out.append(f"server.{key}")
    if old.database_path != new.database_path:
        out.append("database")
    return out


# Why a config with no source and no target is not run (at start or on reload).
EMPTY_CONFIG = (
    "no sources and no targets: refusing to run an empty config "
    "(start with --allow-empty to allow it)"
)


async def reload_config(
    runtime: Runtime,
    components: Sequence[Component],
    path: Path,
    bound: str | None = None,
    *,
    allow_empty: bool = False,
) -> str | None:
    """Load `path` and apply it to every component and to `runtime`.

    Returns None when applied, else the one-line reason it was refused (secrets masked).
    An empty config (`Config.is_empty`) is refused unless `allow_empty`.
    """
    try:
        new = await asyncio.to_thread(load_config, path)
        if new.is_empty and not allow_empty:
            raise ConfigError(str(path), None, "", EMPTY_CONFIG)
    except ConfigError as exc:
        # ConfigError messages mask secret values; safe to log whole, one line per mistake.
        mistakes = config_mistakes(exc)
        for mistake in mistakes:
            log.error("reload refused, the config in force is unchanged: %s", mistake)
        metrics.RELOADS.labels("refused").inc()
        more = f" (and {len(mistakes) - 1} more: bridge check)" if len(mistakes) > 1 else ""
        # The reason goes to systemd's status too, which no log formatter scrubs.
        reason = logs.scrub(f"{mistakes[0]}{more}")
        runtime.operational.reload_refused(reason, now_ms())
        return reason
    old = runtime.config
    # Secrets that are new in this file must be masked before any engine can log them.
    logs.redact(logs.config_secrets(new))
    for component in components:
        try:
            await component.reload(new)
        except Exception:
            log.exception("reload of %s failed", type(component).__name__)
    runtime.config = new
    metrics.RELOADS.labels("applied").inc()
    changes = config_changes(old, new)
    log.info("reloaded %s: %s", path, "; ".join(changes) if changes else "no changes")
    for key in restart_needed(old, new, bound):
        log.warning("%s changed: it takes effect at the next restart", key)
    return None
