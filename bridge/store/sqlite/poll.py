"""SQLite implementation of `PollStore`: snapshots, validators and stats of polled sources.

A snapshot is the rows of `poll_items` (source, key, version token, last item as JSON); the
validators, the baseline flag, the generation and the stats are one row of `poll_state`; the
keys the last walks lacked, not deleted yet, are the rows of `poll_pending`.
`commit_poll` writes a poll's events, their deliveries, the snapshot changes and the stats in
one operation of the group-committing writer, hence in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from bridge import jsontext
from bridge.store.base import SCAN_ROWS, PendingDelete, PollCommit, PollOutcome, PollState
from bridge.store.sqlite.events import insert_events

T = TypeVar("T")

_STATE_COLUMNS = tuple(f.name for f in fields(PollState))
_CHUNK = 500  # keys per `IN (...)`: well under SQLite's limit on variables


def _row_to_state(row: Sequence[Any]) -> PollState:
    values = dict(zip(_STATE_COLUMNS, row, strict=True))
    values["baselined"] = bool(values["baselined"])
    return PollState(**values)


def _record_outcome(
    conn: sqlite3.Connection, source: str, outcome: PollOutcome, *, committed: bool
) -> None:
    conn.execute("INSERT OR IGNORE INTO poll_state (source) VALUES (?)", (source,))
    ok = outcome.error is None
    conn.execute(
        """
        UPDATE poll_state SET
            last_poll_ms = :at_ms,
            last_duration_ms = :duration_ms,
            last_status = :status,
            last_ok_ms = CASE WHEN :ok THEN :at_ms ELSE last_ok_ms END,
            last_error = CASE WHEN :ok THEN last_error ELSE :error END,
            last_error_ms = CASE WHEN :ok THEN last_error_ms ELSE :at_ms END,
            consecutive_failures = CASE WHEN :ok THEN 0 ELSE consecutive_failures + 1 END,
            polls = polls + 1,
            failures = failures + (NOT :ok),
            requests = requests + :requests,
            not_modified = not_modified + :not_modified,
            bytes = bytes + :bytes,
            items = coalesce(:items, items),
            events = events + :events,
            empty_polls = empty_polls + (:ok AND :events = 0 AND baselined),
            skipped = skipped + :skipped,
            duplicate_keys = duplicate_keys + :duplicate_keys,
            interval_s = coalesce(:interval_s, interval_s),
            saved_requests = saved_requests + :saved_requests,
            baselined = baselined OR :committed,
            generation = generation + :committed
        WHERE source = :source
        """,
        {
            "source": source,
            "ok": ok,
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
            "committed": int(committed),
        },
    )


class SQLitePollState:
    """Mixed into SQLiteStore; uses its `read` and `write` helpers.

    What every poll reads (its state's row) and what a 304 or a failed poll writes (its
    outcome) are read and written on the calling thread, the event loop's (`read_here`,
    `write_here`): a row by its key, where a hop to a worker thread and back (the default
    executor's, the writer thread's) cost more CPU than the SQL. About a sixth of an idle
    poll's CPU (make bench's idle cost)."""

    read: Callable[..., Any]
    read_here: Callable[..., Any]
    write: Callable[..., Any]
    write_here: Callable[..., Any]

    async def load_poll_state(self, source: str) -> PollState:
        def q(conn: sqlite3.Connection) -> PollState:
            row = conn.execute(
                f"SELECT {', '.join(_STATE_COLUMNS)} FROM poll_state WHERE source = ?", (source,)
            ).fetchone()
            return _row_to_state(row) if row else PollState(source=source)

        state: PollState = await self.read_here(q)  # one row by its key: see the class
        return state

    async def list_poll_states(self) -> list[PollState]:
        def q(conn: sqlite3.Connection) -> list[PollState]:
            rows = conn.execute(
                f"SELECT {', '.join(_STATE_COLUMNS)} FROM poll_state ORDER BY source"
            ).fetchall()
            return [_row_to_state(row) for row in rows]

        states: list[PollState] = await self.read(q)
        return states

    async def load_poll_versions(
        self, source: str, keys: Sequence[str] | None = None
    ) -> dict[str, str]:
        def q(conn: sqlite3.Connection) -> dict[str, str]:
            if keys is None:
                return dict(
                    conn.execute("SELECT key, version FROM poll_items WHERE source = ?", (source,))
                )
            out: dict[str, str] = {}
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                out.update(
                    conn.execute(
                        f"SELECT key, version FROM poll_items"
                        f" WHERE source = ? AND key IN ({marks})",
                        (source, *chunk),
                    )
                )
            return out

        if keys is not None and not keys:
            return {}

        versions: dict[str, str] = await self.read(q)
        return versions

    async def scan_poll_versions(
        self, source: str, visit: Callable[[list[tuple[str, str]]], None]
    ) -> None:
        def q(conn: sqlite3.Connection) -> None:
            rows = conn.execute("SELECT key, version FROM poll_items WHERE source = ?", (source,))
            while chunk := rows.fetchmany(SCAN_ROWS):
                visit(chunk)

        await self.read(q)

    async def load_poll_items(self, source: str, keys: Sequence[str]) -> dict[str, Any]:
        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, item in conn.execute(
                    f"SELECT key, item FROM poll_items WHERE source = ? AND key IN ({marks})",
                    (source, *chunk),
                ):
                    out[key] = jsontext.loads_stored(item) if item is not None else None
            return out

        if not keys:
            return {}
        items: dict[str, Any] = await self.read(q)
        return items

    async def load_poll_pending(self, source: str) -> dict[str, PendingDelete]:
        def q(conn: sqlite3.Connection) -> dict[str, PendingDelete]:
            rows = conn.execute(
                "SELECT key, walks, since_ms FROM poll_pending WHERE source = ?", (source,)
            )
            return {key: PendingDelete(walks, since_ms) for key, walks, since_ms in rows}

        pending: dict[str, PendingDelete] = await self.read(q)
        return pending

    async def commit_poll(self, commit: PollCommit) -> list[bool]:
        source = commit.source

        def write(conn: sqlite3.Connection) -> list[bool]:
            is_new = insert_events(conn, commit.events)
            conn.executemany(
                "DELETE FROM poll_items WHERE source = ? AND key = ?",
                ((source, key) for key in commit.deletes),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO poll_items (source, key, version, item) VALUES (?,?,?,?)",
                ((source, key, version, item) for key, version, item in commit.upserts),
            )
            _record_outcome(conn, source, commit.outcome, committed=True)
            if commit.pending is not None:
                conn.execute("DELETE FROM poll_pending WHERE source = ?", (source,))
                conn.executemany(
                    "INSERT INTO poll_pending (source, key, walks, since_ms) VALUES (?,?,?,?)",
                    ((source, k, p.walks, p.since_ms) for k, p in commit.pending.items()),
                )
                conn.execute(
                    "UPDATE poll_state SET pending_deletes = ? WHERE source = ?",
                    (len(commit.pending), source),
                )
            conn.execute(
                "UPDATE poll_state SET etag = ?, last_modified = ?,"
                " cursor = coalesce(?, cursor), gaps = gaps + ? WHERE source = ?",
                (commit.etag, commit.last_modified, commit.cursor, int(commit.gap), source),
            )
            return is_new

        result: list[bool] = await self.write(write, durable=commit.advances)
        return result

    async def record_poll(self, source: str, outcome: PollOutcome) -> None:
        # Acknowledges nothing (durable=False): committed here when no other write is under
        # way, else with the writer thread's next commit (writer.py's `run_here`).
        await self.write_here(lambda conn: _record_outcome(conn, source, outcome, committed=False))
