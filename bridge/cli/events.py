"""`bridge events` (the stored events, newest first, or followed as they are recorded) and
`bridge event show ID` (one event, its deliveries and every attempt).

Both only read the database: they work with or without a running daemon, and with
`--database PATH` even while the config file does not load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

import click

from bridge import jsontext
from bridge.cli.edge import (
    config_for_reading,
    config_option,
    database_option,
    duration_option,
    existing_database,
    handle_errors,
    is_config_less,
    print_table,
    say,
)
from bridge.config import Config
from bridge.events import BRIDGE_SOURCE, Event, format_time, now_ms
from bridge.status.deliveries import delivery_json
from bridge.store import Store, open_store
from bridge.store.base import TargetState
from bridge.store.deliveries import AttemptRow, DeliveryRow

# How often `--follow` looks for new events.
FOLLOW_EVERY_S = 0.5
# How far before the newest event printed each look goes (see `_follow`).
FOLLOW_LOOKBACK_MS = 10_000
COLUMNS = ("recorded", "source", "origin", "type", "subject", "id")


def is_glob(pattern: str) -> bool:
    """True when `pattern` has a glob character (`*`, `?`, `[`)."""
    return any(c in pattern for c in "*?[")


def keep(events: list[Event], type_: str | None, until_ms: int | None) -> Iterator[Event]:
    """The events whose type matches the glob `type_` and recorded before `until_ms`."""
    for e in events:
        if type_ is not None and not fnmatchcase(e.type, type_):
            continue
        if until_ms is not None and e.recorded_ms >= until_ms:
            continue
        yield e


async def select_events(
    store: Store,
    *,
    source: str | None = None,
    type_: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Events newest first: of `source`, of a type matching the glob `type_`, recorded in
    [since_ms, until_ms); an exact type is filtered by the store, a glob here."""
    exact = type_ if type_ is not None and not is_glob(type_) else None
    in_store = limit if exact == type_ and until_ms is None else None
    found = await store.list_events(source=source, type=exact, since_ms=since_ms, limit=in_store)
    kept = list(keep(found, type_ if exact is None else None, until_ms))
    return kept[:limit] if limit is not None else kept


async def check_source(config: Config, store: Store, source: str | None) -> None:
    """A usage mistake (exit 2) when `source` is neither configured nor in the database."""
    if source is None or source in config.sources or any(m.name == source for m in config.merge):
        return
    if source == BRIDGE_SOURCE:
        return  # the bridge's own events (bridge/operational.py), none recorded yet
    if await store.count_events(source=source):
        return  # removed from the config, but its events are still stored
    known = ", ".join(sorted(config.sources)) or "none"
    hint = "" if is_config_less(config) else f" (sources: {known})"
    raise click.UsageError(f"no source named {source!r}{hint}")


def with_store(location: str, fn: Any) -> Any:
    """Open the store at `location`, run the coroutine `fn(store)`, close it."""
    store = open_store(location)
    store.open()
    try:
        return asyncio.run(fn(store))
    finally:
        store.close()


def _row(e: Event) -> tuple[str, ...]:
    return (format_time(e.recorded_ms), e.source, e.origin, e.type, e.subject or "", e.id)


@click.command()
@config_option
@database_option
@click.option("--source", help="Only events of this source.")
@click.option("--type", "type_", metavar="TYPE", help="Only events of this type (a glob: 'a.*').")
@duration_option("--since", "Only events recorded in this last while (e.g. 15m, 1h, 7d).")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many events, newest first.",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Then print new events as they are recorded (Ctrl-C)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of CloudEvents.")
@handle_errors
def events(
    config_path: str,
    database: str | None,
    source: str | None,
    type_: str | None,
    since: float | None,
    limit: int,
    follow: bool,
    as_json: bool,
) -> None:
    """List stored events, newest first; with --follow, then every new one (oldest first).

    With --follow and --json each event is one JSON object on its own line.
    """
    config = config_for_reading(config_path, database)
    location = existing_database(config)
    since_ms = now_ms() - round(since * 1000) if since is not None else None

    async def first(store: Store) -> list[Event]:
        await check_source(config, store, source)
        return await select_events(
            store, source=source, type_=type_, since_ms=since_ms, limit=limit
        )

    found = with_store(location, first)
    if follow:
        _follow(location, found, source, type_, as_json)
        return
    if as_json:
        click.echo(jsontext.dumps([e.to_cloudevent() for e in found], indent=2))
        return
    print_table(COLUMNS, [_row(e) for e in found])


def _echo_event(e: Event, as_json: bool) -> None:
    if as_json:
        click.echo(jsontext.dumps(e.to_cloudevent()))
    else:
        say("  ".join(_row(e)))


def newer(events: list[Event], seen: set[str]) -> list[Event]:
    """The events not seen yet, oldest first (`events` come newest first)."""
    return [e for e in reversed(events) if e.id not in seen]


def _follow(
    location: str, found: list[Event], source: str | None, type_: str | None, as_json: bool
) -> None:
    """Print `found` oldest first, then each new event, until interrupted.

    An event is stamped when it arrived and committed a little later, so one committed after
    a newer one may carry an older time: each look goes back FOLLOW_LOOKBACK_MS before the
    newest time printed, and the ids already printed in that window are left out.
    """
    for e in reversed(found):
        _echo_event(e, as_json)
    newest_ms = max((e.recorded_ms for e in found), default=now_ms())
    store = open_store(location)
    store.open()
    try:
        # Those in the window but past --limit count as printed: only new ones follow.
        window = asyncio.run(
            select_events(
                store, source=source, type_=type_, since_ms=newest_ms - FOLLOW_LOOKBACK_MS
            )
        )
        seen = {e.id for e in found} | {e.id for e in window if e.recorded_ms <= newest_ms}
        while True:
            since_ms = newest_ms - FOLLOW_LOOKBACK_MS
            batch = asyncio.run(select_events(store, source=source, type_=type_, since_ms=since_ms))
            for e in newer(batch, seen):
                _echo_event(e, as_json)
                seen.add(e.id)
                newest_ms = max(newest_ms, e.recorded_ms)
            # Only ids inside the window can come back: the set stays small.
            seen &= {e.id for e in batch}
            time.sleep(FOLLOW_EVERY_S)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


# -- bridge event show ---------------------------------------------------------------------


def _time(ms: int | None) -> str | None:
    return format_time(ms) if ms is not None else None


def _next_cell(d: dict[str, Any]) -> str:
    if d["next"] is None:
        return d["held"] or ""
    return d["next"] + (" (circuit open)" if d["held"] else "")


def _excerpt(text: str | None, width: int = 40) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_event(shown: dict[str, Any]) -> None:
    ce = shown["event"]
    for key in ("id", "source", "origin", "type", "subject", "change", "time", "recordedtime"):
        if ce.get(key) is not None:
            say(f"{key:12} {ce[key]}")
    say(f"{'data':12} {_excerpt(jsontext.dumps(ce['data']), 200)}")
    click.echo("")
    rows = []
    for d in shown["deliveries"]:
        rows.append((d["target"], d["status"], str(d["attempts"]), d["created"],
                     d["delivered"] or _next_cell(d), "", ""))  # fmt: skip
        for a in d["history"]:
            status = str(a["status"]) if a["status"] is not None else "-"
            took = f"{a['duration_ms']} ms" if a["duration_ms"] is not None else ""
            rows.append(("", f"  {status}", "", a["time"], took, _excerpt(a["excerpt"]),
                         _excerpt(a["error"], 70)))  # fmt: skip
    if not rows:
        click.echo("no deliveries (no target wanted this event)")
        return
    print_table(
        ("target", "status", "attempts", "time", "delivered or next / took", "excerpt", "error"),
        rows,
        title="deliveries and their attempts",
    )


@click.group()
def event() -> None:
    """Look at one stored event."""


@event.command()
@config_option
@database_option
@click.argument("event_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def show(config_path: str, database: str | None, event_id: str, as_json: bool) -> None:
    """Show the event ID, its deliveries and every attempt: time, status, duration, excerpt
    of the answer and error."""
    config = config_for_reading(config_path, database)

    async def gather(store: Store) -> tuple[Event | None, list[DeliveryRow], list[AttemptRow],
                                            dict[str, TargetState]]:  # fmt: skip
        found = await store.get_event(event_id)
        if found is None:
            return None, [], [], {}
        rows = await store.list_deliveries(event_id=event_id, limit=None)
        return found, rows, await store.list_attempts(event_id), await store.target_states()

    found, rows, attempts, states = with_store(existing_database(config), gather)
    at_ms = now_ms()
    if found is None:
        raise click.UsageError(f"no event with id {event_id!r} in the database")
    shown = {
        "event": found.to_cloudevent(),
        "deliveries": [
            delivery_json(d, attempts, states.get(d.target), at_ms)
            for d in sorted(rows, key=lambda d: d.target)
        ],
    }
    if as_json:
        click.echo(jsontext.dumps(shown, indent=2))
    else:
        _print_event(shown)
