"""What a polled upstream names or asks for, against real HTTP servers on 127.0.0.1.

- Every URL the upstream names (a `Link`, a `next_url`) is judged by its origin: another
  origin is the fault `origin`, never requested, unless `pages.allow_origins` lists it, and
  then it gets none of the source's headers, user-info or configured parameters. The second
  origin here is a second server on another port, recording what it received.
- Rate-limit values that cannot be read (`²`, 400 digits) never break a poll: it is recorded,
  its items compared, and a 429 still backs off; a wait longer than `limits.max_wait` is
  that long, and the poll's error says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.poll.engine import Poller
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.scripted_server import Reply, Script, scripted_server

pytestmark = pytest.mark.anyio

TOKEN = "tok-secret-1"
BASIC = "Basic YWxpY2U6cHctc2VjcmV0LTM="  # alice:pw-secret-3
KEY = "key-secret-2"
# `²` as UTF-8 (C2 B2): the scripted server writes header values as latin-1 bytes.
SUPERSCRIPT_TWO = "\u00c2\u00b2"


@pytest.fixture
def other() -> Iterator[tuple[Script, str]]:
    """A second server: another origin (another port of 127.0.0.1)."""
    with scripted_server() as served:
        yield served


@pytest.fixture
async def pollers() -> AsyncIterator[list[Poller]]:
    made: list[Poller] = []
    yield made
    for poller in made:
        await poller.stop(1.0)


def make(
    store: SQLiteStore, made: list[Poller], top: dict[str, Any] | None = None, **poll: Any
) -> Poller:
    source = {"every": "1s", "id": "id", **poll}
    data = {"database": "bridge.db", "sources": {"s": {"poll": source}}, **(top or {})}
    poller = Poller(Runtime(config=parse_config(yaml.safe_dump(data)), store=store))
    made.append(poller)
    return poller


def credentials(base: str) -> dict[str, Any]:
    user_url = base.replace("http://", "http://alice:pw-secret-3@") + "/items?api_key=" + KEY
    return {"url": user_url, "headers": {"X-Api-Token": TOKEN}, "params": {"token": "t-4"}}


def first_page(other_url: str, style: str) -> Reply:
    # The upstream echoes the query, keys included, as GitHub's Link headers do.
    target = f"{other_url}/page2?api_key={KEY}&token=t-4&page=2"
    if style == "link":
        return Reply(200, [{"id": 1}], headers=[("Link", f'<{target}>; rel="next"')])
    return Reply(200, {"data": [{"id": 1}], "next": target})


def pages(style: str, **more: Any) -> dict[str, Any]:
    if style == "link":
        return {"pages": {"link": True, **more} if more else "link"}
    return {"items": "data", "pages": {"next_url": "next", **more}}


@pytest.mark.parametrize("style", ["link", "next_url"])
async def test_a_next_page_on_another_origin_is_a_fault_and_never_requested(
    store: SQLiteStore,
    pollers: list[Poller],
    server: tuple[Script, str],
    other: tuple[Script, str],
    style: str,
) -> None:
    (script, url), (elsewhere, other_url) = server, other
    script.route("/items", first_page(other_url, style))
    elsewhere.route("/page2", Reply(200, {"data": [{"id": 2}]} if style != "link" else [{"id": 2}]))
    poller = make(store, pollers, **credentials(url), **pages(style))
    await poller.poll_once("s")
    assert elsewhere.seen == []
    state = await store.load_poll_state("s")
    assert state.consecutive_failures == 1 and not state.baselined
    assert state.last_error is not None
    assert "the next page is on another origin" in state.last_error
    assert "pages.allow_origins" in state.last_error
    assert KEY not in state.last_error and "pw-secret-3" not in state.last_error


@pytest.mark.parametrize("style", ["link", "next_url"])
async def test_an_allowed_origin_gets_no_credentials(
    store: SQLiteStore,
    pollers: list[Poller],
    server: tuple[Script, str],
    other: tuple[Script, str],
    style: str,
) -> None:
    (script, url), (elsewhere, other_url) = server, other
    script.route("/items", first_page(other_url, style))
    elsewhere.route("/page2", Reply(200, {"data": [{"id": 2}]} if style != "link" else [{"id": 2}]))
    allowed = pages(style, allow_origins=[other_url])
    poller = make(store, pollers, **credentials(url), **allowed)
    await poller.poll_once("s")
    state = await store.load_poll_state("s")
    assert state.consecutive_failures == 0 and state.items == 2
    (own,) = script.seen
    # The source's origin: its credentials (the user-info as Basic auth).
    assert own.headers["x-api-token"] == TOKEN and own.headers["authorization"] == BASIC
    assert f"api_key={KEY}" in own.path and "token=t-4" in own.path
    (bare,) = elsewhere.seen
    assert "authorization" not in bare.headers and "x-api-token" not in bare.headers
    assert bare.path == "/page2?page=2"  # the configured parameters left out
    assert all("secret" not in value for value in bare.headers.values())


async def test_a_same_origin_absolute_next_link_keeps_the_credentials(
    store: SQLiteStore, pollers: list[Poller], server: tuple[Script, str]
) -> None:
    script, url = server
    script.route("/items", Reply(200, [{"id": 1}], headers=[("Link", f'<{url}/p2>; rel="next"')]))
    script.route("/p2", Reply(200, [{"id": 2}]))
    poller = make(store, pollers, **credentials(url), pages="link")
    await poller.poll_once("s")
    assert [s.headers["authorization"] for s in script.seen] == [BASIC, BASIC]
    assert [s.headers["x-api-token"] for s in script.seen] == [TOKEN, TOKEN]
    assert (await store.load_poll_state("s")).items == 2


# -- rate-limit values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("X-RateLimit-Remaining", "9" * 400)],
        [("RateLimit", '"d";r=' + "9" * 400 + ";t=" + "9" * 400)],
        [("X-RateLimit-Remaining", "5"), ("X-RateLimit-Limit", "1" * 5000)],
    ],
)
async def test_an_unreadable_rate_limit_value_never_breaks_a_poll(
    store: SQLiteStore,
    pollers: list[Poller],
    server: tuple[Script, str],
    headers: list[tuple[str, str]],
) -> None:
    script, url = server
    items = [{"id": 1}]
    script.route("/items", lambda _seen: Reply(200, list(items), headers=headers))
    poller = make(store, pollers, url=url + "/items", baseline="silent")
    first = await poller.poll_once("s")
    assert first.wait_s == 0.0
    items.append({"id": 2})
    await poller.poll_once("s")
    state = await store.load_poll_state("s")
    assert state.consecutive_failures == 0 and state.items == 2
    assert [e.subject for e in await store.list_events(source="s")] == ["2"]


async def test_a_429_with_an_unreadable_retry_after_backs_off_by_the_policy(
    store: SQLiteStore, pollers: list[Poller], server: tuple[Script, str]
) -> None:
    script, url = server
    script.route("/items", Reply(429, {}, headers=[("Retry-After", SUPERSCRIPT_TWO)]))
    poller = make(store, pollers, url=url + "/items")
    result = await poller.poll_once("s")
    assert result.throttled and result.retry_after_s is None and result.wait_s == 0.0
    state = await store.load_poll_state("s")
    assert state.last_status == 429 and state.consecutive_failures == 1


@pytest.mark.parametrize(
    "headers",
    [
        [("Retry-After", "9" * 400)],
        [("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")],
        [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "9" * 400)],
        [("RateLimit", '"d";r=0;t=' + "9" * 400)],
    ],
)
async def test_a_wait_beyond_max_wait_waits_max_wait_and_says_so(
    store: SQLiteStore,
    pollers: list[Poller],
    server: tuple[Script, str],
    headers: list[tuple[str, str]],
) -> None:
    script, url = server
    script.route("/items", Reply(429, {}, headers=headers))
    poller = make(store, pollers, url=url + "/items", top={"limits": {"max_wait": "10m"}})
    result = await poller.poll_once("s")
    assert result.throttled
    assert result.wait_s == 600.0
    assert result.wait_why is not None and "limits.max_wait" in result.wait_why
    state = await store.load_poll_state("s")
    assert state.last_error is not None
    assert "it asks to wait more than limits.max_wait: waiting 600 s" in state.last_error


async def test_max_wait_defaults_to_an_hour(
    store: SQLiteStore, pollers: list[Poller], server: tuple[Script, str]
) -> None:
    script, url = server
    script.route("/items", Reply(200, [], headers=[("X-Poll-Interval", "86400")]))
    result = await make(store, pollers, url=url + "/items").poll_once("s")
    assert result.wait_s == 3600.0
