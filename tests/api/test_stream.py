"""`GET /api/v1/stream` on the real daemon: new events as Server-Sent Events, resumed by
`Last-Event-ID`, bounded per connection."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx

from tests.api.parts import AUTH, Bridge, assert_problem, running


def messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE messages (their fields) from the stream's lines; comments and `retry` skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def read(
    bridge: Bridge,
    count: int,
    headers: dict[str, str] | None = None,
    connected: threading.Event | None = None,
    **params: object,
) -> list[dict[str, str]]:
    """The first `count` messages of a stream (the connection then closed); `connected` is
    set once the answer began (the stream's start is fixed by then)."""
    got: list[dict[str, str]] = []
    with httpx.stream("GET", bridge.proc.url + "/api/v1/stream", params=params,
                      headers={**AUTH, **(headers or {})}, timeout=20) as answer:  # fmt: skip
        assert answer.status_code == 200, answer.read()
        if connected is not None:
            connected.set()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for message in messages(answer.iter_lines()):
            got.append(message)
            if len(got) == count:
                break
    return got


def test_new_events_stream_in_order_and_resume_after_the_last_id(daemon) -> None:
    # Only `orders`: target `sink` fails, and the bridge's own events of it stream too.
    with running(daemon) as bridge:
        bridge.send("before")
        got: list[dict[str, str]] = []
        connected = threading.Event()
        reader = threading.Thread(
            target=lambda: got.extend(read(bridge, 3, connected=connected, source="orders"))
        )
        reader.start()
        # The stream starts when it connects: wait for it, then send three events.
        assert connected.wait(20)
        for name in ("a", "b", "c"):
            bridge.send(name)
        reader.join(20)
        assert not reader.is_alive()
        assert [json.loads(m["data"])["subject"] for m in got] == ["a", "b", "c"]
        assert all(m["id"] for m in got)
        # Resumed after the first: the other two, none twice; `since` reaches back further.
        resumed = read(bridge, 2, headers={"Last-Event-ID": got[0]["id"]}, source="orders")
        assert [m["id"] for m in resumed] == [m["id"] for m in got[1:]]
        everything = read(bridge, 4, since="2020-01-01T00:00:00Z", source="orders")
        assert [json.loads(m["data"])["subject"] for m in everything] == ["before", "a", "b", "c"]


def test_a_connection_ends_after_its_limit_and_a_bad_id_is_a_problem(daemon) -> None:
    with running(daemon) as bridge:
        for name in ("x", "y", "z"):
            bridge.send(name)
        with httpx.stream("GET", bridge.proc.url + "/api/v1/stream",
                          params={"since": "2020-01-01T00:00:00Z", "limit": 2},
                          headers=AUTH, timeout=20) as answer:  # fmt: skip
            # The server ends the answer after two events: the read finishes by itself.
            got = list(messages(answer.iter_lines()))
        assert [json.loads(m["data"])["subject"] for m in got] == ["x", "y"]
        bad = httpx.get(bridge.proc.url + "/api/v1/stream",
                        headers={**AUTH, "Last-Event-ID": "garbage"})  # fmt: skip
        assert_problem(bad, 400, "bad-cursor")
        too_many = httpx.get(bridge.proc.url + "/api/v1/stream", params={"limit": 10_001},
                             headers=AUTH)  # fmt: skip
        assert_problem(too_many, 422, "invalid-request")
        assert_problem(httpx.get(bridge.proc.url + "/api/v1/stream"), 401, "unauthorized")
