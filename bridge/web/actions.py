"""The admin pages' login and buttons: every state-changing request, each a POST.

    POST /admin/login                    the token -> a session cookie (auth.py, session.py)
    POST /admin/logout                   ends the session
    POST /admin/redeliver                event_id, target ("" = every target it had)
    POST /admin/target/enable|disable    name
    POST /admin/target/reset             name: "Retry now", the circuit closed, the backlog due
    POST /admin/target/redeliver-dead    name
    POST /admin/source/poll              name: the running poller polls it now

The buttons are the CLI's actions: the same store calls as `bridge redeliver`, `bridge
target enable|disable|reset` and `bridge redeliver --dead`, and the same words
(`deliver/circuit.py`: a redelivery names each open circuit that holds it); "poll now"
asks the running poller's scheduler (`poll_now`), which a CLI process has not got. Each
is logged with who did it (the session id, never the token) and what it queued. A browser
is sent back to the page with a notice; a script that asks for `application/json` gets
the result as JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.deliver import circuit
from bridge.errors import StoreError
from bridge.events import now_ms
from bridge.runtime import Runtime
from bridge.store.base import TargetState
from bridge.web import views
from bridge.web.auth import Guard, Visitor, own_origin
from bridge.web.pages import render, set_session_cookie
from bridge.web.session import COOKIE

if TYPE_CHECKING:
    from bridge.poll.engine import Poller

log = logging.getLogger("bridge.web")

MAX_FORM_BYTES = 65_536
# A wrong token waits this long before its answer: one client guessing in sequence stays slow
# (parallel guesses are held by the throttle, throttle.py).
WRONG_TOKEN_DELAY_S = 0.5


async def read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form of a POST (the first value of each field), None when too big."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def safe_next(path: str | None) -> str:
    """Where to go after the login: a path of this server only (no `//host`, no scheme)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/admin/events"
    parts = urlsplit(path)
    return "/admin/events" if parts.scheme or parts.netloc else path


def _done(request: Request, back: str, notice: str, result: dict[str, Any]) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(result)
    return RedirectResponse(f"{back}?{urlencode({'notice': notice})}", status_code=303)


def _with_held(notice: str, held: list[TargetState]) -> str:
    """A redelivery's notice, and each open circuit that holds it back."""
    return ". ".join([notice, *(circuit.held_text(h) for h in held)])


def _refused(why: str, status_code: int = 403) -> Response:
    return PlainTextResponse(why + "\n", status_code=status_code)


class Actions:
    """The POST routes of the admin pages."""

    def __init__(self, runtime: Runtime, guard: Guard, poller: Poller | None) -> None:
        self.runtime = runtime
        self.guard = guard
        self.poller = poller

    def routes(self) -> list[BaseRoute]:
        """The login form and every button's route."""
        changes = [
            ("/admin/logout", self._logout),
            ("/admin/redeliver", self._redeliver),
            ("/admin/target/enable", self._enable),
            ("/admin/target/disable", self._disable),
            ("/admin/target/reset", self._reset),
            ("/admin/target/redeliver-dead", self._redeliver_dead),
            ("/admin/source/poll", self._poll),
        ]
        return [
            Route("/admin/login", self._login_page, methods=["GET", "HEAD"]),
            Route("/admin/login", self._login, methods=["POST"]),
            *(Route(path, self._change(fn), methods=["POST"]) for path, fn in changes),
        ]

    # -- the login -------------------------------------------------------------------------

    async def _login_page(self, request: Request) -> Response:
        if self.runtime.config.server.admin_token is None:
            return RedirectResponse("/admin/events", status_code=303)
        next_path = safe_next(request.query_params.get("next"))
        return render(
            request,
            self.guard,
            Visitor(None, is_bearer=True),
            "login.html",
            next=next_path,
            error="",
        )

    async def _login(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin not in (None, "null") and origin.lower() != own_origin(request):
            return _refused(f"a login from another origin ({origin}) is refused")
        server = self.runtime.config.server
        if server.admin_token is None:
            return RedirectResponse("/admin/events", status_code=303)
        form = await read_form(request)
        if form is None:
            return _refused("the form is too big", 413)
        given = form.get("token", "").encode("utf-8", "replace")
        next_path = safe_next(form.get("next"))
        if (throttled := self.guard.throttled(request)) is not None:
            return throttled
        if not hmac.compare_digest(given, server.admin_token.get_secret_value().encode()):
            self.guard.wrong_token(request)
            log.warning(
                "admin: a login with a wrong token from %s", self.guard.client_of(request) or "?"
            )
            await asyncio.sleep(WRONG_TOKEN_DELAY_S)
            return render(
                request,
                self.guard,
                Visitor(None, is_bearer=True),
                "login.html",
                401,
                next=next_path,
                error="That is not the admin token.",
            )
        session, cookie = self.guard.sessions.issue(now_ms(), server.admin_session_s)
        log.info(
            "admin: session %s logged in from %s", session.id, self.guard.client_of(request) or "?"
        )
        response = RedirectResponse(next_path, status_code=303)
        set_session_cookie(response, request, cookie, round(server.admin_session_s))
        return response

    # -- the buttons -----------------------------------------------------------------------

    def _change(self, fn: Any) -> Any:
        """Guard a button's route: a visitor who may change things, and a form that passes
        the origin and CSRF checks."""

        async def change(request: Request) -> Response:
            visitor = await self.guard.visitor(request)
            if isinstance(visitor, Response):
                return visitor
            form = await read_form(request)
            if form is None:
                return _refused("the form is too big", 413)
            why = self.guard.change_refusal(request, visitor, form.get("csrf"))
            if why is not None:
                log.warning("admin: refused %s %s: %s", request.method, request.url.path, why)
                return _refused(why)
            return await fn(request, visitor, form)

        change.__name__ = fn.__name__
        return change

    async def _logout(self, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
        if visitor.session is not None:
            self.guard.sessions.revoke(visitor.session, now_ms())
            try:
                # Kept in the store: refused after a restart, and by every replica.
                await self.runtime.store.revoke_session(
                    visitor.session.id, visitor.session.expires_ms, now_ms()
                )
            except StoreError as exc:
                log.warning("admin: %s: the logout cannot be stored: %s", visitor.who, exc)
                return _refused(
                    "the logout could not be recorded (the database is unavailable): this"
                    " process refuses the session, another may not; try again",
                    503,
                )
            log.info("admin: %s logged out", visitor.who)
        response = RedirectResponse("/admin/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    def _target(self, name: str) -> Response | None:
        if name not in self.runtime.config.targets:
            return _refused(f"no target named {name!r} in the config", 400)
        return None

    async def _redeliver(
        self, request: Request, visitor: Visitor, form: dict[str, str]
    ) -> Response:
        event_id, target = form.get("event_id", ""), form.get("target") or None
        if target is not None and (bad := self._target(target)):
            return bad
        store = self.runtime.store
        counts = await store.redeliver([event_id], target, now_ms())
        queued = counts.get(event_id, 0)
        where = f"to {target}" if target else "to every target"
        log.info(
            "admin: %s redelivered %s %s: queued %d deliveries",
            visitor.who,
            event_id,
            where,
            queued,
        )
        notice = f"queued {queued} deliveries {where}" if queued else f"nothing to deliver {where}"
        names = [target] if target else [d.target for d in await store.list_deliveries(
            event_id=event_id, limit=None)]  # fmt: skip
        held = await self._held(names) if queued else []
        result = {"queued": queued, "circuit": [circuit.held_json(h) for h in held]}
        return _done(request, views.event_href(event_id), _with_held(notice, held), result)

    async def _held(self, names: list[str]) -> list[TargetState]:
        return circuit.held(await self.runtime.store.target_states(), names, now_ms())

    async def _enable(self, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
        name = form.get("name", "")
        if bad := self._target(name):
            return bad
        before = await self.runtime.store.enable_target(name)
        notice = circuit.enable_text(name, before)
        detail = circuit.enable_detail(before)
        log.info("admin: %s enabled target %s: %s", visitor.who, name, detail)
        result = {
            "changed": before.disabled_ms is not None,
            "circuit_closed": circuit.closed_circuit(before),
        }
        return _done(request, "/admin/targets", notice, result)

    async def _reset(self, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
        name = form.get("name", "")
        if bad := self._target(name):
            return bad
        done = await self.runtime.store.reset_target(name, now_ms())
        notice = circuit.reset_text(name, done)
        log.info(
            "admin: %s reset target %s: %s", visitor.who, name, circuit.reset_detail(name, done)
        )
        return _done(request, "/admin/targets", notice, circuit.reset_json(name, done))

    async def _disable(self, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
        name = form.get("name", "")
        if bad := self._target(name):
            return bad
        reason = f"disabled on the admin pages by {visitor.who}"
        was_enabled = await self.runtime.store.disable_target(name, reason, now_ms())
        log.info(
            "admin: %s disabled target %s (it was %s)",
            visitor.who,
            name,
            "enabled" if was_enabled else "disabled already",
        )
        notice = (
            f"target {name} disabled: its deliveries wait until it is enabled"
            if was_enabled
            else f"target {name} was disabled already"
        )
        return _done(request, "/admin/targets", notice, {"changed": was_enabled})

    async def _redeliver_dead(
        self, request: Request, visitor: Visitor, form: dict[str, str]
    ) -> Response:
        name = form.get("name", "")
        if bad := self._target(name):
            return bad
        queued = await self.runtime.store.redeliver_dead(name, now_ms())
        log.info(
            "admin: %s redelivered the dead deliveries of %s: queued %d", visitor.who, name, queued
        )
        notice = f"queued {queued} dead deliveries to {name} again"
        held = await self._held([name]) if queued else []
        result = {"queued": queued, "circuit": [circuit.held_json(h) for h in held]}
        return _done(request, "/admin/targets", _with_held(notice, held), result)

    async def _poll(self, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
        name = form.get("name", "")
        source = self.runtime.config.sources.get(name)
        if source is None or source.poll is None:
            return _refused(f"no polled source named {name!r} in the config", 400)
        if self.poller is None:
            return _refused("no poller runs in this process", 409)
        self.poller.scheduler.poll_now(name)
        log.info("admin: %s asked for a poll of %s now: queued 1 poll", visitor.who, name)
        return _done(request, "/admin/sources", f"polling {name} now", {"queued": 1})
