"""PostgreSQL implementation of `PollStore`: snapshots, validators and stats of polled sources.

The same tables as SQLite's (see sqlite/poll.py). `commit_poll` writes a poll's events,
their deliveries, the snapshot changes and the stats in one transaction. Only the replica
that holds a source's poll lease polls it (see replicas.py), so one source's
snapshot has one writer at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from bridge import jsontext
from bridge.store.base import SCAN_ROWS, PendingDelete, PollCommit, PollOutcome, PollState
from bridge.store.postgres.events import insert_events

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")


def _chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_STATE_COLUMNS = tuple(f.name for f in fields(PollState))
_SELECT_STATE = f"SELECT {', '.join(_STATE_COLUMNS)} FROM poll_state"

_RECORD_OUTCOME = """
    UPDATE poll_state SET
        last_poll_ms = %(at_ms)s,
        last_duration_ms = %(duration_ms)s,
        last_status = %(status)s,
        last_ok_ms = CASE WHEN %(ok)s THEN %(at_ms)s ELSE last_ok_ms END,
        last_error = CASE WHEN %(ok)s THEN last_error ELSE %(error)s END,
        last_error_ms = CASE WHEN %(ok)s THEN last_error_ms ELSE %(at_ms)s END,
        consecutive_failures = CASE WHEN %(ok)s THEN 0 ELSE consecutive_failures + 1 END,
        polls = polls + 1,
        failures = failures + CASE WHEN %(ok)s THEN 0 ELSE 1 END,
        requests = requests + %(requests)s,
        not_modified = not_modified + %(not_modified)s,
        bytes = bytes + %(bytes)s,
        items = coalesce(%(items)s, items),
        events = events + %(events)s,
        empty_polls = empty_polls
            + CASE WHEN %(ok)s AND %(events)s = 0 AND baselined THEN 1 ELSE 0 END,
        skipped = skipped + %(skipped)s,
        duplicate_keys = duplicate_keys + %(duplicate_keys)s,
        interval_s = coalesce(%(interval_s)s, interval_s),
        saved_requests = saved_requests + %(saved_requests)s,
        baselined = baselined OR %(committed)s,
        generation = generation + CASE WHEN %(committed)s THEN 1 ELSE 0 END
    WHERE source = %(source)s
"""


def _row_to_state(row: Sequence[Any]) -> PollState:
    return PollState(**dict(zip(_STATE_COLUMNS, row, strict=True)))


async def _record_outcome(
    conn: Conn, source: str, outcome: PollOutcome, *, committed: bool
) -> None:
    await conn.execute(
        "INSERT INTO poll_state (source) VALUES (%s) ON CONFLICT (source) DO NOTHING", (source,)
    )
    await conn.execute(
        _RECORD_OUTCOME,
        {
            "source": source,
            "ok": outcome.error is None,
            "at_ms": outcome.at_ms,
            "duration_ms": outcome.duration_ms,
            "status": outcome.status,
            "error": outcome.error,
            "requests": outcome.requests,
            "not_modified": int(outcome.not_modified),
            "bytes": outcome.bytes,
            "items": outcome.items,
            "events": outcome.events,
            "skipped": outcome.skipped,
            "duplicate_keys": outcome.duplicate_keys,
            "interval_s": outcome.interval_s,
            "saved_requests": outcome.saved_requests,
            "committed": committed,
        },
    )


class PostgresPollState:
    """Mixed into PostgresStore; uses its `run` helper."""

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]], *, durable: bool = True) -> T: ...

    async def load_poll_state(self, source: str) -> PollState:
        async def q(conn: Conn) -> PollState:
            cur = await conn.execute(f"{_SELECT_STATE} WHERE source = %s", (source,))
            row = await cur.fetchone()
            return _row_to_state(row) if row else PollState(source=source)

        return await self.run(q)

    async def list_poll_states(self) -> list[PollState]:
        async def q(conn: Conn) -> list[PollState]:
            cur = await conn.execute(f"{_SELECT_STATE} ORDER BY source")
            return [_row_to_state(row) for row in await cur.fetchall()]

        return await self.run(q)

    async def load_poll_versions(
        self, source: str, keys: Sequence[str] | None = None
    ) -> dict[str, str]:
        async def q(conn: Conn) -> dict[str, str]:
            if keys is None:
                cur = await conn.execute(
                    "SELECT key, version FROM poll_items WHERE source = %s", (source,)
                )
            else:
                cur = await conn.execute(
                    "SELECT key, version FROM poll_items WHERE source = %s AND key = ANY(%s)",
                    (source, list(keys)),
                )
            return {key: version for key, version in await cur.fetchall()}

        if keys is not None and not keys:
            return {}

        return await self.run(q)

    async def scan_poll_versions(
        self, source: str, visit: Callable[[list[tuple[str, str]]], None]
    ) -> None:
        async def q(conn: Conn) -> None:
            # A server-side cursor: the rows come SCAN_ROWS at a time, never all at once.
            async with conn.cursor(name="poll_versions") as cur:
                await cur.execute(
                    "SELECT key, version FROM poll_items WHERE source = %s", (source,)
                )
                while chunk := await cur.fetchmany(SCAN_ROWS):
                    visit(chunk)

        await self.run(q)

    async def load_poll_items(self, source: str, keys: Sequence[str]) -> dict[str, Any]:
        async def q(conn: Conn) -> dict[str, Any]:
            cur = await conn.execute(
                "SELECT key, item FROM poll_items WHERE source = %s AND key = ANY(%s)",
                (source, list(keys)),
            )
            return {
                key: jsontext.loads_stored(item) if item is not None else None
                for key, item in await cur.fetchall()
            }

        if not keys:
            return {}
        return await self.run(q)

    async def load_poll_pending(self, source: str) -> dict[str, PendingDelete]:
        async def q(conn: Conn) -> dict[str, PendingDelete]:
            cur = await conn.execute(
                "SELECT key, walks, since_ms FROM poll_pending WHERE source = %s", (source,)
            )
            rows = await cur.fetchall()
            return {key: PendingDelete(walks, since_ms) for key, walks, since_ms in rows}

        return await self.run(q)

    async def commit_poll(self, commit: PollCommit) -> list[bool]:
        source = commit.source

        async def write(conn: Conn) -> list[bool]:
            is_new = await insert_events(conn, commit.events)
            if commit.deletes:
                await conn.execute(
                    "DELETE FROM poll_items WHERE source = %s AND key = ANY(%s)",
                    (source, list(commit.deletes)),
                )
            # Read in chunks (a baseline's rows are made as they are read); one row per key in
            # a chunk (the last wins, as with SQLite's INSERT OR REPLACE): an upsert may not
            # touch one row twice, and a later chunk's statement replaces an earlier one's.
            for chunk in _chunks(commit.upserts, SCAN_ROWS):
                upserts = {key: (key, version, item) for key, version, item in chunk}
                keys, versions, items = zip(*upserts.values(), strict=True)
                await conn.execute(
                    "INSERT INTO poll_items (source, key, version, item)"
                    " SELECT %s, k, v, i FROM unnest(%s::text[], %s::text[], %s::text[])"
                    " AS u(k, v, i) ON CONFLICT (source, key)"
                    " DO UPDATE SET version = excluded.version, item = excluded.item",
                    (source, list(keys), list(versions), list(items)),
                )
            await _record_outcome(conn, source, commit.outcome, committed=True)
            if commit.pending is not None:
                await conn.execute("DELETE FROM poll_pending WHERE source = %s", (source,))
                if commit.pending:
                    pending = list(commit.pending)
                    await conn.execute(
                        "INSERT INTO poll_pending (source, key, walks, since_ms)"
                        " SELECT %s, k, w, s FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
                        " AS u(k, w, s)",
                        (
                            source,
                            pending,
                            [commit.pending[k].walks for k in pending],
                            [commit.pending[k].since_ms for k in pending],
                        ),
                    )
                await conn.execute(
                    "UPDATE poll_state SET pending_deletes = %s WHERE source = %s",
                    (len(commit.pending), source),
                )
            await conn.execute(
                "UPDATE poll_state SET etag = %s, last_modified = %s,"
                " cursor = coalesce(%s, cursor), gaps = gaps + %s WHERE source = %s",
                (commit.etag, commit.last_modified, commit.cursor, int(commit.gap), source),
            )
            return is_new

        return await self.run(write, durable=commit.advances)

    async def record_poll(self, source: str, outcome: PollOutcome) -> None:
        await self.run(
            lambda conn: _record_outcome(conn, source, outcome, committed=False), durable=False
        )
