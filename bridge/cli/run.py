"""`bridge check` and `bridge run`: validate the config, run the daemon."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import click

from bridge import jsontext
from bridge.api import PREFIX as API_PREFIX
from bridge.cli.daemon_api import base_url
from bridge.cli.edge import (
    ConfigFailure,
    config_option,
    handle_errors,
    read_config,
    say,
    url_masker,
)
from bridge.client_address import parse_address
from bridge.config import Config, TargetConfig, load_config
from bridge.config.advice import warnings
from bridge.config.auth import OAuth2Config
from bridge.config.kinds import EXTRAS
from bridge.errors import ConfigError, StoreError, config_mistakes
from bridge.logs import plural
from bridge.poll.auth import (
    InForce,
    credential_configs,
    credential_name,
    refresh_token_in_force,
)
from bridge.poll.describe import describe, every_text


def _refresh_credentials(config: Config) -> dict[str, OAuth2Config]:
    """The OAuth2 credentials with the refresh_token grant, by credential name."""
    found = {n: c for n, c in credential_configs(config).items() if c.grant == "refresh_token"}
    for name, poll in config.polled.items():
        oauth2 = poll.auth.oauth2 if poll.auth is not None else None
        if oauth2 is not None and oauth2.grant == "refresh_token":
            found[f"source:{name}"] = oauth2
    return found


def refresh_tokens_in_force(config: Config) -> dict[str, str]:
    """Which refresh token each refresh_token credential uses, in words: the config's, or
    the one its token endpoint rotated and the store keeps (read, never written)."""
    wanted = _refresh_credentials(config)
    if not wanted:
        return {}
    location = config.database_path
    if "://" not in location and not Path(location).exists():
        return {name: InForce().text for name in wanted}
    from bridge.store import open_store

    async def read() -> dict[str, str]:
        return {
            name: (await refresh_token_in_force(store, name, oauth2)).text
            for name, oauth2 in wanted.items()
        }

    try:
        store = open_store(location)
        store.open()
        try:
            return asyncio.run(read())
        finally:
            store.close()
    except StoreError as exc:
        return {name: f"unknown, the database cannot be read ({exc})" for name in wanted}


def api_access(config: Config) -> dict[str, Any]:
    """The HTTP API's base URL and who may call it: `open` (no token: any client on this
    machine), `token` (Authorization: Bearer <server.admin_token>) or `closed` (no token and
    a listen address that is not loopback: every call is refused)."""
    server = config.server
    address = parse_address(server.host)
    is_loopback = server.host == "localhost" or (address is not None and address.is_loopback)
    if server.admin_token is not None:
        access, text = "token", "needs Authorization: Bearer <server.admin_token>"
    elif is_loopback:
        access, text = "open", "open to clients on this machine (no server.admin_token)"
    else:
        access, text = "closed", "refused: set server.admin_token to call it from elsewhere"
    return {
        "url": base_url(server) + API_PREFIX,
        "open": access == "open",
        "access": access,
        "text": text,
    }


def check_summary(config_path: str, config: Config) -> dict[str, Any]:
    """What `bridge check` reports, as data: the config's parts (secrets masked), warnings."""
    shown = url_masker(config)
    sources: list[dict[str, Any]] = []
    in_force = refresh_tokens_in_force(config)
    for name, source in config.sources.items():
        if source.poll:
            p = source.poll
            request = dict(describe(p, credential_configs(config)))
            credential = credential_name(name, p.auth)
            if credential in in_force:
                request["auth"] += f"; refresh token in force: {in_force[credential]}"
            sources.append(
                {
                    "name": name,
                    "kind": "poll",
                    "method": "POST" if p.graphql is not None else p.method,
                    "url": shown(p.url),
                    "every": every_text(p),
                    "request": request,
                }
            )
        elif source.webhook:
            w = source.webhook
            sources.append(
                {
                    "name": name,
                    "kind": "webhook",
                    "path": config.webhook_path(name),
                    "verify": w.verify,
                    "secrets": len(w.secrets),
                }
            )
    return {
        "config": config_path,
        "ok": True,
        "database": shown(config.database_path),
        "listen": config.server.listen,
        "admin_token": config.server.admin_token is not None,
        "api": api_access(config),
        "sources": sources,
        "targets": [
            {
                "name": name,
                "kind": t.kind,
                "url": shown(t.address),
                "to": _destination(t),
                "events": list(t.events),
            }
            for name, t in config.targets.items()
        ],
        "extras": _extras(config),
        "compare": [{"poll": pair.poll, "push": pair.push} for pair in config.compare],
        "merge": [
            {"name": m.name, "sources": list(m.sources), "match": m.match} for m in config.merge
        ],
        "warnings": _warnings(config),
    }


def _destination(target: TargetConfig) -> str | None:
    """Where in its broker a target publishes (None for a webhook)."""
    if target.nats is not None:
        stream = f" (stream {target.nats.stream})" if target.nats.stream else ""
        return f"subject {target.nats.subject}{stream}"
    if target.redis is not None:
        return f"stream {target.redis.stream}"
    if target.notify is not None:
        return f"{len(target.notify)} Apprise service(s)"
    if target.mqtt is not None:
        return f"topic {target.mqtt.topic} qos {target.mqtt.qos}"
    if target.amqp is not None:
        exchange = target.amqp.exchange or "(default)"
        return f"exchange {exchange} routing key {target.amqp.routing_key}"
    return None


def _extras(config: Config) -> list[dict[str, Any]]:
    """The extras the config's targets need, and whether each is installed."""
    kinds = sorted({t.kind for t in config.targets.values() if t.kind in EXTRAS})
    out = []
    for kind in kinds:
        extra, module = EXTRAS[kind]
        installed = importlib.util.find_spec(module) is not None
        out.append({"extra": extra, "for": f"{kind} targets", "installed": installed})
    return out


def _warnings(config: Config) -> list[str]:
    params = [
        f"{name}: params.{key} replaces {key} in the query of url"
        for name, source in config.sources.items()
        if source.poll
        for key in source.poll.overridden_params
    ]
    return [*params, *warnings(config)]


def _print_check(summary: dict[str, Any], config: Config) -> None:
    say(f"{summary['config']}: ok")
    say(f"  database  {summary['database']}")
    say(f"  listen    {summary['listen']}")
    if summary["admin_token"]:
        say("  admin     token set (***)")
    say(f"  api       {summary['api']['url']}: {summary['api']['text']}")
    for s in summary["sources"]:
        if s["kind"] == "poll":
            say(f"  source    {s['name']}: poll {s['method']} {s['url']} every {s['every']}")
            for label, text in s["request"].items():
                say(f"            {label:8} {text}")
        else:
            secrets = f", {plural(s['secrets'], 'secret')} ***" if s["secrets"] else ""
            say(f"  source    {s['name']}: webhook {s['path']} verify {s['verify']}{secrets}")
    for t in summary["targets"]:
        events = f"events [{', '.join(t['events'])}]"
        if t["kind"] == "webhook":
            say(f"  target    {t['name']}: {t['url']} {events}, secret ***")
        else:
            say(f"  target    {t['name']}: {t['kind']} {t['url']} {t['to']} {events}")
    for e in summary["extras"]:
        if e["installed"]:
            say(f"  extra     {e['extra']} for {e['for']}: installed")
        else:
            say(
                f"  extra     {e['extra']} for {e['for']}: not installed:"
                f" pip install '.[{e['extra']}]'"
            )
    for pair in summary["compare"]:
        say(f"  compare   {pair['poll']} (poll) with {pair['push']} (push)")
    for merge in config.merge:
        members = " and ".join(
            f"{name} ({'poll' if config.sources[name].kind == 'poll' else 'push'})"
            for name in merge.sources
        )
        say(f"  merge     {merge.name}: {members}, match {merge.match}")
    for warning in summary["warnings"]:
        say(f"  warning   {warning}", err=True)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@handle_errors
def check(config_path: str, as_json: bool) -> None:
    """Validate the config and print a summary of its sources and targets (secrets masked).

    Warnings (a setting that runs, but probably not as meant) go to stderr, one line each;
    they do not change the exit status: 0 when the config is valid, 2 when it is not.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        if as_json:
            errors = [str(mistake) for mistake in config_mistakes(exc)]
            answer = {"config": config_path, "ok": False, "error": errors[0], "errors": errors}
            click.echo(jsontext.dumps(answer))
        raise ConfigFailure(str(exc)) from None
    summary = check_summary(config_path, config)
    if as_json:
        click.echo(jsontext.dumps(summary, indent=2))
        for warning in summary["warnings"]:
            say(f"  warning   {warning}", err=True)
        return
    _print_check(summary, config)


@click.command()
@config_option
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="How much to log.",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="Log lines as text or JSON objects.",
)
@click.option(
    "--replica-id",
    envvar="BRIDGE_REPLICA_ID",
    metavar="ID",
    help="This bridge's name among those sharing one database (default: host name and pid).",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Start, and apply reloads, with a config that has no sources and no targets.",
)
@handle_errors
def run(
    config_path: str, log_level: str, log_format: str, replica_id: str | None, allow_empty: bool
) -> None:
    """Run the bridge: poll sources, receive webhooks and deliver events, until stopped.

    A config with no sources and no targets is refused (exit status 2), at start and on
    reload, unless --allow-empty: an emptied file is more often a mistake than a wish.
    """
    from bridge import daemon, logs
    from bridge.daemon.reload import EMPTY_CONFIG

    config = read_config(config_path)
    if config.is_empty and not allow_empty:
        raise ConfigFailure(f"{config_path}: {EMPTY_CONFIG}")
    logs.configure(log_level, log_format, logs.config_secrets(config))
    daemon.run(config, replica_id, allow_empty=allow_empty)


@click.command()
@config_option
@click.option(
    "--pid",
    type=click.IntRange(min=1),
    metavar="PID",
    help="The daemon's process id, as systemd's $MAINPID (default: the daemon answering at"
    " server.listen says its own).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="How long to wait for the daemon's verdict, in seconds.",
)
@handle_errors
def reload(config_path: str, pid: int | None, timeout_s: float) -> None:
    """Reload the running daemon's config (SIGHUP) and wait for its verdict.

    Exits 0 when the daemon applied the file; when it refused it (the config in force stays),
    prints the reason and exits 2 for a mistake in the file, 1 otherwise. The unit's
    ExecReload= runs it, so that `systemctl reload bridge` fails when the reload did.
    """
    from bridge.cli.reloading import reload_daemon

    reload_daemon(config_path, pid, timeout_s)
