"""Polling against answers shaped as real servers shape them (see tests/scripted_server.py).

Each case is one way real API servers differ from our own simulated upstream: RFC 8288 links,
per-page ETags, query strings in `url`, cursors that end oddly, compressed, chunked, charset
and BOM bodies, problem documents answered as 200, redirects and answers without end. A
poll that cannot use the answer is a fault that changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.events import Event
from bridge.poll.engine import Poller
from bridge.poll.links import next_link, parse_links
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli
from tests.scripted_server import Reply, Script, Seen, scripted_server

pytestmark = pytest.mark.anyio


class Env:
    """A poller of one source `s` over a real store."""

    def __init__(self, store: SQLiteStore, script: Script, base: str) -> None:
        self.store, self.script, self.base = store, script, base
        self.pollers: list[Poller] = []

    def make(self, url: str, **poll: Any) -> Poller:
        source = {"url": self.base + url, "every": "1s", "id": "id", **poll}
        data = {
            "database": "bridge.db",
            "sources": {"s": {"poll": source}},
            "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
        }
        poller = Poller(Runtime(config=parse_config(yaml.safe_dump(data)), store=self.store))
        self.pollers.append(poller)
        return poller

    async def poll(self) -> None:
        await self.pollers[-1].poll_once("s")

    async def events(self) -> list[tuple[str | None, str | None]]:
        listed: list[Event] = await self.store.list_events(source="s", limit=None)
        return sorted((e.change, e.subject) for e in listed)

    async def error(self) -> str | None:
        return (await self.store.load_poll_state("s")).last_error

    async def keys(self) -> list[str]:
        return sorted(await self.store.load_poll_versions("s"))


@pytest.fixture
async def env(store: SQLiteStore, server: tuple[Script, str]) -> AsyncIterator[Env]:
    e = Env(store, *server)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


def etag_of(body: Any) -> str:
    return '"' + hashlib.sha1(json.dumps(body).encode(), usedforsecurity=False).hexdigest() + '"'


def conditional(body: Any, headers: list[tuple[str, str]] | None = None, weak: bool = False):
    """A route that sets an ETag over the body alone and honours If-None-Match."""

    def answer(seen: Seen) -> Reply:
        tag = ("W/" if weak else "") + etag_of(body)
        extra = [("ETag", tag), *(headers or [])]
        if seen.headers.get("if-none-match") == tag:
            return Reply(304, headers=extra)
        return Reply(200, body, headers=extra)

    return answer


def items(*ids: Any, **fields: Any) -> list[dict[str, Any]]:
    return [{"id": i, **fields} for i in ids]


# -- the two defects ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["link", "next_url", "cursor"])
async def test_a_change_on_page_2_makes_its_events_although_page_1_answers_304(
    env: Env, style: str
) -> None:
    page1, page2 = items(1, 2, 3), items(4, 5, 6, n=0)
    nxt: dict[str, Any] = {"link": {}, "next_url": {"next": "/items?page=2"}, "cursor": {"c": "2"}}
    link = [("Link", '</items?page=2>; rel="next"')] if style == "link" else []

    def serve() -> None:
        env.script.route("/items", conditional({"data": page1, **nxt[style]}, link))
        env.script.route("/items?page=2", conditional({"data": page2}))

    serve()
    pages: dict[str, Any] = {
        "link": "link",
        "next_url": {"next_url": "next"},
        "cursor": {"cursor": "c", "param": "page"},
    }
    env.make("/items", items="data", pages=pages[style])
    await env.poll()
    assert await env.keys() == ["1", "2", "3", "4", "5", "6"]
    page2[0]["n"] = 1  # an update on page 2
    del page2[1]  # a delete on page 2
    page2.append({"id": 7})  # a create on page 2
    serve()
    await env.poll()
    assert await env.events() == [("created", "7"), ("updated", "4")]
    await env.poll()  # the next walk confirms that 5 is gone (see poll/pending.py)
    assert await env.events() == [("created", "7"), ("deleted", "5"), ("updated", "4")]
    # Page 1's validators are never sent for a paginated source: a 304 never hides a page.
    assert all("if-none-match" not in s.headers for s in env.script.seen)


async def test_the_query_string_of_url_is_requested_exactly(env: Env) -> None:
    env.script.route("/items", Reply(body=items(1)))
    env.make("/items?_page=1&_limit=10&tag=a&tag=b")
    await env.poll()
    assert env.script.paths() == ["/items?_page=1&_limit=10&tag=a&tag=b"]
    assert await env.keys() == ["1"]


async def test_params_merge_into_the_query_of_url_and_win_on_a_shared_key(env: Env) -> None:
    env.script.route("/items", Reply(body=items(1)))
    env.make("/items?a=1&b=2", params={"b": 3, "c": "x y"})
    await env.poll()
    assert env.script.paths() == ["/items?a=1&b=3&c=x+y"]


async def test_cursor_pages_keep_the_query_of_url(env: Env) -> None:
    env.script.route("/items?per_page=2", Reply(body={"data": items(1, 2), "next": "n1"}))
    env.script.route("/items?per_page=2&after=n1", Reply(body={"data": items(3), "next": None}))
    env.make("/items?per_page=2", items="data", pages={"cursor": "next", "param": "after"})
    await env.poll()
    assert await env.keys() == ["1", "2", "3"]


# -- links -------------------------------------------------------------------------------------


def test_link_header_parsing_follows_rfc_8288() -> None:
    fields = [
        '<https://api.example/items?page=1>; rel="first prev", '
        '</items?page=3&x=1>; title="a, b; <c>"; rel="last NEXT"; rel=prev',
        "<ignored>; rel=next",
    ]
    links = parse_links(fields)
    assert [link.target for link in links] == [
        "https://api.example/items?page=1",
        "/items?page=3&x=1",
        "ignored",
    ]
    assert links[1].params["title"] == "a, b; <c>"
    assert links[1].rels == ("last", "next")  # the first rel counts, case folded
    assert next_link(fields) == "/items?page=3&x=1"
    assert next_link(['<a>; rel="prev"', 'junk <b>; rel="next"']) is None
    assert next_link(['<x>; rel="ne\\"xt"']) is None
    assert next_link([]) is None


async def test_link_with_several_relations_quoted_params_and_a_relative_target(env: Env) -> None:
    env.script.route(
        "/api/v1/items",
        Reply(
            body=items(1),
            headers=[
                (
                    "Link",
                    '</api/v1/items>; rel="first", <items?page=2>; title="x, y"; rel="last next"',
                )
            ],
        ),
    )
    env.script.route(
        "/api/v1/items?page=2",
        Reply(body=items(2), headers=[("Link", "<?page=3>; rel=next"), ("Link", "<x>; rel=prev")]),
    )
    env.script.route("/api/v1/items?page=3", Reply(body=items(3)))
    env.make("/api/v1/items", pages="link")
    await env.poll()
    assert env.script.paths() == ["/api/v1/items", "/api/v1/items?page=2", "/api/v1/items?page=3"]
    assert await env.keys() == ["1", "2", "3"]


async def test_an_empty_page_that_still_has_a_next_link_does_not_end_the_walk(env: Env) -> None:
    env.script.route("/items", Reply(body=items(1), headers=[("Link", "</items?p=2>; rel=next")]))
    env.script.route("/items?p=2", Reply(body=[], headers=[("Link", "</items?p=3>; rel=next")]))
    env.script.route("/items?p=3", Reply(body=items(3)))
    env.make("/items", pages="link")
    await env.poll()
    assert await env.keys() == ["1", "3"]


@pytest.mark.parametrize("end", [None, "", False])
async def test_a_null_or_empty_cursor_ends_the_walk(env: Env, end: Any) -> None:
    env.script.route("/items", Reply(body={"data": items(1), "c": "2"}))
    env.script.route("/items?page=2", Reply(body={"data": items(2), "c": end}))
    env.make("/items", items="data", pages={"cursor": "c", "param": "page"})
    await env.poll()
    assert await env.keys() == ["1", "2"] and await env.error() is None


async def test_a_cursor_that_repeats_is_a_fault_that_changes_nothing(env: Env) -> None:
    env.script.route("/items", Reply(body={"data": items(1), "c": "2"}))
    env.make("/items", items="data", pages={"cursor": "c", "param": "page"})
    env.script.route("/items?page=2", Reply(body={"data": items(2), "c": "3"}))
    env.script.route("/items?page=3", Reply(body={"data": items(3), "c": None}))
    await env.poll()
    env.script.route("/items?page=3", Reply(body={"data": [], "c": "2"}))  # back to page 2
    await env.poll()
    assert "loops back" in (await env.error() or "")
    assert await env.keys() == ["1", "2", "3"] and await env.events() == []


# -- conditional requests on a single page -----------------------------------------------------


async def test_a_weak_etag_is_sent_back_as_it_came_and_its_304_counts(env: Env) -> None:
    env.script.route("/items", conditional(items(1), weak=True))
    env.make("/items")
    await env.poll()
    await env.poll()
    assert env.script.seen[-1].headers["if-none-match"].startswith('W/"')
    state = await env.store.load_poll_state("s")
    assert (state.not_modified, state.last_status) == (1, 304)


async def test_a_server_that_ignores_if_none_match_costs_a_full_answer_and_emits_nothing(
    env: Env,
) -> None:
    env.script.route("/items", Reply(body=items(1, 2), headers=[("ETag", '"v1"')]))
    env.make("/items")
    await env.poll()
    await env.poll()
    assert env.script.seen[-1].headers["if-none-match"] == '"v1"'
    state = await env.store.load_poll_state("s")
    assert (state.not_modified, state.last_status) == (0, 200)
    assert await env.events() == []


async def test_last_modified_without_an_etag_sends_if_modified_since(env: Env) -> None:
    stamp = "Tue, 01 Dec 2026 10:00:00 GMT"

    def answer(seen: Seen) -> Reply:
        if seen.headers.get("if-modified-since") == stamp:
            return Reply(304)
        return Reply(body=items(1), headers=[("Last-Modified", stamp)])

    env.script.route("/items", answer)
    env.make("/items")
    await env.poll()
    await env.poll()
    assert "if-none-match" not in env.script.seen[-1].headers
    assert (await env.store.load_poll_state("s")).not_modified == 1


async def test_a_304_without_a_conditional_request_is_a_fault(env: Env) -> None:
    env.script.route("/items", Reply(304))
    env.make("/items")
    await env.poll()
    assert "HTTP 304" in (await env.error() or "")


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_bodies_are_decoded(env: Env, encoding: str) -> None:
    env.script.route("/items", Reply(body=items(1, 2, name="x" * 500), encoding=encoding))
    env.make("/items")
    await env.poll()
    assert await env.keys() == ["1", "2"] and await env.error() is None


async def test_a_chunked_body_is_read_whole(env: Env) -> None:
    env.script.route("/items", Reply(body=items(*range(50)), chunked=True))
    env.make("/items")
    await env.poll()
    assert len(await env.keys()) == 50


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/json; charset=utf-8", '[{"id": "café"}]'.encode()),
        ("application/json; charset=ISO-8859-1", '[{"id": "café"}]'.encode("latin-1")),
        ("application/json", b"\xef\xbb\xbf" + '[{"id": "café"}]'.encode()),  # a UTF-8 BOM
        ("application/json; charset=utf-8", b"\xef\xbb\xbf" + '[{"id": "café"}]'.encode()),
        ("text/plain", '[{"id": "café"}]'.encode()),
        (None, '[{"id": "café"}]'.encode()),
    ],
)
async def test_charsets_boms_and_other_content_types_are_read_as_json(
    env: Env, content_type: str | None, raw: bytes
) -> None:
    env.script.route("/items", Reply(body=raw, content_type=content_type))
    env.make("/items")
    await env.poll()
    assert await env.keys() == ["café"] and await env.error() is None


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_a_number_that_is_not_finite_is_a_fault(env: Env, number: str) -> None:
    env.script.route("/items", Reply(body=f'[{{"id": 1, "n": {number}}}]'.encode()))
    env.make("/items")
    await env.poll()
    assert "not valid JSON" in (await env.error() or "") and await env.keys() == []


async def test_an_error_answered_as_200_with_a_problem_document_changes_nothing(
    env: Env,
) -> None:
    env.script.route("/items", Reply(body=items(1, 2)))
    env.make("/items")
    await env.poll()
    problem = {"type": "about:blank", "title": "Upstream busy", "status": 503, "items": []}
    env.script.route("/items", Reply(body=problem, content_type="application/problem+json"))
    await env.poll()
    assert "problem document: 'Upstream busy'" in (await env.error() or "")
    assert await env.keys() == ["1", "2"] and await env.events() == []


# -- redirects ---------------------------------------------------------------------------------


async def test_a_redirect_is_not_followed_by_default_and_changes_nothing(env: Env) -> None:
    env.script.route("/items", Reply(body=items(1, 2)))
    env.make("/items")
    await env.poll()
    env.script.route("/items", Reply(302, headers=[("Location", "/moved")]))
    env.script.route("/moved", Reply(body=[]))
    await env.poll()
    assert "redirect not followed" in (await env.error() or "")
    assert "/moved" not in env.script.paths()
    assert await env.keys() == ["1", "2"] and await env.events() == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_same_origin_redirect_is_followed_with_follow_redirects(
    env: Env, status: int
) -> None:
    env.script.route("/items", Reply(status, headers=[("Location", "/v2/items?x=1")]))
    env.script.route("/v2/items", Reply(body=items(1)))
    env.make("/items", follow_redirects=True, headers={"X-Api-Key": "k-123"})
    await env.poll()
    assert env.script.paths() == ["/items", "/v2/items?x=1"]
    assert env.script.seen[-1].headers["x-api-key"] == "k-123"
    assert await env.keys() == ["1"]


async def test_a_redirect_to_another_origin_is_never_followed(env: Env) -> None:
    with scripted_server() as (other, other_base):
        other.route("/items", Reply(body=[]))
        env.script.route("/items", Reply(body=items(1, 2)))
        env.make("/items", follow_redirects=True, headers={"X-Api-Key": "k-123"})
        await env.poll()
        env.script.route("/items", Reply(302, headers=[("Location", other_base + "/items")]))
        await env.poll()
        assert other.seen == [], "the credentials went to another origin"
    assert "another origin" in (await env.error() or "")
    assert await env.keys() == ["1", "2"] and await env.events() == []


async def test_a_redirect_loop_ends_as_a_fault(env: Env) -> None:
    env.script.route("/items", Reply(302, headers=[("Location", "/items")]))
    env.make("/items", follow_redirects=True)
    await env.poll()
    assert "redirects" in (await env.error() or "")
    assert len(env.script.seen) == 6


# -- bounds ------------------------------------------------------------------------------------


async def test_an_answer_larger_than_max_bytes_is_a_fault_that_changes_nothing(env: Env) -> None:
    env.script.route("/items", Reply(body=items(1, 2)))
    env.make("/items", max_bytes="1KiB")
    await env.poll()
    env.script.route("/items", Reply(body=items(*range(200), pad="x" * 20)))
    await env.poll()
    assert "larger than max_bytes" in (await env.error() or "")
    assert await env.keys() == ["1", "2"] and await env.events() == []


async def test_max_bytes_counts_every_page_of_the_walk(env: Env) -> None:
    page = items(*range(20), pad="x" * 30)  # about 1 KB a page
    env.script.route("/items", Reply(body=page, headers=[("Link", "</items?p=2>; rel=next")]))
    env.script.route("/items?p=2", Reply(body=page, headers=[("Link", "</items?p=3>; rel=next")]))
    env.script.route("/items?p=3", Reply(body=page))
    env.make("/items", pages="link", max_bytes=2500)
    await env.poll()
    assert "larger than max_bytes" in (await env.error() or "")
    assert await env.keys() == []


async def test_an_endless_answer_is_cut_at_max_bytes(env: Env) -> None:
    env.script.route("/items", Reply(endless_chunk=b"a" * 65536, endless_s=20))
    env.make("/items", max_bytes="1MiB", timeout="30s")
    await env.poll()
    assert "larger than max_bytes" in (await env.error() or "")
    # The bridge hung up soon after the cap: the server wrote the cap plus what the socket
    # buffers hold (a few MiB on loopback), not the gigabytes of 20 s at loopback speed.
    assert env.script.streamed_bytes < 64 * 1024 * 1024


async def test_timeout_bounds_the_whole_request_not_only_each_read(env: Env) -> None:
    # A byte every 50 ms: no single read waits long, but the answer takes about 5 s.
    body = json.dumps(items(1)).encode().ljust(100)
    env.script.route("/items", Reply(body=body, trickle_s=0.05))
    env.make("/items", timeout="1s")
    await env.poll()
    assert "timed out after 1 s" in (await env.error() or "")
    assert await env.keys() == []


def test_bridge_check_warns_when_params_replace_a_key_of_the_query(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "sources:\n  s:\n    poll:\n      url: http://127.0.0.1:9/items?a=1&b=2\n"
        "      params: {b: 3, c: 4}\n      every: 5s\n      id: id\n"
    )
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "warning   s: params.b replaces b in the query of url"
