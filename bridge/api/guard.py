"""Who may call the API: the admin routes' rules (web/auth.py), for scripts only.

With `server.admin_token` set, every request needs `Authorization: Bearer <token>` (compared
in constant time, wrong ones throttled with the admin pages' own throttle); a session cookie
is never looked at, so no other site can ride a logged-in browser. Without a token the API
answers only when the server is bound to loopback and the client is on this machine (a
proxy's forwarded client judged as for the admin pages), and the `Host` must name this
machine (DNS rebinding). A POST that a browser sent (`Origin`, or `Sec-Fetch-Site` other than
`none`) is refused: without a token a page of any site could otherwise post to 127.0.0.1.
"""

from __future__ import annotations

from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import Response

from bridge.api.problems import ApiProblem
from bridge.runtime import Runtime
from bridge.web.auth import Guard, Visitor
from bridge.web.poll_now import is_from_browser

# Declares the bearer scheme in the spec; the check itself is `check` below.
bearer_scheme = HTTPBearer(auto_error=False, description="server.admin_token")

_REFUSALS = {401: "unauthorized", 403: "forbidden", 421: "misdirected", 429: "too-many-tokens"}


def _refusal(response: Response) -> ApiProblem:
    """The guard's plain-text refusal as a problem (its words, its headers)."""
    body = bytes(response.body).decode("utf-8", "replace").strip()
    headers = {
        k: v for k, v in response.headers.items() if k in ("retry-after", "www-authenticate")
    }
    return ApiProblem(_REFUSALS.get(response.status_code, "forbidden"), body, headers=headers)


async def check(runtime: Runtime, guard: Guard, request: Request) -> Visitor:
    """The visitor a request comes from; ApiProblem when it may not use the API."""
    server = runtime.config.server
    authorization = request.headers.get("authorization", "")
    if server.admin_token is not None and not authorization.lower().startswith("bearer "):
        raise ApiProblem(
            "unauthorized",
            "this API needs Authorization: Bearer <server.admin_token> (cookies are not used)",
            headers={"www-authenticate": 'Bearer realm="bridge"'},
        )
    visitor = await guard.visitor(request)
    if isinstance(visitor, Response):
        raise _refusal(visitor)
    if request.method == "POST":
        headers = request.headers
        if is_from_browser(headers.get("origin"), headers.get("sec-fetch-site")):
            raise ApiProblem(
                "forbidden", "the API is for scripts: a request a browser's page sent is refused"
            )
    return visitor
