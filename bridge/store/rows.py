"""SQL pieces both backends share: the event columns, rows to events, filtered selects.

Only the placeholder differs between SQLite (`?`) and psycopg (`%s`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge import jsontext
from bridge.events import Event
from bridge.store.base import DeliveryRow

EVENT_COLUMNS = (
    "id, source, type, origin, change, subject, upstream_id, time_ms, recorded_ms, data,"
    " traceparent, tracestate"
)


def row_to_event(row: Sequence[Any]) -> Event:
    """An Event from the columns of EVENT_COLUMNS, in order."""
    return Event(
        id=row[0],
        source=row[1],
        type=row[2],
        origin=row[3],
        change=row[4],
        subject=row[5],
        upstream_id=row[6],
        time_ms=row[7],
        recorded_ms=row[8],
        data=jsontext.loads_stored(row[9]) if row[9] is not None else None,
        traceparent=row[10],
        tracestate=row[11],
    )


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
