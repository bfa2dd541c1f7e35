"""Latency figures: percentiles, pairing poll with push, the report and `bridge latency`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bridge.compare.report import build_report, pair_events, pair_window_ms, spread
from bridge.config import parse_config
from bridge.events import Event, event_id, now_ms
from bridge.store import NewEvent
from bridge.store.base import DeliveryTiming, EventTiming, PollCommit, PollOutcome, PollState
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli

T0 = 1_795_941_000_000  # 2026-11-29, in ms
# The stored events lie ten minutes back, so `--since` has something to leave out.
BASE = now_ms() - 600_000

CONFIG = f"""
database: report.db
sources:
  items-poll:
    poll: {{url: "http://127.0.0.1:9/items", every: 5s, items: items, id: id,
            version: updated_at, time: updated_at}}
  items-push:
    webhook: {{verify: standard-webhooks, secrets: ["{TEST_SECRET}"], subject: body.data.id,
               time: body.data.updated_at}}
targets:
  sink: {{url: "http://127.0.0.1:9/hook", secret: "{TEST_SECRET}"}}
compare:
  - {{poll: items-poll, push: items-push}}
"""


def polled(subject: str | None, time_ms: int | None, recorded_ms: int) -> EventTiming:
    return EventTiming("items-poll", "poll", subject, time_ms, recorded_ms)


def pushed(subject: str | None, time_ms: int | None, recorded_ms: int) -> EventTiming:
    return EventTiming("items-push", "push", subject, time_ms, recorded_ms)


# -- percentiles ---------------------------------------------------------------------------


def test_spread_of_one_to_a_hundred() -> None:
    s = spread(range(1, 101))
    # Linear interpolation between closest ranks: rank (n - 1) * q.
    assert (s.p50, s.p90, s.p99, s.max, s.count) == (50.5, 90.1, 99.0, 100.0, 100)


def test_spread_is_order_free_and_handles_one_and_none() -> None:
    assert spread([30, 10, 20]) == spread([10, 20, 30])
    assert spread([10, 20, 30]).p50 == 20.0
    one = spread([7])
    assert (one.p50, one.p90, one.p99, one.max) == (7.0, 7.0, 7.0, 7.0)
    empty = spread([])
    assert (empty.p50, empty.p90, empty.p99, empty.max, empty.count) == (None, None, None, None, 0)
    assert empty.to_json() == {"p50": None, "p90": None, "p99": None, "max": None}


def test_negative_latencies_from_clock_skew_are_kept() -> None:
    assert spread([-5, 5]).p50 == 0.0


# -- pairing -------------------------------------------------------------------------------


def test_pairs_by_subject_and_time_and_counts_the_rest() -> None:
    poll = [
        polled("a", T0, T0 + 2_000),  # matches push a@T0
        polled("b", T0 + 100, T0 + 4_100),  # matches push b@T0+100
        polled("c", T0 + 200, T0 + 3_000),  # push never saw c: only poll
    ]
    push = [
        pushed("a", T0, T0 + 5),
        pushed("b", T0 + 100, T0 + 120),
        pushed("b", T0 + 50, T0 + 60),  # an earlier update of b that polling folded: only push
        pushed("d", T0 + 300, T0 + 310),  # only push
    ]
    result = pair_events(poll, push, window_ms=15_000)
    assert sorted(result.leads_ms) == [1_995, 3_980]
    assert (result.matched, result.only_poll, result.only_push) == (2, 1, 2)


def test_same_time_on_another_subject_does_not_match() -> None:
    result = pair_events([polled("a", T0, T0 + 900)], [pushed("z", T0, T0 + 1)], 15_000)
    assert (result.matched, result.only_poll, result.only_push) == (0, 1, 1)


def test_missing_time_pairs_the_same_subject_within_the_window() -> None:
    poll = [
        polled("gone", None, T0 + 2_500),  # a deletion: polling cannot know when
        polled("late", None, T0 + 60_000),  # too far from its push: no match
        polled(None, None, T0 + 1_000),  # no subject: never matches
    ]
    push = [
        pushed("gone", T0 + 1_000, T0 + 1_010),
        pushed("gone", T0 + 9_000, T0 + 9_010),  # farther than the other one: left over
        pushed("late", None, T0 + 1_000),
    ]
    result = pair_events(poll, push, window_ms=15_000)
    assert result.leads_ms == [1_490]
    assert (result.only_poll, result.only_push) == (2, 2)


def test_duplicates_on_one_side_match_once() -> None:
    poll = [polled("a", T0, T0 + 1_000)]
    push = [pushed("a", T0, T0 + 10), pushed("a", T0, T0 + 20)]
    result = pair_events(poll, push, 15_000)
    assert (result.matched, result.only_poll, result.only_push) == (1, 0, 1)
    assert result.leads_ms == [990]


def test_window_follows_the_poll_interval() -> None:
    config = parse_config(CONFIG)
    assert pair_window_ms(config, config.compare[0]) == (2 * 5 + 5) * 1000


# -- the report ----------------------------------------------------------------------------


def hand_made_report():
    config = parse_config(CONFIG)
    events = [
        polled("a", T0, T0 + 1_000),
        polled("b", T0, T0 + 3_000),
        polled("c", None, T0 + 4_000),
        pushed("a", T0, T0 + 10),
        pushed("b", T0, T0 + 30),
    ]
    deliveries = [
        DeliveryTiming("items-poll", "poll", "sink", T0 + 1_000, T0 + 1_040),
        DeliveryTiming("items-push", "push", "sink", T0 + 10, T0 + 25),
        DeliveryTiming("items-push", "push", "sink", T0 + 30, T0 + 35),
    ]
    counters = [
        PollState("items-poll", requests=10, not_modified=6, bytes=9_000, events=3, empty_polls=7)
    ]
    return build_report(config, events, deliveries, counters)


def test_report_figures_from_hand_made_timestamps() -> None:
    report = hand_made_report()
    poll, push = report.sources
    assert (poll.source, poll.origin, poll.events) == ("items-poll", "poll", 3)
    # c has no time: it counts as an event but not in detection latency.
    assert (poll.detection.p50, poll.detection.max, poll.detection.count) == (2_000.0, 3_000.0, 2)
    assert (poll.delivery.p50, poll.delivery.count) == (40.0, 1)
    assert (push.detection.p50, push.detection.max) == (20.0, 30.0)
    assert (push.delivery.p50, push.delivery.max) == (10.0, 15.0)
    assert poll.bytes_per_event == 3_000 and poll.empty_share == 0.7
    assert push.polls is None and push.bytes_per_event is None
    (pair,) = report.pairs
    assert (pair.matched, pair.only_poll, pair.only_push) == (2, 1, 0)
    assert (pair.push_lead.p50, pair.push_lead.max) == (1_980.0, 2_970.0)


def test_json_has_exactly_the_documented_shape() -> None:
    data = hand_made_report().to_json()
    assert set(data) == {"sources", "pairs", "merges"} and data["merges"] == []
    spread_keys = {"p50", "p90", "p99", "max"}
    for entry in data["sources"]:
        assert set(entry) == {
            "source", "origin", "events", "detection_ms", "delivery_ms", "requests", "empty_polls",
        }  # fmt: skip
        assert set(entry["detection_ms"]) == spread_keys == set(entry["delivery_ms"])
    poll, push = data["sources"]
    assert (poll["requests"], poll["empty_polls"]) == (10, 7)
    assert (push["requests"], push["empty_polls"]) == (None, None)
    (pair,) = data["pairs"]
    assert set(pair) == {"poll", "push", "matched", "only_poll", "only_push", "push_lead_ms"}
    assert set(pair["push_lead_ms"]) == {"p50", "p90", "max"}
    assert pair["push_lead_ms"]["max"] == 2_970
    json.dumps(data)  # numbers and nulls only


def test_sources_without_events_are_listed_with_nulls() -> None:
    report = build_report(parse_config(CONFIG), [], [], [])
    poll, push = report.to_json()["sources"]
    assert (poll["source"], poll["events"], poll["requests"]) == ("items-poll", 0, 0)
    assert poll["detection_ms"] == {"p50": None, "p90": None, "p99": None, "max": None}
    assert push["requests"] is None
    assert report.to_json()["pairs"][0]["push_lead_ms"] == {"p50": None, "p90": None, "max": None}


# -- through the store and the CLI -----------------------------------------------------------


def make_event(source: str, origin: str, subject: str, time_ms: int | None, recorded_ms: int):
    return Event(
        id=event_id(source, subject, str(recorded_ms)),
        source=source,
        type=f"{source}.updated",
        origin=origin,  # type: ignore[arg-type]
        data={"id": subject},
        recorded_ms=recorded_ms,
        subject=subject,
        time_ms=time_ms,
    )


@pytest.fixture
def stored(write_config) -> Path:
    """A config and its database with events, two delivered, and a poll's counters."""
    path = write_config(CONFIG)
    store = SQLiteStore(path.parent / "report.db")
    store.open()
    old = BASE - 86_400_000
    events = [
        make_event("items-poll", "poll", "a", BASE, BASE + 2_000),
        make_event("items-poll", "poll", "b", BASE, BASE + 4_000),
        make_event("items-push", "push", "a", BASE, BASE + 8),
        make_event("items-push", "push", "b", BASE, BASE + 12),
        make_event("items-push", "push", "z", old, old + 5),  # a day older than the rest
    ]

    async def fill() -> None:
        await store.record_events([NewEvent(e, ["sink"]) for e in events])

        def deliver(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE deliveries SET status = 'delivered', delivered_ms = created_ms + 50"
                " WHERE event_id IN (?, ?)",
                (events[0].id, events[2].id),
            )
            conn.execute(
                "INSERT INTO poll_state (source, requests, not_modified, bytes, events,"
                " empty_polls) VALUES ('items-poll', 12, 8, 4800, 2, 10)"
            )

        await store.write(deliver)

    asyncio.run(fill())
    store.close()
    return path


def test_store_reads_feed_the_report(stored: Path) -> None:
    store = SQLiteStore(stored.parent / "report.db")
    store.open()
    try:
        timings = asyncio.run(store.event_timings(since_ms=BASE))
        delivered = asyncio.run(store.delivery_timings())
        counters = asyncio.run(store.list_poll_states())
        newest = asyncio.run(store.event_timings(limit=2))
        newest_recent = asyncio.run(store.event_timings(since_ms=BASE + 10, limit=3))
        last_delivery = asyncio.run(store.delivery_timings(limit=1))
    finally:
        store.close()
    # The newest by insertion, oldest first; `since` applies within them.
    assert [(t.subject, t.origin) for t in newest] == [("b", "push"), ("z", "push")]
    assert [(t.subject, t.origin) for t in newest_recent] == [("b", "push")]
    assert [(d.origin, d.recorded_ms) for d in last_delivery] == [("push", BASE + 8)]
    assert len(timings) == 4 and all(t.recorded_ms >= BASE for t in timings)
    assert sorted(d.delivered_ms - d.recorded_ms for d in delivered) == [50, 50]
    assert counters[0].requests == 12 and counters[0].empty_polls == 10


def test_latency_json_from_the_database(stored: Path) -> None:
    result = run_cli("latency", "-c", str(stored), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    poll, push = data["sources"]
    assert poll == {
        "source": "items-poll",
        "origin": "poll",
        "events": 2,
        "detection_ms": {"p50": 3_000, "p90": 3_800, "p99": 3_980, "max": 4_000},
        "delivery_ms": {"p50": 50, "p90": 50, "p99": 50, "max": 50},
        "requests": 12,
        "empty_polls": 10,
    }
    assert push["events"] == 3 and push["requests"] is None
    assert data["pairs"] == [
        {
            "poll": "items-poll",
            "push": "items-push",
            "matched": 2,
            "only_poll": 0,
            "only_push": 1,
            "push_lead_ms": {"p50": 2_990, "p90": 3_788.4, "max": 3_988},
        }
    ]


def test_since_leaves_older_events_out(stored: Path) -> None:
    last_hour = run_cli("latency", "-c", str(stored), "--json", "--since", "1h")
    assert last_hour.returncode == 0, last_hour.stderr
    counts = {s["source"]: s["events"] for s in json.loads(last_hour.stdout)["sources"]}
    assert counts == {"items-poll": 2, "items-push": 2}
    two_days = json.loads(run_cli("latency", "-c", str(stored), "--json", "--since", "2d").stdout)
    assert {s["source"]: s["events"] for s in two_days["sources"]}["items-push"] == 3


def test_table_and_plots(stored: Path, tmp_path: Path) -> None:
    png, svg = tmp_path / "lat.png", tmp_path / "lat.svg"
    table = run_cli("latency", "-c", str(stored), "--plot", str(png))
    assert table.returncode == 0, table.stderr
    for word in ("items-poll", "items-push", "detection", "delivery", "matched", "requests"):
        assert word in table.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("latency", "-c", str(stored), "--json", "--plot", str(svg)).returncode == 0
    assert b"<svg" in svg.read_bytes()[:2000]


def test_bad_input_gets_a_clear_answer(stored: Path, write_config) -> None:
    bad_plot = run_cli("latency", "-c", str(stored), "--plot", "out.gif")
    assert bad_plot.returncode == 2 and ".png or .svg" in bad_plot.stderr
    bad_since = run_cli("latency", "-c", str(stored), "--since", "soon")
    assert bad_since.returncode == 2 and "duration" in bad_since.stderr
    missing = write_config("database: nowhere.db\n", name="empty.yaml")
    no_db = run_cli("latency", "-c", str(missing))
    assert no_db.returncode == 1 and "no database" in no_db.stderr


def test_polls_that_find_nothing_are_counted_as_empty(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "polls.db")
    store.open()

    async def polls() -> PollState:
        at = BASE

        def outcome(**kw: object) -> PollOutcome:
            fields: dict = {"at_ms": at, "duration_ms": 3, "status": 200, "requests": 1}
            return PollOutcome(**(fields | kw))

        await store.commit_poll(PollCommit("src", outcome(items=2)))  # the baseline
        await store.record_poll("src", outcome(status=304, not_modified=True))  # empty
        await store.commit_poll(PollCommit("src", outcome(items=2)))  # no change: empty
        await store.commit_poll(PollCommit("src", outcome(items=3, events=1)))
        await store.record_poll("src", outcome(status=500, error="HTTP 500"))  # failed
        (counters,) = await store.list_poll_states()
        return counters

    try:
        counters = asyncio.run(polls())
    finally:
        store.close()
    assert (counters.polls, counters.requests, counters.not_modified) == (5, 5, 1)
    assert (counters.empty_polls, counters.events) == (2, 1)
