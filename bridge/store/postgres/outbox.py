"""PostgreSQL implementation of `OutboxStore`: claiming deliveries, attempts, targets' state.

A claim is a lease on the row, taken with `SELECT ... FOR UPDATE SKIP LOCKED`: replicas
claiming at once each get other rows and never wait for one another. The lease is the row's
`lease_ms` (and `lease_owner`, the replica), not a lock held open: a replica that dies leaves
its leases to expire and another claims the rows (at least once delivery).

Claims, releases and attempts commit with `synchronous_commit = off` (for their own
transaction only): they acknowledge nothing to the outside world, so the commit need not
wait for the server's WAL flush; a server crash may take the last ones, and those
deliveries are sent again, never lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from bridge import jsontext
from bridge.events import Event
from bridge.store.base import TargetReset, TargetState
from bridge.store.deliveries import AttemptRecord, AttemptRow, Claim, Claimed, DeliveryRow
from bridge.store.rows import (
    EVENT_COLUMNS,
    attempts_of_event,
    row_to_delivery,
    row_to_event,
    select_filtered,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")

_WAITING = "status IN ('pending', 'failed')"
_DELIVERY_COLUMNS = (
    "id, event_id, target, status, attempts, next_ms, lease_ms, created_ms, delivered_ms,"
    " last_code, last_error, transformed"
)
_TARGET_COLUMNS = "name, disabled_ms, disabled_reason, circuit, failures, open_until_ms, cooldown_s"
# A redelivery keeps the count of attempts (every one is listed) and starts the retry
# schedule again from there.
_REQUEUE = "status = 'pending', retry_from = attempts, next_ms = %s, lease_ms = NULL"
# `ordering: subject`: only the earliest waiting delivery of a subject may be claimed. A
# replica claiming at the same time sees that earliest one waiting too (leased or locked),
# so it cannot take the next one before the first is recorded delivered or dead.
_FIRST_OF_SUBJECT = """
    AND (w.subject IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p
         WHERE p.target = w.target AND p.subject = w.subject AND p.status IN ('pending', 'failed')
         AND p.subject IS NOT NULL AND p.id < w.id))
"""
_EVENT_COLUMNS = ", ".join(f"e.{c}" for c in EVENT_COLUMNS.split(", "))
# One statement per target: lease the due rows, read their events, and when the target's
# next waiting delivery that is not due yet is due (one round trip, one row at least: that
# time and no claim when nothing was due).
_CLAIM = f"""
    WITH due AS (
        SELECT id FROM deliveries w
        WHERE target = %s AND {_WAITING} AND next_ms <= %s AND (lease_ms IS NULL OR lease_ms <= %s)
        {{order}}
        ORDER BY next_ms, id LIMIT %s
        FOR UPDATE SKIP LOCKED
    ), leased AS (
        UPDATE deliveries d SET lease_ms = %s, lease_owner = %s FROM due WHERE d.id = due.id
        RETURNING d.id, d.attempts, d.event_id, d.next_ms, d.retry_from
    ), later AS (
        SELECT min(next_ms) AS next_ms FROM deliveries
        WHERE target = %s AND {_WAITING} AND next_ms > %s
    )
    SELECT later.next_ms, l.id, l.attempts, l.retry_from, {_EVENT_COLUMNS}
    FROM later LEFT JOIN (leased l JOIN events e ON e.id = l.event_id) ON true
    ORDER BY l.next_ms, l.id
"""
_CLAIM_ANY = _CLAIM.format(order="")
_CLAIM_ORDERED = _CLAIM.format(order=_FIRST_OF_SUBJECT)
# A flush in one statement: each attempt recorded, its delivery's next state (one row per
# delivery: one attempt in flight), and the leases given back (deliveries not attempted,
# none of them among the attempted). A statement per row (executemany) took about 40% more
# CPU and 60% more time per flush of 64, and a statement per table (with the BEGIN, the
# `SET LOCAL` and the COMMIT) about 2.5 times the server's work. The attempts go as one
# JSON parameter, a list per attempt (`_outcome`): psycopg dumps a list as an array in
# Python, element by element, which cost about 12 times the CPU of the JSON text.
_RECORD = """
    WITH outcome AS (
        SELECT (o->>0)::bigint AS id, o->>1 AS event_id, o->>2 AS target,
            (o->>3)::bigint AS at_ms, (o->>4)::bigint AS duration_ms, (o->>5)::integer AS code,
            o->>6 AS response, o->>7 AS error, o->>8 AS status, (o->>9)::bigint AS next_ms,
            (o->>10)::boolean AS transformed
        FROM jsonb_array_elements(%s::jsonb) AS o
    ), attempted AS (
        UPDATE deliveries d SET status = u.status, attempts = d.attempts + 1,
            next_ms = u.next_ms, lease_ms = NULL, lease_owner = NULL, last_code = u.code,
            last_error = u.error, transformed = u.transformed,
            delivered_ms = CASE WHEN u.status = 'delivered' THEN u.at_ms + u.duration_ms
                                ELSE d.delivered_ms END
        FROM outcome u WHERE d.id = u.id
    ), released AS (
        UPDATE deliveries SET lease_ms = NULL, lease_owner = NULL WHERE id = ANY(%s::bigint[])
    )
    INSERT INTO attempts (delivery_id, event_id, target, at_ms, duration_ms, status_code, response,
                          error)
    SELECT id, event_id, target, at_ms, duration_ms, code, response, error FROM outcome
"""
_UPSERT_TARGET = (
    f"INSERT INTO targets ({_TARGET_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (name) DO UPDATE SET disabled_ms = excluded.disabled_ms,"
    " disabled_reason = excluded.disabled_reason, circuit = excluded.circuit,"
    " failures = excluded.failures, open_until_ms = excluded.open_until_ms,"
    " cooldown_s = excluded.cooldown_s"
)


def _target_values(s: TargetState) -> tuple[Any, ...]:
    return (s.name, s.disabled_ms, s.disabled_reason, s.circuit, s.failures, s.open_until_ms,
            s.cooldown_s)  # fmt: skip


def _outcome(r: AttemptRecord) -> tuple[Any, ...]:
    """An attempt as `_RECORD` reads it, by position."""
    return (r.delivery_id, r.event_id, r.target, r.at_ms, r.duration_ms, r.status_code,
            _without_nul(r.response), _without_nul(r.error), r.status, r.next_ms,
            r.transformed)  # fmt: skip


def _without_nul(text: str | None) -> str | None:
    """`text` as PostgreSQL can hold it: its text has no NUL character, and an answer's
    excerpt may have one (binary, UTF-16), which would fail the whole flush."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


async def _target_state(conn: Conn, name: str) -> TargetState:
    """A target's state, its row locked until the transaction ends (a default when none)."""
    cur = await conn.execute(
        f"SELECT {_TARGET_COLUMNS} FROM targets WHERE name = %s FOR UPDATE", (name,)
    )
    row = await cur.fetchone()
    return TargetState(*row) if row else TargetState(name)


async def _claim(
    conn: Conn,
    limits: Mapping[str, int],
    now_ms: int,
    lease_ms: int,
    owner: str,
    ordered: Collection[str] = (),
) -> Claimed:
    # Every target's statement is sent before the first result is read (a claim of several
    # targets runs in pipeline mode, one implicit transaction).
    asked = [
        (target, limit, await conn.execute(
            _CLAIM_ORDERED if target in ordered else _CLAIM_ANY,
            (target, now_ms, now_ms, limit, lease_ms, owner, target, now_ms),
        ))
        for target, limit in limits.items()
        if limit > 0
    ]  # fmt: skip
    claims: list[Claim] = []
    events: dict[str, Event] = {}  # one Event for an event claimed for several targets
    next_due: int | None = None
    for target, limit, cur in asked:
        rows = await cur.fetchall()
        taken = 0
        for r in rows:
            if r[1] is None:
                continue  # nothing was due: the row only says when the next one is
            event = events.get(r[4]) or events.setdefault(r[4], row_to_event(r[4:]))
            claims.append(Claim(r[1], target, event, r[2], r[3]))
            taken += 1
        later = rows[0][0] if rows else None
        if taken < limit and later is not None:
            # Fewer due deliveries than it could take: when its next one is due. Rows due
            # already are leased (in flight): their end wakes the worker, not this time.
            next_due = int(later) if next_due is None else min(next_due, int(later))
    return Claimed(claims, next_due)


async def _record(
    conn: Conn, records: Sequence[AttemptRecord], released: Sequence[int] = ()
) -> None:
    # In id order, as other replicas do: row locks taken in one order cannot deadlock. The
    # rows are then locked in the plan's order; a deadlock with another replica's flush
    # (only over a lease that ran out and was claimed again) is run again by `run`.
    records = sorted(records, key=lambda r: r.delivery_id)
    attempted = {r.delivery_id for r in records}
    given_back = sorted({i for i in released if i not in attempted})
    await conn.execute(_RECORD, (jsontext.dumps([_outcome(r) for r in records]), given_back))
    states = {r.target_state.name: r.target_state for r in records if r.target_state}
    if states:
        async with conn.cursor() as cur:
            await cur.executemany(
                _UPSERT_TARGET, [_target_values(states[name]) for name in sorted(states)]
            )


async def _release(conn: Conn, delivery_ids: Sequence[int]) -> None:
    if delivery_ids:
        await conn.execute(
            "UPDATE deliveries SET lease_ms = NULL, lease_owner = NULL WHERE id = ANY(%s)",
            (sorted(delivery_ids),),
        )


async def _redeliver(
    conn: Conn, event_ids: Sequence[str], target: str | None, now_ms: int
) -> dict[str, int]:
    out: dict[str, int] = {}
    for event_id in event_ids:
        if target is None:
            cur = await conn.execute(
                f"UPDATE deliveries SET {_REQUEUE} WHERE event_id = %s", (now_ms, event_id)
            )
            out[event_id] = cur.rowcount
            continue
        cur = await conn.execute(
            f"UPDATE deliveries SET {_REQUEUE} WHERE event_id = %s AND target = %s",
            (now_ms, event_id, target),
        )
        if cur.rowcount == 0:
            # A target the event never went to (added later): queue a first delivery.
            cur = await conn.execute(
                "INSERT INTO deliveries (event_id, target, status, attempts, next_ms, created_ms,"
                " subject) SELECT id, %s, 'pending', 0, %s, %s, subject FROM events WHERE id = %s"
                " ON CONFLICT (event_id, target) DO NOTHING",
                (target, now_ms, now_ms, event_id),
            )
        out[event_id] = cur.rowcount
    return out


class PostgresOutbox:
    """Mixed into PostgresStore; uses its `run` helper and its `replica_id`."""

    replica_id: str

    if TYPE_CHECKING:

        async def run(
            self, fn: Callable[[Conn], Awaitable[T]], *, durable: bool = True, alone: bool = False
        ) -> T: ...

    async def claim_due(
        self,
        limits: Mapping[str, int],
        now_ms: int,
        lease_ms: int,
        ordered: Collection[str] = (),
    ) -> Claimed:
        owner = self.replica_id
        # One target's claim is one statement: read after its commit, in one round trip.
        alone = sum(1 for limit in limits.values() if limit > 0) <= 1
        return await self.run(
            lambda conn: _claim(conn, limits, now_ms, lease_ms, owner, ordered),
            durable=False,
            alone=alone,
        )

    async def release(self, delivery_ids: Sequence[int]) -> None:
        if delivery_ids:
            await self.run(lambda conn: _release(conn, delivery_ids), durable=False, alone=True)

    async def record_attempts(
        self, records: Sequence[AttemptRecord], released: Sequence[int] = ()
    ) -> None:
        if records or released:
            # One statement, unless a target's state changed with it.
            alone = not any(r.target_state for r in records)
            await self.run(
                lambda conn: _record(conn, records, released), durable=False, alone=alone
            )

    async def target_states(self) -> dict[str, TargetState]:
        async def q(conn: Conn) -> dict[str, TargetState]:
            cur = await conn.execute(f"SELECT {_TARGET_COLUMNS} FROM targets")
            return {r[0]: TargetState(*r) for r in await cur.fetchall()}

        return await self.run(q)

    async def save_target_state(self, state: TargetState) -> None:
        async def save(conn: Conn) -> None:
            await conn.execute(_UPSERT_TARGET, _target_values(state))

        await self.run(save)

    async def enable_target(self, name: str) -> TargetState:
        async def enable(conn: Conn) -> TargetState:
            before = await _target_state(conn, name)
            await conn.execute(_UPSERT_TARGET, _target_values(TargetState(name)))
            return before

        return await self.run(enable)

    async def reset_target(self, name: str, now_ms: int) -> TargetReset:
        async def reset(conn: Conn) -> TargetReset:
            before = await _target_state(conn, name)
            closed = TargetState(name, before.disabled_ms, before.disabled_reason)
            await conn.execute(_UPSERT_TARGET, _target_values(closed))
            cur = await conn.execute(
                f"UPDATE deliveries SET next_ms = %s WHERE target = %s AND {_WAITING}"
                " AND next_ms > %s",
                (now_ms, name, now_ms),
            )
            return TargetReset(before, cur.rowcount)

        return await self.run(reset)

    async def disable_target(self, name: str, reason: str, now_ms: int) -> bool:
        async def disable(conn: Conn) -> bool:
            state = await _target_state(conn, name)
            if state.disabled_ms is not None:
                return False
            disabled = replace(state, disabled_ms=now_ms, disabled_reason=reason)
            await conn.execute(_UPSERT_TARGET, _target_values(disabled))
            return True

        return await self.run(disable)

    async def list_target_attempts(self, target: str, limit: int) -> list[AttemptRow]:
        async def q(conn: Conn) -> list[AttemptRow]:
            cur = await conn.execute(
                "SELECT delivery_id, event_id, target, at_ms, duration_ms, status_code, response,"
                " error FROM attempts WHERE target = %s ORDER BY id DESC LIMIT %s",
                (target, limit),
            )
            return [AttemptRow(*r) for r in await cur.fetchall()]

        return await self.run(q)

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        target: str | None = None,
        event_id: str | None = None,
        limit: int | None = 100,
    ) -> list[DeliveryRow]:
        sql, args = select_filtered(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries",
            [("status = ?", status), ("target = ?", target), ("event_id = ?", event_id)],
            order_by="id DESC",
            limit=limit,
            mark="%s",
        )

        async def q(conn: Conn) -> list[DeliveryRow]:
            cur = await conn.execute(sql, args)
            return [row_to_delivery(r) for r in await cur.fetchall()]

        return await self.run(q)

    async def list_attempts(self, event_id: str, target: str | None = None) -> list[AttemptRow]:
        sql, args = attempts_of_event(event_id, target, "%s")

        async def q(conn: Conn) -> list[AttemptRow]:
            cur = await conn.execute(sql, args)
            return [AttemptRow(*r) for r in await cur.fetchall()]

        return await self.run(q)

    async def redeliver(
        self, event_ids: Sequence[str], target: str | None, now_ms: int
    ) -> dict[str, int]:
        return await self.run(lambda conn: _redeliver(conn, event_ids, target, now_ms))

    async def redeliver_dead(self, target: str | None, now_ms: int) -> int:
        async def requeue(conn: Conn) -> int:
            sql = f"UPDATE deliveries SET {_REQUEUE} WHERE status = 'dead'"
            args: list[Any] = [now_ms]
            if target is not None:
                sql += " AND target = %s"
                args.append(target)
            cur = await conn.execute(sql, args)
            return cur.rowcount

        return await self.run(requeue)

    async def delivery_counts(
        self, statuses: Sequence[str] | None = None
    ) -> dict[str, dict[str, int]]:
        sql = "SELECT target, status, count(*) FROM deliveries"
        args: list[Any] = []
        if statuses is not None:
            # Waiting and dead rows are few and indexed; delivered ones pile up over time.
            sql += " WHERE status = ANY(%s)"
            args.append(list(statuses))
        sql += " GROUP BY target, status"

        async def q(conn: Conn) -> dict[str, dict[str, int]]:
            cur = await conn.execute(sql, args)
            out: dict[str, dict[str, int]] = {}
            for target, status, count in await cur.fetchall():
                out.setdefault(target, {})[status] = int(count)
            return out

        return await self.run(q)
