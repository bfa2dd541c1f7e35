"""`bridge send`: a test webhook, signed as a source's provider would, to the running bridge."""

from __future__ import annotations

from typing import Any

import click

from bridge.cli.edge import config_option, handle_errors, read_config, say


@click.command()
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
    say(answer.describe())
    if not answer.is_accepted:
        raise click.exceptions.Exit(1)
