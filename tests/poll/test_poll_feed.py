"""A feed's baseline and gaps against real HTTP servers on 127.0.0.1, with a real store.

The baseline of a feed is everything it holds at the first poll: only events that appear
after it are emitted, whichever end of the feed its first page holds. Polled: scripted feeds
(an oldest-first list with Stripe's `starting_after` and `has_more`, a newest-first timeline
with `since_id` and `Link` pages), json-server 0.17 (an oldest-first list with RFC 8288
`Link` pages) and localstripe (whose `/v1/events` is oldest first with `starting_after`),
driven by the official `stripe` library.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import yaml

from bridge.config import parse_config
from bridge.poll.engine import Poller
from bridge.poll.modes import FeedMark
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import free_port, run_cli
from tests.scripted_server import Reply, Script, Seen
from tests.third_party import json_server_entry, run_server, tool

pytestmark = pytest.mark.anyio

BASE_S = 1_900_000_000


def config_text(url: str, **poll: Any) -> str:
    source = {"url": url, "every": "1s", "id": "id", "mode": "feed", **poll}
    return yaml.safe_dump(
        {
            "database": "bridge.db",
            "sources": {"s": {"poll": source}},
            "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
        }
    )


class Env:
    """Polls source `s` of a config against a real store, one poll at a time."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.pollers: list[Poller] = []
        self.text = ""

    def make(self, url: str, **poll: Any) -> None:
        self.text = config_text(url, **poll)
        self.pollers.append(Poller(Runtime(config=parse_config(self.text), store=self.store)))

    async def poll(self) -> None:
        await self.pollers[-1].poll_once("s")

    async def ids(self) -> list[str]:
        # The source's events (a gap is told besides, as the bridge's own bridge.poll.gap).
        events = await self.store.list_events(source="s", limit=None)
        return [str(e.upstream_id) for e in reversed(events)]

    async def state(self) -> Any:
        return await self.store.load_poll_state("s")


@pytest.fixture
async def env(store: SQLiteStore) -> AsyncIterator[Env]:
    e = Env(store)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


@dataclass
class Feed:
    """An append-only list of events, served in pages of `limit` in either order."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, n: int) -> None:
        for _ in range(n):
            i = len(self.events) + 1
            self.events.append({"id": f"evt_{i}", "type": "thing.done", "created": BASE_S + i})

    def oldest_first(self, seen: Seen) -> Reply:
        """Stripe's list shape, oldest first: `starting_after=ID` pages to newer events."""
        query = parse_qs(seen.query)
        limit = int(query["limit"][0])
        after = query.get("starting_after", [None])[0]
        ids = [e["id"] for e in self.events]
        start = ids.index(after) + 1 if after in ids else 0
        chunk = self.events[start : start + limit]
        return Reply(body={"data": chunk, "has_more": start + limit < len(self.events)})

    def linked_oldest_first(self, seen: Seen) -> Reply:
        """Oldest first in `Link` pages (`?page=N`), as json-server pages a sorted list."""
        page = int(parse_qs(seen.query).get("page", ["1"])[0])
        chunk = self.events[(page - 1) * 3 : page * 3]
        more = page * 3 < len(self.events)
        return Reply(body=chunk, headers=[("Link", f"</feed?page={page + 1}>; rel=next")] * more)

    def newest_first(self, seen: Seen) -> Reply:
        """Newest first in `Link` pages (`?page=N`) towards older events; `since_id=ID` keeps
        only the events newer than ID (as Twitter's and Mastodon's timelines do)."""
        query = parse_qs(seen.query)
        since = query.get("since_id", [None])[0]
        ids = [e["id"] for e in self.events]
        newer = self.events[ids.index(since) + 1 :] if since in ids else self.events
        newest = list(reversed(newer))
        page = int(query.get("page", ["1"])[0])
        chunk = newest[(page - 1) * 3 : page * 3]
        more = page * 3 < len(newest)
        link = f"</feed?page={page + 1}" + (f"&since_id={since}" if since else "") + ">; rel=next"
        return Reply(body=chunk, headers=[("Link", link)] * more)


OLDEST_FIRST = {
    "items": "data",
    "time": "created",
    "params": {"limit": 5},
    "feed": {"type": "type", "order": "oldest_first", "after": {"param": "starting_after"}},
    "pages": {"cursor": "has_more && data[-1].id", "param": "starting_after"},
}


@pytest.mark.parametrize("history", [12, 30])
async def test_an_oldest_first_feed_takes_all_its_history_as_the_baseline(
    env: Env, server: tuple[Script, str], history: int
) -> None:
    script, base = server
    feed = Feed()
    feed.add(history)
    script.route("/feed", feed.oldest_first)
    env.make(base + "/feed", **OLDEST_FIRST)
    await env.poll()  # the baseline: every page to the newest event, silent
    assert await env.ids() == []
    assert FeedMark.load((await env.state()).cursor).after == f"evt_{history}"
    await env.poll()
    assert await env.ids() == []  # no event of the history, ever
    feed.add(3)
    await env.poll()
    assert await env.ids() == [f"evt_{history + i}" for i in (1, 2, 3)]
    assert parse_qs(script.seen[-1].query)["starting_after"] == [f"evt_{history}"]
    state = await env.state()
    assert (state.gaps, state.last_error) == (0, None)


@pytest.mark.parametrize("lookback", ["0s", "1h"])
async def test_an_oldest_first_baseline_cut_by_max_pages_is_a_gap_and_goes_on_silently(
    env: Env, server: tuple[Script, str], tmp_path: Path, lookback: str
) -> None:
    script, base = server
    feed = Feed()
    feed.add(30)  # 6 pages of 5; 2 pages a poll
    script.route("/feed", feed.oldest_first)
    # A lookback longer than the whole history: the anchor stays at evt_20 after the baseline,
    # so the next walk reads evt_21..30 again; cut at max_pages, it must go on past them.
    held = {**OLDEST_FIRST, "feed": {**OLDEST_FIRST["feed"], "lookback": lookback}}
    env.make(base + "/feed", **held, max_pages=2)
    await env.poll()
    state = await env.state()
    assert state.gaps == 1 and FeedMark.load(state.cursor).baselining
    await env.poll()
    await env.poll()  # evt_21..evt_30: the newest end, the baseline is done
    assert not FeedMark.load((await env.state()).cursor).baselining
    assert await env.ids() == []
    feed.add(2)
    await env.poll()
    await env.poll()
    assert await env.ids() == ["evt_31", "evt_32"]
    await env.poll()
    assert len(await env.ids()) == 2
    assert (await env.state()).gaps == 1  # one gap, counted once
    # bridge status shows it, from the same database.
    path = tmp_path / "config.yaml"
    path.write_text(env.text)
    done = run_cli("status", "-c", str(path), "--json")
    assert done.returncode == 0, done.stderr
    (shown,) = json.loads(done.stdout)["sources"]
    assert shown["status"] == "ok, 1 gap"


async def test_an_oldest_first_feed_without_after_walks_every_page_to_its_newest_events(
    env: Env, server: tuple[Script, str]
) -> None:
    script, base = server
    feed = Feed()
    feed.add(7)  # 3 pages of 3
    script.route("/feed", feed.linked_oldest_first)
    oldest_first = {"type": "type", "order": "oldest_first"}
    env.make(base + "/feed", feed=oldest_first, pages="link", time="created")
    await env.poll()
    assert await env.ids() == []
    feed.add(4)  # evt_8 on page 3, evt_9..11 on page 4
    await env.poll()
    assert await env.ids() == ["evt_8", "evt_9", "evt_10", "evt_11"]
    await env.poll()
    assert len(await env.ids()) == 4
    # More pages than max_pages: the newest events are out of reach, a fault, never a silence.
    env.make(base + "/feed", feed=oldest_first, pages="link", max_pages=3)
    await env.poll()
    state = await env.state()
    assert state.consecutive_failures == 1
    assert "its newest events are out of reach" in (state.last_error or "")


async def test_a_newest_first_baseline_held_back_by_lookback_floods_nothing(
    env: Env, server: tuple[Script, str]
) -> None:
    script, base = server
    feed = Feed()
    feed.add(12)
    script.route("/feed", feed.newest_first)
    # Every event of the first page is within the lookback: no anchor yet after the baseline.
    since = {"type": "type", "after": {"param": "since_id"}, "lookback": "1h"}
    env.make(base + "/feed", time="created", pages="link", feed=since)
    await env.poll()
    assert FeedMark.load((await env.state()).cursor).after is None
    await env.poll()
    assert await env.ids() == []  # not the 9 older events of the history
    feed.add(2)
    await env.poll()
    assert await env.ids() == ["evt_13", "evt_14"]
    assert (await env.state()).gaps == 0


async def test_a_newest_first_feed_empty_at_its_baseline_has_no_gap_when_events_come(
    env: Env, server: tuple[Script, str]
) -> None:
    script, base = server
    feed = Feed()
    script.route("/feed", feed.newest_first)
    env.make(base + "/feed", pages="link", feed={"type": "type"})
    await env.poll()
    feed.add(2)
    await env.poll()
    assert await env.ids() == ["evt_1", "evt_2"]
    assert (await env.state()).gaps == 0


# -- third-party servers -----------------------------------------------------------------------


@pytest.mark.parametrize("after", [None, "id_gte"])
async def test_json_server_oldest_first_pages_give_a_full_baseline_and_only_new_events(
    env: Env, tmp_path: Path, after: str | None
) -> None:
    command = json_server_entry("0.17")
    db = tmp_path / "db.json"
    history = [{"id": i, "type": "thing.done"} for i in range(1, 13)]
    db.write_text(json.dumps({"events": history}))
    port = free_port()
    with run_server(
        [*command, "--port", str(port), "--host", "127.0.0.1", str(db)],
        port,
        tmp_path / "json-server.log",
        ready_path="/events",
    ) as js:
        feed: dict[str, Any] = {"type": "type", "order": "oldest_first"}
        if after:
            feed["after"] = {"param": after}  # json-server 0.17: id >= the anchor
        params = {"_sort": "id", "_order": "asc", "_limit": 5, "_page": 1}
        env.make(js.url + "/events", params=params, pages="link", feed=feed)
        await env.poll()
        await env.poll()
        assert await env.ids() == [], "the history was emitted as new"
        async with httpx.AsyncClient() as client:
            for i in (13, 14, 15):
                answer = await client.post(js.url + "/events", json={"id": i, "type": "x.y"})
                assert answer.status_code == 201
        await env.poll()
        assert await env.ids() == ["13", "14", "15"]
        await env.poll()
        assert len(await env.ids()) == 3
        assert (await env.state()).gaps == 0


async def test_localstripe_events_oldest_first_with_starting_after(
    env: Env, tmp_path: Path
) -> None:
    stripe = pytest.importorskip("stripe", reason="stripe not installed (pip install -e '.[test]')")
    command = tool("localstripe")
    port = free_port()
    with run_server(
        [str(command), "--port", str(port), "--from-scratch"],
        port,
        tmp_path / "localstripe.log",
        ready_path="/v1/events",
        cwd=tmp_path,
    ) as ls:
        client = stripe.StripeClient("sk_test_feed", base_addresses={"api": ls.url})
        for n in range(12):
            client.v1.customers.create(params={"email": f"c{n}@example.com"})
        env.make(
            ls.url + "/v1/events",
            headers={"Authorization": "Bearer sk_test_feed"},
            subject="data.object.id",
            **OLDEST_FIRST,
        )
        await env.poll()
        await env.poll()
        assert await env.ids() == [], "the history was emitted as new"
        created = [client.v1.customers.create(params={"email": f"n{n}@x.org"}) for n in range(3)]
        await env.poll()
        events = list(reversed(await env.store.list_events(limit=None)))
        assert [e.type for e in events] == ["customer.created"] * 3
        assert [e.subject for e in events] == [c.id for c in created]
        assert (await env.state()).gaps == 0
