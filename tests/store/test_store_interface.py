"""The poll, outbox and replica parts of the store interface, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from bridge import logs
from bridge.config import load_config
from bridge.errors import StoreError, StoreUnavailable
from bridge.events import Event, event_id, now_ms
from bridge.store import NewEvent, Store, mask_url, open_store
from bridge.store.base import SCAN_ROWS, PollCommit, PollOutcome, TargetReset, TargetState
from bridge.store.deliveries import AttemptRecord
from bridge.store.sqlite.migrations import MIGRATIONS
from tests.helpers import run_cli, wait_until


def make_event(source: str, upstream: str) -> Event:
    return Event(
        id=event_id(source, upstream),
        source=source,
        type="thing.happened",
        origin="poll",
        data={"upstream": upstream},
        recorded_ms=now_ms(),
        upstream_id=upstream,
    )


def test_a_poll_commit_writes_events_snapshot_and_stats_together(any_store: Store) -> None:
    store = any_store
    outcome = PollOutcome(at_ms=1_000, duration_ms=5, status=200, requests=1, items=2, events=1)
    commit = PollCommit(
        source="src",
        outcome=outcome,
        events=[NewEvent(make_event("src", "a"), ["t"])],
        upserts=[("a", "v1", '{"id":"a"}'), ("b", "v1", '{"id":"b"}'), ("a", "v2", '{"id":"a2"}')],
        etag='"e1"',
    )
    assert asyncio.run(store.commit_poll(commit)) == [True]
    assert asyncio.run(store.load_poll_versions("src")) == {"a": "v2", "b": "v1"}
    assert asyncio.run(store.load_poll_items("src", ["a", "zz"])) == {"a": {"id": "a2"}}
    state = asyncio.run(store.load_poll_state("src"))
    assert (state.baselined, state.generation, state.polls, state.etag) == (True, 1, 1, '"e1"')
    assert len(asyncio.run(store.list_deliveries(target="t"))) == 1
    # A failed poll counts, changes no snapshot.
    failed = PollOutcome(at_ms=2_000, duration_ms=1, status=500, error="HTTP 500")
    asyncio.run(store.record_poll("src", failed))
    asyncio.run(store.commit_poll(PollCommit("src", outcome, deletes=["b"])))
    state = asyncio.run(store.load_poll_state("src"))
    assert (state.polls, state.failures, state.generation) == (3, 1, 2)
    assert state.consecutive_failures == 0 and state.last_error == "HTTP 500"
    assert asyncio.run(store.load_poll_versions("src")) == {"a": "v2"}
    assert [s.source for s in asyncio.run(store.list_poll_states())] == ["src"]
    assert asyncio.run(store.load_poll_state("never")).baselined is False


class MadeOnRead:
    """Snapshot rows made only as they are read, counting how often they were."""

    def __init__(self, count: int) -> None:
        self.count, self.reads = count, 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, row: object) -> bool:
        return any(row == mine for mine in self)

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        self.reads += 1
        for i in range(self.count):
            yield f"k{i}", f"h:{i}", json.dumps({"id": i})


def test_event_sources_names_each_source_with_events_once(any_store: Store) -> None:
    store = any_store
    assert asyncio.run(store.event_sources()) == []
    batch = [NewEvent(make_event(s, u)) for s, u in (("b", "1"), ("a", "1"), ("b", "2"))]
    asyncio.run(store.record_events(batch))
    assert asyncio.run(store.event_sources()) == ["a", "b"]


def test_a_snapshot_is_written_from_rows_made_on_read_and_scanned_in_chunks(
    any_store: Store,
) -> None:
    store = any_store
    rows = MadeOnRead(25_001)  # more than one chunk both ways
    outcome = PollOutcome(at_ms=1_000, duration_ms=5, items=rows.count)
    asyncio.run(store.commit_poll(PollCommit("src", outcome, upserts=rows, first=True)))
    assert rows.reads == 1
    chunks: list[list[tuple[str, str]]] = []
    asyncio.run(store.scan_poll_versions("src", chunks.append))
    assert max(len(c) for c in chunks) <= SCAN_ROWS and len(chunks) >= 3
    scanned = [row for chunk in chunks for row in chunk]
    assert scanned == list(asyncio.run(store.load_poll_versions("src")).items())
    assert dict(scanned) == {f"k{i}": f"h:{i}" for i in range(rows.count)}
    assert asyncio.run(store.load_poll_items("src", ["k25000"])) == {"k25000": {"id": 25000}}
    nothing: list[list[tuple[str, str]]] = []
    asyncio.run(store.scan_poll_versions("other", nothing.append))
    assert nothing == []


def test_claims_are_leases_taken_once_then_recorded(backend: Callable[..., Store]) -> None:
    one, two = backend("one"), backend("two")
    events = [make_event("push", str(i)) for i in range(10)]
    asyncio.run(one.record_events([NewEvent(e, ["t"]) for e in events]))
    at = now_ms()

    async def claim_both() -> tuple[list[int], list[int]]:
        a, b = await asyncio.gather(
            one.claim_due({"t": 6}, at, at + 60_000), two.claim_due({"t": 6}, at, at + 60_000)
        )
        return [c.delivery_id for c in a.claims], [c.delivery_id for c in b.claims]

    ids_one, ids_two = asyncio.run(claim_both())
    # Never the same row twice; between them every due row.
    assert not set(ids_one) & set(ids_two)
    assert len(ids_one) + len(ids_two) == 10
    replicas = {r.id: r for r in asyncio.run(one.list_replicas(at, 60_000))}
    assert replicas == {}  # no heartbeat yet: not listed as live
    asyncio.run(one.heartbeat(at, at))
    asyncio.run(two.heartbeat(at, at))
    held = {r.id: r.claims for r in asyncio.run(two.list_replicas(at, 60_000))}
    assert held == {"one": len(ids_one), "two": len(ids_two)}
    # Leased rows are not claimed again until their lease runs out.
    assert asyncio.run(one.claim_due({"t": 10}, at, at + 60_000)).claims == []
    later = asyncio.run(two.claim_due({"t": 10}, at + 60_000, at + 120_000))
    assert sorted(c.delivery_id for c in later.claims) == sorted(ids_one + ids_two)
    # Released rows are claimable at once; recorded ones are done.
    asyncio.run(two.release(ids_one))
    again = asyncio.run(one.claim_due({"t": 10}, at + 60_000, at + 120_000))
    assert sorted(c.delivery_id for c in again.claims) == sorted(ids_one)
    first = again.claims[0]
    record = AttemptRecord(
        first.delivery_id, first.event.id, "t", at, 12, 200, "ok", None, "delivered", at,
        TargetState("t", failures=0),
    )  # fmt: skip
    asyncio.run(one.record_attempts([record]))
    rows = asyncio.run(one.list_deliveries(status="delivered"))
    assert [r.id for r in rows] == [first.delivery_id]
    assert [a.status_code for a in asyncio.run(one.list_attempts(first.event.id))] == [200]
    assert asyncio.run(one.target_states())["t"].circuit == "closed"
    counts = asyncio.run(one.delivery_counts())
    assert counts["t"]["delivered"] == 1 and counts["t"]["pending"] == 9


def test_next_due_and_redelivery(any_store: Store) -> None:
    store = any_store
    ev = make_event("push", "x")
    asyncio.run(store.record_event(ev, ["t"]))
    at = now_ms() + 1_000
    (claim,) = asyncio.run(store.claim_due({"t": 5}, at, at + 1_000)).claims
    retry = AttemptRecord(claim.delivery_id, ev.id, "t", at, 3, 500, None, None, "dead", at + 50)
    asyncio.run(store.record_attempts([retry]))
    assert asyncio.run(store.redeliver_dead("t", at + 100)) == 1
    assert asyncio.run(store.redeliver([ev.id], "other", at + 200)) == {ev.id: 1}
    claimed = asyncio.run(store.claim_due({"t": 5, "other": 5}, at + 150, at + 2_000))
    assert [c.target for c in claimed.claims] == ["t"]
    # The count of attempts goes on; the retry schedule starts again after the one made.
    assert [(c.attempts, c.retry_from) for c in claimed.claims] == [(1, 1)]
    assert [r.attempts for r in asyncio.run(store.list_deliveries(target="t"))] == [1]
    assert claimed.next_due_ms == at + 200
    asyncio.run(store.save_target_state(TargetState("t", disabled_ms=at, disabled_reason="410")))
    assert asyncio.run(store.enable_target("t")).disabled_ms == at
    assert asyncio.run(store.enable_target("t")) == TargetState("t")


def test_an_events_attempts_are_listed_through_its_deliveries(any_store: Store) -> None:
    """Attempts have no index of their own by event id (migration 0014): an event's are
    found through its deliveries, to one target or to all, oldest first, and no other's."""
    store = any_store
    one, two = make_event("push", "one"), make_event("push", "two")
    asyncio.run(store.record_events([NewEvent(one, ["a", "b"]), NewEvent(two, ["a"])]))
    at = now_ms() + 1_000
    answers = iter([500, 502, 200, 204, 201])
    for round_ms in (0, 10, 20):
        claimed = asyncio.run(store.claim_due({"a": 5, "b": 5}, at + round_ms, at + 60_000))
        records = []
        for c in sorted(claimed.claims, key=lambda c: c.delivery_id):
            code = next(answers)
            status = "delivered" if code < 300 else "failed"
            records.append(AttemptRecord(
                c.delivery_id, c.event.id, c.target, at + round_ms, 1, code, None, None, status,
                at + round_ms + 5,
            ))  # fmt: skip
        asyncio.run(store.record_attempts(records))

    def seen(event: Event, target: str | None = None) -> list[tuple[str, str, int | None]]:
        rows = asyncio.run(store.list_attempts(event.id, target))
        return [(r.event_id, r.target, r.status_code) for r in rows]

    # Round 1: one->a 500, one->b 502, two->a 200; round 2: one->a 204, one->b 201.
    assert seen(one) == [
        (one.id, "a", 500), (one.id, "b", 502), (one.id, "a", 204), (one.id, "b", 201),
    ]  # fmt: skip
    assert seen(one, "b") == [(one.id, "b", 502), (one.id, "b", 201)]
    assert seen(two) == [(two.id, "a", 200)]
    assert seen(two, "b") == []
    assert seen(make_event("push", "never")) == []


def test_reset_closes_the_circuit_and_makes_the_backlog_due(any_store: Store) -> None:
    store = any_store
    events = [make_event("push", f"r{i}") for i in range(3)]
    for ev in events:
        asyncio.run(store.record_event(ev, ["t", "u"]))
    at = now_ms() + 1_000
    claims = asyncio.run(store.claim_due({"t": 5, "u": 5}, at, at + 1_000)).claims
    # Two of t's failed with retries an hour away; u's wait too, and must stay as they are.
    later = at + 3_600_000
    records = [
        AttemptRecord(c.delivery_id, c.event.id, c.target, at, 3, 500, None, None, "failed",
                      later)
        for c in claims if c.event.id != events[2].id or c.target == "u"
    ]  # fmt: skip
    opened = TargetState("t", None, None, "open", 5, at + 60_000, 60.0)
    asyncio.run(store.record_attempts(records))
    asyncio.run(store.save_target_state(opened))
    asyncio.run(store.save_target_state(TargetState("u", at, "410", "open", 3, at + 60_000, 60.0)))
    done = asyncio.run(store.reset_target("t", at + 10))
    assert done.before == opened and done.retried == 2
    assert asyncio.run(store.target_states())["t"] == TargetState("t")
    due = asyncio.run(store.claim_due({"t": 5, "u": 5}, at + 10, at + 2_000))
    assert sorted(c.event.id for c in due.claims) == sorted(e.id for e in events[:2])
    # A disabled target stays disabled; only its circuit closes.
    again = asyncio.run(store.reset_target("u", at + 20))
    assert again.retried == 3
    assert asyncio.run(store.target_states())["u"] == TargetState("u", at, "410")
    # A target with no state at all: nothing before, nothing to change.
    assert asyncio.run(store.reset_target("none", at)) == TargetReset(TargetState("none"), 0)


@pytest.fixture
def pg_pair(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    """Two replicas on one PostgreSQL database."""
    one, two = open_store(postgres_url, "one"), open_store(postgres_url, "two")
    one.open()
    two.open()
    yield one, two
    one.close()
    two.close()


def test_one_poll_lease_per_source_until_it_expires(pg_pair: tuple[Store, Store]) -> None:
    one, two = pg_pair
    at = now_ms()

    async def race() -> list[bool]:
        return list(
            await asyncio.gather(
                *(s.acquire_poll_lease("src", at, at + 1_000) for s in (one, two, one, two))
            )
        )

    wins = asyncio.run(race())
    assert wins.count(True) in (1, 2) and (wins[0] or wins[1])
    holder, other = (one, two) if wins[0] else (two, one)
    assert wins == ([True, False, True, False] if wins[0] else [False, True, False, True])
    # The holder renews; the other takes over only after the lease runs out.
    assert asyncio.run(holder.acquire_poll_lease("src", at + 500, at + 1_500)) is True
    assert asyncio.run(other.acquire_poll_lease("src", at + 1_400, at + 2_400)) is False
    assert asyncio.run(other.acquire_poll_lease("src", at + 1_500, at + 2_500)) is True
    assert asyncio.run(holder.acquire_poll_lease("src", at + 1_600, at + 2_600)) is False
    # A released lease is free at once; another source has its own.
    asyncio.run(other.release_poll_lease("src"))
    assert asyncio.run(holder.acquire_poll_lease("src", at + 1_700, at + 2_700)) is True
    assert asyncio.run(other.acquire_poll_lease("src2", at + 1_700, at + 2_700)) is True
    asyncio.run(holder.heartbeat(at, at + 1_700))
    asyncio.run(other.heartbeat(at, at + 1_700))
    leases = {r.id: r.poll_leases for r in asyncio.run(holder.list_replicas(at + 1_800, 5_000))}
    assert leases == {holder.replica_id: ("src",), other.replica_id: ("src2",)}
    asyncio.run(other.remove_replica())
    live = asyncio.run(holder.list_replicas(at + 1_800, 5_000))
    assert [r.id for r in live] == [holder.replica_id]
    assert asyncio.run(holder.acquire_poll_lease("src2", at + 1_800, at + 2_800)) is True
    # Released right after a poll, a lease is handed over when the next poll is due, not
    # before: no second poll within the interval.
    assert asyncio.run(holder.acquire_poll_lease("src3", at, at + 9_000, at + 1_000)) is True
    asyncio.run(holder.release_poll_lease("src3"))
    assert asyncio.run(other.acquire_poll_lease("src3", at + 999, at + 9_000)) is False
    assert asyncio.run(other.acquire_poll_lease("src3", at + 1_000, at + 9_000)) is True


def test_the_sqlite_poll_lease_is_single_process(tmp_path: Path) -> None:
    # One machine, one bridge: a bridge restarted after a crash (a new replica id) polls at
    # once rather than waiting out the dead process's lease.
    path = str(tmp_path / "b.db")
    dead, restarted = open_store(path, "dead"), open_store(path, "restarted")
    dead.open()
    restarted.open()
    try:
        at = now_ms()
        assert asyncio.run(dead.acquire_poll_lease("src", at, at + 60_000)) is True
        assert asyncio.run(restarted.acquire_poll_lease("src", at + 1, at + 60_000)) is True
        asyncio.run(restarted.heartbeat(at, at))
        (row,) = asyncio.run(restarted.list_replicas(at, 5_000))
        assert row.poll_leases == ("src",)
    finally:
        dead.close()
        restarted.close()


def test_replicas_that_stop_beating_are_not_listed(any_store: Store) -> None:
    asyncio.run(any_store.heartbeat(1_000, 2_000))
    assert [r.id for r in asyncio.run(any_store.list_replicas(5_000, 3_000))] == [
        any_store.replica_id
    ]
    assert asyncio.run(any_store.list_replicas(5_001, 3_000)) == []


def test_postgres_migrations_are_recorded_once(postgres_url: str) -> None:
    for _ in range(2):
        s = open_store(postgres_url)
        s.open()
        assert asyncio.run(s.check_writable()) is True
        s.close()
    with psycopg.connect(postgres_url) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
    # The same names as SQLite's: both backends are at one schema version.
    assert names == [name for name, _ in MIGRATIONS]


def test_postgres_password_is_masked_everywhere() -> None:
    url = "postgresql://bridge:hunter2-secret@127.0.0.1:1/db"
    store = open_store(url)
    assert "hunter2" not in store.location and "hunter2" not in repr(store)
    assert mask_url(url) == "postgresql://bridge:***@127.0.0.1:1/db"
    with pytest.raises(StoreUnavailable) as info:
        store.open()
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1" in str(info.value)
    with pytest.raises(StoreError):
        asyncio.run(store.count_events())


def test_postgres_url_schemes_select_the_backend() -> None:
    for url in ("postgres://u@127.0.0.1/db", "postgresql://u@127.0.0.1/db"):
        assert type(open_store(url)).__name__ == "PostgresStore"
    assert type(open_store("bridge.db")).__name__ == "SQLiteStore"


def test_the_database_password_is_masked_by_the_cli_and_the_logs(write_config) -> None:
    path = write_config(
        """
        database: postgresql://bridge:hunter2-secret@127.0.0.1:1/db?password=hunter3-secret
        """
    )
    check = run_cli("check", "-c", str(path))
    assert check.returncode == 0 and "postgresql://bridge:***@127.0.0.1:1/db" in check.stdout
    run = run_cli("run", "-c", str(path), "--allow-empty", timeout_s=30)
    assert run.returncode == 1 and "cannot be reached" in run.stderr
    for result in (check, run):
        assert "hunter" not in result.stdout + result.stderr
    secrets = set(logs.config_secrets(load_config(str(path))))
    assert {"hunter2-secret", "hunter3-secret"} <= secrets


def test_report_timings(any_store: Store) -> None:
    store = any_store
    events = [make_event("src", str(i)) for i in range(4)]
    asyncio.run(store.record_events([NewEvent(e, ["t"]) for e in events]))
    at = now_ms()
    claims = asyncio.run(store.claim_due({"t": 2}, at, at + 1_000)).claims
    done = [
        AttemptRecord(c.delivery_id, c.event.id, "t", at, 7, 204, None, None, "delivered", at)
        for c in claims
    ]
    asyncio.run(store.record_attempts(done))
    timings = asyncio.run(store.event_timings())
    assert [t.source for t in timings] == ["src"] * 4
    assert len(asyncio.run(store.event_timings(limit=3))) == 3
    assert asyncio.run(store.event_timings(since_ms=at + 60_000)) == []
    delivered = asyncio.run(store.delivery_timings())
    assert [(d.target, d.delivered_ms) for d in delivered] == [("t", at + 7)] * 2
    assert len(asyncio.run(store.delivery_timings(limit=1))) == 1


def test_status_lists_a_running_replica_and_drops_it_on_a_clean_stop(daemon) -> None:
    proc = daemon("database: bridge.db\n", "--allow-empty", "--replica-id", "solo")
    config = str(proc.config_path)

    def listed() -> str | None:
        shown = run_cli("status", "-c", config)
        return shown.stdout if "solo" in shown.stdout else None

    text = wait_until(listed, timeout_s=10)
    assert "replicas" in text and "replica solo" in proc.log()
    assert proc.terminate() == 0
    after = run_cli("status", "--json", "-c", config)
    assert json.loads(after.stdout)["replicas"] == []


def test_postgres_survives_its_connections_being_cut(postgres_url: str) -> None:
    name = f"bridge-cut-{now_ms()}"
    store = open_store(f"{postgres_url}&application_name={name}")
    store.open()
    try:
        assert asyncio.run(store.record_event(make_event("cut", "before"))) is True
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            cut = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert cut and cut[0] >= 1
        # The pooled connection is dead: the store runs the write again on a new one.
        assert asyncio.run(store.record_event(make_event("cut", "after"))) is True
        assert asyncio.run(store.count_events(source="cut")) == 2
    finally:
        store.close()


def test_delivery_counts_by_status_agree_with_the_full_counts(any_store: Store) -> None:
    """Asked for some statuses, each target's counts are the full counts of those statuses
    (a target with none of them is left out, as one with no deliveries is)."""
    store = any_store
    events = [make_event("push", f"c{i}") for i in range(12)]
    for i, ev in enumerate(events):
        asyncio.run(store.record_event(ev, ["a", "b"] if i % 3 else ["c"]))
    at = now_ms() + 1_000
    claims = asyncio.run(store.claim_due({"a": 5, "c": 2}, at, at + 60_000)).claims
    outcomes = ["delivered", "dead", "failed"]
    records = [
        AttemptRecord(c.delivery_id, c.event.id, c.target, at, 1, 500, None, None,
                      outcomes[i % 3], at + 60_000)
        for i, c in enumerate(claims)
    ]  # fmt: skip
    asyncio.run(store.record_attempts(records))
    everything = asyncio.run(store.delivery_counts())
    seen = {status for by_status in everything.values() for status in by_status}
    assert seen == {"pending", "delivered", "dead", "failed"} and set(everything) == {"a", "b", "c"}
    for statuses in (("pending", "failed"), ("pending", "failed", "dead"), ("dead",)):
        wanted = {
            target: {s: n for s, n in by_status.items() if s in statuses}
            for target, by_status in everything.items()
        }
        wanted = {target: counts for target, counts in wanted.items() if counts}
        assert asyncio.run(store.delivery_counts(statuses)) == wanted


def test_a_claim_larger_than_one_statement_leases_every_row_it_returns(any_store: Store) -> None:
    store = any_store
    events = [make_event("push", f"big{i}") for i in range(1_200)]
    asyncio.run(store.record_events([NewEvent(ev, ["t"]) for ev in events]))
    at = now_ms() + 1_000
    claimed = asyncio.run(store.claim_due({"t": 1_200}, at, at + 60_000)).claims
    assert len({c.delivery_id for c in claimed}) == 1_200
    # Every row is leased: none is due again until the lease ends, then all are.
    assert asyncio.run(store.claim_due({"t": 1_200}, at, at + 60_000)).claims == []
    again = asyncio.run(store.claim_due({"t": 1_200}, at + 60_000, at + 120_000)).claims
    assert len(again) == 1_200
