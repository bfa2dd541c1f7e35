"""SQL pieces both backends share: the event columns, rows to events, filtered selects, and
the keyset-paged select of the admin pages' events.

Only the placeholder differs between SQLite (`?`) and psycopg (`%s`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.events import Event, stored
from bridge.store.base import WORST_FIRST, EventCursor, EventFilter, EventListing
from bridge.store.deliveries import DeliveryRow

EVENT_COLUMNS = (
    "id, source, type, origin, change, subject, upstream_id, time_ms, recorded_ms, data,"
    " traceparent, tracestate"
)
_COLUMN_NAMES = EVENT_COLUMNS.split(", ")


def row_to_event(row: Sequence[Any]) -> Event:
    """An Event from the columns of EVENT_COLUMNS, in order."""
    # id, source, type, origin, (data), recorded_ms, subject, time_ms, change, upstream_id,
    # traceparent, tracestate: Event's fields in their order.
    return stored((row[0], row[1], row[2], row[3], row[8], row[5], row[7], row[4], row[6],
                   row[10], row[11]), row[9])  # fmt: skip


def row_to_delivery(row: Sequence[Any]) -> DeliveryRow:
    """A DeliveryRow from the outbox's delivery columns, in order (`transformed` last)."""
    return DeliveryRow(
        id=row[0],
        event_id=row[1],
        target=row[2],
        status=row[3],
        attempts=row[4],
        next_ms=row[5],
        lease_ms=row[6],
        created_ms=row[7],
        delivered_ms=row[8],
        last_code=row[9],
        last_error=row[10],
        transformed=bool(row[11]),
    )


def attempts_of_event(
    event_id: str, target: str | None, mark: str, *, of_event: str = "event_id = ?"
) -> tuple[str, list[Any]]:
    """The select of an event's attempts (to `target`, or to all), oldest first, and its
    arguments; `mark` is the placeholder, `of_event` the backend's condition on deliveries for
    an event id. They are found through the event's deliveries (by their index of event and
    target, then the attempts' index of delivery id): attempts have no index of their own by
    event id (migration 0014)."""
    sql = "SELECT id FROM deliveries WHERE " + of_event.replace("?", mark)
    args: list[Any] = [event_id]
    if target is not None:
        sql += " AND target = " + mark
        args.append(target)
    select = (
        "SELECT delivery_id, event_id, target, at_ms, duration_ms, status_code, response,"
        f" error FROM attempts WHERE delivery_id IN ({sql}) ORDER BY id"
    )
    return select, args


def select_filtered(
    select: str,
    filters: Sequence[tuple[str, Any]],
    *,
    order_by: str,
    limit: int | None,
    mark: str = "?",
) -> tuple[str, list[Any]]:
    """`select` narrowed by every filter whose value is not None, ordered and limited.

    A filter is a condition with `?` where its value goes (`"source = ?"`) and the value;
    `mark` is the backend's placeholder. Returns the SQL and its arguments.
    """
    where = [cond.replace("?", mark) for cond, value in filters if value is not None]
    args: list[Any] = [value for _, value in filters if value is not None]
    sql = select + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {mark}"
        args.append(limit)
    return sql, args


# The worst status among an event's deliveries, as a rank (NULL: no deliveries); read through
# the deliveries' unique index of their event and target, a few rows per event. `{}` is the
# backend's condition that a delivery `d` is of the row of `events`.
_RANK = {status: len(WORST_FIRST) - i for i, status in enumerate(WORST_FIRST)}
_WORST_RANK = (
    "(SELECT max(CASE d.status "
    + " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in _RANK.items())
    + " ELSE 0 END) FROM deliveries d WHERE {})"
)


def glob_to_like(glob: str) -> str:
    """A type glob (`*`, `?`) as a LIKE pattern with `\\` as its escape character."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_to_sqlite(glob: str) -> str:
    """A type glob (`*`, `?`) as an SQLite GLOB pattern: `[` is taken literally."""
    return glob.replace("[", "[[]")


def page_events_sql(
    where: EventFilter,
    after: EventCursor | None,
    limit: int,
    *,
    type_condition: tuple[str, str] | None,
    mark: str = "?",
    oldest_first: bool = False,
    deliveries_of: str = "d.event_id = events.id",
) -> tuple[str, list[Any]]:
    """The keyset-paged select of `AdminStore.page_events`: the event columns, then the worst
    delivery's rank. `type_condition` is the backend's glob match (condition, pattern),
    `deliveries_of` its condition that a delivery `d` is of the row of `events`.

    The order (recorded_ms DESC, id DESC; ASC with `oldest_first`) and the row comparison
    with the cursor both follow the (recorded_ms, id) index, so any page costs one index seek
    and `limit` rows read.
    """
    filters: list[tuple[str, Any]] = [
        ("source = ?", where.source),
        ("origin = ?", where.origin),
        ("subject = ?", where.subject),
        ("recorded_ms >= ?", where.since_ms),
        ("recorded_ms < ?", where.until_ms),
    ]
    if type_condition is not None:
        filters.append(type_condition)
    conds = [cond.replace("?", mark) for cond, value in filters if value is not None]
    args: list[Any] = [value for _, value in filters if value is not None]
    worst_rank = _WORST_RANK.format(deliveries_of)
    if where.delivery == "none":
        conds.append(f"{worst_rank} IS NULL")
    elif where.delivery is not None:
        conds.append(f"{worst_rank} = {mark}")
        args.append(_RANK.get(where.delivery, -1))
    if after is not None:
        beyond = ">" if oldest_first else "<"
        conds.append(f"(recorded_ms, id) {beyond} ({mark}, {mark})")
        args += [after.recorded_ms, after.id]
    sql = f"SELECT {EVENT_COLUMNS}, {worst_rank} FROM events"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    order = "ASC" if oldest_first else "DESC"
    sql += f" ORDER BY recorded_ms {order}, id {order} LIMIT {mark}"
    args.append(limit)
    return sql, args


def row_to_listing(row: Sequence[Any]) -> EventListing:
    """An EventListing from a row of `page_events_sql`."""
    rank = row[len(_COLUMN_NAMES)]
    worst = WORST_FIRST[len(WORST_FIRST) - rank] if rank else None
    return EventListing(row_to_event(row), worst)
