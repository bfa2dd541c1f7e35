"""CLI commands for delivery: `deliveries`, `redeliver`, `targets`, `target enable|disable`.

They work on the database directly, with or without a running daemon: a running daemon sees
requeued deliveries on its next scan and an enabled target within a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from bridge import jsontext
from bridge.cli.edge import Failure, config_option, handle_errors, read_config, url_masker
from bridge.config import Config
from bridge.events import format_time, now_ms
from bridge.store import Store, open_store
from bridge.store.base import DeliveryRow, TargetState

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


def _check_target(config: Config, target: str | None) -> None:
    if target is not None and target not in config.targets:
        known = ", ".join(sorted(config.targets)) or "none"
        raise click.UsageError(f"no target named {target!r} in the config (targets: {known})")


def _time(ms: int | None) -> str:
    return format_time(ms) if ms is not None else ""


def _delivery_json(row: DeliveryRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "target": row.target,
        "status": row.status,
        "attempts": row.attempts,
        "next": _time(row.next_ms) if row.status in ("pending", "failed") else None,
        "created": _time(row.created_ms),
        "delivered": _time(row.delivered_ms) or None,
        "last_code": row.last_code,
        "last_error": row.last_error,
        "transformed": row.transformed,
    }


def _print_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


@click.command()
@config_option
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
    config_path: str, status: str | None, target: str | None, limit: int, as_json: bool
) -> None:
    """List deliveries of events to targets, newest first."""
    config = read_config(config_path)
    rows = with_store(
        config, lambda s: s.list_deliveries(status=status, target=target, limit=limit)
    )
    if as_json:
        click.echo(jsontext.dumps([_delivery_json(r) for r in rows], indent=2))
        return
    _print_table(
        ("event", "target", "status", "attempts", "transform", "next", "last"),
        [
            (
                r.event_id,
                r.target,
                r.status,
                str(r.attempts),
                "applied" if r.transformed else "",
                _time(r.next_ms) if r.status in ("pending", "failed") else "",
                str(r.last_code or r.last_error or ""),
            )
            for r in rows
        ],
    )


@click.command()
@config_option
@click.argument("event_ids", nargs=-1, metavar="EVENT_ID...")
@click.option("--target", help="Only to this target (it may be one the event never went to).")
@click.option("--dead", is_flag=True, help="Every dead delivery (of --target, or all).")
@handle_errors
def redeliver(config_path: str, event_ids: tuple[str, ...], target: str | None, dead: bool) -> None:
    """Deliver events again, with the same webhook-id, or every dead delivery with --dead."""
    if bool(event_ids) == dead:
        raise click.UsageError("give EVENT_ID... or --dead (one of them)")
    config = read_config(config_path)
    _check_target(config, target)
    if dead:
        count = with_store(config, lambda s: s.redeliver_dead(target, now_ms()))
        click.echo(f"queued {count} dead deliveries again")
        return
    counts = with_store(config, lambda s: s.redeliver(list(event_ids), target, now_ms()))
    queued = sum(counts.values())
    click.echo(f"queued {queued} deliveries again")
    missing = [i for i in event_ids if not counts.get(i)]
    if missing:
        where = f" to {target}" if target else ""
        raise Failure(f"nothing to deliver{where} for: {', '.join(missing)}")


def _health(state: TargetState, at_ms: int) -> str:
    if state.disabled_ms is not None:
        return f"disabled since {format_time(state.disabled_ms)} ({state.disabled_reason})"
    if state.circuit == "open" and state.open_until_ms and state.open_until_ms > at_ms:
        return f"failing: circuit open until {format_time(state.open_until_ms)}"
    if state.circuit != "closed" or state.failures:
        return f"failing ({state.failures} failures in a row)"
    return "ok"


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
    shown = url_masker(config)
    at_ms = now_ms()
    out: list[dict[str, Any]] = []
    # Targets removed from the config still show while they have deliveries waiting.
    names = list(config.targets) + sorted(set(counts) - set(config.targets))
    for name in names:
        state = states.get(name) or TargetState(name)
        by_status = counts.get(name, {})
        target = config.targets.get(name)
        out.append(
            {
                "name": name,
                "url": shown(target.url) if target else None,
                "health": _health(state, at_ms) if target else "removed from the config",
                "enabled": state.disabled_ms is None,
                "circuit": state.circuit,
                "failures": state.failures,
                "backlog": by_status.get("pending", 0) + by_status.get("failed", 0),
                "dead": by_status.get("dead", 0),
                "delivered": by_status.get("delivered", 0),
            }
        )
    if as_json:
        click.echo(jsontext.dumps(out, indent=2))
        return
    _print_table(
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
@handle_errors
def enable(config_path: str, name: str) -> None:
    """Enable a target disabled by a 410 Gone answer, and close its circuit."""
    config = read_config(config_path)
    _check_target(config, name)
    was_disabled = with_store(config, lambda s: s.enable_target(name))
    click.echo(f"target {name} enabled" if was_disabled else f"target {name} was enabled already")


@target.command()
@config_option
@click.argument("name")
@handle_errors
def disable(config_path: str, name: str) -> None:
    """Disable a target: its deliveries wait (none is lost) until `bridge target enable`."""
    config = read_config(config_path)
    _check_target(config, name)
    reason = "disabled by `bridge target disable`"
    was_enabled = with_store(config, lambda s: s.disable_target(name, reason, now_ms()))
    click.echo(f"target {name} disabled" if was_enabled else f"target {name} was disabled already")


def register(cli: click.Group) -> None:
    """Add the delivery commands to the `bridge` command group."""
    for command in (deliveries, redeliver, targets, target):
        cli.add_command(command)
