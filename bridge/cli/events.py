"""`bridge events`: the stored events, newest first."""

from __future__ import annotations

import asyncio

import click

from bridge import jsontext
from bridge.cli.edge import config_option, handle_errors, read_config
from bridge.events import format_time


@click.command()
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
