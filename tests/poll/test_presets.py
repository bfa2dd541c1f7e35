"""Provider presets: what each expands to, overrides, mistakes, and each preset polling its
simulated provider (tests/providers.py) on 127.0.0.1 with a real store."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.config.presets import PRESETS, expand
from bridge.errors import ConfigError
from bridge.events import event_id
from bridge.poll.engine import Poller
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.poll.providers import (
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    SHOPIFY_TOKEN,
    STRIPE_KEY,
    Providers,
)
from tests.scripted_server import Script, Seen, scripted_server

pytestmark = pytest.mark.anyio


def sources_config(sources: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump({"database": "bridge.db", "sources": sources}))


def preset_source(base: str, preset: str, resource: str, **keys: Any) -> dict[str, Any]:
    """A source of `preset` pointed at the simulations, with the credentials they expect."""
    needs: dict[str, dict[str, Any]] = {
        "github": {"repo": "octo/hello", "token": GITHUB_TOKEN},
        "stripe": {"token": STRIPE_KEY},
        "shopify": {"shop": "simulated", "token": SHOPIFY_TOKEN},
        "gitlab": {"project": "group/project", "token": GITLAB_TOKEN},
        "microsoft-graph": {
            "token": "t",
            "user": "ada",
            "start": "2026-01-01T00:00:00Z",
            "end": "2027-01-01T00:00:00Z",
        },
        "google-calendar": {"token": "t"},
        "google-drive": {"token": "t"},
        "dropbox": {"token": "t"},
    }
    if preset == "feed":  # any feed's URL, no credentials
        return {"poll": {"preset": preset, "resource": resource, "url": f"{base}/feed", **keys}}
    poll = {"preset": preset, "resource": resource, "api_url": base, **needs[preset], **keys}
    return {"poll": poll}


# -- the expansion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "resource"),
    [(p.name, r) for p in PRESETS.values() for r in p.resources],
    ids=lambda v: str(v),
)
def test_every_preset_and_resource_expands_into_a_valid_source(preset: str, resource: str) -> None:
    source = preset_source("https://api.example.com", preset, resource)
    poll = sources_config({"s": source}).sources["s"].poll
    assert poll is not None and poll.preset == preset and poll.resource == resource
    assert poll.url.startswith("https://api.example.com/")
    if preset != "feed":
        # In a header, or as `auth:` (the delta presets: a bearer token or an OAuth2 client).
        credentials = poll.auth is not None or "Authorization" in poll.headers
        assert credentials or poll.headers, "every provider's preset sends its credentials"
    if preset == "shopify":  # and through its GraphQL Admin API too
        source = preset_source("https://api.example.com", preset, resource, api="graphql")
        graphql = sources_config({"s": source}).sources["s"].poll
        assert graphql is not None and graphql.graphql is not None and graphql.headers


def test_github_issues_expands_into_the_documented_mechanics() -> None:
    poll = expand({"preset": "github", "repo": "octo/hello", "resource": "issues", "token": "t"})
    assert poll["url"] == "https://api.github.com/repos/octo/hello/issues"
    assert poll["headers"] == {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "Authorization": "Bearer t",
    }
    assert poll["params"] == {"per_page": 100, "state": "all", "sort": "updated",
                              "direction": "desc"}  # fmt: skip
    assert poll["mode"] == "incremental" and poll["conditional"] is True
    assert poll["cursor"] == {"field": "updated_at", "param": "since", "format": "rfc3339",
                              "lookback": "1m"}  # fmt: skip
    assert poll["pages"] == "link" and poll["id"] == "number"
    events = expand({"preset": "github", "repo": "o/r", "resource": "events"})
    assert events["mode"] == "feed" and events["feed"]["order"] == "newest_first"
    assert "Authorization" not in events["headers"]  # public repositories need no token


def test_stripe_shopify_and_gitlab_expand_into_their_documented_mechanics() -> None:
    events = expand({"preset": "stripe", "resource": "events", "token": "sk_x"})
    assert events["url"] == "https://api.stripe.com/v1/events"
    assert events["feed"]["after"] == {"param": "ending_before"}
    assert events["pages"] == {"cursor": "has_more && data[0].id", "param": "ending_before"}
    customers = expand({"preset": "stripe", "resource": "customers", "token": "sk_x"})
    assert customers["cursor"]["param"] == "created[gte]"
    assert customers["cursor"]["format"] == "unix"
    assert customers["pages"] == {"cursor": "has_more && data[-1].id", "param": "starting_after"}
    shop = expand({"preset": "shopify", "shop": "acme.myshopify.com", "resource": "orders",
                   "token": "shpat_x", "api_version": "2025-07"})  # fmt: skip
    assert shop["url"] == "https://acme.myshopify.com/admin/api/2025-07/orders.json"
    assert shop["headers"] == {"X-Shopify-Access-Token": "shpat_x"}
    assert shop["params"] == {"limit": 250, "status": "any"} and shop["items"] == "orders"
    lab = expand({"preset": "gitlab", "project": "group/sub/name", "resource": "merge_requests"})
    assert lab["url"] == "https://gitlab.com/api/v4/projects/group%2Fsub%2Fname/merge_requests"
    assert lab["cursor"]["param"] == "updated_after" and lab["headers"] == {}


def test_the_users_keys_win_over_the_presets() -> None:
    poll = expand(
        {
            "preset": "github", "repo": "o/r", "resource": "issues", "token": "t",
            "every": "5m",
            "headers": {"accept": "application/vnd.github.full+json"},  # any case replaces
            "params": {"labels": "bug", "sort": None},  # added; removed
            "cursor": {"lookback": "5m"},  # merged into the preset's cursor
        }
    )  # fmt: skip
    assert poll["every"] == "5m"
    assert poll["headers"]["accept"] == "application/vnd.github.full+json"
    assert "Accept" not in poll["headers"]
    assert poll["params"] == {"per_page": 100, "state": "all", "direction": "desc", "labels": "bug"}
    assert poll["cursor"]["lookback"] == "5m" and poll["cursor"]["field"] == "updated_at"
    # Another mode drops the preset's keys of its mode, so the source stays valid.
    plain = {"preset": "github", "repo": "o/r", "resource": "issues", "mode": "snapshot"}
    snapshot = sources_config({"s": {"poll": plain}}).sources["s"].poll
    assert snapshot is not None and snapshot.mode == "snapshot" and snapshot.cursor is None


CONFIG_HEAD = "sources:\n  gh:\n    poll:\n"


@pytest.mark.parametrize(
    ("keys", "line", "message"),
    [
        ("preset: gitbucket\nresource: issues\n", 4,
         'poll.preset: "gitbucket" is not one of github, stripe, shopify, gitlab'),
        ("preset: github\nrepo: a/b\nresource: wiki\n", 6,
         'poll.resource: "wiki" is not a resource of preset github (one of issues, pulls,'),
        ("preset: github\nresource: issues\n", 4,
         "poll.repo: is required by preset github (owner/name)"),
        ("preset: github\nresource: issues\nrepo: nope\n", 6,
         'poll.repo: "nope" is not owner/name'),
        ("preset: github\nresource: issues\nrepo: a/b\nshop: x\n", 7,
         "poll.shop: is not a key of preset github"),
        ("preset: stripe\nresource: events\n", 4,
         "poll.token: is required by preset stripe"),
        ("preset: shopify\nresource: orders\nshop: x\ntoken: ''\n", 7,
         "poll.token: must be non-empty text"),
        ("preset: github\nresource: issues\nrepo: a/b\nfeed: {type: t}\n", 7,
         "poll.feed: is not a key of mode incremental"),
        ("resource: issues\nurl: http://x\nevery: 1s\nid: id\n", 3, "resource needs preset"),
    ],
)  # fmt: skip
def test_preset_mistakes_are_one_line_errors_naming_the_line(
    keys: str, line: int, message: str
) -> None:
    text = CONFIG_HEAD + textwrap.indent(keys, "      ")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    shown = str(caught.value)
    assert shown.startswith(f"c.yaml:{line}: sources.gh."), shown
    assert message in shown and "\n" not in shown


# -- the simulations, polled -----------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Script, str]]:
    with scripted_server() as pair:
        yield pair


class Env:
    """Pollers of preset sources against the simulations; events and requests per source."""

    def __init__(self, store: SQLiteStore, script: Script, base: str) -> None:
        self.store, self.script, self.base = store, script, base
        self.sims = Providers.install(script, page_size=2)
        self.pollers: list[Poller] = []

    def make(self, preset: str, resource: str, **keys: Any) -> Poller:
        if expand(preset_source(self.base, preset, resource)["poll"]).get("mode") == "incremental":
            # The simulations' clock is years ahead of the bridge's: a max_skew that lets it be.
            keys["cursor"] = {"max_skew": "3650d", **keys.get("cursor", {})}
        config = sources_config({"s": preset_source(self.base, preset, resource, **keys)})
        poller = Poller(Runtime(config=config, store=self.store))
        self.pollers.append(poller)
        return poller

    async def poll(self) -> None:
        self.mark = len(self.script.seen)
        await self.pollers[-1].poll_once("s")
        state = await self.store.load_poll_state("s")
        assert state.last_error is None, state.last_error

    def requests(self) -> list[Seen]:
        """The requests of the last poll."""
        with self.script.lock:
            return self.script.seen[self.mark :]

    async def events(self) -> list[Any]:
        return list(reversed(await self.store.list_events(source="s", limit=None)))

    async def changes(self) -> list[tuple[str | None, str | None]]:
        return [(e.change, e.subject) for e in await self.events()]


@pytest.fixture
async def env(store: SQLiteStore, served: tuple[Script, str]) -> AsyncIterator[Env]:
    e = Env(store, *served)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)
    assert e.sims.refused() == [], "a request the provider would have refused"


def query(seen: Seen) -> dict[str, str]:
    return dict(parse_qsl(seen.query))


async def test_github_issues_follow_link_pages_send_since_and_a_304_costs_nothing(
    env: Env,
) -> None:
    gh, clock = env.sims.github, env.sims.clock
    for n in range(1, 6):
        gh.issues.put(str(n), title=f"issue {n}")
    gh.issues.put("6", title="a pull request", pull_request={"url": "..."})
    env.make("github", "issues")
    await env.poll()  # the baseline: three pages of two, by Link rel="next" (and rel="last")
    first = env.requests()
    assert len(first) == 3 and "since" in query(first[0])
    assert query(first[0])["state"] == "all" and query(first[0])["sort"] == "updated"
    assert query(first[2])["page"] == "3"
    assert await env.events() == []
    remaining = gh.remaining
    await env.poll()  # nothing changed: page 1 answers 304, which costs no rate limit
    assert gh.not_modified == 1 and gh.remaining == remaining and len(env.requests()) == 1
    clock.now_s += 30
    gh.issues.put("2", title="renamed")
    gh.issues.put("7", title="new")
    gh.issues.put("8", title="late", lag_s=20)  # stamped now, listed only 20 s later
    gh.issues.put("9", title="another pull request", pull_request={"url": "..."})
    await env.poll()
    assert query(env.requests()[0])["since"] == "2030-03-17T17:45:40Z"  # watermark - 1m
    clock.now_s += 25
    await env.poll()  # the late one is behind the watermark now, inside the lookback
    assert sorted(await env.changes()) == [("created", "7"), ("created", "8"), ("updated", "2")]
    await env.poll()
    assert len(await env.events()) == 3


async def test_github_pulls_are_the_issues_endpoints_pull_requests(env: Env) -> None:
    gh = env.sims.github
    gh.issues.put("1", title="issue")
    env.make("github", "pulls")
    await env.poll()
    env.sims.clock.now_s += 5
    gh.issues.put("2", title="pr", pull_request={"url": "..."})
    gh.issues.put("3", title="another issue")
    await env.poll()
    assert await env.changes() == [("created", "2")]


async def test_github_events_are_a_feed_walked_back_to_the_last_event_seen(env: Env) -> None:
    gh, clock = env.sims.github, env.sims.clock
    for _ in range(5):
        gh.add_event("WatchEvent")
        clock.now_s += 1
    env.make("github", "events")
    await env.poll()  # the baseline: the first page only
    assert len(env.requests()) == 1 and await env.events() == []
    new = [gh.add_event("IssuesEvent", login=f"user{i}", action="opened") for i in range(3)]
    await env.poll()
    assert [r.query for r in env.requests()] == ["per_page=100", "per_page=100&page=2"]
    events = await env.events()
    assert [e.data["id"] for e in events] == new  # oldest first
    assert events[0].type == "IssuesEvent" and events[0].subject == "user0"
    assert events[0].id == event_id("s", new[0]) and events[0].time_ms is not None
    await env.poll()  # newest first, so nothing new is a 304 on page 1
    assert gh.not_modified == 1 and len(await env.events()) == 3


async def test_github_releases_are_a_snapshot_and_download_counts_are_not_changes(
    env: Env,
) -> None:
    gh = env.sims.github
    for n in (1, 2, 3):
        gh.releases.put(str(n), tag_name=f"v{n}", body="notes", assets=[{"id": n, "name": "x",
                        "download_count": 0}])  # fmt: skip
    env.make("github", "releases")
    await env.poll()
    gh.releases.put("1", assets=[{"id": 1, "name": "x", "download_count": 99}])
    gh.releases.put("2", body="better notes")
    gh.releases.delete("3")
    await env.poll()
    assert await env.changes() == [("updated", "2"), ("deleted", "3")]


async def test_stripe_events_page_newer_with_ending_before_and_hold_the_anchor_back(
    env: Env,
) -> None:
    stripe, clock = env.sims.stripe, env.sims.clock
    for _ in range(3):
        stripe.add_event("customer.created", "cus_old")
        clock.now_s += 100
    env.make("stripe", "events")
    await env.poll()  # the baseline: one page (of two) of the newest events
    assert [query(r) for r in env.requests()] == [{"limit": "100"}]
    new = []
    for i in range(3):
        new.append(stripe.add_event("invoice.paid", f"in_{i}"))
        clock.now_s += 1
    clock.now_s -= 13
    late = stripe.add_event("charge.refunded", "ch_1", lag_s=20)  # created earlier, seen later
    clock.now_s += 15
    await env.poll()
    # ending_before the anchor (the newest event at least a minute older than the newest),
    # then ending_before each page's first (newest) id while has_more.
    asked = [query(r).get("ending_before") for r in env.requests()]
    assert asked[0] == "evt_000002" and asked[1] == new[0] and len(asked) == 2
    events = await env.events()
    assert [e.data["id"] for e in events] == new  # by time, across pages
    assert events[0].type == "invoice.paid" and events[0].subject == "in_0"
    clock.now_s += 10
    await env.poll()  # the late event appears behind newer ones: the anchor held back finds it
    await env.poll()
    assert [e.data["id"] for e in await env.events()] == [*new, late]


async def test_stripe_customers_are_incremental_on_created_with_starting_after_pages(
    env: Env,
) -> None:
    stripe, clock = env.sims.stripe, env.sims.clock
    for i in range(3):
        stripe.add_customer(f"old{i}@example.com")
    env.make("stripe", "customers")
    await env.poll()
    assert [query(r).get("starting_after") for r in env.requests()] == [None, "cus_000002"]
    clock.now_s += 30
    added = [stripe.add_customer(f"new{i}@example.com") for i in range(3)]
    await env.poll()
    asked = env.requests()
    assert query(asked[0])["created[gte]"] == str(clock.now_s - 30 - 60)
    # The lookback asks again for the old ones, stamped inside the minute: they emit nothing.
    assert [query(r).get("starting_after") for r in asked] == [None, added[1], "cus_000003"]
    assert sorted(await env.changes()) == [("created", c) for c in added]


async def test_shopify_orders_send_filters_only_on_the_first_request_then_page_info(
    env: Env,
) -> None:
    shop, clock = env.sims.shopify, env.sims.clock
    orders = shop.collections["orders"]
    for n in range(1, 5):
        orders.put(str(n), name=f"#{1000 + n}")
    orders.put("5", status="closed")  # listed only with status=any
    env.make("shopify", "orders")
    await env.poll()
    asked = [query(r) for r in env.requests()]
    assert len(asked) == 3 and set(asked[0]) == {"limit", "status", "updated_at_min"}
    assert all(set(q) == {"limit", "page_info"} for q in asked[1:])  # refused otherwise
    clock.now_s += 30
    orders.put("3", name="#1003 edited")
    orders.put("6", name="#1006", lag_s=5)
    await env.poll()
    assert query(env.requests()[0])["updated_at_min"] == "2030-03-17T17:45:40Z"
    clock.now_s += 10
    await env.poll()
    assert await env.changes() == [("updated", "3"), ("created", "6")]
    event = (await env.events())[0]
    assert event.time_ms == (clock.now_s - 10) * 1000  # `-04:00` read as the same instant


async def test_gitlab_issues_send_updated_after_and_follow_link_pages(env: Env) -> None:
    lab, clock = env.sims.gitlab, env.sims.clock
    issues = lab.collections["issues"]
    for n in range(1, 4):
        issues.put(str(n), title=f"issue {n}")
    env.make("gitlab", "issues")
    await env.poll()
    asked = env.requests()
    assert len(asked) == 2 and asked[0].path.startswith("/api/v4/projects/group%2Fproject/")
    assert asked[0].headers["private-token"] == GITLAB_TOKEN
    assert query(asked[0])["order_by"] == "updated_at" and "updated_after" in query(asked[0])
    clock.now_s += 30
    issues.put("1", state="closed")
    issues.put("4", title="issue 4")
    await env.poll()
    assert await env.changes() == [("updated", "1"), ("created", "4")]
