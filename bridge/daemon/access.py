"""The access log (`server.access_log: true`): one line per HTTP request, combined format.

The combined log format of Apache and nginx, which log tools read:

    127.0.0.1 - - [02/Dec/2026:01:45:00 +0000] "POST /hooks/github HTTP/1.1" 202 26 "-" "curl/8.5"

Off by default: the bridge's own lines already say what each webhook did. The request line
goes through the log formatter like any other, so a secret in a query string is masked.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.logs import ACCESS_LOGGER

log = logging.getLogger(ACCESS_LOGGER)


def _quoted(value: str) -> str:
    """A header value inside the line's double quotes: `-` when absent, quotes escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"') if value else "-"


def combined_line(
    *,
    client: str,
    at_s: float,
    request_line: str,
    status: int,
    size: int,
    referer: str,
    user_agent: str,
) -> str:
    """One request in the combined log format (`size` 0 is written `-`, as Apache does)."""
    when = datetime.fromtimestamp(at_s, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'{client or "-"} - - [{when}] "{_quoted(request_line)}" {status} {size or "-"}'
        f' "{_quoted(referer)}" "{_quoted(user_agent)}"'
    )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _request_line(scope: Scope) -> str:
    query = scope.get("query_string", b"")
    target = scope.get("raw_path") or scope["path"].encode()
    if query:
        target = bytes(target) + b"?" + bytes(query)
    version = scope.get("http_version", "1.1")
    return f"{scope['method']} {bytes(target).decode('latin-1')} HTTP/{version}"


class AccessLog:
    """ASGI middleware: logs each HTTP request once its answer is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        at_s = time.time()
        answer = {"status": 0, "size": 0}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["size"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = scope.get("client")
            log.info(
                "%s",
                combined_line(
                    client=client[0] if client else "",
                    at_s=at_s,
                    request_line=_request_line(scope),
                    status=answer["status"] or 500,
                    size=answer["size"],
                    referer=_header(scope, b"referer"),
                    user_agent=_header(scope, b"user-agent"),
                ),
            )
