"""`record_attempts` with leases given back: one transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from bridge.events import Event, event_id, now_ms
from bridge.store import NewEvent, Store
from bridge.store.deliveries import AttemptRecord


def test_outcomes_and_releases_are_written_together(any_store: Store) -> None:
    events = [Event(event_id("f", str(i)), "f", "t", "push", {"i": i}, now_ms()) for i in range(6)]
    asyncio.run(any_store.record_events([NewEvent(e, ["t"]) for e in events]))
    at = now_ms() + 10
    claims = asyncio.run(any_store.claim_due({"t": 10}, at, at + 60_000)).claims
    assert len(claims) == 6
    done, back = claims[:4], claims[4:]
    records = [
        AttemptRecord(c.delivery_id, c.event.id, "t", at, 2, 200 if i else 500, None, None,
                      "delivered" if i else "failed", at + (0 if i else 50_000))
        for i, c in enumerate(done)
    ]  # fmt: skip
    asyncio.run(any_store.record_attempts(records, [c.delivery_id for c in back]))
    rows = {d.event_id: d for d in asyncio.run(any_store.list_deliveries(limit=None))}
    assert [rows[c.event.id].status for c in done] == [
        "failed",
        "delivered",
        "delivered",
        "delivered",
    ]
    assert all(rows[c.event.id].lease_ms is None and rows[c.event.id].attempts == 1 for c in done)
    assert [(rows[c.event.id].status, rows[c.event.id].lease_ms, rows[c.event.id].attempts)
            for c in back] == [("pending", None, 0)] * 2  # fmt: skip
    # Given back: claimable again at once; the failed one waits for its retry.
    again = asyncio.run(any_store.claim_due({"t": 10}, at + 1, at + 60_000)).claims
    assert sorted(c.delivery_id for c in again) == sorted(c.delivery_id for c in back)
    # Releases alone are one write too.
    asyncio.run(any_store.record_attempts([], [c.delivery_id for c in again]))
    assert len(asyncio.run(any_store.claim_due({"t": 10}, at + 2, at + 60_000)).claims) == 2


def test_every_field_of_an_attempt_is_recorded_as_given(any_store: Store) -> None:
    """Whatever text a target answered (quotes, backslashes, JSON, any script) comes back
    the same, beside the codes, times and flags of the attempt and its delivery."""
    events = [Event(event_id("g", str(i)), "g", "t", "push", {"i": i}, now_ms()) for i in range(3)]
    asyncio.run(any_store.record_events([NewEvent(e, ["t"]) for e in events]))
    at = now_ms() + 10
    claims = asyncio.run(any_store.claim_due({"t": 10}, at, at + 60_000)).claims
    texts = ['{"a": "b\\\\c"} \'quoted\' \\u0041 \\x', "ünïcode ✓ 日本 🙂", ""]
    records = [
        AttemptRecord(claims[0].delivery_id, claims[0].event.id, "t", at, 7, 201, texts[0],
                      None, "delivered", at, transformed=True),
        AttemptRecord(claims[1].delivery_id, claims[1].event.id, "t", at, 9, None, None,
                      texts[1], "failed", at + 30_000),
        AttemptRecord(claims[2].delivery_id, claims[2].event.id, "t", at, 11, 410, texts[2],
                      "gone", "dead", at),
    ]  # fmt: skip
    asyncio.run(any_store.record_attempts(records))
    for record in records:
        (attempt,) = asyncio.run(any_store.list_attempts(record.event_id))
        assert (attempt.delivery_id, attempt.at_ms, attempt.duration_ms, attempt.status_code,
                attempt.response, attempt.error) == (
            record.delivery_id, record.at_ms, record.duration_ms, record.status_code,
            record.response, record.error)  # fmt: skip
        (row,) = asyncio.run(any_store.list_deliveries(event_id=record.event_id))
        assert (row.status, row.attempts, row.next_ms, row.lease_ms, row.last_code,
                row.last_error, row.transformed) == (
            record.status, 1, record.next_ms, None, record.status_code, record.error,
            record.transformed)  # fmt: skip
        assert row.delivered_ms == (at + 7 if record.status == "delivered" else None)


def test_an_answer_with_a_nul_character_is_recorded(any_store: Store) -> None:
    """PostgreSQL's text holds no NUL: a target's answer with one (binary, UTF-16) is kept
    with U+FFFD in its place there, and its flush, with every other outcome in it, goes
    through (it failed whole, and its deliveries were sent again and again)."""
    events = [Event(event_id("n", str(i)), "n", "t", "push", {"i": i}, now_ms()) for i in range(2)]
    asyncio.run(any_store.record_events([NewEvent(e, ["t"]) for e in events]))
    at = now_ms() + 10
    claims = asyncio.run(any_store.claim_due({"t": 10}, at, at + 60_000)).claims
    records = [
        AttemptRecord(claims[0].delivery_id, claims[0].event.id, "t", at, 1, 200, "o\x00k",
                      None, "delivered", at),
        AttemptRecord(claims[1].delivery_id, claims[1].event.id, "t", at, 1, 500, "",
                      "answered \x00", "failed", at + 30_000),
    ]  # fmt: skip
    asyncio.run(any_store.record_attempts(records))
    (first,) = asyncio.run(any_store.list_attempts(claims[0].event.id))
    (second,) = asyncio.run(any_store.list_attempts(claims[1].event.id))
    assert first.response in ("o\x00k", "o\ufffdk")
    assert second.error in ("answered \x00", "answered \ufffd")
    statuses = {d.event_id: d.status for d in asyncio.run(any_store.list_deliveries())}
    assert statuses == {claims[0].event.id: "delivered", claims[1].event.id: "failed"}
