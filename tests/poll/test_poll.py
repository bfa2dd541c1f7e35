"""Polling against real HTTP servers on 127.0.0.1, with a real SQLite store in tmp_path."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.events import Event
from bridge.poll.engine import Poller
from bridge.poll.fetch import retry_after_s
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import eventually, free_port, run_cli, serve_app
from tests.poll.upstream import Upstream, upstream_app

pytestmark = pytest.mark.anyio


def make_config(url: str, database: str = "bridge.db", **poll: Any) -> Config:
    source = {"url": url + "/items", "every": "1s", "id": "id", "items": "data", **poll}
    data = {
        "database": database,
        "sources": {"s": {"poll": source}, "hook": {"webhook": {"verify": "none",
                                                                  "allow_unsigned": True}}},
        "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
    }  # fmt: skip
    return parse_config(yaml.safe_dump(data))


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    up = Upstream(items=[{"id": i, "name": f"item {i}", "n": 0} for i in range(1, 6)])
    with serve_app(upstream_app(up)) as url:
        yield up, url
    up.release.set()


class Env:
    """A poller over a store and the upstream, with helpers to read what it stored."""

    def __init__(self, store: SQLiteStore, up: Upstream, url: str) -> None:
        self.store = store
        self.up = up
        self.url = url
        self.poller: Poller | None = None
        self.pollers: list[Poller] = []

    def make(self, **poll: Any) -> Poller:
        config = make_config(self.url, **poll)
        self.poller = Poller(Runtime(config=config, store=self.store))
        self.pollers.append(self.poller)
        return self.poller

    async def poll(self) -> Any:
        assert self.poller is not None
        return await self.poller.poll_once("s")

    async def events(self) -> list[Event]:
        return list(reversed(await self.store.list_events(source="s", limit=None)))

    async def versions(self) -> dict[str, str]:
        return await self.store.load_poll_versions("s")


@pytest.fixture
async def env(store: SQLiteStore, upstream: tuple[Upstream, str]) -> AsyncIterator[Env]:
    e = Env(store, *upstream)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


def changes(events: list[Event]) -> list[tuple[str | None, str | None]]:
    return [(e.change, e.subject) for e in events]


# -- detection -------------------------------------------------------------------------------


async def test_first_poll_is_a_silent_baseline(env: Env) -> None:
    env.make()
    await env.poll()
    assert await env.events() == []
    assert sorted(await env.versions()) == ["1", "2", "3", "4", "5"]
    state = await env.store.load_poll_state("s")
    assert state.baselined and state.generation == 1 and state.items == 5
    await env.poll()
    assert await env.events() == []


async def test_baseline_emit_makes_one_created_event_per_item(env: Env) -> None:
    env.make(baseline="emit")
    await env.poll()
    assert changes(await env.events()) == [("created", str(i)) for i in range(1, 6)]


async def test_exactly_one_event_per_create_update_and_delete(env: Env) -> None:
    env.make(time="at")
    await env.poll()
    env.up.items[1] = {"id": 2, "name": "renamed", "n": 0, "at": "2026-11-29T08:00:00Z"}
    del env.up.items[2]
    env.up.items.append({"id": 9, "name": "new", "n": 0, "at": 1_795_939_200})
    result = await env.poll()
    assert result.changed
    await env.poll()  # nothing changed since: nothing more
    events = await env.events()
    assert changes(events) == [("updated", "2"), ("created", "9"), ("deleted", "3")]
    updated, created, deleted = events
    assert updated.type == "s.updated" and updated.origin == "poll"
    assert updated.data["object"]["name"] == "renamed"
    assert updated.data["previous_attributes"] == {"name": "item 2", "at": None}
    assert updated.time_ms == 1_795_939_200_000
    assert created.time_ms == 1_795_939_200_000
    assert deleted.data == {"object": {"id": 3, "name": "item 3", "n": 0}}
    # One pending delivery per event for the matching target, in the same commit.
    with sqlite3.connect(env.store.path) as conn:
        rows = conn.execute("SELECT event_id, target, status FROM deliveries").fetchall()
    assert sorted(rows) == sorted((e.id, "t", "pending") for e in events)
    state = await env.store.load_poll_state("s")
    assert state.events == 3 and state.generation == 3 and state.consecutive_failures == 0


async def test_a_failed_commit_writes_nothing_and_the_next_poll_redetects_once(
    env: Env,
) -> None:
    env.make()
    await env.poll()
    env.up.items[0]["n"] = 1
    env.up.items.pop()
    env.store.writer.fault = sqlite3.OperationalError("disk I/O error")
    result = await env.poll()
    env.store.writer.fault = None
    assert not result.changed
    assert await env.events() == []
    assert len(await env.versions()) == 5
    await env.poll()
    await env.poll()
    assert changes(await env.events()) == [("updated", "1"), ("deleted", "5")]


async def test_stats_are_kept_per_source(env: Env) -> None:
    env.make()
    await env.poll()
    env.up.fault = "status"
    await env.poll()
    (state,) = await env.store.list_poll_states()
    assert state.source == "s" and state.polls == 2 and state.failures == 1
    assert state.requests == 2 and state.bytes > 0 and state.items == 5
    assert state.last_status == 500 and state.consecutive_failures == 1
    assert state.last_poll_ms and state.last_ok_ms and state.last_poll_ms >= state.last_ok_ms
    assert state.last_duration_ms is not None and state.last_error_ms == state.last_poll_ms


async def test_a_change_that_comes_back_makes_a_new_event(env: Env) -> None:
    env.make()
    await env.poll()
    for status in ("closed", "open", "closed"):
        env.up.items[0]["status"] = status
        await env.poll()
    events = await env.events()
    assert changes(events) == [("updated", "1")] * 3
    assert len({e.id for e in events}) == 3


async def test_new_events_are_announced_on_the_hub(env: Env) -> None:
    poller = env.make()
    heard: list[Event] = []
    poller.runtime.hub.subscribe(heard.extend)
    await env.poll()
    env.up.items.append({"id": 6})
    await env.poll()
    assert changes(heard) == [("created", "6")]


async def test_version_decides_when_set(env: Env) -> None:
    for item in env.up.items:
        item["updated_at"] = 1
    env.make(version="updated_at")
    await env.poll()
    env.up.items[0]["name"] = "changed without a new version"
    await env.poll()
    assert await env.events() == []
    env.up.items[0]["updated_at"] = 2
    await env.poll()
    assert changes(await env.events()) == [("updated", "1")]


async def test_hash_sees_any_change_except_ignored_fields(env: Env) -> None:
    env.make(ignore=["fetched_at"])
    for item in env.up.items:
        item["fetched_at"] = 1
    await env.poll()
    for item in env.up.items:
        item["fetched_at"] = 2
    await env.poll()
    assert await env.events() == []
    env.up.items[4]["n"] = 1
    await env.poll()
    assert changes(await env.events()) == [("updated", "5")]


async def test_items_without_a_key_are_skipped_and_repeated_keys_counted(env: Env) -> None:
    env.up.items += [{"name": "no id"}, {"id": 1, "name": "again"}]
    env.make()
    await env.poll()
    state = await env.store.load_poll_state("s")
    assert state.skipped == 1 and state.duplicate_keys == 1 and state.items == 5
    assert (await env.store.load_poll_items("s", ["1"]))["1"]["name"] == "again"


async def test_emit_and_type_template(env: Env) -> None:
    env.make(emit=["deleted"], type="shop.item.{change}")
    await env.poll()
    env.up.items[0]["n"] = 5
    env.up.items.pop()
    await env.poll()
    events = await env.events()
    assert [(e.type, e.subject) for e in events] == [("shop.item.deleted", "5")]
    # The update was not emitted but is in the snapshot: it does not come back later.
    await env.poll()
    assert len(await env.events()) == 1


# -- conditional requests --------------------------------------------------------------------


async def test_etag_is_sent_and_304_is_a_cheap_no_change(env: Env) -> None:
    env.up.etag = True
    env.make()
    await env.poll()
    tag = env.up.body_etag()
    await env.poll()
    assert env.up.requests[-1].get("if-none-match") == tag
    state = await env.store.load_poll_state("s")
    assert state.not_modified == 1 and state.last_status == 304 and state.etag == tag
    env.up.items[0]["n"] = 1
    await env.poll()
    assert changes(await env.events()) == [("updated", "1")]
    assert (await env.store.load_poll_state("s")).etag == env.up.body_etag() != tag


async def test_last_modified_is_sent_back(env: Env) -> None:
    env.up.last_modified = "Sun, 29 Nov 2026 08:00:00 GMT"
    env.make()
    await env.poll()
    await env.poll()
    assert env.up.requests[-1].get("if-modified-since") == env.up.last_modified
    assert (await env.store.load_poll_state("s")).not_modified == 1


# -- pagination ------------------------------------------------------------------------------

PAGES = {
    "link": {"pages": "link"},
    "next_url": {"pages": {"next_url": "next"}},
    "cursor": {"pages": {"cursor": "cursor", "param": "after"}},
}


@pytest.mark.parametrize("style", list(PAGES))
async def test_each_pagination_style_walks_every_page(env: Env, style: str) -> None:
    env.up.style = style
    env.up.items = [{"id": i, "n": 0} for i in range(1, 9)]  # 3 pages of 3
    env.make(**PAGES[style])
    await env.poll()
    assert len(env.up.requests) == 3
    assert sorted(map(int, await env.versions())) == list(range(1, 9))
    env.up.items[4]["n"] = 1  # page 2
    del env.up.items[7]  # page 3
    await env.poll()
    # A key missing from a walk of several pages is deleted once the next walk lacks it too.
    assert changes(await env.events()) == [("updated", "5")]
    await env.poll()
    assert changes(await env.events()) == [("updated", "5"), ("deleted", "8")]
    assert (await env.store.load_poll_state("s")).requests == 9


async def test_more_pages_than_max_pages_is_a_fault(env: Env) -> None:
    env.up.style = "link"
    env.up.items = [{"id": i} for i in range(8)]  # 3 pages of 3
    env.make(pages="link", max_pages=2)
    await env.poll()
    state = await env.store.load_poll_state("s")
    assert "max_pages" in (state.last_error or "") and not state.baselined
    assert await env.versions() == {}


# -- faults ----------------------------------------------------------------------------------

FAULTS = ["status", "timeout", "json", "shape", "page2", "connection"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_fault_makes_no_event_and_keeps_the_state(env: Env, fault: str) -> None:
    if fault == "page2":
        env.up.style = "link"
    pages = {"pages": "link"} if fault == "page2" else {}
    # The healthy polls get time to spare on a loaded machine; only the faulty one is short.
    env.make(timeout="10s", **pages)
    await env.poll()
    assert (await env.store.load_poll_state("s")).failures == 0
    before = await env.versions()
    env.make(timeout="300ms", **pages)
    # Every item changes or disappears: a poll that believed a failed answer would flood.
    env.up.items = env.up.items[:4] if fault == "page2" else env.up.items[:1]
    env.up.fault = fault
    poller = env.poller
    assert poller is not None
    if fault == "connection":
        poller.config = make_config(f"http://127.0.0.1:{free_port()}", timeout="300ms")
    result = await env.poll()
    assert not result.changed
    assert await env.events() == []
    assert await env.versions() == before
    state = await env.store.load_poll_state("s")
    assert state.consecutive_failures == 1 and state.failures == 1 and state.last_error
    assert state.generation == 1
    # Back to health: the real changes are seen once.
    env.up.fault = None
    env.make(timeout="10s", **pages)
    await env.poll()
    if fault == "page2":
        await env.poll()  # a walk of several pages: the next walk confirms its deletes
    assert {c for c, _ in changes(await env.events())} == {"deleted"}
    assert (await env.store.load_poll_state("s")).consecutive_failures == 0


async def test_an_expression_that_fails_on_the_answer_is_a_fault(env: Env) -> None:
    env.make(id="to_string(id)")
    await env.poll()
    before = await env.versions()
    env.make(id="abs(name)")  # abs() of a string: a JMESPath type error
    env.up.items.pop()
    await env.poll()
    assert await env.versions() == before and await env.events() == []
    assert "expression failed" in ((await env.store.load_poll_state("s")).last_error or "")


async def test_secrets_stay_out_of_errors(env: Env) -> None:
    env.make(headers={"Authorization": "Bearer sekret-123"}, params={"q": "sekret-456"})
    env.up.fault = "status"
    await env.poll()
    assert env.up.requests[-1]["authorization"] == "Bearer sekret-123"
    state = await env.store.load_poll_state("s")
    assert state.last_error and "500" in state.last_error
    assert "sekret" not in state.last_error
    assert "sekret-123" not in repr(env.poller.config)  # type: ignore[union-attr]


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_429_carries_retry_after(env: Env, form: str) -> None:
    env.make()
    env.up.fault = "429"
    env.up.retry_after = "7" if form == "seconds" else "Wed, 21 Oct 2099 07:28:00 GMT"
    result = await env.poll()
    assert result.throttled
    assert result.retry_after_s is not None
    assert result.retry_after_s == 7 if form == "seconds" else result.retry_after_s > 1e9
    assert (await env.store.load_poll_state("s")).last_status == 429
    assert await env.versions() == {}


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after_s("120") == 120
    assert retry_after_s("Thu, 01 Jan 1970 00:01:40 GMT", now_s=40) == 60
    assert retry_after_s("Thu, 01 Jan 1970 00:01:40 GMT", now_s=1000) == 0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


# -- scheduling ------------------------------------------------------------------------------


async def test_scheduler_backs_off_on_429_and_returns_after_success(env: Env) -> None:
    env.up.fault = "503"
    env.up.retry_after = "1"
    poller = env.make(every="200ms")
    await poller.start()
    await eventually(lambda: poller.scheduler.delay_s("s") == 1.0)
    env.up.fault = None
    count = env.up.request_count()
    await eventually(
        lambda: env.up.request_count() > count and poller.scheduler.delay_s("s") == 0.2
    )
    state = await env.store.load_poll_state("s")
    assert state.baselined and state.failures >= 1


async def test_adaptive_interval_in_a_scheduler_run(env: Env) -> None:
    poller = env.make(every={"min": "50ms", "max": "400ms"})
    await poller.start()
    await eventually(lambda: poller.scheduler.delay_s("s") == 0.4)  # slowed: 0.05 -> ... -> 0.4
    env.up.items[0]["n"] = 1
    await eventually(lambda: poller.scheduler.delay_s("s") == 0.05, timeout_s=5)  # a change: fast
    assert changes(await env.events()) == [("updated", "1")]
    state = await env.store.load_poll_state("s")
    assert state.saved_requests > 1  # polls not made compared with polling every 50 ms
    assert state.interval_s is not None


async def test_a_push_hint_polls_at_once(env: Env) -> None:
    poller = env.make(every="1h", on_push="hook")
    await poller.start()
    await eventually(lambda: env.up.request_count() == 1)
    await eventually(lambda: poller.scheduler._slots["s"].running is False)
    hint = Event(id="evt_x", source="hook", type="x", origin="push", data={}, recorded_ms=1)
    poller.runtime.hub.recorded([hint])
    await eventually(lambda: env.up.request_count() == 2, timeout_s=5)
    other = Event(id="evt_y", source="s", type="x", origin="poll", data={}, recorded_ms=1)
    poller.runtime.hub.recorded([other])
    await asyncio.sleep(0.3)
    assert env.up.request_count() == 2


async def test_never_two_polls_of_one_source_at_once(env: Env) -> None:
    env.up.style = "link"
    env.up.fault = "hang-page2"
    poller = env.make(every="50ms", pages="link")
    await poller.start()
    await eventually(lambda: env.up.hanging == 1)
    await asyncio.sleep(0.5)  # ten intervals
    assert env.up.hanging == 1 and env.up.request_count() == 2  # one poll: pages 1 and 2
    env.up.fault = None
    env.up.release.set()
    await eventually(lambda: env.up.request_count() >= 6)  # polling goes on afterwards


async def test_a_hint_during_a_poll_polls_again_right_after(env: Env) -> None:
    env.up.style = "link"
    env.up.fault = "hang-page2"
    poller = env.make(every="1h", on_push="hook", pages="link")
    await poller.start()
    await eventually(lambda: env.up.hanging == 1)
    hint = Event(id="evt_x", source="hook", type="x", origin="push", data={}, recorded_ms=1)
    poller.runtime.hub.recorded([hint])
    env.up.fault = None
    env.up.release.set()
    await eventually(lambda: env.up.request_count() == 4, timeout_s=5)  # two polls of two pages
    await asyncio.sleep(0.2)
    assert env.up.request_count() == 4


async def test_reload_adds_removes_and_reschedules(env: Env) -> None:
    poller = env.make(every="1h")
    await poller.start()
    await eventually(lambda: env.up.request_count() == 1)
    faster = make_config(env.url, every="100ms")
    await poller.reload(faster)
    await eventually(lambda: env.up.request_count() >= 3)
    assert poller.scheduler.delay_s("s") == 0.1
    data = faster.model_dump(by_alias=True, exclude={"path"})
    del data["sources"]["s"]
    await poller.reload(parse_config(yaml.safe_dump(_plain(data))))
    assert poller.scheduler.delay_s("s") is None
    await asyncio.sleep(0.3)  # let a poll already started finish
    count = env.up.request_count()
    await asyncio.sleep(0.4)
    assert env.up.request_count() == count
    await poller.reload(faster)
    await eventually(lambda: env.up.request_count() > count)


def _plain(value: Any) -> Any:
    """model_dump output with secrets revealed, for a YAML round trip."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return value


# -- a large source --------------------------------------------------------------------------


async def test_a_source_of_100000_items(env: Env) -> None:
    env.up.items = [{"id": i, "v": 0} for i in range(100_000)]
    env.up.style = "list"
    env.make(items=None)
    await env.poll()
    assert len(await env.versions()) == 100_000
    env.up.items[5] = {"id": 5, "v": 1}
    env.up.items[99_999] = {"id": 99_999, "v": 1}
    del env.up.items[50_000]
    env.up.items.append({"id": 100_000, "v": 0})
    await env.poll()
    assert changes(await env.events()) == [
        ("updated", "5"),
        ("updated", "99999"),
        ("created", "100000"),
        ("deleted", "50000"),
    ]
    assert len(await env.versions()) == 100_000


# -- the command line ------------------------------------------------------------------------


def test_dry_run_prints_what_would_be_emitted(
    upstream: tuple[Upstream, str], tmp_path: Path
) -> None:
    up, url = upstream
    path = tmp_path / "config.yaml"
    poll = {"url": url + "/items", "every": "1s", "id": "id", "items": "data",
            "headers": {"Authorization": "Bearer ${POLL_TOKEN}"}}  # fmt: skip
    path.write_text(yaml.safe_dump({"sources": {"s": {"poll": poll}}}))
    env = {"POLL_TOKEN": "tok-1"}
    done = run_cli("poll", "-c", str(path), "s", "--dry-run", "--json", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["items"] == 5 and out["first_poll"] is True
    assert [e["subject"] for e in out["events"]] == ["1", "2", "3", "4", "5"]
    assert {e["change"] for e in out["events"]} == {"created"}
    assert up.requests[-1]["authorization"] == "Bearer tok-1"
    assert not (tmp_path / "bridge.db").exists()  # changed nothing

    text = run_cli("poll", "-c", str(path), "s", "--dry-run", env=env)
    assert text.returncode == 0 and "5 items" in text.stdout and "created" in text.stdout

    # Without --dry-run the running daemon is asked; none listens at server.listen here.
    path.write_text(path.read_text() + "server:\n  listen: 127.0.0.1:9\n")
    asked = run_cli("poll", "-c", str(path), "s", env=env)
    assert asked.returncode == 1 and "no running bridge answered" in asked.stderr
    unknown = run_cli("poll", "-c", str(path), "nope", "--dry-run", env=env)
    assert unknown.returncode == 2 and "not a polled source" in unknown.stderr
    up.fault = "status"
    failed = run_cli("poll", "-c", str(path), "s", "--dry-run", env=env)
    assert failed.returncode == 1 and "HTTP 500" in failed.stderr


async def test_dry_run_diffs_against_the_stored_snapshot(env: Env, tmp_path: Path) -> None:
    env.make()
    await env.poll()
    env.up.items[0]["n"] = 9
    path = tmp_path / "config.yaml"
    poll = {"url": env.url + "/items", "every": "1s", "id": "id", "items": "data"}
    path.write_text(yaml.safe_dump({"database": "bridge.db", "sources": {"s": {"poll": poll}}}))
    done = await asyncio.to_thread(run_cli, "poll", "-c", str(path), "s", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["first_poll"] is False
    assert [(e["change"], e["subject"]) for e in out["events"]] == [("updated", "1")]
    assert out["events"][0]["data"]["previous_attributes"] == {"n": 0}
    assert await env.events() == []  # nothing stored
