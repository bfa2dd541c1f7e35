"""Who may see the status page and the admin routes.

With `server.admin_token` set, a request must carry `Authorization: Bearer <token>` (compared
in constant time). Without a token, the routes are served only when the server listens on a
loopback address: nobody else can reach them then. Any admin route can use `admin_only`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from bridge.config import ServerConfig

log = logging.getLogger("bridge.web")

Endpoint = Callable[[Request], Awaitable[Response]]


def refusal(server: ServerConfig, authorization: str | None) -> Response | None:
    """None when the request may pass, else the response that refuses it (401 or 403)."""
    token = server.admin_token
    if token is None:
        if server.is_loopback:
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


def admin_only(server: Callable[[], ServerConfig], endpoint: Endpoint) -> Endpoint:
    """Wrap `endpoint` so it answers only requests `refusal` lets pass; `server()` gives the
    server config in force (read per request, so a reload applies at once)."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        refused = refusal(server(), request.headers.get("authorization"))
        if refused is not None:
            return refused
        return await endpoint(request)

    return guarded
