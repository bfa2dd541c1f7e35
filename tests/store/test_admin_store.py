"""The admin pages' part of the store: keyset paging of events with filters, a target's last
attempts, disabling a target; on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bridge.events import Event, event_id
from bridge.store import NewEvent, Store
from bridge.store.base import EventCursor, EventFilter
from bridge.store.deliveries import AttemptRecord
from bridge.store.sqlite import SQLiteStore


def event(i: int, *, source: str = "src", type: str = "item.updated", **kw: object) -> Event:
    return Event(
        id=event_id(source, f"u{i}"),
        source=source,
        type=type,
        origin="poll",
        data={"i": i},
        recorded_ms=1_000 + i // 2,  # pairs share a recorded time: the id breaks the tie
        subject=f"item_{i}",
        **kw,  # type: ignore[arg-type]
    )


def fill(store: Store, n: int = 25) -> list[Event]:
    events = [event(i) for i in range(n)]
    asyncio.run(store.record_events([NewEvent(e, ["t"] if i % 5 == 0 else []) for i, e in
                                     enumerate(events)]))  # fmt: skip
    return events


def test_pages_by_cursor_cover_every_event_once_newest_first(any_store: Store) -> None:
    events = fill(any_store)
    seen: list[str] = []
    after: EventCursor | None = None
    for _ in range(10):  # bounded: 25 events in pages of 7
        page = asyncio.run(any_store.page_events(EventFilter(), after, 7))
        seen += [row.event.id for row in page]
        if len(page) < 7:
            break
        last = page[-1].event
        after = EventCursor(last.recorded_ms, last.id)
    expected = sorted(events, key=lambda e: (e.recorded_ms, e.id), reverse=True)
    assert seen == [e.id for e in expected]


def test_oldest_first_pages_walk_forward_from_a_cursor(any_store: Store) -> None:
    events = fill(any_store)
    seen: list[str] = []
    after: EventCursor | None = None
    for _ in range(10):  # bounded: 25 events in pages of 7
        page = asyncio.run(any_store.page_events(EventFilter(), after, 7, oldest_first=True))
        seen += [row.event.id for row in page]
        if len(page) < 7:
            break
        last = page[-1].event
        after = EventCursor(last.recorded_ms, last.id)
    expected = sorted(events, key=lambda e: (e.recorded_ms, e.id))
    assert seen == [e.id for e in expected]
    # Strictly after the cursor: a tie on the time is broken by the id.
    middle = expected[10]
    rest = asyncio.run(any_store.page_events(
        EventFilter(since_ms=0), EventCursor(middle.recorded_ms, middle.id), 100,
        oldest_first=True))  # fmt: skip
    assert [r.event.id for r in rest] == [e.id for e in expected[11:]]


def test_filters_and_the_worst_delivery(any_store: Store) -> None:
    fill(any_store)
    other = Event(id=event_id("hooks", "x"), source="hooks", type="user.created",
                  origin="push", data=None, recorded_ms=5_000, subject="alice")  # fmt: skip
    asyncio.run(any_store.record_event(other, ["t", "u"]))

    def ids(where: EventFilter) -> list[str]:
        return [r.event.id for r in asyncio.run(any_store.page_events(where, None, 100))]

    assert ids(EventFilter(source="hooks")) == [other.id]
    assert ids(EventFilter(origin="push")) == [other.id]
    assert ids(EventFilter(subject="alice")) == [other.id]
    assert ids(EventFilter(type="user.*")) == [other.id]
    assert ids(EventFilter(type="user.create?")) == [other.id]
    assert ids(EventFilter(type="user_created")) == []  # `_` is no wildcard
    assert len(ids(EventFilter(type="item.*"))) == 25
    assert len(ids(EventFilter(since_ms=1_010, until_ms=1_012))) == 4
    assert ids(EventFilter(delivery="pending"))[0] == other.id
    assert len(ids(EventFilter(delivery="pending"))) == 6
    assert len(ids(EventFilter(delivery="none"))) == 20
    # One target answered, the other died: the event is shown (and found) by its worst.
    [d_t, d_u] = sorted(asyncio.run(any_store.list_deliveries(event_id=other.id)),
                        key=lambda d: d.target)  # fmt: skip
    asyncio.run(any_store.record_attempts([
        AttemptRecord(d_t.id, other.id, "t", 6_000, 5, 200, "ok", None, "delivered", 6_000),
        AttemptRecord(d_u.id, other.id, "u", 6_001, 7, 500, "<b>no</b>", "HTTP 500", "dead", 0),
    ]))  # fmt: skip
    [row] = asyncio.run(any_store.page_events(EventFilter(source="hooks"), None, 1))
    assert row.worst == "dead"
    assert ids(EventFilter(delivery="dead")) == [other.id]
    assert ids(EventFilter(delivery="delivered")) == []
    attempts = asyncio.run(any_store.list_target_attempts("u", 5))
    assert [(a.status_code, a.response) for a in attempts] == [(500, "<b>no</b>")]


def test_disable_then_enable_a_target(any_store: Store) -> None:
    assert asyncio.run(any_store.disable_target("t", "disabled by session abc", 42)) is True
    assert asyncio.run(any_store.disable_target("t", "again", 43)) is False
    state = asyncio.run(any_store.target_states())["t"]
    assert (state.disabled_ms, state.disabled_reason) == (42, "disabled by session abc")
    assert asyncio.run(any_store.enable_target("t")).disabled_ms == 42  # the state before
    assert asyncio.run(any_store.target_states())["t"].disabled_ms is None


def test_sqlite_pages_seek_the_recorded_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    store.open()
    store.close()
    from bridge.store.rows import page_events_sql

    sql, args = page_events_sql(EventFilter(), EventCursor(5, "x"), 50, type_condition=None)
    conn = sqlite3.connect(tmp_path / "b.db")
    plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
    conn.close()
    assert "events_recorded" in plan and "TEMP B-TREE" not in plan, plan


def test_a_revoked_session_is_refused_by_every_store_on_the_database(backend) -> None:
    first, second = backend(), backend()
    asyncio.run(first.revoke_session("s1", expires_ms=2_000, now_ms=1_000))
    asyncio.run(first.revoke_session("s1", expires_ms=2_000, now_ms=1_000))  # twice is once
    assert asyncio.run(second.is_session_revoked("s1"))
    assert not asyncio.run(second.is_session_revoked("s2"))
    # A later logout deletes the revocations whose cookie has expired since.
    asyncio.run(second.revoke_session("s2", expires_ms=9_000, now_ms=2_000))
    assert not asyncio.run(first.is_session_revoked("s1"))
    assert asyncio.run(first.is_session_revoked("s2"))
