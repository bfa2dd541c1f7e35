"""Incremental and feed polls against real HTTP servers on 127.0.0.1, with a real store.

The upstream is scripted (tests/scripted_server.py): an incremental API that answers the
items changed at or after `since`, with a visibility lag like an eventually consistent
index; feeds newest first or oldest first, with or without an `after` parameter.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge import metrics
from bridge.config import parse_config
from bridge.errors import ConfigError
from bridge.events import event_id
from bridge.poll.engine import Poller
from bridge.poll.modes import FeedMark, Watermark, format_cursor
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli
from tests.scripted_server import Reply, Script, Seen

pytestmark = pytest.mark.anyio

BASE_S = 1_900_000_000  # the upstream's clock starts here (2030), ahead of the bridge's


def config(base: str, **poll: Any) -> Any:
    source = {"url": base + "/items", "every": "1s", "id": "id", **poll}
    return parse_config(
        yaml.safe_dump(
            {
                "database": "bridge.db",
                "sources": {"s": {"poll": source}},
                "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
            }
        )
    )


class Env:
    def __init__(self, store: SQLiteStore, script: Script, base: str) -> None:
        self.store, self.script, self.base = store, script, base
        self.pollers: list[Poller] = []

    def make(self, **poll: Any) -> Poller:
        poller = Poller(Runtime(config=config(self.base, **poll), store=self.store))
        self.pollers.append(poller)
        return poller

    async def poll(self) -> None:
        await self.pollers[-1].poll_once("s")

    async def events(self) -> list[Any]:
        return list(reversed(await self.store.list_events(source="s", limit=None)))

    async def state(self) -> Any:
        return await self.store.load_poll_state("s")


@pytest.fixture
async def env(store: SQLiteStore, server: tuple[Script, str]) -> AsyncIterator[Env]:
    e = Env(store, *server)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


# -- an incremental upstream -------------------------------------------------------------------


@dataclass
class Versions:
    """Items by key as (updated_at in Unix seconds, visible from, body); the upstream's clock."""

    now_s: int = BASE_S
    history: dict[str, list[tuple[int, int, dict[str, Any]]]] = field(default_factory=dict)

    def change(self, key: str, at_s: int, lag_s: int = 0, **body: Any) -> None:
        item = {"id": key, "updated_at": at_s, **body}
        self.history.setdefault(key, []).append((at_s, at_s + lag_s, item))

    def visible(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, versions in self.history.items():
            shown = [v for v in versions if v[1] <= self.now_s]
            if shown:
                out[key] = shown[-1][2]
        return out

    def route(self, seen: Seen) -> Reply:
        since = parse_qs(seen.query).get("since", [None])[0]
        floor = int(since) if since is not None else None
        items = [i for i in self.visible().values() if floor is None or i["updated_at"] >= floor]
        return Reply(body=sorted(items, key=lambda i: i["updated_at"]))


def incremental(**extra: Any) -> dict[str, Any]:
    # The upstream's clock is years ahead of the bridge's: a max_skew that lets it be.
    cursor = {
        "field": "updated_at",
        "param": "since",
        "format": "unix",
        "lookback": "60s",
        "max_skew": "3650d",
    }
    return {"mode": "incremental", "cursor": {**cursor, **extra.pop("cursor", {})}, **extra}


async def test_incremental_sends_the_watermark_minus_lookback_and_emits_each_change_once(
    env: Env,
) -> None:
    up = Versions()
    env.script.route("/items", up.route)
    up.change("a", BASE_S - 10)
    env.make(**incremental())
    await env.poll()  # the baseline: silent
    assert await env.events() == []
    up.now_s += 30
    up.change("b", BASE_S + 20)  # created
    up.change("a", BASE_S + 25, n=1)  # updated
    await env.poll()
    assert parse_qs(env.script.seen[-1].query)["since"] == [str(BASE_S - 10 - 60)]
    assert [(e.change, e.subject) for e in await env.events()] == [
        ("created", "b"),
        ("updated", "a"),
    ]
    await env.poll()  # both seen again inside the lookback window: nothing new
    assert parse_qs(env.script.seen[-1].query)["since"] == [str(BASE_S + 25 - 60)]
    assert len(await env.events()) == 2
    assert Watermark.load((await env.state()).cursor).value_ms == (BASE_S + 25) * 1000


async def test_an_item_that_becomes_visible_late_at_the_boundary_is_not_skipped(env: Env) -> None:
    up = Versions()
    env.script.route("/items", up.route)
    up.change("a", BASE_S)
    env.make(**incremental(cursor={"lookback": "0s"}))
    await env.poll()
    up.now_s += 5
    up.change("b", BASE_S + 5)
    await env.poll()
    up.change("c", BASE_S + 5, lag_s=3)  # the same second as b, visible only later
    up.now_s += 5
    await env.poll()
    assert [(e.change, e.subject) for e in await env.events()] == [
        ("created", "b"),
        ("created", "c"),
    ]


async def test_incremental_start_and_baseline_emit_take_history(env: Env) -> None:
    up = Versions()
    env.script.route("/items", up.route)
    env.make(**incremental(cursor={"start": "1h", "format": "rfc3339"}), baseline="emit")
    await env.poll()
    since = parse_qs(env.script.seen[-1].query)["since"][0]
    assert since.endswith("Z") and len(since) == 20  # 2026-12-02T10:00:00Z


async def test_items_without_a_cursor_value_are_skipped_and_a_bad_one_is_a_fault(
    env: Env,
) -> None:
    env.make(**incremental())
    env.script.route("/items", Reply(body=[{"id": "a", "updated_at": BASE_S}, {"id": "b"}]))
    await env.poll()
    state = await env.state()
    assert state.skipped == 1 and sorted(await env.store.load_poll_versions("s")) == ["a"]
    mark = state.cursor
    env.script.route("/items", Reply(body=[{"id": "c", "updated_at": "yesterday"}]))
    await env.poll()
    state = await env.state()
    assert "is not a time" in (state.last_error or "")
    assert state.cursor == mark and sorted(await env.store.load_poll_versions("s")) == ["a"]


async def test_reconcile_finds_deletions_with_a_full_walk_and_never_on_a_failed_one(
    env: Env,
) -> None:
    up = Versions()
    env.script.route("/items", up.route)
    up.change("a", BASE_S - 100)
    up.change("b", BASE_S - 50)
    env.make(**incremental(reconcile="1h"))
    await env.poll()  # the first poll is a full walk: a complete, silent baseline
    assert "since" not in env.script.seen[-1].query
    assert sorted(await env.store.load_poll_versions("s")) == ["a", "b"]
    await env.poll()
    assert "since" in env.script.seen[-1].query  # then incremental until reconcile is due
    del up.history["a"]
    # Make the reconcile due: as if the last full walk was two hours ago.
    old = Watermark.load((await env.state()).cursor)
    await env.store.write(
        lambda c: c.execute(
            "UPDATE poll_state SET cursor = ?",
            (Watermark(old.value_ms, old.reconciled_ms - 7_200_000).dump(),),  # type: ignore[operator]
        )
    )
    env.script.route("/items", Reply(500))
    await env.poll()  # a failed full walk: no false delete
    assert sorted(await env.store.load_poll_versions("s")) == ["a", "b"]
    env.script.route("/items", up.route)
    await env.poll()
    assert [(e.change, e.subject) for e in await env.events()] == [("deleted", "a")]


def test_mode_keys_are_checked_with_one_line() -> None:
    base = "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match=r"poll\.reconcile: is not a key of mode snapshot"):
        config(base, reconcile="1h")
    with pytest.raises(ConfigError, match="mode: incremental needs cursor"):
        config(base, mode="incremental")
    with pytest.raises(ConfigError, match=r"poll\.version: is not a key of mode feed"):
        config(base, mode="feed", feed={"type": "type"}, version="v")
    with pytest.raises(ConfigError, match=r"poll\.cursor: is not a key of mode feed"):
        config(base, mode="feed", feed={"type": "type"}, cursor={"field": "x", "param": "y"})


def test_format_cursor() -> None:
    assert format_cursor(1_764_583_200_999, "rfc3339") == "2025-12-01T10:00:00Z"
    assert format_cursor(1_764_583_200_999, "unix") == "1764583200"
    assert format_cursor(1_764_583_200_999, "unix_ms") == "1764583200999"


# -- the property: every visible version once --------------------------------------------------

Change = tuple[str, int, int]  # key, stamp (seconds after the start), visibility lag


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Change], list[int]]:
    keys = st.sampled_from(["a", "b", "c"])
    # A change at `at` is stamped with its whole second, ten seconds or minute, and becomes
    # visible up to 60 s (the lookback) after that stamp: coarse, shared timestamps, and
    # items that show up after others stamped later.
    grain = draw(st.sampled_from([1, 10, 60]))
    changes = [
        (key, at // grain * grain, max(at % grain, late))
        for key, at, late in draw(
            st.lists(st.tuples(keys, st.integers(0, 200), st.integers(0, 60)), max_size=12)
        )
    ]
    polls = sorted(draw(st.lists(st.integers(1, 260), min_size=1, max_size=12, unique=True)))
    return changes, polls


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=histories())
# Stamped 100 but visible only at 160, after a poll at 155 saw an item stamped 150.
@example(scenario=([("y", 150, 0), ("x", 100, 60)], [155, 170]))
def test_every_version_visible_at_a_poll_is_emitted_exactly_once(
    server: tuple[Script, str], scenario: tuple[list[Change], list[int]]
) -> None:
    """Coarse timestamps (whole minutes often shared), late visibility up to the lookback,
    polls at random moments: the events are exactly the versions a poll could see."""
    changes, polls = scenario
    script, base = server
    up = Versions()
    for rev, (key, stamp_s, lag_s) in enumerate(sorted(changes, key=lambda c: c[1] + c[2])):
        up.change(key, BASE_S + stamp_s, lag_s=lag_s, rev=rev)
    script.route("/items", up.route)

    async def run() -> list[tuple[str, Any]]:
        with tempfile.TemporaryDirectory() as folder:
            store = SQLiteStore(Path(folder) / "bridge.db")
            store.open()
            poller = Poller(Runtime(config=config(base, **incremental()), store=store))
            try:
                for at in [0, *polls]:
                    up.now_s = BASE_S + at
                    await poller.poll_once("s")
                events = list(reversed(await store.list_events(source="s", limit=None)))
                return [(e.subject, e.data["object"]["rev"]) for e in events]
            finally:
                await poller.stop(1.0)
                store.close()

    # The reference: each poll sees the latest visible version of every key.
    known: dict[str, int] = {}
    expected: list[tuple[str, int]] = []
    for i, at in enumerate([0, *polls]):
        up.now_s = BASE_S + at
        for key, item in up.visible().items():
            if known.get(key) != item["rev"]:
                known[key] = item["rev"]
                if i > 0:
                    expected.append((key, item["rev"]))
    assert sorted(asyncio.run(run())) == sorted(expected)


# -- feeds -------------------------------------------------------------------------------------


@dataclass
class Feed:
    """An append-only list of events, served newest first in pages of `size`."""

    events: list[dict[str, Any]] = field(default_factory=list)
    size: int = 3

    def add(self, n: int) -> None:
        for _ in range(n):
            i = len(self.events) + 1
            self.events.append(
                {"id": f"evt_{i}", "type": "thing.done", "at": BASE_S + i, "obj": {"k": f"o{i}"}}
            )

    def route(self, seen: Seen) -> Reply:
        query = parse_qs(seen.query)
        newest = list(reversed(self.events))
        page = int(query.get("page", ["1"])[0])
        chunk = newest[(page - 1) * self.size : page * self.size]
        more = page * self.size < len(newest)
        links = [("Link", f"</items?page={page + 1}>; rel=next")] if more else []
        return Reply(body=chunk, headers=links)


FEED = {"mode": "feed", "feed": {"type": "type"}, "time": "at", "subject": "obj.k"}


async def test_a_feed_emits_each_new_event_once_oldest_first(env: Env) -> None:
    feed = Feed()
    feed.add(4)
    env.script.route("/items", feed.route)
    env.make(**FEED, pages="link")
    await env.poll()  # the baseline: the first page only, silent
    assert env.script.paths() == ["/items"] and await env.events() == []
    feed.add(4)  # evt_5..evt_8: page 1 and the first of page 2
    await env.poll()
    events = await env.events()
    assert [e.data["id"] for e in events] == ["evt_5", "evt_6", "evt_7", "evt_8"]
    first = events[0]
    assert first.type == "thing.done" and first.subject == "o5" and first.change is None
    assert first.id == event_id("s", "evt_5")
    assert first.time_ms == (BASE_S + 5) * 1000
    # The walk stopped at the page that holds a seen event.
    assert env.script.paths()[1:] == ["/items", "/items?page=2"]
    await env.poll()
    assert len(await env.events()) == 4
    assert (await env.state()).gaps == 0


async def test_a_feed_that_outruns_max_pages_records_a_gap_and_emits_what_it_saw(
    env: Env, tmp_path: Path
) -> None:
    gaps_before = metrics.POLL_GAPS.labels("s")._value.get()
    feed = Feed()
    feed.add(3)
    env.script.route("/items", feed.route)
    env.make(**FEED, pages="link", max_pages=2)
    await env.poll()
    feed.add(10)  # evt_4..evt_13: more than 2 pages of 3
    await env.poll()
    state = await env.state()
    assert state.gaps == 1 and state.last_error is None
    assert [e.data["id"] for e in await env.events()] == [f"evt_{i}" for i in range(8, 14)]
    await env.poll()  # the next poll reaches seen events again: no new gap, nothing twice
    assert (await env.state()).gaps == 1 and len(await env.events()) == 6
    assert metrics.POLL_GAPS.labels("s")._value.get() == gaps_before + 1
    # bridge status shows it, from the same database.
    path = tmp_path / "config.yaml"
    source = {"url": env.base + "/items", "every": "1s", "id": "id", **FEED, "pages": "link"}
    path.write_text(yaml.safe_dump({"database": "bridge.db", "sources": {"s": {"poll": source}}}))
    done = run_cli("status", "-c", str(path), "--json")
    assert done.returncode == 0, done.stderr
    (shown,) = json.loads(done.stdout)["sources"]
    assert (shown["mode"], shown["gaps"], shown["status"]) == ("feed", 1, "ok, 1 gap")


async def test_a_feed_with_after_sends_the_anchor_held_back_by_lookback(env: Env) -> None:
    feed = Feed()
    feed.add(5)

    def after(seen: Seen) -> Reply:
        anchor = parse_qs(seen.query).get("ending_before", [None])[0]
        ids = [e["id"] for e in feed.events]
        start = ids.index(anchor) + 1 if anchor in ids else 0
        return Reply(body=list(reversed(feed.events[start:])))

    env.script.route("/items", after)
    after_feed = {"type": "type", "after": {"param": "ending_before"}, "lookback": "2s"}
    env.make(**{**FEED, "feed": after_feed})
    await env.poll()
    assert FeedMark.load((await env.state()).cursor).after == "evt_3"  # newest 5, minus 2 s
    feed.add(2)
    await env.poll()
    assert parse_qs(env.script.seen[-1].query)["ending_before"] == ["evt_3"]
    assert [e.data["id"] for e in await env.events()] == ["evt_6", "evt_7"]


async def test_feed_items_without_an_id_or_a_type_are_skipped_never_events(env: Env) -> None:
    body = [{"id": "evt_1", "type": "a"}]
    env.script.route("/items", lambda _seen: Reply(body=body))
    env.make(**FEED)
    await env.poll()
    body[:0] = [{"type": "a"}, {"id": "evt_3", "type": ""}, {"id": "evt_2", "type": "b"}]
    await env.poll()
    assert [e.data["id"] for e in await env.events()] == ["evt_2"]
    assert (await env.state()).skipped == 2
    body[:] = [{"id": None}, {"nothing": 1}]
    await env.poll()
    assert "feed items has an id" in ((await env.state()).last_error or "")


async def test_a_cursor_that_goes_backwards_never_moves_the_watermark_back(env: Env) -> None:
    up = Versions()
    env.script.route("/items", up.route)
    up.change("a", BASE_S - 100)
    env.make(**incremental())
    await env.poll()
    mark = Watermark.load((await env.state()).cursor)
    # The upstream's clock went back: an item changed "before" the watermark.
    env.script.route("/items", Reply(body=[{"id": "a", "updated_at": BASE_S - 100},
                                           {"id": "b", "updated_at": BASE_S - 500}]))  # fmt: skip
    await env.poll()
    assert Watermark.load((await env.state()).cursor) == mark
    assert [(e.change, e.subject) for e in await env.events()] == [("created", "b")]
    await env.poll()
    assert len(await env.events()) == 1  # seen again: the stored version, nothing new
