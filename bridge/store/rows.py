"""SQL pieces both backends share: the event columns, rows to events, filtered selects.

Only the placeholder differs between SQLite (`?`) and psycopg (`%s`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge import jsontext
from bridge.events import Event

EVENT_COLUMNS = "id, source, type, origin, change, subject, upstream_id, time_ms, recorded_ms, data"


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
