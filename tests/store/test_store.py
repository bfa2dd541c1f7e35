"""The store on both backends (SQLite and PostgreSQL), then what is SQLite's own.

Tests taking `backend` run once per backend: `backend()` opens a store on that test's own
database (a file in tmp_path, or a fresh PostgreSQL schema) and closes it after.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.errors import StoreError, StoreUnavailable
from bridge.events import Event, event_id, now_ms
from bridge.store import NewEvent, Store, open_store
from bridge.store.base import PollCommit, PollOutcome
from bridge.store.sqlite import SQLiteStore
from bridge.store.sqlite.migrations import MIGRATIONS
from bridge.store.sqlite.store import identity_problem


def make_event(source: str, upstream: str, type: str = "thing.happened") -> Event:
    return Event(
        id=event_id(source, upstream),
        source=source,
        type=type,
        origin="push",
        data={"upstream": upstream},
        recorded_ms=now_ms(),
        upstream_id=upstream,
    )


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "state" / "bridge.db")
    s.open()
    yield s
    s.close()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrates_from_empty_and_records_migrations(tmp_path: Path) -> None:
    path = tmp_path / "new" / "bridge.db"
    s = SQLiteStore(path)
    s.open()
    s.close()
    assert {"events", "deliveries", "attempts", "targets", "poll_items", "poll_state"} <= tables(
        path
    )
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert names == [name for name, _ in MIGRATIONS]


def test_reopen_keeps_data_and_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    first = SQLiteStore(path)
    first.open()
    assert asyncio.run(first.record_event(make_event("a", "1"), ["t"])) is True
    first.close()
    again = SQLiteStore(path)
    again.open()
    try:
        assert asyncio.run(again.count_events()) == 1
        assert asyncio.run(again.record_event(make_event("a", "1"), ["t"])) is False
    finally:
        again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def test_deliveries_stored_before_0015_are_found_by_their_events_seq(tmp_path: Path) -> None:
    # A database at migration 0014 (deliveries named their event by id only): 0015 gives
    # each its event's seq, which claims, listings and redeliveries go by from then on.
    import sqlite_utils

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    db.table("_migrations").create({"name": str, "applied_ms": int}, pk="name")
    for name, migration in MIGRATIONS[:14]:
        migration(db)
        db.table("_migrations").insert({"name": name, "applied_ms": 0})
    assert MIGRATIONS[14][0] == "0015_deliveries_by_event_seq"
    events = [make_event("old", str(i)) for i in range(3)]
    for ev in events:
        db.execute(
            "INSERT INTO events (id, source, type, origin, recorded_ms, data) VALUES (?,?,?,?,?,?)",
            (ev.id, ev.source, ev.type, ev.origin, ev.recorded_ms, '{"n": 1}'),
        )
        db.execute(
            "INSERT INTO deliveries (event_id, target, status, attempts, next_ms, created_ms)"
            " VALUES (?, 't', 'pending', 0, 0, 0)",
            (ev.id,),
        )
    # A delivery whose event is gone keeps no seq (and blocks nothing).
    db.execute(
        "INSERT INTO deliveries (event_id, target, status, attempts, next_ms, created_ms)"
        " VALUES ('evt_gone', 't', 'pending', 0, 0, 0)"
    )
    db.conn.close()

    store = SQLiteStore(path)
    store.open()
    try:
        with sqlite3.connect(path) as conn:
            seqs = conn.execute(
                "SELECT d.event_id, d.event_seq, e.seq FROM deliveries d"
                " LEFT JOIN events e ON e.id = d.event_id ORDER BY d.id"
            ).fetchall()
            indexes = {r[1] for r in conn.execute("PRAGMA index_list(deliveries)")}
        assert [(row[1], row[2]) for row in seqs[:3]] == [(row[2], row[2]) for row in seqs[:3]]
        assert all(row[1] is not None for row in seqs[:3])
        assert seqs[3] == ("evt_gone", None, None)
        assert "deliveries_event" in indexes
        assert "idx_deliveries_event_id_target" not in indexes
        listed = asyncio.run(store.list_deliveries(event_id=events[1].id))
        assert [(d.event_id, d.target) for d in listed] == [(events[1].id, "t")]
        at = now_ms()
        claimed = asyncio.run(store.claim_due({"t": 10}, at, at + 60_000)).claims
        assert sorted(c.event.id for c in claimed) == sorted(ev.id for ev in events)
        # A new event and its delivery next to the old ones, and a redelivery of an old one.
        new = make_event("old", "new")
        assert asyncio.run(store.record_event(new, ["t"])) is True
        assert asyncio.run(store.redeliver([events[0].id], "u", at)) == {events[0].id: 1}
        rows = asyncio.run(store.list_deliveries(event_id=events[0].id))
        assert sorted(d.target for d in rows) == ["t", "u"]
        # A version before 0015 still opening the database stores deliveries without a seq:
        # the trigger gives them their event's, so they are claimed.
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT INTO deliveries (event_id, target, status, attempts, next_ms,"
                " created_ms) VALUES (?, 'v', 'pending', 0, 0, 0)",
                (events[2].id,),
            )
        claimed = asyncio.run(store.claim_due({"v": 10}, at, at + 60_000)).claims
        assert [c.event.id for c in claimed] == [events[2].id]
    finally:
        store.close()


def test_writer_uses_full_sync_and_wal(store: SQLiteStore) -> None:
    modes = store.writer.call(
        lambda conn: (
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA journal_mode").fetchone()[0],
        )
    )
    assert modes == (2, "wal")  # 2 is FULL


def test_event_and_deliveries_are_written_together(any_store: Store) -> None:
    store = any_store
    ev = make_event("orders", "evt-1")
    assert asyncio.run(store.record_event(ev, ["a", "b"])) is True
    rows = asyncio.run(store.list_deliveries(event_id=ev.id))
    assert sorted((r.target, r.status, r.attempts) for r in rows) == [
        ("a", "pending", 0),
        ("b", "pending", 0),
    ]
    got = asyncio.run(store.get_event(ev.id))
    assert got == ev
    # A duplicate writes nothing: no second event, no extra deliveries.
    assert asyncio.run(store.record_event(ev, ["a", "b", "c"])) is False
    assert len(asyncio.run(store.list_deliveries())) == 2
    # In one batch too: the first of two equal ids is new, the second a duplicate.
    again = make_event("orders", "evt-2")
    batch = [NewEvent(again, ["a"]), NewEvent(again, ["a"])]
    assert asyncio.run(store.record_events(batch)) == [True, False]
    # The same item twice is one event too.
    twice = NewEvent(make_event("orders", "evt-3"), ["a"])
    assert asyncio.run(store.record_events([twice, twice])) == [True, False]
    assert len(asyncio.run(store.list_deliveries(event_id=twice.event.id))) == 1


def test_a_batch_bigger_than_one_insert_stores_every_field_as_given(any_store: Store) -> None:
    # The events of a batch go in a few INSERTs of many rows (80 a statement on SQLite).
    store = any_store
    texts = ["plain", "é ü 日本", "emoji 😀", 'quote " and \\ backslash', "nul \x00 inside", ""]
    events = [
        Event(
            id=event_id("big", str(i)),
            source="big",
            type=f"t.{i % 3}",
            origin="push",
            data={"i": i, "text": texts[i % len(texts)], "nested": [None, True, 1.5]},
            recorded_ms=1_700_000_000_000 + i,
            subject=None if i % 2 else f"subject {texts[i % 4]}",  # PostgreSQL: no NUL in text
            time_ms=None if i % 5 == 0 else 1_600_000_000_000 + i,
            upstream_id=str(i),
            traceparent=None if i % 4 else f"00-{i:032x}-{i + 1:016x}-01",
            tracestate=None if i % 8 else "vendor=x",
        )
        for i in range(1, 201)
    ]
    batch = [NewEvent(e, ["a", "b"] if i % 2 else []) for i, e in enumerate(events)]
    batch.insert(100, NewEvent(events[3], ["a"]))  # the same id again: a duplicate
    results = asyncio.run(store.record_events(batch))
    assert results == [True] * 100 + [False] + [True] * 100
    for e in events:
        assert asyncio.run(store.get_event(e.id)) == e
    deliveries = asyncio.run(store.list_deliveries(limit=1000))
    assert len(deliveries) == 200  # two for each odd-numbered event of the batch
    assert {r.status for r in deliveries} == {"pending"}


def test_known_and_repeated_ids_in_a_big_batch_are_told_apart(any_store: Store) -> None:
    # SQLite learns which ids were known only when its INSERT skipped some: the rows it
    # added are then the highest rowids among the batch's ids (asked 500 at a time).
    store = any_store
    stored = [make_event("mix", str(i)) for i in range(0, 1400, 2)]  # the even ones
    assert asyncio.run(store.record_events([NewEvent(e, ["a"]) for e in stored])) == [True] * 700
    batch, expected = [], []
    for i in range(1400):
        batch.append(NewEvent(make_event("mix", str(i)), ["a"]))
        expected.append(i % 2 == 1)  # the odd ones are new
        if i % 7 == 0:  # and some ids come twice in the batch
            batch.append(NewEvent(make_event("mix", str(i)), ["a"]))
            expected.append(False)
    assert asyncio.run(store.record_events(batch)) == expected
    assert asyncio.run(store.count_events(source="mix")) == 1400
    deliveries = asyncio.run(store.list_deliveries(limit=None))
    assert len(deliveries) == 1400  # one for each event, none for a duplicate
    assert len({d.event_id for d in deliveries}) == 1400


def test_each_delivery_names_its_events_seq(store: SQLiteStore) -> None:
    # The seqs of a batch's new events are worked out from each INSERT's last rowid (80 rows
    # a statement), or asked for when some ids were known: every delivery gets its event's.
    known = [make_event("seq", str(i)) for i in range(0, 300, 3)]
    asyncio.run(store.record_events([NewEvent(e, ["a"]) for e in known]))
    fresh = [NewEvent(make_event("seq", str(i)), ["a", "b"]) for i in range(300)]
    asyncio.run(store.record_events(fresh))  # a third known: seqs asked for
    more = [NewEvent(make_event("seq", str(i)), ["a"]) for i in range(300, 500)]
    asyncio.run(store.record_events(more))  # all new: seqs from the rowids
    with sqlite3.connect(store.path) as conn:
        pairs = conn.execute(
            "SELECT d.event_id, e.id FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq"
        ).fetchall()
    assert len(pairs) == 100 + 200 * 2 + 200
    assert all(delivery == event for delivery, event in pairs)


def test_an_event_refused_by_another_constraint_fails_its_batch(store: SQLiteStore) -> None:
    # The INSERT skips known ids (OR IGNORE), which would skip a row that breaks another
    # constraint too: such a row is not taken for a duplicate, its batch fails.
    good = make_event("mix", "good")
    bad = make_event("mix", "bad")
    object.__setattr__(bad, "type", None)  # NOT NULL in the table
    with pytest.raises(StoreError, match="could not be stored"):
        asyncio.run(store.record_events([NewEvent(good, ["a"]), NewEvent(bad, ["a"])]))
    assert asyncio.run(store.count_events()) == 0
    assert asyncio.run(store.list_deliveries()) == []


def test_a_failing_write_alone_in_its_commit_leaves_nothing(store: SQLiteStore) -> None:
    # A batch of one runs without a savepoint: what it wrote before it raised is rolled
    # back with the transaction, and the writer goes on.
    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO _migrations (name, applied_ms) VALUES ('half', 0)")
        raise ValueError("failed halfway")

    with pytest.raises(ValueError, match="halfway"):
        store.writer.call(half)
    assert store.writer.call(
        lambda conn: conn.execute("SELECT count(*) FROM _migrations WHERE name = 'half'").fetchone()
    ) == (0,)
    assert asyncio.run(store.record_event(make_event("after", "1"), ["t"])) is True


def test_group_commit_batches_concurrent_writes(store: SQLiteStore) -> None:
    events = [make_event("push", str(i)) for i in range(2000)]

    async def main() -> list[bool]:
        return await asyncio.gather(*(store.record_event(e, ["t"]) for e in events))

    before = store.writer.commits
    results = asyncio.run(main())
    assert all(results) and len(results) == 2000
    commits = store.writer.commits - before
    # Many rows per commit: far fewer commits than writes.
    assert 1 <= commits <= 200, commits
    assert asyncio.run(store.count_events(source="push")) == 2000


def test_only_a_batch_that_acknowledges_nothing_skips_the_fsync(store: SQLiteStore) -> None:
    # PRAGMA synchronous reads 2 for FULL, 1 for NORMAL, inside the batch's transaction.
    def sync(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    assert store.writer.call(sync) == 2
    assert store.writer.submit(sync, durable=False).result() == 1
    # A durable write in the same batch makes the whole batch FULL.
    gate = threading.Event()
    blocker = store.writer.submit(lambda conn: gate.wait(5))
    relaxed = store.writer.submit(sync, durable=False)
    durable = store.writer.submit(sync)
    gate.set()
    blocker.result()
    assert relaxed.result() == durable.result() == 2
    assert store.writer.call(sync) == 2


def test_claims_and_outcomes_commit_without_waiting_for_the_disk(store: SQLiteStore) -> None:
    asyncio.run(store.record_event(make_event("push", "one"), ["t"]))
    before = store.writer.relaxed_commits
    claimed = asyncio.run(store.claim_due({"t": 10}, now_ms(), now_ms() + 60_000))
    assert len(claimed.claims) == 1
    asyncio.run(store.release([claimed.claims[0].delivery_id]))
    assert store.writer.relaxed_commits - before == 2
    # The event itself went in durably.
    assert asyncio.run(store.count_events(source="push")) == 1


def test_a_write_here_commits_on_the_calling_thread_when_no_write_is_under_way(
    store: SQLiteStore,
) -> None:
    def who(conn: sqlite3.Connection) -> tuple[int, int]:
        return threading.get_ident(), int(conn.execute("PRAGMA synchronous").fetchone()[0])

    commits = store.writer.commits
    # The caller's own thread, NORMAL (1): no hop to the writer thread, no fsync.
    assert asyncio.run(store.write_here(who)) == (threading.get_ident(), 1)
    assert store.writer.commits == commits + 1
    # While the writer thread is in a write, it takes the write into its next commit.
    entered, gate = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        entered.set()
        gate.wait(5)

    blocker = store.writer.submit(block)
    assert entered.wait(5)

    async def meanwhile() -> tuple[int, int]:
        task = asyncio.ensure_future(store.write_here(who))
        await asyncio.sleep(0)
        assert not task.done()  # the loop goes on; the write waits for the thread
        gate.set()
        return await task

    thread, sync = asyncio.run(meanwhile())
    blocker.result()
    assert thread != threading.get_ident() and sync == 1


def test_a_write_here_waits_in_the_writer_thread_while_another_process_writes(
    store: SQLiteStore,
) -> None:
    asyncio.run(store.record_event(make_event("push", "one"), ["t"]))
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def claim_while_locked() -> int:
        task = asyncio.ensure_future(store.claim_due({"t": 10}, now_ms(), now_ms() + 60_000))
        await asyncio.sleep(0)
        assert not task.done()  # not failed, not spinning the loop: queued for the thread
        holder.execute("ROLLBACK")
        return len((await task).claims)

    try:
        assert asyncio.run(claim_while_locked()) == 1
    finally:
        holder.close()


def test_a_read_here_runs_on_the_calling_thread_and_waits_for_a_lock_in_a_worker(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(store.record_poll("tickets", PollOutcome(at_ms=now_ms(), duration_ms=1)))

    def who(conn: sqlite3.Connection) -> tuple[int, int, int]:
        polls = int(conn.execute("SELECT polls FROM poll_state").fetchone()[0])
        return threading.get_ident(), int(conn.execute("PRAGMA busy_timeout").fetchone()[0]), polls

    # The caller's own thread, on a connection that never waits for a lock.
    assert asyncio.run(store.read_here(who)) == (threading.get_ident(), 0, 1)
    assert asyncio.run(store.load_poll_state("tickets")).polls == 1
    # Where a lock stands in the way (SQLite says busy at once), a worker thread reads,
    # waiting for it: the loop never does.
    plain = store.read_sync

    def busy_here(fn: Callable[[sqlite3.Connection], object], *, waits: bool = True) -> object:
        if not waits:
            raise StoreUnavailable("the database cannot be written: database is locked")
        return plain(fn)

    monkeypatch.setattr(store, "read_sync", busy_here)
    thread, timeout_ms, polls = asyncio.run(store.read_here(who))
    assert thread != threading.get_ident() and timeout_ms > 0 and polls == 1
    # A store that lost its file says so, and no worker thread reads the path again.
    monkeypatch.undo()
    store.writer.lost = "the database file was deleted"
    try:
        with pytest.raises(StoreUnavailable, match="deleted"):
            asyncio.run(store.read_here(who))
    finally:
        store.writer.lost = None


def test_writes_here_have_the_writer_thread_checkpoint_the_wal(store: SQLiteStore) -> None:
    from bridge.store.sqlite.writer import CHECKPOINT_EVERY

    # 16 KiB a commit, that its own commit deletes again: the WAL grows, the database not.
    def churn(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS churn (b BLOB)")
        conn.execute("INSERT INTO churn VALUES (randomblob(16384))")
        conn.execute("DELETE FROM churn")

    async def many(n: int) -> None:
        for _ in range(n):
            await store.write_here(churn)
            await asyncio.sleep(0)

    rounds = 30
    asyncio.run(many(rounds * CHECKPOINT_EVERY))  # about 30 MB written into the WAL
    store.writer.call(lambda conn: None)  # queued behind the checkpoints asked for
    assert store.writer.checkpoints >= rounds // 4  # some writes may have gone to the thread
    wal = Path(store.path + "-wal").stat().st_size
    assert wal < 8 * 1024 * 1024, f"the WAL grew to {wal} bytes"


def test_a_poll_that_changed_nothing_commits_without_waiting_for_the_disk(
    store: SQLiteStore,
) -> None:
    outcome = PollOutcome(at_ms=now_ms(), duration_ms=3, status=200, requests=1)
    item = ("k1", "v1", '{"id":"k1"}')
    event = make_event("tickets", "k1")

    def relaxed_by(commit: Callable[[], object]) -> int:
        before = store.writer.relaxed_commits
        commit()
        return store.writer.relaxed_commits - before

    # A poll that saw something new (a baseline, even of no items; items, events, a
    # cursor) is durable.
    assert relaxed_by(lambda: asyncio.run(store.commit_poll(
        PollCommit("empty", outcome, first=True)))) == 0  # fmt: skip
    assert relaxed_by(lambda: asyncio.run(store.commit_poll(
        PollCommit("tickets", outcome, upserts=[item], etag='"a"')))) == 0  # fmt: skip
    assert relaxed_by(lambda: asyncio.run(store.commit_poll(
        PollCommit("tickets", outcome, events=[NewEvent(event, ["t"])])))) == 0  # fmt: skip
    assert relaxed_by(lambda: asyncio.run(store.commit_poll(
        PollCommit("tickets", outcome, cursor="c2")))) == 0  # fmt: skip
    # One that only moves counts and validators (a 200 with the same items, a 304, a
    # failure) acknowledges nothing: no fsync.
    assert relaxed_by(lambda: asyncio.run(store.commit_poll(
        PollCommit("tickets", outcome, etag='"b"')))) == 1  # fmt: skip
    assert relaxed_by(lambda: asyncio.run(store.record_poll("tickets", outcome))) == 1
    state = asyncio.run(store.load_poll_state("tickets"))
    assert (state.polls, state.etag, state.cursor) == (5, '"b"', "c2")
    assert asyncio.run(store.load_poll_state("empty")).baselined


def test_concurrent_duplicates_make_one_event(any_store: Store) -> None:
    store = any_store
    ev = make_event("gh", "same-delivery")

    async def main() -> list[bool]:
        return await asyncio.gather(*(store.record_event(ev, ["t"]) for _ in range(50)))

    assert sorted(asyncio.run(main())) == [False] * 49 + [True]


def test_concurrent_writers_from_threads_and_a_second_store(
    backend: Callable[..., Store],
) -> None:
    store, other = backend(), backend()
    errors: list[BaseException] = []

    def work(s: Store, prefix: str) -> None:
        try:
            for i in range(100):
                asyncio.run(s.record_event(make_event("mix", f"{prefix}-{i}"), ["t"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(s, f"{n}-{id(s)}"))
        for n in range(3)
        for s in (store, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert asyncio.run(store.count_events(source="mix")) == 600


def test_a_failing_operation_rolls_back_alone(store: SQLiteStore) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO targets (name) VALUES ('half-written')")
        raise RuntimeError("boom")

    async def main() -> tuple[object, ...]:
        return tuple(
            await asyncio.gather(
                store.record_event(make_event("x", "1")),
                store.write(bad),
                store.record_event(make_event("x", "2")),
                return_exceptions=True,
            )
        )

    first, failed, last = asyncio.run(main())
    assert first is True and last is True
    assert isinstance(failed, RuntimeError)
    names = store.read_sync(lambda c: c.execute("SELECT name FROM targets").fetchall())
    assert names == []


def test_a_failed_commit_stores_nothing_and_says_unavailable(store: SQLiteStore) -> None:
    store.writer.fault = sqlite3.OperationalError("database or disk is full")
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.record_event(make_event("x", "lost?"), ["t"]))
    assert asyncio.run(store.check_writable()) is False
    store.writer.fault = None
    assert asyncio.run(store.count_events()) == 0
    assert asyncio.run(store.check_writable()) is True
    assert asyncio.run(store.record_event(make_event("x", "lost?"), ["t"])) is True


def test_list_events_filters_newest_first(any_store: Store) -> None:
    store = any_store
    batch = [
        NewEvent(make_event("a", "1", "a.created")),
        NewEvent(make_event("b", "2", "b.created")),
        NewEvent(make_event("a", "3", "a.deleted")),
    ]
    assert asyncio.run(store.record_events(batch)) == [True, True, True]
    newest = asyncio.run(store.list_events())
    assert [e.upstream_id for e in newest] == ["3", "2", "1"]
    assert [e.upstream_id for e in asyncio.run(store.list_events(source="a"))] == ["3", "1"]
    assert [e.upstream_id for e in asyncio.run(store.list_events(type="b.created"))] == ["2"]
    assert len(asyncio.run(store.list_events(limit=1))) == 1


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError):
        SQLiteStore(blocker / "bridge.db").open()


def test_closed_store_refuses_writes(backend: Callable[..., Store]) -> None:
    s = backend()
    s.close()
    with pytest.raises(StoreError):
        asyncio.run(s.record_event(make_event("a", "1")))


def test_unsupported_url_scheme() -> None:
    with pytest.raises(StoreError, match="not supported"):
        open_store("mysql://localhost/db")


def test_a_locked_database_fails_queued_writes_at_once_then_recovers(store: SQLiteStore) -> None:
    from bridge.store.sqlite.writer import BUSY_TIMEOUT_MS, DEGRADED_BUSY_TIMEOUT_MS

    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def many() -> list[object]:
        return await asyncio.gather(
            *(store.record_event(make_event("locked", str(i))) for i in range(20)),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(many())
        # All of them fail as unavailable (none waits its own busy timeout in turn) ...
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert store.writer.is_degraded
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # ... and once the lock is gone, writes succeed and the normal patience returns.
    patience = store.writer.call(lambda c: store.writer.lock_wait_ms)
    assert patience == DEGRADED_BUSY_TIMEOUT_MS  # read inside the first commit after the lock
    assert asyncio.run(store.record_event(make_event("locked", "after"))) is True
    assert not store.writer.is_degraded
    assert store.writer.lock_wait_ms == BUSY_TIMEOUT_MS
    assert asyncio.run(store.count_events(source="locked")) == 1


# Another process that commits back to back: 5 ms transactions, 0.2 ms apart. Each of its
# transactions reports the first one in which it saw the event the test wrote.
_BUSY_NEIGHBOUR = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
seen = None
for i in range(600):
    conn.execute("BEGIN IMMEDIATE")
    if seen is None and conn.execute("SELECT count(*) FROM events").fetchone()[0]:
        seen = i
    time.sleep(0.005)
    conn.execute("COMMIT")
    if i == 5:
        print("writing", flush=True)
    time.sleep(0.0002)
print(seen, flush=True)
"""


def test_a_process_committing_back_to_back_does_not_keep_the_writer_out(
    store: SQLiteStore,
) -> None:
    """The writer asks for the lock every millisecond: it gets in at one of the neighbour's
    first pauses, where SQLite's busy handler (sleeps growing to 100 ms) mostly missed the
    0.2 ms pauses for many of its transactions."""
    import subprocess
    import sys

    neighbour = subprocess.Popen(
        [sys.executable, "-c", _BUSY_NEIGHBOUR, store.path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert neighbour.stdout is not None
        assert neighbour.stdout.readline().strip() == "writing"
        assert asyncio.run(store.record_event(make_event("between", "1"))) is True
        out, _ = neighbour.communicate(timeout=60)
    finally:
        neighbour.kill()
        neighbour.wait(timeout=10)
    seen = int(out.strip())
    # Written while the neighbour went on (it makes 600 transactions, about 3 s), within its
    # first 200 (seen here: 9 to 62; with SQLite's busy handler alone: 20, 309 and over 100):
    # in the pause after one of them, not once it stopped.
    assert 6 <= seen <= 200, seen


def test_identity_problem_names_a_deleted_or_replaced_file() -> None:
    assert identity_problem("a.db", (1, 2), (1, 2)) is None
    assert identity_problem("a.db", None, None) is None  # nothing was opened
    assert identity_problem("a.db", (1, 2), None) == "the database file a.db was deleted"
    assert "a.db was replaced" in (identity_problem("a.db", (1, 2), (1, 3)) or "")


def test_a_deleted_file_fails_every_write_and_read_from_then_on(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    store = SQLiteStore(path)
    store.open()
    try:
        assert asyncio.run(store.record_event(make_event("s", "1")))
        assert store.lost_reason() is None
        path.unlink()
        # The commit succeeds into the orphaned file, but its caller hears it is not durable.
        with pytest.raises(StoreUnavailable, match="was deleted"):
            asyncio.run(store.record_event(make_event("s", "2")))
        assert store.lost_reason() == f"the database file {path} was deleted"
        with pytest.raises(StoreUnavailable):
            asyncio.run(store.count_events())
        assert not asyncio.run(store.check_writable())
    finally:
        store.close()
    # Its WAL is not left for the next database at that path.
    assert not (tmp_path / "gone.db-wal").exists()
