"""Who may see the status page and the admin pages, and who may change anything.

With `server.admin_token` set, a request passes with `Authorization: Bearer <token>`
(compared in constant time; for scripts) or with a session cookie the login form set (see
session.py; for browsers). Wrong tokens are throttled per client and overall (throttle.py):
past the limit a token is answered 429 without being checked. Without a token, the routes
are served only when the server's socket is bound to a loopback address
(`Runtime.is_loopback`, decided from the address bound, not from the text of
`server.listen`) and the client is on this machine: a request that a trusted proxy forwards
for another client, or that any other proxy forwards, needs the token. A browser on this
machine gets a session without logging in (its CSRF token still guards every change).

The `Host` of a request must then name loopback (`127.0.0.1`, `[::1]`, `localhost`, any
port), the host `server.listen` names, or an entry of `server.allowed_hosts` (421
otherwise): a page of another site whose name an attacker re-points to 127.0.0.1 (DNS
rebinding) is the same origin to the browser, but its requests carry its own name. With a
token the Host is checked only when `allowed_hosts` is given (the token already keeps such
a page out).

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
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from bridge.client_address import IPAddress, client_address, is_in, parse_address
from bridge.config import ServerConfig
from bridge.errors import StoreError
from bridge.events import now_ms
from bridge.runtime import Runtime
from bridge.web.session import COOKIE, Session, Sessions
from bridge.web.throttle import Throttle

log = logging.getLogger("bridge.web")

Endpoint = Callable[[Request], Awaitable[Response]]
LOGIN_PATH = "/admin/login"


def _needs_token(why: str = "when the server listens on a non-loopback address") -> Response:
    return PlainTextResponse(
        f"the status page and admin routes need server.admin_token {why}\n",
        status_code=403,
    )


def _needs_credentials() -> Response:
    return PlainTextResponse(
        "this route needs Authorization: Bearer <server.admin_token> (or the admin pages'"
        f" login at {LOGIN_PATH})\n",
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="bridge"'},
    )


def _misdirected() -> Response:
    # The Host is not echoed: it is the attacker's text.
    return PlainTextResponse(
        "this server does not answer for that host name: use 127.0.0.1, [::1] or localhost,"
        " or list the name in server.allowed_hosts\n",
        status_code=421,
    )


def too_many_wrong_tokens(wait_s: float) -> Response:
    """The answer to a token that is not checked: too many wrong ones came before it."""
    retry_after_s = max(1, math.ceil(wait_s))
    return PlainTextResponse(
        f"too many wrong admin tokens: the next one is checked in {retry_after_s} s\n",
        status_code=429,
        headers={"retry-after": str(retry_after_s)},
    )


def split_host(value: str) -> tuple[str, str]:
    """The name and the port (or "") of a `Host` value, lower-cased; IPv6 keeps its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        name, closed, rest = value.partition("]")
        return (name + closed, rest[1:] if rest.startswith(":") else rest)
    name, sep, port = value.rpartition(":")
    return (name, port) if sep and port.isdigit() else (value, "")


def is_allowed_host(value: str | None, allowed: Sequence[str]) -> bool:
    """True when the `Host` header `value` names this machine's loopback (`localhost`, a
    loopback address, any port) or an entry of `allowed` (a name, or a name with its port)."""
    if not value:
        return False
    name, port = split_host(value)
    if name == "localhost" or name in allowed or (port and f"{name}:{port}" in allowed):
        return True
    address = parse_address(name)
    return address is not None and address.is_loopback


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

    def __init__(self, runtime: Runtime, throttle: Throttle | None = None) -> None:
        self.runtime = runtime
        self.throttle = throttle or Throttle()
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

    async def session_of(self, request: Request) -> Session | None:
        """The valid session the request's cookie carries, if any: signed, not expired, and
        not logged out (in this process, or in any other on the store, before a restart)."""
        session = self.sessions.read(request.cookies.get(COOKIE), now_ms())
        if session is None:
            return None
        try:
            if await self.runtime.store.is_session_revoked(session.id):
                return None
        except StoreError as exc:
            # Whether it logged out is unknown: refused, as a logged-out one would be.
            log.warning("admin: cannot read the logged-out sessions: %s", exc)
            return None
        return session

    def client_of(self, request: Request) -> IPAddress | None:
        """The request's client: its peer, or the one a `server.trusted_proxies` proxy
        names (None when that is unknown)."""
        peer = request.client.host if request.client else None
        trusted = self.runtime.config.server.trusted_proxies
        return client_address(peer, request.scope["headers"], trusted)

    def _remote_client(self, request: Request) -> str | None:
        """Why a request to the loopback-only server comes from elsewhere, or None: a
        trusted proxy names a client that is not on this machine, or a proxy not listed in
        `server.trusted_proxies` forwards it."""
        peer = parse_address(request.client.host if request.client else None)
        trusted = self.runtime.config.server.trusted_proxies
        if not is_in(peer, trusted):
            headers = request.headers
            if "x-forwarded-for" in headers or "forwarded" in headers:
                return "for a request forwarded by a proxy not in server.trusted_proxies"
            return None
        client = self.client_of(request)
        if client is None or not client.is_loopback:
            return "for a client that is not on this machine (named by a trusted proxy)"
        return None

    def throttled(self, request: Request) -> Response | None:
        """The 429 that answers a token when too many wrong ones came before it, else None."""
        wait_s = self.throttle.wait_s(str(self.client_of(request)), time.monotonic())
        return None if wait_s is None else too_many_wrong_tokens(wait_s)

    def wrong_token(self, request: Request) -> None:
        """Count a wrong token against the request's client and against all."""
        self.throttle.failed(str(self.client_of(request)), time.monotonic())

    def _bearer(self, request: Request) -> Visitor | Response | None:
        """A bearer visitor, the refusal of a wrong or throttled token, or None: no token."""
        authorization = request.headers.get("authorization")
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        if (throttled := self.throttled(request)) is not None:
            return throttled
        if has_bearer(self.runtime.config.server, authorization):
            return Visitor(None, is_bearer=True)
        self.wrong_token(request)
        log.warning("admin: a wrong bearer token from %s", self.client_of(request) or "?")
        return _needs_credentials()

    async def visitor(self, request: Request) -> Visitor | Response:
        """Who the request comes from, or the response that refuses it."""
        server = self.runtime.config.server
        if server.admin_token is None and not self.runtime.is_loopback:
            return _needs_token()
        # The name `listen` gives is the server's own (`bridge status` asks by it).
        own = server.host.lower()
        allowed = [*server.allowed_hosts, f"[{own}]" if ":" in own else own]
        if (server.admin_token is None or server.allowed_hosts) and not is_allowed_host(
            request.headers.get("host"), allowed
        ):
            return _misdirected()
        if server.admin_token is None:
            if (why := self._remote_client(request)) is not None:
                return _needs_token(why)
            return Visitor(await self.session_of(request))
        bearer = self._bearer(request)
        if bearer is not None:
            return bearer
        session = await self.session_of(request)
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
        visitor = await guard.visitor(request)
        if isinstance(visitor, Response):
            return visitor
        return await endpoint(request)

    return guarded
