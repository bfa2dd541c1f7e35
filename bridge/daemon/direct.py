"""Webhook POSTs served straight from the HTTP protocol: the hot path, without ASGI.

A webhook POST with a `Content-Length` within its source's `max_body` needs none of what
ASGI gives: the server has the whole body in its buffer before the receiver can say anything
of it, and the answer is a few bytes known at once. `GuardedProtocol` (server.py) hands such
a request to a `DirectCycle` in place of uvicorn's request cycle: no scope, no receive and
send messages, no router; the route gets the method, path, headers, body and client, and its
answer leaves in one write.

Nor a task: once the body is in, the route's `begin` answers at once (a refusal) or gives the
store's future and what makes the answer of its result, and the answer is written from the
future's callback. A task and its chain of coroutines cost the event loop more than the
webhook's HMAC. `begin` runs in the loop's next pass over its ready callbacks, beside the other
requests read in this one, not inside each connection's read: one stretch holding the GIL,
so that the store's writer thread takes their events together (served inside each read, the
loop's CPU per request rose by a tenth and the commits got smaller). A body that comes in
pieces, or a request `begin` declines (None), is served by a task through the route's
`reply`.

The cycle keeps the attributes uvicorn's protocol drives a cycle by (`body`, `more_body`,
`response_complete`, `keep_alive`, `disconnected`, `message_event`, `run_asgi`), so
pipelining, flow control, the connection's deadlines and a graceful stop (which waits for
the store's future, kept with the server's tasks) work as for any request.

Everything else (other methods and paths, a chunked body, `Expect: 100-continue`, a declared
length over the limit, the access log) goes through uvicorn's cycle and the ASGI app as before.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from uvicorn.protocols.http.flow_control import FlowControl

log = logging.getLogger("bridge.server")

Headers = Sequence[tuple[bytes, bytes]]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]


@runtime_checkable
class DirectRoute(Protocol):
    """A route whose POSTs are served without Starlette (the webhook paths)."""

    def serves(self, path: str) -> bool:
        """True when a POST to `path` is this route's."""

    async def answer(self, scope: Any, receive: Any, send: Any, headers: Headers) -> None:
        """Answer the request (ASGI), adding `headers` to every answer."""

    def body_limit(self, path: str) -> int | None:
        """The largest body a POST to `path` may carry, or None when the route has no such path."""

    async def reply(
        self,
        method: str,
        path: str,
        raw_headers: Headers,
        body: bytes,
        client: tuple[str, int] | None,
        headers: Headers,
    ) -> Reply:
        """The answer to a POST whose whole body has been read, with `headers` added."""

    def begin(
        self,
        method: str,
        path: str,
        raw_headers: Headers,
        body: bytes,
        client: tuple[str, int] | None,
        headers: Headers,
    ) -> Reply | tuple[asyncio.Future[Any], Callable[[asyncio.Future[Any]], Reply]] | None:
        """`reply` without a coroutine: the answer, or a future and what makes the answer of
        its result, or None when the request must go `reply`'s way."""


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 21\r\n\r\nInternal Server Error"
)


def direct_route(
    routes: Sequence[DirectRoute], path: str, headers: Headers
) -> tuple[DirectRoute, int] | None:
    """The route to serve a POST to `path` directly and the body's declared length, or None
    when the request must go the ASGI way: no route has the path, the body's length is not
    declared, is chunked or over the route's limit, or the client expects a 100 Continue."""
    for route in routes:
        limit = route.body_limit(path)
        if limit is not None:
            break
    else:
        return None
    length = -1
    for name, value in headers:
        if name == b"content-length":
            if length >= 0 or not value.isdigit():
                return None  # repeated or not a number: the ASGI way judges it
            length = int(value)
        elif name == b"transfer-encoding" or name == b"expect":
            return None
    if length < 0 or length > limit:
        return None
    return route, length


class _Waiter:
    """What uvicorn's protocol sets when body bytes come or the connection ends: wakes the
    cycle only while it waits (no asyncio.Event per request)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None

    def set(self) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)


class DirectCycle:
    """One webhook POST served without ASGI; see the module docstring."""

    __slots__ = (
        "body",
        "client",
        "default_headers",
        "disconnected",
        "extra",
        "flow",
        "headers",
        "keep_alive",
        "message_event",
        "method",
        "more_body",
        "on_response",
        "path",
        "response_complete",
        "route",
        "tasks",
        "transport",
    )

    def __init__(
        self,
        route: DirectRoute,
        path: str,
        headers: Headers,
        client: tuple[str, int] | None,
        transport: asyncio.Transport,
        flow: FlowControl,
        default_headers: Headers,
        extra: Headers,
        keep_alive: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.route = route
        self.method = "POST"
        self.path = path
        self.headers = headers
        self.client = client
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.extra = extra
        self.keep_alive = keep_alive
        self.on_response = on_response
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = _Waiter()
        # The server's set of requests in progress, from `start` until served or spawned.
        self.tasks: set[Any] | None = None

    def start(self, tasks: set[Any]) -> None:
        """Serve the request once its body is in (`body_in`), without a task when the route
        can answer it so (`DirectRoute.begin`); a body that comes in pieces is read by a
        task (`run_asgi`), as uvicorn's cycles are."""
        self.tasks = tasks
        if not self.more_body:
            self.body_in()

    def body_in(self) -> None:
        """The whole body is here (or, from `spawn`'s caller, will come in a task)."""
        tasks, self.tasks = self.tasks, None
        if tasks is None:
            return  # not started yet (pipelined), or started already
        try:
            begun = self.route.begin(
                self.method, self.path, self.headers, bytes(self.body), self.client, self.extra
            )  # fmt: skip
        except BaseException as exc:
            self._fail(exc)
            return
        if begun is None:
            self._spawn(tasks)
        elif len(begun) == 3:
            self._answer(begun)
        else:
            stored, finish = begun
            tasks.add(stored)  # a graceful stop waits for it, as for a task
            stored.add_done_callback(lambda done: self._stored(done, finish, tasks))

    def spawn(self) -> None:
        """The body comes in pieces: read the rest and answer in a task."""
        tasks, self.tasks = self.tasks, None
        if tasks is not None:
            self._spawn(tasks)

    def _spawn(self, tasks: set[Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.run_asgi(None))
        task.add_done_callback(tasks.discard)
        tasks.add(task)

    def _stored(
        self,
        done: asyncio.Future[Any],
        finish: Callable[[asyncio.Future[Any]], Reply],
        tasks: set[Any],
    ) -> None:
        tasks.discard(done)
        if done.cancelled():  # a stop past its grace: the answer is not sent
            self.on_response = _nothing
            if not self.disconnected:
                self.transport.close()
            return
        try:
            reply = finish(done)
        except BaseException as exc:
            self._fail(exc)
            return
        self._answer(reply)

    def _answer(self, reply: Reply) -> None:
        if self.disconnected:
            self.on_response = _nothing
        elif self.flow.write_paused:  # rare: the client reads slowly; wait for it in a task
            asyncio.get_running_loop().create_task(self._drain_then_write(reply))
        else:
            self._write(*reply)
            self.on_response = _nothing

    async def _drain_then_write(self, reply: Reply) -> None:
        await self.flow.drain()
        self._answer(reply)

    def _fail(self, exc: BaseException) -> None:
        log.error("a webhook request failed", exc_info=exc)
        if not self.response_complete and not self.disconnected:
            self.transport.write(_SERVER_ERROR)
            self.transport.close()
        self.on_response = _nothing

    async def run_asgi(self, app: Any) -> None:
        """Serve the request (the name is the one uvicorn's protocol starts a cycle by)."""
        try:
            if self.more_body and not await self._read_rest():
                return
            status, headers, body = await self.route.reply(
                self.method, self.path, self.headers, bytes(self.body), self.client, self.extra
            )  # fmt: skip
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if self.disconnected:
                return
            self._write(status, headers, body)
        except BaseException as exc:
            log.error("a webhook request failed", exc_info=exc)
            if not self.response_complete and not self.disconnected:
                self.transport.write(_SERVER_ERROR)
                self.transport.close()
            if not isinstance(exc, Exception):
                raise
        finally:
            self.on_response = _nothing

    async def _read_rest(self) -> bool:
        """Wait for the rest of the body; False when the client went away first."""
        waiter = self.message_event
        loop = asyncio.get_running_loop()
        while self.more_body and not self.disconnected:
            self.flow.resume_reading()  # paused by the protocol past its high-water mark
            waiter.future = loop.create_future()
            await waiter.future
            waiter.future = None
        return not self.disconnected

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        parts = [STATUS_LINES[status]]
        for name, value in self.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"content-length: %d\r\n\r\n" % len(body), body)
        self.transport.write(b"".join(parts))
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


def _nothing() -> None:
    pass
