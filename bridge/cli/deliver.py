"""CLI commands for delivery: `deliveries`, `redeliver`, `targets`, `target
enable|disable|reset`.

They work on the database directly, with or without a running daemon: a running daemon sees
requeued deliveries on its next scan, and an enabled, disabled or reset target within a
second. Each command that changes something logs one line to stderr, as the admin pages'
buttons do (who: the user running it); a redelivery names every target whose circuit is open
(its deliveries wait until the cool-down ends or `bridge target reset`).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import click

from bridge import jsontext
from bridge.cli.edge import (
    Failure,
    config_for_reading,
    config_option,
    database_option,
    duration_option,
    existing_database,
    handle_errors,
    is_config_less,
    print_table,
    read_config,
    url_masker,
)
from bridge.config import Config
from bridge.deliver import circuit
from bridge.events import format_time, now_ms
from bridge.logs import plural
from bridge.status.targets import target_rows
from bridge.store import Store, open_store
from bridge.store.base import TargetState
from bridge.store.deliveries import DeliveryRow

log = logging.getLogger("bridge.cli")

T = TypeVar("T")
STATUSES = ("pending", "delivered", "failed", "dead")


def with_store(config: Config, fn: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
    """Open the config's store, run `fn(store)`, close it."""
    store = open_store(config.database_path)
    store.open()
    try:
        return asyncio.run(fn(store))
    finally:
        store.close()


def _who() -> str:
    """Who runs the command, for its log line: the user's name, or its id."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def log_action(config: Config, message: str) -> None:
    """One line on stderr for a change a command made (`cli: USER MESSAGE`), at info, as the
    admin pages' buttons log theirs; every secret of the config masked."""
    if not logging.getLogger().handlers:
        from bridge import logs

        logs.configure("info", "text", logs.config_secrets(config))
    log.info("cli: %s %s", _who(), message)


def _check_target(config: Config, target: str | None) -> None:
    if target is not None and target not in config.targets:
        known = ", ".join(sorted(config.targets)) or "none"
        raise click.UsageError(f"no target named {target!r} in the config (targets: {known})")


def _time(ms: int | None) -> str:
    return format_time(ms) if ms is not None else ""


def _delivery_json(row: DeliveryRow, state: TargetState | None, at_ms: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "target": row.target,
        "status": row.status,
        "attempts": row.attempts,
        **circuit.next_json(row, state, at_ms),
        "created": _time(row.created_ms),
        "delivered": _time(row.delivered_ms) or None,
        "last_code": row.last_code,
        "last_error": row.last_error,
        "transformed": row.transformed,
    }


@click.command()
@config_option
@database_option
@click.option("--status", type=click.Choice(STATUSES), help="Only deliveries in this status.")
@click.option("--target", help="Only deliveries to this target.")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many deliveries, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@handle_errors
def deliveries(
    config_path: str,
    database: str | None,
    status: str | None,
    target: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List deliveries of events to targets, newest first."""
    config = config_for_reading(config_path, database)
    existing_database(config)

    async def read(store: Store) -> tuple[list[DeliveryRow], dict[str, TargetState]]:
        rows = await store.list_deliveries(status=status, target=target, limit=limit)
        return rows, await store.target_states()

    rows, states = with_store(config, read)
    at_ms = now_ms()
    if not rows and target is not None and target not in config.targets:
        # Neither configured nor in the outbox: a misspelt name, most likely.
        known = ", ".join(sorted(config.targets)) or "none"
        hint = "" if is_config_less(config) else f" (targets: {known})"
        raise click.UsageError(f"no target named {target!r}{hint}")
    if as_json:
        shown = [_delivery_json(r, states.get(r.target), at_ms) for r in rows]
        click.echo(jsontext.dumps(shown, indent=2))
        return
    print_table(
        ("event", "target", "status", "attempts", "transform", "next", "last"),
        [
            (
                r.event_id,
                r.target,
                r.status,
                str(r.attempts),
                "applied" if r.transformed else "",
                circuit.next_text(r, states.get(r.target), at_ms),
                str(r.last_code or r.last_error or ""),
            )
            for r in rows
        ],
    )


def _redeliver_usage(
    event_ids: tuple[str, ...], dead: bool, since: float | None, until: float | None
) -> None:
    ways = [bool(event_ids), dead, since is not None]
    if sum(ways) != 1:
        raise click.UsageError("give EVENT_ID..., --dead or --since (one of them)")
    if until is not None and since is None:
        raise click.UsageError("--until goes with --since")


async def _unknown_ids(store: Store, event_ids: Sequence[str]) -> list[str]:
    return [i for i in event_ids if await store.get_event(i) is None]


def _in_range(
    config: Config, filters: dict[str, Any], since: float, until: float | None
) -> Callable[[Store], Coroutine[Any, Any, list[str]]]:
    """The ids of the events recorded in the last `since` seconds (up to `until` ago)."""
    from bridge.cli.events import check_source, select_events

    at_ms = now_ms()

    async def ids(store: Store) -> list[str]:
        await check_source(config, store, filters["source"])
        found = await select_events(
            store,
            source=filters["source"],
            type_=filters["type"],
            since_ms=at_ms - round(since * 1000),
            until_ms=at_ms - round(until * 1000) if until is not None else None,
        )
        return [e.id for e in reversed(found)]

    return ids


def _echo_queued(as_json: bool, out: dict[str, Any], text: str) -> None:
    click.echo(jsontext.dumps(out, indent=2) if as_json else text)


def _held(config: Config, target: str | None) -> list[TargetState]:
    """The targets (`target`, or every one) with deliveries waiting behind an open circuit."""

    async def read(store: Store) -> tuple[dict[str, TargetState], dict[str, dict[str, int]]]:
        return await store.target_states(), await store.delivery_counts(("pending", "failed"))

    states, counts = with_store(config, read)
    names = [target] if target is not None else list(config.targets)
    return circuit.held(states, [n for n in names if counts.get(n)], now_ms())


def _echo_redelivered(
    config: Config, as_json: bool, out: dict[str, Any], text: str, target: str | None
) -> None:
    """Say what was queued and which open circuits hold it; log the change."""
    log_action(config, f"redelivered {'to ' + target if target else 'to every target'}: {text}")
    held = _held(config, target) if out.get("queued") else []
    out["circuit"] = [circuit.held_json(s) for s in held]
    lines = [text, *(circuit.held_text(s) for s in held)]
    _echo_queued(as_json, out, "\n".join(lines))


@click.command()
@config_option
@click.argument("event_ids", nargs=-1, metavar="EVENT_ID...")
@click.option("--target", help="Only to this target (it may be one the event never went to).")
@click.option("--dead", is_flag=True, help="Every dead delivery (of --target, or all).")
@duration_option("--since", "Every event recorded in this last while (e.g. 1h, 2d).")
@duration_option("--until", "With --since: only events recorded at least this long ago.")
@click.option("--source", help="With --since: only events of this source.")
@click.option("--type", "type_", metavar="TYPE", help="With --since: only this type (a glob).")
@click.option("--dry-run", is_flag=True, help="Only say how many would be queued.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def redeliver(
    config_path: str,
    event_ids: tuple[str, ...],
    target: str | None,
    dead: bool,
    since: float | None,
    until: float | None,
    source: str | None,
    type_: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Deliver events again, with the same webhook-id: the EVENT_IDs, every dead delivery
    with --dead, or every event recorded in a time range with --since [--until]."""
    _redeliver_usage(event_ids, dead, since, until)
    if (source or type_) and since is None:
        raise click.UsageError("--source and --type go with --since")
    config = read_config(config_path)
    _check_target(config, target)
    if dead:
        if dry_run:
            rows = with_store(config, lambda s: s.list_deliveries(status="dead", target=target,
                                                                   limit=None))  # fmt: skip
            _echo_queued(as_json, {"dead": len(rows), "queued": 0, "dry_run": True},
                         f"would queue {plural(len(rows), 'dead delivery')} again")  # fmt: skip
            return
        count = with_store(config, lambda s: s.redeliver_dead(target, now_ms()))
        _echo_redelivered(config, as_json, {"queued": count},
                          f"queued {plural(count, 'dead delivery')} again", target)  # fmt: skip
        return
    if since is not None:
        filters = {"source": source, "type": type_}
        event_ids = tuple(with_store(config, _in_range(config, filters, since, until)))
        if dry_run or not event_ids:
            verb = "would queue" if dry_run else "queued"
            _echo_queued(as_json, {"events": len(event_ids), "queued": 0, "dry_run": dry_run},
                         f"{verb} {plural(len(event_ids), 'event')} again")  # fmt: skip
            return
    else:
        unknown = with_store(config, lambda s: _unknown_ids(s, event_ids))
        if unknown:
            raise click.UsageError(f"no event with id {', '.join(map(repr, unknown))}")
        if dry_run:
            _echo_queued(as_json, {"events": len(event_ids), "queued": 0, "dry_run": True},
                         f"would queue {plural(len(event_ids), 'event')} again")  # fmt: skip
            return
    counts = with_store(config, lambda s: s.redeliver(list(event_ids), target, now_ms()))
    queued = sum(counts.values())
    _echo_redelivered(config, as_json, {"events": len(event_ids), "queued": queued},
                      f"queued {plural(queued, 'delivery')} again", target)  # fmt: skip
    missing = [i for i in event_ids if not counts.get(i)]
    if missing and since is None:
        where = f" to {target}" if target else ""
        raise Failure(f"nothing to deliver{where} for: {', '.join(missing)}")


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@handle_errors
def targets(config_path: str, as_json: bool) -> None:
    """Show each target's health, circuit breaker, backlog and dead deliveries."""
    config = read_config(config_path)

    async def gather(store: Store) -> tuple[dict[str, TargetState], dict[str, dict[str, int]]]:
        return await store.target_states(), await store.delivery_counts()

    states, counts = with_store(config, gather)
    out = target_rows(config, states, counts, now_ms(), url_masker(config))
    if as_json:
        click.echo(jsontext.dumps(out, indent=2))
        return
    print_table(
        ("target", "health", "circuit", "backlog", "dead", "delivered", "url"),
        [
            (t["name"], t["health"], t["circuit"], str(t["backlog"]), str(t["dead"]),
             str(t["delivered"]), t["url"] or "")
            for t in out
        ],
    )  # fmt: skip


@click.group()
def target() -> None:
    """Act on one target."""


@target.command()
@config_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def enable(config_path: str, name: str, as_json: bool) -> None:
    """Enable a target disabled by a 410 Gone answer or `target disable`, and close its circuit."""
    config = read_config(config_path)
    _check_target(config, name)
    before = with_store(config, lambda s: s.enable_target(name))
    text = circuit.enable_text(name, before)
    log_action(config, f"enabled target {name}: {circuit.enable_detail(before)}")
    out = {
        "target": name,
        "enabled": True,
        "changed": before.disabled_ms is not None,
        "circuit_closed": circuit.closed_circuit(before),
    }
    click.echo(jsontext.dumps(out, indent=2) if as_json else text)


@target.command()
@config_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def reset(config_path: str, name: str, as_json: bool) -> None:
    """Close a target's circuit now and send its backlog ("Retry now" on the admin pages).

    Its waiting deliveries become due at once, retries scheduled later included; a disabled
    target stays disabled. A running daemon sees it within a second.
    """
    config = read_config(config_path)
    _check_target(config, name)
    done = with_store(config, lambda s: s.reset_target(name, now_ms()))
    text = circuit.reset_text(name, done)
    log_action(config, f"reset target {name}: {circuit.reset_detail(name, done)}")
    click.echo(jsontext.dumps(circuit.reset_json(name, done), indent=2) if as_json else text)


@target.command()
@config_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def disable(config_path: str, name: str, as_json: bool) -> None:
    """Disable a target: its deliveries wait (none is lost) until `bridge target enable`.

    A running daemon sees it within a second; a request in flight finishes.
    """
    config = read_config(config_path)
    _check_target(config, name)
    reason = "disabled by `bridge target disable`"
    was_enabled = with_store(config, lambda s: s.disable_target(name, reason, now_ms()))
    text = f"target {name} disabled" if was_enabled else f"target {name} was disabled already"
    log_action(
        config, f"disabled target {name}: it was {'enabled' if was_enabled else 'disabled already'}"
    )
    out = {"target": name, "enabled": False, "changed": was_enabled}
    click.echo(jsontext.dumps(out, indent=2) if as_json else text)


def register(cli: click.Group) -> None:
    """Add the delivery commands to the `bridge` command group."""
    for command in (deliveries, redeliver, targets, target):
        cli.add_command(command)
