"""The `bridge` command line. The only place that turns errors into exit codes.

Exit status: 0 success, 1 a runtime failure (cannot start, store failure), 2 a usage or
config mistake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from bridge import __version__, jsontext
from bridge.config import Config, load_config
from bridge.errors import BridgeError, ConfigError
from bridge.events import format_time
from bridge.masking import mask_url

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A runtime failure: one line on stderr and exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"bridge: {self.format_message()}", err=True)


class ConfigFailure(Failure):
    """A config mistake: one line on stderr and exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


def config_option(fn: F) -> F:
    """The `-c/--config` option shared by every command that reads the config."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        envvar="BRIDGE_CONFIG",
        default="config.yaml",
        show_default=True,
        metavar="FILE",
        help="The YAML config file (else $BRIDGE_CONFIG, else ./config.yaml).",
    )(fn)


def handle_errors(fn: F) -> F:
    """Turn the bridge's errors into one line and an exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise ConfigFailure(str(exc)) from None
        except BridgeError as exc:
            raise Failure(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def read_config(path: str) -> Config:
    """Load the config, or exit 2 with one line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def url_masker(config: Config) -> Callable[[str], str]:
    """How the URLs of `config` are shown: `mask_url`, with the config's own secrets."""
    from bridge.logs import config_secrets

    secrets = frozenset(config_secrets(config))
    return lambda url: mask_url(url, secrets)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bridge")
def cli() -> None:
    """Webhooks for APIs that have none: poll, receive, and deliver one stream of events."""


@cli.command()
@config_option
@handle_errors
def check(config_path: str) -> None:
    """Validate the config and print a summary of its sources and targets (secrets masked)."""
    config = read_config(config_path)
    shown = url_masker(config)
    click.echo(f"{config_path}: ok")
    click.echo(f"  database  {shown(config.database_path)}")
    click.echo(f"  listen    {config.server.listen}")
    if config.server.admin_token:
        click.echo("  admin     token set (***)")
    for name, source in config.sources.items():
        if source.poll:
            p = source.poll
            every = (
                f"{p.every.min_s:g}s..{p.every.max_s:g}s"
                if not isinstance(p.every, float)
                else f"{p.every:g}s"
            )
            click.echo(f"  source    {name}: poll {p.method} {shown(p.url)} every {every}")
            for key in p.overridden_params:
                click.echo(
                    f"  warning   {name}: params.{key} replaces {key} in the query of url", err=True
                )
        elif source.webhook:
            w = source.webhook
            secrets = f", {len(w.secrets)} secret(s) ***" if w.secrets else ""
            path = config.webhook_path(name)
            click.echo(f"  source    {name}: webhook {path} verify {w.verify}{secrets}")
    for name, target in config.targets.items():
        events = ", ".join(target.events)
        click.echo(f"  target    {name}: {shown(target.url)} events [{events}], secret ***")
    for pair in config.compare:
        click.echo(f"  compare   {pair.poll} (poll) with {pair.push} (push)")


@cli.command()
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
@handle_errors
def run(config_path: str, log_level: str, log_format: str, replica_id: str | None) -> None:
    """Run the bridge: poll sources, receive webhooks and deliver events, until stopped."""
    from bridge import daemon, logs

    config = read_config(config_path)
    logs.configure(log_level, log_format, logs.config_secrets(config))
    daemon.run(config, replica_id)


@cli.command()
@config_option
@click.option("--source", help="Only events of this source.")
@click.option("--type", "type_", metavar="TYPE", help="Only events of this type.")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many events, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of CloudEvents.")
@handle_errors
def events(
    config_path: str, source: str | None, type_: str | None, limit: int, as_json: bool
) -> None:
    """List stored events, newest first."""
    from bridge.store import open_store

    config = read_config(config_path)
    store = open_store(config.database_path)
    store.open()
    try:
        found = asyncio.run(store.list_events(source=source, type=type_, limit=limit))
    finally:
        store.close()
    if as_json:
        click.echo(jsontext.dumps([e.to_cloudevent() for e in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("recorded", "source", "origin", "type", "subject", "id"):
        table.add_column(column)
    for e in found:
        table.add_row(format_time(e.recorded_ms), e.source, e.origin, e.type, e.subject or "", e.id)
    Console(width=200).print(table)


@cli.command()
@config_option
@click.argument("source")
@click.option("--file", "body_file", type=click.File("rb"), help="The body to send (JSON).")
@click.option("--type", "type_", metavar="TYPE", help="The event type (default: per provider).")
@click.option("--url", metavar="URL", help="Where to post (default: the source on server.listen).")
@click.option(
    "--signing-key",
    envvar="BRIDGE_SIGNING_KEY",
    metavar="KEY",
    help="A whsk_ key to add a v1a signature (Standard Webhooks sources).",
)
@handle_errors
def send(
    config_path: str,
    source: str,
    body_file: Any,
    type_: str | None,
    url: str | None,
    signing_key: str | None,
) -> None:
    """Post a test webhook to the running bridge, signed as SOURCE's provider would."""
    from bridge.receive import sender

    body = body_file.read() if body_file is not None else None
    prepared = sender.prepare(
        read_config(config_path), source, body=body, event_type=type_, url=url,
        signing_key=signing_key,
    )  # fmt: skip
    answer = sender.post(prepared)
    click.echo(answer.describe())
    if not answer.is_accepted:
        raise click.exceptions.Exit(1)


from bridge.poll.commands import poll as _poll  # noqa: E402

cli.add_command(_poll)
from bridge.compare_commands import demo, latency  # noqa: E402

cli.add_command(latency)
cli.add_command(demo)

from bridge.deliver import commands as _deliver_commands  # noqa: E402

_deliver_commands.register(cli)

from bridge.status.commands import status as _status  # noqa: E402

cli.add_command(_status)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="bridge")


if __name__ == "__main__":  # pragma: no cover
    main()
