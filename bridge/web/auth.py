"""Who may see the status page and the admin pages, and who may change anything.

With `server.admin_token` set, a request passes with `Authorization: Bearer <token>`
(compared in constant time; for scripts) or with a session cookie the login form set (see
session.py; for browsers). Without a token, the routes are served only when the server's
socket is bound to a loopback address (`Runtime.is_loopback`, decided from the address
bound, not from the text of `server.listen`): nobody else can reach them then, and a browser
gets a session without logging in (its CSRF token still guards every change).

A state-changing request is a POST and, unless it carries the bearer token, must carry its
session's CSRF token. Its `Origin`, when it is a real origin, must be the page's own: a
cross-origin form is refused whatever it carries. `Origin: null` (which Chromium sends for
a page's own forms under `Referrer-Policy: no-referrer`) says nothing, so it passes only with
a valid CSRF token, like every other form. `Sec-Fetch-Site`, when sent, must say
`same-origin` (or `none`, typed by the user).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from bridge.config import ServerConfig
from bridge.events import now_ms
from bridge.runtime import Runtime
from bridge.web.session import COOKIE, Session, Sessions

log = logging.getLogger("bridge.web")

Endpoint = Callable[[Request], Awaitable[Response]]
LOGIN_PATH = "/admin/login"


def refusal(server: ServerConfig, is_loopback: bool, authorization: str | None) -> Response | None:
    """None when the request may pass on its bearer token (or, without a token, on the
    loopback rule), else the response that refuses it (401 or 403)."""
    if server.admin_token is None:
        return None if is_loopback else _needs_token()
    return None if has_bearer(server, authorization) else _needs_credentials()


def _needs_token() -> Response:
    return PlainTextResponse(
        "the status page and admin routes need server.admin_token when the server "
        "listens on a non-loopback address\n",
        status_code=403,
    )


def _needs_credentials() -> Response:
    return PlainTextResponse(
        "this route needs Authorization: Bearer <server.admin_token> (or the admin pages'"
        f" login at {LOGIN_PATH})\n",
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="bridge"'},
    )


def has_bearer(server: ServerConfig, authorization: str | None) -> bool:
    """True when `authorization` is `Bearer <server.admin_token>`."""
    if server.admin_token is None:
        return False
    scheme, _, given = (authorization or "").partition(" ")
    expected = server.admin_token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


@dataclass(slots=True, frozen=True)
class Visitor:
    """Who a request comes from: a bearer script, a session, or a loopback browser not yet
    given a session (`session` None, `is_bearer` False)."""

    session: Session | None
    is_bearer: bool = False

    @property
    def who(self) -> str:
        """How the logs name this visitor: never the token, the session id at most."""
        if self.is_bearer:
            return "bearer token"
        return f"session {self.session.id}" if self.session else "loopback"


def own_origin(request: Request) -> str:
    """The origin the browser shows for this server: `X-Forwarded-Proto` decides the scheme
    behind a TLS-terminating proxy, the `Host` header the rest."""
    return f"{scheme_of(request)}://{request.headers.get('host', '')}".lower()


def scheme_of(request: Request) -> str:
    """`https` when the request came over HTTPS, directly or through a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return "https" if request.url.scheme == "https" or forwarded == "https" else "http"


class Guard:
    """Decides who a request comes from, and whether it may read or change anything."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._sessions: Sessions | None = None
        self._token: str | None = None

    @property
    def sessions(self) -> Sessions:
        """The sessions of the token in force (a reload that changes it ends them all)."""
        secret = self.runtime.config.server.admin_token
        token = secret.get_secret_value() if secret else None
        if self._sessions is None or token != self._token:
            self._sessions, self._token = Sessions.for_token(token), token
        return self._sessions

    def session_of(self, request: Request) -> Session | None:
        """The valid session the request's cookie carries, if any."""
        return self.sessions.read(request.cookies.get(COOKIE), now_ms())

    def visitor(self, request: Request) -> Visitor | Response:
        """Who the request comes from, or the response that refuses it."""
        server = self.runtime.config.server
        if server.admin_token is None:
            if not self.runtime.is_loopback:
                return _needs_token()
            return Visitor(self.session_of(request))
        if has_bearer(server, request.headers.get("authorization")):
            return Visitor(None, is_bearer=True)
        session = self.session_of(request)
        if session is not None:
            return Visitor(session)
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            # A browser: to the login form, and back here afterwards.
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{LOGIN_PATH}?{_next_query(back)}", status_code=303)
        return _needs_credentials()

    def change_refusal(self, request: Request, visitor: Visitor, csrf: str | None) -> str | None:
        """Why a state-changing request may not pass (None: it may)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null" and origin.lower() != own_origin(request):
            return f"a request from another origin ({origin}) may not change anything"
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"a {fetch_site} request may not change anything"
        if visitor.is_bearer:
            return None
        if visitor.session is None or not self.sessions.is_csrf(visitor.session, csrf):
            return "the form's CSRF token is missing or wrong: reload the page and try again"
        return None


def _next_query(path: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": path})


def admin_only(runtime: Runtime, endpoint: Endpoint, guard: Guard | None = None) -> Endpoint:
    """Wrap `endpoint` so it answers only requests the guard lets pass (the server config in
    force is read per request, so a reload applies at once)."""
    guard = guard or Guard(runtime)

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        visitor = guard.visitor(request)
        if isinstance(visitor, Response):
            return visitor
        return await endpoint(request)

    return guarded
