"""A real HTTP/1.1 server on 127.0.0.1 that answers exactly as a test scripts it.

Built on the standard library's `http.server`, not on our own stack, so that polling is
tested against answers shaped the way real servers shape them: headers as written, chunked
or compressed bodies, charsets, BOMs, redirects, endless streams. Each route is a function of
the request (path with query, lower-cased headers) that returns a `Reply`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    """What to answer: a status, headers in order, and a body (JSON-encoded unless bytes)."""

    status: int = 200
    body: Any = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"
    chunked: bool = False
    # "gzip", "deflate" (zlib-wrapped, as RFC 9110 says) or "raw-deflate" (as some servers do).
    encoding: str | None = None
    # Stream `endless_chunk` until the client hangs up or `endless_s` passes.
    endless_chunk: bytes = b""
    endless_s: float = 10.0
    # Send the body in pieces of this size, one every `trickle_s`.
    trickle_s: float = 0.0
    trickle_size: int = 1

    def payload(self) -> bytes:
        raw = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        if self.encoding == "gzip":
            return gzip.compress(raw)
        if self.encoding == "deflate":
            return zlib.compress(raw)
        if self.encoding == "raw-deflate":
            squeeze = zlib.compressobj(wbits=-15)
            return squeeze.compress(raw) + squeeze.flush()
        return raw


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str  # with its query string, as sent
    headers: dict[str, str]
    at: float = field(default_factory=time.time)  # when it arrived (epoch seconds)
    body: bytes = b""  # a POST's body
    method: str = "GET"

    def json(self) -> Any:
        """The body as JSON (a GraphQL POST's query and variables)."""
        return json.loads(self.body)

    @property
    def query(self) -> str:
        return urlsplit(self.path).query


Route = Callable[[Seen], Reply]


@dataclass
class Script:
    """The routes of a scripted server and what it has seen; a test changes both freely."""

    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    streamed_bytes: int = 0  # bytes of endless bodies actually written
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, path: str, reply: Reply | Route) -> None:
        """Answer `path` (exact, with its query; else matched without it) with `reply`."""
        self.routes[path] = reply if callable(reply) else (lambda _seen, r=reply: r)

    def paths(self) -> list[str]:
        with self.lock:
            return [s.path for s in self.seen]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: Script

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        seen = Seen(self.path, headers, body=body, method=self.command)
        with self.script.lock:
            self.script.seen.append(seen)
            route = self.script.routes.get(self.path) or self.script.routes.get(
                urlsplit(self.path).path
            )
        reply = route(seen) if route else Reply(404, {"error": "no such route"})
        self._answer(reply)

    do_POST = do_GET

    def _answer(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.content_type and reply.status != 304:
            self.send_header("Content-Type", reply.content_type)
        if reply.encoding:
            self.send_header("Content-Encoding", reply.encoding.replace("raw-", ""))
        if reply.endless_chunk:
            self._endless(reply)
            return
        body = b"" if reply.status == 304 else reply.payload()
        if reply.chunked or reply.trickle_s:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            size = reply.trickle_size if reply.trickle_s else max(1, len(body) // 3)
            for at in range(0, len(body), size):
                if not self._chunk(body[at : at + size]):
                    return
                if reply.trickle_s:
                    time.sleep(reply.trickle_s)
            self._chunk(b"")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> bool:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up
            return False
        return True

    def _endless(self, reply: Reply) -> None:
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + reply.endless_s
        self._chunk(b'[{"id":"a","pad":"')
        while time.monotonic() < deadline and self._chunk(reply.endless_chunk):
            with self.script.lock:
                self.script.streamed_bytes += len(reply.endless_chunk)
        self.close_connection = True


@contextlib.contextmanager
def scripted_server() -> Iterator[tuple[Script, str]]:
    """Serve a new `Script` on a free port of 127.0.0.1; yields it and the base URL."""
    script = Script()
    handler = type("Handler", (_Handler,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
