"""The one Starlette route of every webhook path, and the server's direct route to it.

It looks the request's path up in the receiver's sources of the config in force, so a
reload adds and removes webhook paths without touching the router."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from bridge.receive.app import Deferred, Receiver, Reply


class WebhookRoute(BaseRoute):
    """Matches exactly the webhook paths of the config in force, whatever the method."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def serves(self, path: str) -> bool:
        """True for a webhook path of the config in force (the daemon's `DirectRoute`)."""
        return path in self.receiver.sources

    async def answer(
        self, scope: Scope, receive: Receive, send: Send, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Serve a POST without Starlette, adding `headers` to the answer."""
        await self.receiver.handle(scope, receive, send, headers)

    def body_limit(self, path: str) -> int | None:
        """The largest body a POST to `path` may carry, or None when no source has the path."""
        source = self.receiver.sources.get(path)
        return None if source is None else source.hook.max_body

    async def reply(
        self,
        method: str,
        path: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        client: tuple[str, int] | None,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to a POST whose body the server has read, with `headers` added."""
        return await self.receiver.reply(method, path, raw_headers, body, client, headers)

    def begin(
        self,
        method: str,
        path: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        client: tuple[str, int] | None,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> Reply | Deferred | None:
        """`reply` without a coroutine (`Receiver.begin`), or None for `reply`'s way."""
        return self.receiver.begin(method, path, raw_headers, body, client, headers)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """FULL for a known webhook path (the handler answers 405 for a wrong method)."""
        if scope["type"] == "http" and scope["path"] in self.receiver.sources:
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        """Webhook paths have no route names."""
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with the receiver."""
        await self.receiver.handle(scope, receive, send)
