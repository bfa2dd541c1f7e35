"""Webhook POSTs served straight from the HTTP protocol (bridge/daemon/direct.py), on the real
daemon over raw sockets: the answers a client can tell apart from the ASGI way's are none but
the speed; pipelining, keep-alive, HTTP/1.0, a body in pieces and a client that leaves."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from bridge.daemon.direct import DirectCycle, direct_route
from tests.helpers import DaemonProcess

CONFIG = """
database: bridge.db
server:
  listen: 127.0.0.1:{port}
  body_timeout: 5s
sources:
  hook:
    webhook:
      verify: none
      allow_unsigned: true
      max_body: 200KB
"""


def post(body: bytes, *, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST /hooks/hook HTTP/{version}\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def event(n: int, pad: int = 0) -> bytes:
    return b'{"id": "e%d", "type": "t", "pad": "%s"}' % (n, b"x" * pad)


def read_answers(sock: socket.socket, count: int, timeout_s: float = 10.0) -> list[bytes]:
    """`count` whole answers (head and content-length body) read from `sock`."""
    sock.settimeout(timeout_s)
    data, answers = b"", []
    deadline = time.monotonic() + timeout_s
    while len(answers) < count and time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            if len(rest) >= length:
                answers.append(head + sep + rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return answers


def stored(tmp_path: Path) -> set[str]:
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        rows = db.execute("SELECT upstream_id FROM events WHERE source = 'hook'").fetchall()
    return {row[0] for row in rows}


def connect(proc: DaemonProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proc.port), timeout=10)


def test_pipelined_posts_and_a_get_are_answered_in_order_on_one_connection(
    daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    proc = daemon(CONFIG)
    with connect(proc) as sock:
        sock.sendall(
            post(event(1))
            + post(event(2))
            + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            + post(event(1))
        )
        answers = read_answers(sock, 4)
        assert [a.split(b"\r\n")[0] for a in answers] == [
            b"HTTP/1.1 202 Accepted", b"HTTP/1.1 202 Accepted", b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK",
        ]  # fmt: skip
        assert b'"status":"ok"' in answers[2] and b'"duplicate": true' in answers[3]
        # The connection stays open for more.
        sock.sendall(post(event(3)))
        assert read_answers(sock, 1)[0].startswith(b"HTTP/1.1 202")
    assert stored(tmp_path) == {"e1", "e2", "e3"}


def test_a_direct_answer_has_the_headers_of_the_asgi_way(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(CONFIG)
    chunked = (
        b"POST /hooks/hook HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    body = event(9)
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with connect(proc) as sock:
        sock.sendall(post(event(8)) + chunked)
        direct, asgi = read_answers(sock, 2)

    def names(answer: bytes) -> list[bytes]:
        head = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
        return sorted(line.split(b":")[0].lower() for line in head[1:])

    assert direct.split(b"\r\n")[0] == asgi.split(b"\r\n")[0] == b"HTTP/1.1 202 Accepted"
    assert names(direct) == names(asgi)
    assert b"x-frame-options: DENY" in direct and b"content-security-policy:" in direct


def test_an_http_1_0_post_is_answered_and_the_connection_closed(
    daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    proc = daemon(CONFIG)
    with connect(proc) as sock:
        sock.sendall(post(event(1), version="1.0"))
        (answer,) = read_answers(sock, 1)
        assert answer.startswith(b"HTTP/1.1 202") and b"connection: close" in answer
        assert sock.recv(10) == b""  # closed by the daemon
    assert stored(tmp_path) == {"e1"}


def test_a_body_in_pieces_past_the_high_water_mark_is_read_whole(
    daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    proc = daemon(CONFIG)
    body = event(5, pad=150_000)  # more than uvicorn's 64 KiB high-water mark
    request = post(body)
    with connect(proc) as sock:
        for start in range(0, len(request), 40_000):
            sock.sendall(request[start : start + 40_000])
            time.sleep(0.05)
        (answer,) = read_answers(sock, 1)
    assert answer.startswith(b"HTTP/1.1 202")
    assert stored(tmp_path) == {"e5"}


def test_a_client_that_leaves_mid_body_stores_nothing_and_the_daemon_goes_on(
    daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    proc = daemon(CONFIG)
    request = post(event(6, pad=1000))
    with connect(proc) as sock:
        sock.sendall(request[: len(request) - 500])
    with connect(proc) as sock:  # a later request is answered: the first one is over
        sock.sendall(post(event(7)))
        assert read_answers(sock, 1)[0].startswith(b"HTTP/1.1 202")
    assert stored(tmp_path) == {"e7"}
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log() and "failed" not in proc.log()


class Route:
    """A direct route for `/hooks/a` with a 100-byte limit; its reply raises when told to.

    `begin` answers by `mode`: "reply" the answer at once, "store" a future (`self.stored`)
    and the answer of its result, "async" None (the task's way, `reply`), "raise" an error."""

    def __init__(self, error: BaseException | None = None, mode: str = "async") -> None:
        self.error = error
        self.mode = mode
        self.stored: asyncio.Future[bool] | None = None

    def begin(self, *args: object) -> object:
        extra = args[-1]
        answer = (202, [(b"content-type", b"application/json"), *extra], b"{}")  # type: ignore[misc]
        if self.mode == "reply":
            return answer
        if self.mode == "raise":
            raise RuntimeError("boom in begin")
        if self.mode == "store":
            self.stored = asyncio.get_running_loop().create_future()

            def finish(done: asyncio.Future[bool]) -> object:
                if self.error is not None:
                    raise self.error
                return (202 if done.result() else 200, *answer[1:])

            return self.stored, finish
        return None

    def serves(self, path: str) -> bool:
        return path == "/hooks/a"

    async def answer(self, scope: object, receive: object, send: object, headers: object) -> None:
        raise AssertionError("not the ASGI way")

    def body_limit(self, path: str) -> int | None:
        return 100 if path == "/hooks/a" else None

    async def reply(self, *args: object) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self.error is not None:
            raise self.error
        extra = args[-1]  # the headers the server adds to every answer
        return 202, [(b"content-type", b"application/json"), *extra], b"{}"  # type: ignore[misc]


def length(n: int | bytes) -> tuple[bytes, bytes]:
    return (b"content-length", n if isinstance(n, bytes) else b"%d" % n)


@pytest.mark.parametrize(
    ("path", "headers", "direct"),
    [
        ("/hooks/a", [length(10)], True),
        ("/hooks/a", [length(100)], True),
        ("/hooks/a", [length(101)], False),  # over the limit: the ASGI way answers 413
        ("/hooks/b", [length(10)], False),  # not the route's
        ("/hooks/a", [], False),  # no declared length
        ("/hooks/a", [length(10), length(10)], False),  # repeated
        ("/hooks/a", [length(b"1e3")], False),
        ("/hooks/a", [(b"transfer-encoding", b"chunked")], False),
        ("/hooks/a", [length(10), (b"expect", b"100-continue")], False),
    ],
)
def test_which_posts_are_served_directly(
    path: str, headers: list[tuple[bytes, bytes]], direct: bool
) -> None:
    found = direct_route([Route()], path, headers)
    assert (found is not None) is direct


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle_for(
    route: Route, transport: Transport, events: list[str], keep_alive: bool = True
) -> DirectCycle:
    cycle = DirectCycle(
        route, "/hooks/a", [length(2)], None, transport,  # type: ignore[arg-type]
        FlowControl(transport), [(b"date", b"now")], [(b"x-extra", b"1")],  # type: ignore[arg-type]
        keep_alive, lambda: events.append("response complete"),
    )  # fmt: skip
    cycle.body += b"{}"
    return cycle


def serve(route: Route, keep_alive: bool = True) -> tuple[Transport, list[str]]:
    """The task's way (`run_asgi`) with the whole body in."""
    transport, events = Transport(), []
    cycle = cycle_for(route, transport, events, keep_alive)
    cycle.more_body = False
    asyncio.run(cycle.run_asgi(None))
    return transport, events


def test_a_request_the_route_begins_is_served_without_a_task() -> None:
    async def scenario() -> tuple[list[bytes], list[str], int, int]:
        transport, events, tasks = Transport(), [], set()
        route = Route(mode="store")
        cycle = cycle_for(route, transport, events)
        cycle.start(tasks)  # the body is not in yet: nothing happens
        assert route.stored is None and not tasks
        cycle.more_body = False
        cycle.body_in()
        assert route.stored is not None and tasks == {route.stored}  # a stop waits for it
        assert transport.writes == [] and events == []
        running = len(asyncio.all_tasks())
        route.stored.set_result(False)
        await asyncio.sleep(0)
        cycle.body_in()  # once only
        return transport.writes, events, len(tasks), running

    writes, events, waiting, running = asyncio.run(scenario())
    assert running == 1  # only the test's own: no task for the request
    assert writes == [
        b"HTTP/1.1 200 OK\r\ndate: now\r\ncontent-type: application/json\r\n"
        b"x-extra: 1\r\ncontent-length: 2\r\n\r\n{}"
    ]
    assert events == ["response complete"] and waiting == 0


@pytest.mark.parametrize("mode", ["reply", "async"])
def test_an_answer_known_at_once_or_from_the_task_is_the_same_write(mode: str) -> None:
    async def scenario() -> list[bytes]:
        transport, events, tasks = Transport(), [], set()
        cycle = cycle_for(Route(mode=mode), transport, events)
        cycle.more_body = False
        cycle.start(tasks)
        await asyncio.gather(*tasks)
        assert events == ["response complete"]
        return transport.writes

    assert asyncio.run(scenario()) == [
        b"HTTP/1.1 202 Accepted\r\ndate: now\r\ncontent-type: application/json\r\n"
        b"x-extra: 1\r\ncontent-length: 2\r\n\r\n{}"
    ]


@pytest.mark.parametrize("where", ["begin", "finish"])
def test_a_failure_without_a_task_is_a_500_and_a_closed_connection(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[Transport, list[str]]:
        transport, events = Transport(), []
        route = Route(RuntimeError("boom in finish"), mode="raise" if where == "begin" else "store")
        cycle = cycle_for(route, transport, events)
        cycle.more_body = False
        cycle.start(set())
        if route.stored is not None:
            route.stored.set_result(True)
            await asyncio.sleep(0)
        return transport, events

    transport, events = asyncio.run(scenario())
    assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert transport.closed and events == []
    assert "a webhook request failed" in caplog.text and f"boom in {where}" in caplog.text


@pytest.mark.parametrize("end", ["cancelled", "disconnected"])
def test_a_request_whose_store_call_is_cut_gets_no_answer(end: str) -> None:
    async def scenario() -> tuple[Transport, list[str]]:
        transport, events = Transport(), []
        route = Route(mode="store")
        cycle = cycle_for(route, transport, events)
        cycle.more_body = False
        cycle.start(set())
        assert route.stored is not None
        if end == "cancelled":  # a stop past its grace cancels what it waits for
            route.stored.cancel()
        else:
            cycle.disconnected = True
            route.stored.set_result(True)
        await asyncio.sleep(0)
        return transport, events

    transport, events = asyncio.run(scenario())
    assert transport.writes == [] and events == []
    assert transport.closed is (end == "cancelled")


def test_a_direct_answer_is_one_write_with_every_header() -> None:
    transport, events = serve(Route())
    assert transport.writes == [
        b"HTTP/1.1 202 Accepted\r\ndate: now\r\ncontent-type: application/json\r\n"
        b"x-extra: 1\r\ncontent-length: 2\r\n\r\n{}"
    ]
    assert events == ["response complete"] and not transport.closed
    transport, _ = serve(Route(), keep_alive=False)
    assert b"connection: close\r\n" in transport.writes[0] and transport.closed


def test_a_failing_reply_is_a_500_and_a_closed_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, events = serve(Route(RuntimeError("boom")))
    assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert transport.closed and events == []
    assert "a webhook request failed" in caplog.text
