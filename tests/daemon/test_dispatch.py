"""The daemon's outer ASGI app: webhook POSTs go straight to their route, the rest to Starlette."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from bridge.daemon.app import SECURITY_HEADERS, Dispatch


class Hooks:
    """A direct route serving `/hooks/a`; notes what it answered and with which headers."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, list[tuple[bytes, bytes]]]] = []

    def serves(self, path: str) -> bool:
        return path == "/hooks/a"

    async def answer(
        self, scope: Scope, receive: Receive, send: Send, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        self.answered.append((scope["path"], list(headers)))


def run(app: Dispatch, method: str, path: str, kind: str = "http") -> None:
    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    scope = {"type": kind, "method": method, "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))


def test_a_post_to_a_direct_path_skips_the_app_and_gets_the_security_headers() -> None:
    reached: list[tuple[str, str]] = []

    async def starlette(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append((scope.get("method", ""), scope["path"]))

    hooks = Hooks()
    app = Dispatch(starlette, [hooks])
    run(app, "POST", "/hooks/a")
    assert hooks.answered == [("/hooks/a", list(SECURITY_HEADERS))]
    assert reached == []
    # Another method, another path, another kind of request: Starlette's.
    run(app, "GET", "/hooks/a")
    run(app, "POST", "/hooks/b")
    run(app, "POST", "/api/poll/x")
    run(app, "GET", "/hooks/a", kind="websocket")
    assert reached == [("GET", "/hooks/a"), ("POST", "/hooks/b"), ("POST", "/api/poll/x"),
                       ("GET", "/hooks/a")]  # fmt: skip
    assert len(hooks.answered) == 1
