"""Who may see the status page and the admin routes.

With `server.admin_token` set, a request must carry `Authorization: Bearer <token>` (compared
in constant time). Without a token, the routes are served only when the server's socket is
bound to a loopback address (`Runtime.is_loopback`, decided from the address bound, not from
the text of `server.listen`): nobody else can reach them then. Any admin route can use
`admin_only`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from bridge.config import ServerConfig
from bridge.runtime import Runtime

log = logging.getLogger("bridge.web")

Endpoint = Callable[[Request], Awaitable[Response]]


def refusal(server: ServerConfig, is_loopback: bool, authorization: str | None) -> Response | None:
    """None when the request may pass, else the response that refuses it (401 or 403);
    `is_loopback` says whether the server is bound to a loopback address only."""
    token = server.admin_token
    if token is None:
        if is_loopback:
            return None
        return PlainTextResponse(
            "the status page and admin routes need server.admin_token when the server "
            "listens on a non-loopback address\n",
            status_code=403,
        )
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
        return None
    return PlainTextResponse(
        "this route needs Authorization: Bearer <server.admin_token>\n",
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="bridge"'},
    )


def admin_only(runtime: Runtime, endpoint: Endpoint) -> Endpoint:
    """Wrap `endpoint` so it answers only requests `refusal` lets pass (the server config in
    force is read per request, so a reload applies at once)."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        server = runtime.config.server
        refused = refusal(server, runtime.is_loopback, request.headers.get("authorization"))
        if refused is not None:
            return refused
        return await endpoint(request)

    return guarded
