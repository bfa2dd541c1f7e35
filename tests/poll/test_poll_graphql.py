"""GraphQL sources: a real GraphQL server (Strawberry on uvicorn, `make tools`) serving a Relay
connection, Shopify's GraphQL Admin API through its preset against the simulation
(tests/poll/providers.py), and the answers that are faults: errors, THROTTLED, a budget
that cannot pay for the next page."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.config import PollConfig, parse_config
from bridge.config.presets import shopify_query
from bridge.errors import FetchError
from bridge.poll.fetch import Fetched, fetch
from bridge.poll.graphql import MAX_PAGE_WAIT_S, read_cost
from bridge.poll.transport import new_client
from bridge.store.base import PollState
from bridge.store.sqlite import SQLiteStore
from tests.poll.providers import SHOPIFY_TOKEN
from tests.poll.test_presets import Env
from tests.scripted_server import Reply, Script, Seen
from tests.third_party import Server, free_port, run_server

pytestmark = pytest.mark.anyio

GRAPHQL_PYTHON = Path(__file__).parents[2] / ".tools" / "graphql" / "bin" / "python"
BOOKS_SERVER = Path(__file__).parent / "servers" / "graphql_books.py"
BOOKS_QUERY = """
query Books($first: Int!, $after: String, $since: String) {
  books(first: $first, after: $after, updatedSince: $since) {
    edges { cursor node { id title updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


PAGE_INFO = "books.pageInfo"


def poll_of(poll: dict[str, Any]) -> PollConfig:
    config = parse_config(yaml.safe_dump({"database": "x.db", "sources": {"s": {"poll": poll}}}))
    source = config.sources["s"].poll
    assert source is not None
    return source


def books_source(url: str, **keys: Any) -> dict[str, Any]:
    return {
        "url": url,
        "every": "1m",
        "request": {"graphql": {"query": BOOKS_QUERY, "variables": {"first": 2}}},
        "items": "books.edges[].node",
        "pages": {
            "graphql": {"has_next": PAGE_INFO + ".hasNextPage", "cursor": PAGE_INFO + ".endCursor"}
        },
        "id": "id",
        "version": "updatedAt",
        **keys,
    }


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Server]:
    if not GRAPHQL_PYTHON.exists():
        pytest.skip("strawberry-graphql not installed (make tools)")
    port = free_port()
    command = [str(GRAPHQL_PYTHON), str(BOOKS_SERVER), str(port)]
    with run_server(command, port, tmp_path / "strawberry.log", ready_path="/graphql") as server:
        yield server


def put_book(server: Server, key: str, title: str) -> str:
    mutation = "mutation($id: ID!, $t: String!) { putBook(id: $id, title: $t) { updatedAt } }"
    answer = httpx.post(
        server.url + "/graphql", json={"query": mutation, "variables": {"id": key, "t": title}}
    )
    return str(answer.json()["data"]["putBook"]["updatedAt"])


async def test_a_relay_connection_of_a_real_graphql_server_is_read_page_by_page(
    books: Server, store: SQLiteStore
) -> None:
    from bridge.poll.engine import Poller
    from bridge.runtime import Runtime

    for key in "12345":
        put_book(books, key, f"book {key}")
    config = parse_config(yaml.safe_dump(
        {"database": "x.db", "sources": {"s": {"poll": books_source(books.url + "/graphql")}}}
    ))  # fmt: skip
    poller = Poller(Runtime(config=config, store=store))
    try:
        await poller.poll_once("s")  # the baseline: five books over three pages
        state = await store.load_poll_state("s")
        assert state.last_error is None and state.baselined
        put_book(books, "2", "book 2, second edition")
        put_book(books, "6", "book 6")
        await poller.poll_once("s")
        state = await store.load_poll_state("s")
        assert state.last_error is None, state.last_error
        events = list(reversed(await store.list_events(source="s", limit=None)))
        assert [(e.change, e.subject) for e in events] == [("updated", "2"), ("created", "6")]
        assert events[0].data["object"]["title"] == "book 2, second edition"
        assert events[0].data["previous_attributes"] == {
            "title": "book 2",
            "updatedAt": events[0].data["previous_attributes"]["updatedAt"],
        }
    finally:
        await poller.stop(1.0)


async def test_a_real_graphql_server_takes_the_incremental_cursor_as_a_variable(
    books: Server,
) -> None:
    from bridge.poll.detect import detect

    for key in "123":
        put_book(books, key, f"book {key}")
    poll = poll_of(books_source(
        books.url + "/graphql",
        mode="incremental",
        cursor={"field": "updatedAt", "variable": "since", "format": "rfc3339", "lookback": "0s",
                "start": "3650d", "max_skew": "3650d"},
    ))  # fmt: skip
    async with new_client() as client:
        first = await detect(client, "s", poll, store=None, state=PollState(source="s"))
        assert sorted(first.indexed.items) == ["1", "2", "3"]
        assert first.cursor is not None
        stamp = put_book(books, "2", "retitled")
        state = PollState(source="s", cursor=first.cursor, baselined=True)
        second = await detect(client, "s", poll, store=None, state=state)
    # Only what changed since the watermark (book 3's stamp, sent as $since) came back.
    assert sorted(second.indexed.items) == ["2", "3"]
    assert second.indexed.items["2"][1] == {"id": "2", "title": "retitled", "updatedAt": stamp}


async def test_an_errors_answer_of_a_real_graphql_server_is_a_fault_with_its_message(
    books: Server,
) -> None:
    query = "query($first: Int!, $after: String) { books(first: $first, after: $after) { nope } }"
    poll = poll_of(books_source(books.url + "/graphql", request={"graphql": {"query": query,
                                "variables": {"first": 2}}}))  # fmt: skip
    async with new_client() as client:
        with pytest.raises(FetchError) as caught:
            await fetch(client, poll)
    assert caught.value.reason == "graphql"
    assert "the GraphQL answer has errors: \"Cannot query field 'nope'" in str(caught.value)


# -- scripted answers ------------------------------------------------------------------------


def test_an_errors_answer_shows_the_first_message_and_keeps_nothing(
    server: tuple[Script, str],
) -> None:
    script, base = server
    errors = [{"message": "Access denied for products field."}, {"message": "second"}]
    script.route("/graphql", Reply(200, {"data": {"books": None}, "errors": errors}))
    poll = poll_of(books_source(base + "/graphql"))

    async def run() -> tuple[FetchError, Fetched]:
        out = Fetched()
        async with new_client() as client:
            try:
                await fetch(client, poll, out=out)
            except FetchError as exc:
                return exc, out
        raise AssertionError("no fault")

    import asyncio

    exc, out = asyncio.run(run())
    assert str(exc).endswith("the GraphQL answer has errors: 'Access denied for products field.'"
                             " (and 1 more)")  # fmt: skip
    assert exc.reason == "graphql" and out.items == []
    seen = script.seen[0]
    assert seen.method == "POST" and seen.headers["content-type"] == "application/json"
    assert seen.json() == {"query": BOOKS_QUERY, "variables": {"first": 2}}


@pytest.mark.parametrize(
    "body",
    [[1, 2], {"data": None}, {"errors": "boom"}, {"data": {"books": {"edges": []}}, "errors": []}],
    ids=["not-an-object", "no-data", "errors-not-a-list", "empty-errors-is-fine"],
)
async def test_answers_without_usable_data_are_faults(
    server: tuple[Script, str], body: Any
) -> None:
    script, base = server
    script.route("/graphql", Reply(200, body))
    poll = poll_of(books_source(base + "/graphql", items="books.edges", pages=None))
    async with new_client() as client:
        if body == {"data": {"books": {"edges": []}}, "errors": []}:
            assert (await fetch(client, poll)).items == []
            return
        with pytest.raises(FetchError) as caught:
            await fetch(client, poll)
    assert caught.value.reason == "graphql"


async def test_a_request_error_answered_with_a_4xx_shows_its_first_message(
    server: tuple[Script, str],
) -> None:
    script, base = server
    errors = {"errors": [{"message": 'Syntax Error: Expected Name, found "}".'}]}
    script.route("/graphql", Reply(400, errors, content_type="application/graphql-response+json"))
    async with new_client() as client:
        with pytest.raises(FetchError) as caught:
            await fetch(client, poll_of(books_source(base + "/graphql")))
    assert str(caught.value).endswith(
        """/graphql: HTTP 400: 'Syntax Error: Expected Name, found "}".'"""
    )
    assert caught.value.reason == "status" and caught.value.status == 400


async def test_a_page_cursor_that_repeats_is_a_loop_not_an_endless_walk(
    server: tuple[Script, str],
) -> None:
    script, base = server
    page = {"books": {"edges": [{"node": {"id": "1"}}],
                      "pageInfo": {"hasNextPage": True, "endCursor": "same"}}}  # fmt: skip
    script.route("/graphql", Reply(200, {"data": page}))
    async with new_client() as client:
        with pytest.raises(FetchError, match="loops back"):
            await fetch(client, poll_of(books_source(base + "/graphql")))
    assert len(script.seen) == 2


def test_the_cost_budget_holds_the_next_request_until_it_can_pay() -> None:
    body = {"extensions": {"cost": {"requestedQueryCost": 252, "actualQueryCost": 12,
            "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 152.0,
                               "restoreRate": 100.0}}}}  # fmt: skip
    limits = read_cost(body, now_s=1000.0)
    assert limits.not_before_s == pytest.approx(1001.0)
    assert (limits.remaining, limits.limit) == (152, 2000)
    assert limits.why is not None and "extensions.cost" in limits.why
    enough = json.loads(json.dumps(body).replace("152.0", "1999.0"))
    assert read_cost(enough, 1000.0).not_before_s is None
    for broken in ({}, {"extensions": {"cost": "x"}}, {"extensions": {"cost": {"throttleStatus":
                   {"currentlyAvailable": "NaN", "restoreRate": -1}}}}):  # fmt: skip
        assert read_cost(broken, 1000.0).not_before_s is None


# -- Shopify's GraphQL Admin API, through the preset ---------------------------------------


@pytest.fixture
async def env(store: SQLiteStore, server: tuple[Script, str]) -> AsyncIterator[Env]:
    e = Env(store, *server)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)
    assert e.sims.refused() == [], "a request the provider would have refused"


def small_pages(resource: str) -> dict[str, Any]:
    return {"graphql": {"query": shopify_query(resource), "variables": {"first": 2}}}


async def test_the_shopify_graphql_preset_polls_updated_at_through_cursor_pages(env: Env) -> None:
    products = env.sims.shopify.collections["products"]
    for key in "123":
        products.put(key, title=f"product {key}")
    env.make("shopify", "products", api="graphql", request=small_pages("products"))
    await env.poll()  # the baseline: three products, two pages
    assert [r.json()["variables"].get("after") is None for r in env.requests()] == [True, False]
    env.sims.clock.now_s += 600
    products.put("2", title="product 2, renamed")
    products.put("4", title="product 4")
    await env.poll()
    assert await env.changes() == [
        ("updated", "gid://shopify/Product/2"),
        ("created", "gid://shopify/Product/4"),
    ]
    # The watermark (the newest updatedAt seen, less a minute) in the search syntax.
    search = env.sims.shopify_graphql.searches[-1]
    assert search is not None and search.startswith("updated_at:>'2030-")
    assert all(r.headers["x-shopify-access-token"] == SHOPIFY_TOKEN for r in env.requests())


async def test_shopify_pages_wait_for_the_cost_budget_and_are_never_throttled(env: Env) -> None:
    sim = env.sims.shopify_graphql
    sim.maximum = sim.available = 10.0  # a page of two costs 4 points
    sim.restore_rate = 20.0
    for key in "123456":
        env.sims.shopify.collections["orders"].put(key, name=f"#{key}")
    env.make("shopify", "orders", api="graphql", request=small_pages("orders"))
    await env.poll()
    assert len(env.requests()) == 3 and sim.throttled == 0
    state = await env.store.load_poll_state("s")
    assert state.items == 6


@pytest.mark.parametrize("status", [200, 429])
async def test_a_throttled_shopify_answer_is_asked_again_after_the_budget_restores(
    env: Env, status: int
) -> None:
    sim = env.sims.shopify_graphql
    sim.throttled_status = status
    sim.available = 0.0  # the first request cannot be paid for: THROTTLED
    sim.restore_rate = 50.0
    env.sims.shopify.collections["customers"].put("1", displayName="Ann")
    env.make("shopify", "customers", api="graphql")
    await env.poll()
    assert sim.throttled == 1 and len(env.requests()) == 2
    assert (await env.store.load_poll_state("s")).items == 1


async def test_a_budget_too_slow_for_the_next_page_ends_the_walk_held_until_it_can_pay(
    env: Env,
) -> None:
    sim = env.sims.shopify_graphql
    sim.maximum = sim.available = 5.0
    sim.restore_rate = 0.1  # 40 s for the next page: longer than a walk waits
    for key in "123":
        env.sims.shopify.collections["products"].put(key, title=key)
    config = env.make("shopify", "products", api="graphql", request=small_pages("products"))
    poll = config.runtime.config.sources["s"].poll
    assert poll is not None
    before = time.time()
    async with new_client() as client:
        with pytest.raises(FetchError) as caught:
            await fetch(client, poll.model_copy(update={"mode": "snapshot"}))
    assert caught.value.reason == "throttled" and len(env.sims.shopify_graphql.answered) == 1
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > MAX_PAGE_WAIT_S
    assert caught.value.not_before_s is not None and caught.value.not_before_s > before + 30
    assert sim.throttled == 0


def test_a_seen_post_carries_its_json(server: tuple[Script, str]) -> None:
    script, base = server
    script.route("/p", Reply(200, {}))
    httpx.post(base + "/p", json={"a": 1})
    assert isinstance(script.seen[0], Seen) and script.seen[0].json() == {"a": 1}
