"""Retention: old, finished events go with their deliveries and attempts; the rest stays."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import Config, RetentionConfig, load_config
from bridge.daemon.janitor import Janitor
from bridge.events import Event, event_id, now_ms
from bridge.runtime import Runtime
from bridge.store import NewEvent, Store, open_store
from bridge.store.base import PollCommit, PollOutcome
from bridge.store.deliveries import AttemptRecord
from tests.helpers import DaemonProcess, wait_until

DAY_MS = 86_400_000


def make_event(name: str, recorded_ms: int) -> Event:
    return Event(
        id=event_id("src", name),
        source="src",
        type="thing.happened",
        origin="poll",
        data={"name": name},
        recorded_ms=recorded_ms,
        upstream_id=name,
    )


def add(store: Store, name: str, recorded_ms: int, finish: dict[str, str]) -> str:
    """Record an event with one delivery per target of `finish`, then give each delivery one
    attempt ending in its status there ("pending" leaves it unattempted and unleased)."""
    ev = make_event(name, recorded_ms)
    asyncio.run(store.record_events([NewEvent(ev, list(finish))]))
    for target, status in finish.items():
        if status == "pending":
            continue
        claimed = asyncio.run(store.claim_due({target: 100}, now_ms(), now_ms() + 60_000))
        (claim,) = [c for c in claimed.claims if c.event.id == ev.id]
        others = [c.delivery_id for c in claimed.claims if c.event.id != ev.id]
        asyncio.run(store.release(others))
        at = now_ms()
        code = 200 if status == "delivered" else 500
        record = AttemptRecord(
            claim.delivery_id, ev.id, target, at, 3, code, None, None, status, at
        )
        asyncio.run(store.record_attempts([record]))
    return ev.id


def test_prune_deletes_only_old_finished_events(any_store: Store) -> None:
    store = any_store
    old = now_ms() - 40 * DAY_MS
    gone = [
        add(store, "delivered", old, {"a": "delivered", "b": "delivered"}),
        add(store, "no-targets", old, {}),
    ]
    kept = [
        add(store, "recent", now_ms(), {"a": "delivered"}),
        add(store, "pending", old, {"a": "delivered", "b": "pending"}),
        add(store, "failed", old, {"a": "failed"}),
        add(store, "dead", old, {"a": "delivered", "b": "dead"}),
    ]
    # A delivered event whose delivery is leased again (a redelivery being sent) stays too.
    leased = add(store, "leased", old, {"c": "delivered"})
    asyncio.run(store.redeliver([leased], "c", now_ms()))
    claimed = asyncio.run(store.claim_due({"c": 10}, now_ms(), now_ms() + 60_000))
    assert [c.event.id for c in claimed.claims] == [leased]
    kept.append(leased)
    commit = PollCommit("src", PollOutcome(at_ms=old, duration_ms=1), upserts=[("k", "v", "{}")])
    asyncio.run(store.commit_poll(commit))

    assert asyncio.run(store.prune(now_ms() - 30 * DAY_MS, 100)) == len(gone)

    # Listed without the event: a lookup by its id would find nothing once the event is gone
    # (SQLite finds an event's deliveries through its row), deleted deliveries or not.
    delivered_to = {d.event_id for d in asyncio.run(store.list_deliveries(limit=None))}
    attempted = {
        a.event_id for target in "abc" for a in asyncio.run(store.list_target_attempts(target, 100))
    }
    for eid in gone:
        assert asyncio.run(store.get_event(eid)) is None
        assert eid not in delivered_to
        assert eid not in attempted
    for eid in kept:
        assert asyncio.run(store.get_event(eid)) is not None
        assert eid in delivered_to
    assert asyncio.run(store.list_attempts(kept[-2]))  # the dead one's attempts stay
    assert kept[-2] in attempted
    assert asyncio.run(store.load_poll_versions("src")) == {"k": "v"}
    assert asyncio.run(store.prune(now_ms() - 30 * DAY_MS, 100)) == 0


def test_prune_honours_the_limit_oldest_first(any_store: Store) -> None:
    store = any_store
    old = now_ms() - 40 * DAY_MS
    ids = [add(store, f"e{i}", old + i, {"a": "delivered"}) for i in range(5)]
    before_ms = now_ms() - DAY_MS
    assert asyncio.run(store.prune(before_ms, 2)) == 2
    assert asyncio.run(store.count_events()) == 3
    assert asyncio.run(store.get_event(ids[0])) is None
    assert asyncio.run(store.get_event(ids[2])) is not None
    assert asyncio.run(store.prune(before_ms, 2)) == 2
    assert asyncio.run(store.prune(before_ms, 2)) == 1
    assert asyncio.run(store.count_events()) == 0


def test_retention_defaults_and_keep_forever(write_config: Callable[..., Path]) -> None:
    assert Config().retention == RetentionConfig(events=30 * 86400.0, every=3600.0)
    path = write_config("retention:\n  events: 7d\n  every: 10m\n")
    loaded = load_config(path).retention
    assert (loaded.events_s, loaded.every_s) == (7 * 86400.0, 600.0)
    assert load_config(write_config("retention:\n  events: 0\n")).retention.events_s == 0


def test_janitor_keeps_everything_when_events_is_zero(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "bridge.db"))
    store.open()
    try:
        add(store, "old", now_ms() - 400 * DAY_MS, {"a": "delivered"})
        config = Config.model_validate({"retention": {"events": 0}})
        janitor = Janitor(Runtime(config=config, store=store))
        assert asyncio.run(janitor.prune_once()) == 0
        assert asyncio.run(store.count_events()) == 1
        # A reload that sets a retention makes the next run prune.
        asyncio.run(janitor.reload(Config.model_validate({"retention": {"events": "1d"}})))
        assert asyncio.run(janitor.prune_once()) == 1
    finally:
        store.close()


def test_janitor_prunes_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("bridge.daemon.janitor.BATCH", 2)
    store = open_store(str(tmp_path / "bridge.db"))
    store.open()
    try:
        for i in range(5):
            add(store, f"e{i}", now_ms() - 40 * DAY_MS, {})
        janitor = Janitor(Runtime(config=Config(), store=store))
        with caplog.at_level(logging.INFO, logger="bridge.retention"):
            assert asyncio.run(janitor.prune_once()) == 5
        assert asyncio.run(store.count_events()) == 0
        assert "deleted 5 events" in caplog.text
    finally:
        store.close()


def test_the_daemon_prunes_old_delivered_events(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    store = open_store(str(db))
    store.open()
    try:
        old = add(store, "old", now_ms() - 2 * DAY_MS, {"t": "delivered"})
        dead = add(store, "dead", now_ms() - 2 * DAY_MS, {"t": "dead"})
        recent = add(store, "recent", now_ms(), {"t": "delivered"})
    finally:
        store.close()
    proc = daemon(
        f"database: {db}\nretention:\n  events: 1d\n  every: 1h\n  first: 200ms\n", "--allow-empty"
    )
    store = open_store(str(db))
    store.open()
    try:
        wait_until(lambda: asyncio.run(store.get_event(old)) is None, timeout_s=20)
        assert asyncio.run(store.get_event(dead)) is not None
        assert asyncio.run(store.get_event(recent)) is not None
        assert old not in {d.event_id for d in asyncio.run(store.list_deliveries(limit=None))}
        assert wait_until(
            lambda: "bridge.retention: deleted 1 event older" in proc.log_path.read_text()
        )
    finally:
        store.close()
