"""The HTTP server's socket and connections: where it listens, how long a connection may take,
how many it keeps, and what it says when the process runs out of file descriptors.

uvicorn times out a keep-alive connection only after a response: a connection that never
sends a request, sends its headers a byte at a time, or never finishes its body would be held
for ever, and a few hundred of them exhaust the descriptors. `guarded_protocol` adds to
uvicorn's own HTTP protocol:

- a header deadline (`server.header_timeout`, from the connection or the first byte of the
  next request to the end of its headers) and a body deadline (`server.body_timeout`, from
  the end of the headers to the end of the body); a connection that misses one is closed;
- a cap on open connections (`server.max_connections`, lowered to three quarters of the
  descriptor limit so the database, targets and polls keep the rest): a connection over the
  cap closes the oldest one that is waiting for a request, or, when every connection is busy,
  is answered 503 and closed.

- an idle deadline between requests (`server.idle_timeout`; uvicorn's own keep-alive
  timer, which counts whole seconds and is made anew for every answer, is never armed);
- a cap on a request's line and headers (`server.max_header_bytes`): the parser is fed at
  most that many bytes before the end of the headers, then the request is answered 431 and
  the connection closed. httptools alone buffers a header of any size (a 48 MiB one took
  48 MiB), so a connection's memory is bounded by the cap, not by what a client sends.

Each answer leaves in one write: `OneWriteCycle` keeps uvicorn's head of a response (status
line and headers) for the first write of its body, one send() an answer rather than two. A
webhook POST with a declared length goes neither through uvicorn's cycle nor ASGI: the
protocol hands it to a `DirectCycle` (direct.py), and builds an ASGI scope only for the rest.

When accept() fails anyway (EMFILE, ENFILE, ENOBUFS, ENOMEM) asyncio retries a second later;
`quiet_accept_errors` turns its traceback per failed accept into one line a second at most.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import resource
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from bridge.config import ServerConfig
from bridge.daemon.direct import DirectCycle, DirectRoute, Headers, direct_route
from bridge.errors import StartupError

log = logging.getLogger("bridge.server")

# A quarter of the descriptors stays for the database, the targets' and polls' connections.
CONNECTION_SHARE_OF_FDS = 0.75
# How often at most a failing accept() is logged.
ACCEPT_ERROR_EVERY_S = 1.0
# After a 431, how long the rest of the request is read and dropped before the connection is
# closed: closing with unread bytes would send a reset, which can destroy the 431 unread.
LINGER_S = 1.0
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 24\r\n\r\n"
    b"too many connections now"
)


def header_refusal(max_header_bytes: int) -> bytes:
    """The 431 answer to a request whose headers run past `max_header_bytes`."""
    text = f"the request's headers are larger than {max_header_bytes} bytes".encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        + f"content-length: {len(text)}\r\n\r\n".encode()
        + text
    )


# -- the listening socket ------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port, or raise StartupError with one line saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {host}:{port}: {reason}") from exc
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, which this one's
    # (proto 0) is not; accepted connections inherit it from the listener instead. Without
    # it Nagle's algorithm and delayed ACKs add up to 40 ms to answers.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def is_loopback_address(address: str) -> bool:
    """True when `address` (an IP address as a socket reports it) is a loopback one.

    An IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`) counts as the IPv4 address it is;
    anything that is not an IP address (a name, the wildcard) is not loopback.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listens_on_loopback(sock: socket.socket) -> bool:
    """True when `sock` is bound to a loopback address: decided from the address the kernel
    bound, never from the text of the config (`127.0.0.1.example.com` is a name)."""
    return is_loopback_address(str(sock.getsockname()[0]))


# -- the connection cap ----------------------------------------------------------------------------


def connection_cap(max_connections: int, fd_limit: int | None) -> int:
    """How many connections to keep open: `max_connections`, lowered to fit the share of the
    descriptor limit (`fd_limit`, None when unknown or unlimited) connections may use."""
    if fd_limit is None or fd_limit <= 0:
        return max_connections
    return max(1, min(max_connections, int(fd_limit * CONNECTION_SHARE_OF_FDS)))


def fd_limit() -> int | None:
    """The soft limit on this process's open files, or None when unlimited or unknown."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


# The phases of a connection: waiting for headers, receiving the body, waiting for the app's
# answer (not timed here: the app bounds its own work), waiting for the next request.
HEADERS, BODY, APP, KEEP_ALIVE = "headers", "body", "app", "keep-alive"


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server allows each connection, in numbers."""

    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float
    max_header_bytes: int
    # How long a connection may stay in each phase that has a deadline (set below).
    timeouts_s: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        timeouts = {
            HEADERS: self.header_timeout_s,
            BODY: self.body_timeout_s,
            KEEP_ALIVE: self.idle_timeout_s,
        }
        object.__setattr__(self, "timeouts_s", timeouts)

    @classmethod
    def of(cls, server: ServerConfig, fds: int | None) -> Limits:
        """The limits of `server`, with the connection cap fitted to `fds` descriptors."""
        cap = connection_cap(server.max_connections, fds)
        if cap < server.max_connections:
            log.info(
                "at most %d connections (server.max_connections is %d; the open files limit is %d)",
                cap,
                server.max_connections,
                fds,
            )
        return cls(
            cap,
            server.header_timeout_s,
            server.body_timeout_s,
            server.idle_timeout_s,
            server.max_header_bytes,
        )

    def uvicorn_options(
        self, direct: Sequence[DirectRoute] = (), headers: Headers = ()
    ) -> dict[str, Any]:
        """The part of the limits uvicorn applies itself; POSTs to the `direct` routes served
        without ASGI (direct.py), with `headers` on their answers."""
        return {
            "http": guarded_protocol(self, direct, headers),
            "timeout_keep_alive": max(1, math.ceil(self.idle_timeout_s)),
        }


# -- the guarded HTTP protocol ---------------------------------------------------------------------


# httptools, not uvicorn's pick: the header cap follows httptools' callbacks (a dependency).
class GuardedProtocol(HttpToolsProtocol):
    """One connection, with deadlines and the cap; see the module docstring.

    `guarded_protocol` makes the subclass for one server, with its limits."""

    limits: Limits
    # The routes whose POSTs skip ASGI (direct.py), and the headers added to their answers.
    direct: tuple[DirectRoute, ...] = ()
    direct_headers: Headers = ()
    # The connections waiting for a request (new, between requests, or mid-headers), oldest
    # first: the ones to close when a new connection comes over the cap.
    waiting: dict[GuardedProtocol, None]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase = ""
        # When the current phase must end (loop time), or None when it has no deadline; the
        # timer below is set for `_timer_at` and moved only when it fires early or a shorter
        # deadline comes: re-arming it on every phase (three a request) cost more than the
        # request's signature check.
        self._due: float | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Bytes fed to the parser since the current request began, while its headers are due.
        self._in_headers = True
        self._header_bytes = 0
        self._is_refused = False
        if self._make_room():
            self._enter(HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter("")
        if self._deadline is not None:  # a refused request's lingering close
            self._deadline.cancel()
            self._deadline, self._timer_at = None, math.inf
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._is_refused:
            return  # the rest of a refused request, dropped until the connection closes
        limit = self.limits.max_header_bytes
        while data and not self.transport.is_closing():
            if not self._in_headers:
                super().data_received(data)
                break
            room = limit - self._header_bytes
            if room <= 0:
                self._refuse_headers()
                return
            # Fed in pieces that fit the cap: the headers may end inside one, the body follow.
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            super().data_received(piece)
        cycle = self.cycle
        if type(cycle) is DirectCycle and cycle.more_body:
            cycle.spawn()  # its body comes in pieces: a task reads the rest
        self._follow()

    def on_message_begin(self) -> None:
        # uvicorn builds the request's ASGI scope here; it is built in on_headers_complete,
        # only for a request that goes the ASGI way.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self.direct and self.parser.get_method() == b"POST" and self._serve_directly():
            return
        url, headers, expects = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # the scope; it resets what the parser gave
        self.url, self.expect_100_continue = url, expects
        self.headers = self.scope["headers"] = headers
        super().on_headers_complete()
        if self.cycle is not None and type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = OneWriteCycle

    def _serve_directly(self) -> bool:
        """Start (or queue behind the answer in progress) a direct cycle for this POST when
        a direct route takes it (direct.py); False when it goes the ASGI way."""
        if self.parser.should_upgrade():
            return False
        path = httptools.parse_url(self.url).path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        found = direct_route(self.direct, path, self.headers)
        if found is None:
            return False
        cycle = DirectCycle(
            found[0],
            path,
            self.headers,
            self.client,
            self.transport,
            self.flow,
            self.server_state.default_headers,
            self.direct_headers,
            self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive(),
            self.on_response_complete,
        )
        existing, self.cycle = self.cycle, cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            cycle.start(self.tasks)
        else:  # pipelined behind an answer in progress, as uvicorn queues its own
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]
        return True

    def on_message_complete(self) -> None:
        # What follows belongs to the next request, whose headers are due.
        self._in_headers, self._header_bytes = True, 0
        super().on_message_complete()
        cycle = self.cycle
        if type(cycle) is DirectCycle:
            # Served in the loop's next pass over its ready callbacks, with the other requests
            # read in this one: one stretch holding the GIL, not one per connection's read.
            self.loop.call_soon(cycle.body_in)

    def _refuse_headers(self) -> None:
        log.info(
            "refused a request from %s whose headers run past %d bytes (431)",
            self.client[0] if self.client else "an unknown address",
            self.limits.max_header_bytes,
        )
        self._is_refused = True
        self._enter("")
        if self.cycle is not None and not self.cycle.response_complete:
            # Pipelined behind an answer still being written: a 431 would land inside it.
            self.transport.close()
            return
        self.transport.write(header_refusal(self.limits.max_header_bytes))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)
        self._timer_at = -math.inf  # no phase may move this one

    def on_response_complete(self) -> None:
        # uvicorn's, without its keep-alive timer: the idle deadline (KEEP_ALIVE) is this
        # guard's own timer, moved rather than made anew and cancelled on every request.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            self._enter("")
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            if type(cycle) is DirectCycle:
                cycle.start(self.tasks)
            else:
                self._start_asgi_task(cycle, app)
        self._follow(after_response=True)

    def _make_room(self) -> bool:
        """Keep at most the cap open: close the oldest waiting connection for this one, or
        refuse this one when none waits. True when this one may stay."""
        if len(self.connections) <= self.limits.max_connections:
            return True
        oldest = next(iter(self.waiting), None)
        if oldest is not None:
            oldest._enter("")
            oldest.transport.close()
            return True
        self.transport.write(_REFUSAL)
        self.transport.close()
        return False

    def _follow(self, *, after_response: bool = False) -> None:
        if self.transport.is_closing():
            self._enter("")
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._enter(BODY if cycle.more_body else APP)
        elif after_response:
            self._enter(KEEP_ALIVE)
        elif self._phase != HEADERS:
            # The first bytes of the next request: its headers are now due.
            self._enter(HEADERS)

    def _enter(self, phase: str) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        self.waiting.pop(self, None)
        if phase in (HEADERS, KEEP_ALIVE):
            self.waiting[self] = None
        timeout_s = self.limits.timeouts_s.get(phase)
        if timeout_s is None:
            self._due = None
            if not phase and self._deadline is not None:  # closed: no timer outlives it
                self._deadline.cancel()
                self._deadline, self._timer_at = None, math.inf
            return
        self._due = due = self.loop.time() + timeout_s
        if due < self._timer_at:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline, self._timer_at = self.loop.call_at(due, self._on_timer), due

    def _on_timer(self) -> None:
        self._deadline, self._timer_at = None, math.inf
        due = self._due
        if due is None:
            return  # the phase has no deadline now; the next one sets the timer again
        if self.loop.time() < due:  # the phase changed since: wait for its own deadline
            self._deadline, self._timer_at = self.loop.call_at(due, self._on_timer), due
            return
        if not self.transport.is_closing():
            log.debug("closed a connection that took too long for its %s", self._phase)
            self.transport.close()
        self._enter("")


class _Head:
    """Stands in for the transport while uvicorn sends a response's start: keeps its head
    (status line and headers) for the first write of the body."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _WithHead:
    """Stands in for the transport while uvicorn sends a response's body: the kept head goes
    out with the first bytes, in one write."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        if self.head:
            data, self.head = self.head + data, b""
        if data:
            self.transport.write(data)

    def close(self) -> None:
        self.write(b"")
        self.transport.close()


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request cycle, sending a response's head together with its body: one send()
    an answer rather than two."""

    _head = b""

    async def send(self, message: Any) -> None:
        transport = self.transport
        if message["type"] == "http.response.start" and not self.response_started:
            head = _Head()
            self.transport = head  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._head = head.data
            return
        if not self._head:
            await super().send(message)
            return
        with_head = _WithHead(transport, self._head)
        self._head = b""
        self.transport = with_head  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
        if not self.disconnected:
            with_head.write(b"")  # an answer without a body (HEAD): the head alone


def phase_timeout_s(limits: Limits, phase: str) -> float | None:
    """How long a connection may stay in `phase`; None for no deadline."""
    return limits.timeouts_s.get(phase)


def guarded_protocol(
    limits: Limits, direct: Sequence[DirectRoute] = (), headers: Headers = ()
) -> type[GuardedProtocol]:
    """The protocol class for one server with `limits` (its own set of waiting connections),
    serving POSTs to the `direct` routes without ASGI, with `headers` on their answers."""
    attributes = {
        "limits": limits,
        "waiting": {},
        "direct": tuple(direct),
        "direct_headers": tuple(headers),
    }
    return type("GuardedProtocol", (GuardedProtocol,), attributes)


# -- accept errors ---------------------------------------------------------------------------------


def late_socket(context: dict[str, Any]) -> bool:
    """Whether the loop's error is a socket's reader or writer registered after the socket was
    closed. A broker client (aiomqtt, over paho's socket callbacks) registers them with
    `call_soon_threadsafe`; when the broker drops the connection first, the registration meets
    a closed descriptor. Harmless: the client has already seen the connection end, and the
    target's next attempt opens a new one."""
    exc = context.get("exception")
    if not (isinstance(exc, OSError) and exc.errno == errno.EBADF):
        return False
    handle = repr(context.get("handle", ""))
    return "add_writer" in handle or "add_reader" in handle


def quiet_accept_errors(
    loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.monotonic
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that logs a failing accept() as one line, once a second at
    most, without a traceback, and a socket closed before its late registration (`late_socket`)
    as one debug line; every other error goes to the handler in place before."""
    previous = loop.get_exception_handler()
    last = {"at": -math.inf, "skipped": 0}

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if late_socket(context):
            log.debug("a socket closed before its reader or writer was registered: %s", exc)
            return
        if not (isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = clock()
        if now - last["at"] < ACCEPT_ERROR_EVERY_S:
            last["skipped"] += 1
            return
        log.warning(
            "cannot accept connections: %s (%d more since the last message); retrying",
            exc.strerror,
            last["skipped"],
        )
        last["at"], last["skipped"] = now, 0

    return handle
