"""The PostgreSQL store on its caller's event loop: no hop per query, the callers it still
serves (a command's `asyncio.run` one after another, a second live loop), a flush cut
mid-transaction, and two replicas claiming batches at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection, Iterator
from typing import Any

import psycopg
import pytest

from bridge.errors import StoreUnavailable
from bridge.events import Event, event_id, now_ms
from bridge.store import Store, open_store
from bridge.store.base import NewEvent
from bridge.store.deliveries import AttemptRecord, Claim

WAIT_S = 20.0  # bound of every wait for a state of the server


def make_events(count: int, source: str = "loop") -> list[Event]:
    recorded = now_ms()
    return [
        Event(id=event_id(source, str(n)), source=source, type="t", origin="push",
              data={"n": n}, recorded_ms=recorded)
        for n in range(count)
    ]  # fmt: skip


def delivered(claim: Claim, at_ms: int) -> AttemptRecord:
    return AttemptRecord(claim.delivery_id, claim.event.id, claim.target, at_ms, 1, 200, "",
                         None, "delivered", at_ms)  # fmt: skip


def backends(url: str, name: str, waiting: bool = False) -> list[int]:
    """The server processes of connections named `name` (those waiting for a lock)."""
    sql = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    if waiting:
        sql += " AND wait_event_type = 'Lock'"
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute(sql, (name,)).fetchall()]


def wait_for_backends(
    url: str, name: str, count: int, waiting: bool = False, other_than: Collection[int] = ()
) -> list[int]:
    """Wait until exactly `count` such processes exist, `other_than` left out (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        pids = [pid for pid in backends(url, name, waiting) if pid not in other_than]
        if len(pids) == count:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pids)} connections named {name}, not {count}")
        time.sleep(0.02)


@pytest.fixture
def named(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A URL whose connections carry a name of their own, and that name."""
    name = f"bridge-loop-{now_ms()}-{threading.get_ident() % 1000}"
    yield f"{postgres_url}&application_name={name}", name


def test_transactions_run_on_the_caller_s_loop_and_thread(named: tuple[str, str]) -> None:
    url, _ = named

    async def thread_of(conn: Any) -> int:
        await conn.execute("SELECT 1")
        return threading.get_ident()

    async def main() -> tuple[int, int]:
        # As the daemon does: opened and closed by plain calls inside its running loop.
        store: Any = open_store(url)
        store.open()
        try:
            return await store.run(thread_of), await store.run(thread_of, durable=False)
        finally:
            store.close()

    assert asyncio.run(main()) == (threading.get_ident(), threading.get_ident())


def test_a_command_s_loops_one_after_another_and_a_second_live_loop_are_served(
    named: tuple[str, str],
) -> None:
    url, name = named
    store = open_store(url)
    store.open()
    try:
        # Each `asyncio.run` of a command is a new loop: the next one takes the connections
        # over (the old loop's are closed, none leaks: a leak is an error in the tests).
        for n in range(3):
            assert asyncio.run(store.record_event(make_events(1, f"run{n}")[0])) is True
        seen: list[int] = []
        second_done = threading.Event()

        def second_loop() -> None:
            # Meanwhile the first loop is alive and holds them: the store's thread serves.
            seen.append(asyncio.run(store.count_events()))
            second_done.set()

        async def first_loop() -> int:
            await store.count_events()  # this loop takes the connections
            thread = threading.Thread(target=second_loop)
            thread.start()
            deadline = time.monotonic() + WAIT_S
            while not second_done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            thread.join(timeout=WAIT_S)
            return await store.count_events()

        assert asyncio.run(first_loop()) == 3
        assert seen == [3]
    finally:
        store.close()
    wait_for_backends(url, name, 0)  # every connection closed


def test_a_flush_cut_mid_transaction_is_written_once_on_a_new_connection(
    named: tuple[str, str], postgres_url: str
) -> None:
    url, name = named
    store = open_store(url)
    store.open()

    async def main() -> None:
        await store.record_events([NewEvent(e, ["sink"]) for e in make_events(3)])
        at = now_ms()
        claims = (await store.claim_due({"sink": 64}, at, at + 60_000)).claims
        assert len(claims) == 3
        # Another transaction holds one delivery's row: the flush waits on it mid-way, and
        # its connection is cut there.
        with psycopg.connect(url, autocommit=False) as holder:
            holder.execute("SELECT 1 FROM deliveries WHERE id = %s FOR UPDATE",
                           (claims[0].delivery_id,))  # fmt: skip
            flush = asyncio.ensure_future(store.record_attempts([delivered(c, at) for c in claims]))
            (pid,) = await asyncio.to_thread(wait_for_backends, url, name, 1, True)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            holder.rollback()
            await asyncio.wait_for(flush, WAIT_S)
        rows = await store.list_deliveries(target="sink")
        assert sorted(r.status for r in rows) == ["delivered"] * 3
        assert [r.attempts for r in rows] == [1, 1, 1]
        for claim in claims:  # the cut transaction wrote nothing: one attempt each
            assert len(await store.list_attempts(claim.event.id)) == 1

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_a_flush_cut_twice_acknowledges_nothing_and_its_deliveries_come_back(
    named: tuple[str, str], postgres_url: str
) -> None:
    url, name = named
    store = open_store(url)
    store.open()

    async def main() -> None:
        events = make_events(2)
        await store.record_events([NewEvent(e, ["sink"]) for e in events])
        at = now_ms()
        claims = (await store.claim_due({"sink": 64}, at, at + 1_000)).claims
        with psycopg.connect(url, autocommit=False) as holder:
            holder.execute("SELECT 1 FROM deliveries WHERE id = %s FOR UPDATE",
                           (claims[0].delivery_id,))  # fmt: skip
            flush = asyncio.ensure_future(store.record_attempts([delivered(c, at) for c in claims]))
            cut: list[int] = []
            for _ in range(2):  # the first run and the one run again on a new connection
                (pid,) = await asyncio.to_thread(wait_for_backends, url, name, 1, True, cut)
                with psycopg.connect(postgres_url, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                cut.append(pid)
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(flush, WAIT_S)
            holder.rollback()
        # Nothing was acknowledged: once the leases end, the deliveries are due again.
        again = await store.claim_due({"sink": 64}, at + 1_001, at + 60_000)
        assert sorted(c.event.id for c in again.claims) == sorted(e.id for e in events)
        assert all(c.attempts == 0 for c in again.claims)

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_two_replicas_claiming_batches_at_once_never_share_a_delivery(
    postgres_url: str,
) -> None:
    count = 640
    one, two = open_store(postgres_url, "one"), open_store(postgres_url, "two")
    one.open()
    two.open()
    held: dict[int, str] = {}  # delivery id -> the replica holding its lease now
    shared: list[int] = []
    sent: list[int] = []

    async def replica(store: Store) -> None:
        rounds = 0
        while rounds < count:  # bounded: each round claims at least one or ends
            rounds += 1
            at = now_ms()
            claims = (await store.claim_due({"sink": 64}, at, at + 600_000)).claims
            if not claims:
                return
            for claim in claims:
                if claim.delivery_id in held:
                    shared.append(claim.delivery_id)
                held[claim.delivery_id] = store.replica_id
            await asyncio.sleep(0)  # the other replica claims meanwhile
            sent.extend(c.delivery_id for c in claims)
            await store.record_attempts([delivered(c, at) for c in claims])
            for claim in claims:
                held.pop(claim.delivery_id, None)

    async def main() -> None:
        await one.record_events([NewEvent(e, ["sink"]) for e in make_events(count)])
        await asyncio.gather(replica(one), replica(two))

    try:
        asyncio.run(main())
        assert shared == []
        assert len(sent) == len(set(sent)) == count
        rows = asyncio.run(one.list_deliveries(target="sink", limit=None))
        assert {r.status for r in rows} == {"delivered"} and len(rows) == count
    finally:
        one.close()
        two.close()
