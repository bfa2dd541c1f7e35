"""`bridge check` and `bridge run`: validate the config, run the daemon."""

from __future__ import annotations

import click

from bridge.cli.edge import config_option, handle_errors, read_config, url_masker
from bridge.poll.describe import describe, every_text


@click.command()
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
            click.echo(f"  source    {name}: poll {p.method} {shown(p.url)} every {every_text(p)}")
            for label, text in describe(p):
                click.echo(f"            {label:8} {text}")
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
    for merge in config.merge:
        members = " and ".join(
            f"{name} ({'poll' if config.sources[name].kind == 'poll' else 'push'})"
            for name in merge.sources
        )
        click.echo(f"  merge     {merge.name}: {members}, match {merge.match}")


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
@handle_errors
def run(config_path: str, log_level: str, log_format: str, replica_id: str | None) -> None:
    """Run the bridge: poll sources, receive webhooks and deliver events, until stopped."""
    from bridge import daemon, logs

    config = read_config(config_path)
    logs.configure(log_level, log_format, logs.config_secrets(config))
    daemon.run(config, replica_id)
