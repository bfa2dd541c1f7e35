"""`bridge status`: the summary of sources and targets in the terminal, or as JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from bridge import jsontext
from bridge.cli.edge import config_option, handle_errors, read_config
from bridge.errors import StoreError
from bridge.events import format_time
from bridge.status.summary import Summary, collect
from bridge.store import open_store


def _when(at_ms: int | None) -> str:
    return format_time(at_ms) if at_ms is not None else "-"


def render(summary: Summary) -> None:
    """Print the summary as two tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    console.print(f"database  {summary.database}")
    sources = Table(box=None, pad_edge=False, title="sources", title_justify="left")
    for column in ("source", "kind", "status", "last poll", "last event", "events", "last error"):
        sources.add_column(column, justify="right" if column == "events" else "left")
    for s in summary.sources:
        sources.add_row(
            s.name,
            s.kind,
            s.status,
            _when(s.last_poll_ms) if s.kind == "poll" else "-",
            _when(s.last_event_ms),
            str(s.events),
            s.last_error or "",
        )
    targets = Table(box=None, pad_edge=False, title="targets", title_justify="left")
    for column in ("target", "health", "circuit", "backlog", "dead", "last error"):
        targets.add_column(column, justify="right" if column in ("backlog", "dead") else "left")
    for t in summary.targets:
        targets.add_row(
            t.name, t.health, t.circuit, str(t.backlog), str(t.dead), t.last_error or ""
        )
    console.print(sources)
    console.print(targets)
    replicas = Table(box=None, pad_edge=False, title="replicas", title_justify="left")
    for column in ("replica", "started", "last heartbeat", "claims", "polls"):
        replicas.add_column(column, justify="right" if column == "claims" else "left")
    for r in summary.replicas:
        replicas.add_row(
            r.id, _when(r.started_ms), _when(r.heartbeat_ms), str(r.claims), ", ".join(r.polls)
        )
    if not summary.replicas:
        replicas.add_row("(none running)", "", "", "", "")
    console.print(replicas)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@handle_errors
def status(config_path: str, as_json: bool) -> None:
    """Show each source's last poll or receive and each target's health, backlog and dead."""
    config = read_config(config_path)
    location = config.database_path
    if "://" not in location and location != ":memory:" and not Path(location).exists():
        raise StoreError(f"no database at {location}: the bridge has not run with this config")
    store = open_store(location)
    store.open()
    try:
        summary = asyncio.run(collect(config, store))
    finally:
        store.close()
    if as_json:
        click.echo(jsontext.dumps(summary.to_dict(), indent=2))
    else:
        render(summary)
