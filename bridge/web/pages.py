"""How an admin page is drawn and sent: Jinja2 templates with autoescape, and the headers.

Every value goes into the HTML through Jinja2's autoescape (`autoescape=True` for every
template, `StrictUndefined` so a misspelt name fails loudly); no template marks anything
`safe`. The pages' inline style and script live in `layout.html` only, with no template
expression inside them, so their hashes, and the Content-Security-Policy that allows just
those, are the same whatever the data: computed once, by the status page's mechanism.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bridge.events import format_time, now_ms
from bridge.web.auth import Guard, Visitor, scheme_of
from bridge.web.session import COOKIE
from bridge.web.status import PAGE_HEADERS, content_security_policy


def _time(ms: int | None) -> str:
    return format_time(ms) if ms is not None else ""


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if abs(ms) < 1000:
        return f"{ms} ms"
    if abs(ms) < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def environment() -> Environment:
    """The templates of `bridge/web/templates`, every one autoescaped."""
    env = Environment(
        loader=PackageLoader("bridge.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _time
    env.filters["duration"] = _duration
    return env


ENV = environment()


def page_policy(env: Environment = ENV) -> str:
    """The admin pages' Content-Security-Policy: layout.html's inline style and script by
    hash, forms only to this origin."""
    source, _, _ = env.loader.get_source(env, "layout.html")  # type: ignore[union-attr]
    return content_security_policy(source, form_action="'self'")


HEADERS = {**PAGE_HEADERS, "content-security-policy": page_policy()}


def set_session_cookie(response: Response, request: Request, value: str, max_age_s: int) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over HTTPS, with an expiry."""
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=scheme_of(request) == "https",
    )


def render(
    request: Request,
    guard: Guard,
    visitor: Visitor,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """`template` drawn with `context`, the visitor's CSRF token and the notice of the last
    action; a loopback browser without a session gets one here (its forms need the token)."""
    session, cookie = visitor.session, None
    if session is None and not visitor.is_bearer:
        lifetime_s = guard.runtime.config.server.admin_session_s
        session, cookie = guard.sessions.issue(now_ms(), lifetime_s)
    values: dict[str, Any] = {
        "csrf": guard.sessions.csrf(session) if session else "",
        "can_log_out": guard.runtime.config.server.admin_token is not None
        and not visitor.is_bearer,
        "notice": request.query_params.get("notice", ""),
        "refresh_s": 0,
    }
    html = ENV.get_template(template).render(values | context)
    response = HTMLResponse(html, status_code=status_code, headers=HEADERS)
    if cookie is not None:
        set_session_cookie(
            response, request, cookie, round(guard.runtime.config.server.admin_session_s)
        )
    return response
