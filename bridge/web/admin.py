"""The admin pages: Events, Event, Targets and Sources, drawn on the server (pages.py).

    GET /admin                   -> /admin/events
    GET /admin/events            newest first; filters and a (recorded_ms, id) cursor
    GET /admin/events/{id}       the CloudEvent, every delivery and attempt, redeliver buttons
    GET /admin/targets           health, circuit (open until when), backlog, dead, last
                                 attempts; their buttons (Retry now: the circuit closed)
    GET /admin/sources           last poll or receive, status, faults, gaps, budgets; poll now
    GET|POST /admin/login, POST /admin/logout, and the actions (actions.py)

Every page is an admin route (auth.py) and reads the store through its interface per
request; the buttons are forms posting to actions.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.config import Config
from bridge.events import now_ms
from bridge.masking import mask_url
from bridge.runtime import Runtime
from bridge.status.summary import budget_use_text
from bridge.status.summary import collect as collect_summary
from bridge.store.base import TargetState
from bridge.web import views
from bridge.web.actions import Actions
from bridge.web.auth import Guard, Visitor
from bridge.web.pages import render

if TYPE_CHECKING:
    from bridge.poll.engine import Poller

log = logging.getLogger("bridge.web")

LAST_ATTEMPTS = 5  # per target on the targets page


class Admin:
    """The admin pages component."""

    def __init__(self, runtime: Runtime, guard: Guard, poller: Poller | None = None) -> None:
        self.runtime = runtime
        self.guard = guard
        self.poller = poller
        self.actions = Actions(runtime, guard, poller)

    def routes(self) -> list[BaseRoute]:
        """The pages (GET) and, through `Actions`, the login and the buttons (POST)."""
        pages = [
            ("/admin", self._home),
            ("/admin/events", self._events),
            ("/admin/events/{event_id:path}", self._event),
            ("/admin/targets", self._targets),
            ("/admin/sources", self._sources),
        ]
        return [
            *(Route(path, self._page(fn), methods=["GET", "HEAD"]) for path, fn in pages),
            *self.actions.routes(),
        ]

    async def start(self) -> None:
        """Nothing to start: the pages read the store per request."""

    async def stop(self, grace_s: float) -> None:
        """Nothing to stop."""

    async def reload(self, config: Config) -> None:
        """Nothing to do: the pages read `runtime.config` per request."""

    def _page(self, fn: Any) -> Any:
        async def page(request: Request) -> Response:
            visitor = await self.guard.visitor(request)
            if isinstance(visitor, Response):
                return visitor
            return await fn(request, visitor)

        page.__name__ = fn.__name__
        return page

    async def _home(self, request: Request, visitor: Visitor) -> Response:
        return RedirectResponse("/admin/events", status_code=303)

    async def _events(self, request: Request, visitor: Visitor) -> Response:
        sources = list(self.runtime.config.sources)
        try:
            query = views.query_of(request.query_params)
        except views.BadQuery as exc:
            return render(
                request,
                self.guard,
                visitor,
                "events.html",
                400,
                here="events",
                sources=sources,
                error=str(exc),
                form=_typed(request),
                rows=[],
                older_href=None,
                first_href=None,
            )
        listings = await self.runtime.store.page_events(
            query.where, query.after, views.PAGE_SIZE + 1
        )
        context = views.events_page(query, listings)
        return render(
            request,
            self.guard,
            visitor,
            "events.html",
            here="events",
            sources=sources,
            error="",
            **context,
        )

    async def _event(self, request: Request, visitor: Visitor) -> Response:
        event_id = request.path_params["event_id"]
        store = self.runtime.store
        event = await store.get_event(event_id)
        if event is None:
            return PlainTextResponse("no event with this id\n", status_code=404)
        deliveries = await store.list_deliveries(event_id=event_id, limit=None)
        attempts = await store.list_attempts(event_id)
        states = await store.target_states()
        targets = list(self.runtime.config.targets)
        context = views.event_page(event, deliveries, attempts, targets, states, now_ms())
        return render(request, self.guard, visitor, "event.html", here="events", **context)

    async def _targets(self, request: Request, visitor: Visitor) -> Response:
        config, store = self.runtime.config, self.runtime.store
        summary = await collect_summary(config, store, self.runtime.budgets.uses())
        states = await store.target_states()
        secrets = _secrets(config)
        at_ms = now_ms()
        targets = []
        for t in summary.targets:
            state = states.get(t.name) or TargetState(t.name)
            attempts = await store.list_target_attempts(t.name, LAST_ATTEMPTS)
            targets.append(
                {
                    "name": t.name,
                    "url": mask_url(config.targets[t.name].address, secrets),
                    "health": t.health,
                    "circuit": t.circuit,
                    # Until when an open circuit holds deliveries back ("Retry now" ends it).
                    "open_until_ms": state.open_until_ms if state.is_open(at_ms) else None,
                    "backlog": t.backlog,
                    "dead": t.dead,
                    "last_error": t.last_error,
                    "enabled": state.disabled_ms is None,
                    "attempts": views.attempt_rows(attempts),
                }
            )
        return render(request, self.guard, visitor, "targets.html", here="targets", targets=targets)

    async def _sources(self, request: Request, visitor: Visitor) -> Response:
        config, store = self.runtime.config, self.runtime.store
        summary = await collect_summary(config, store, self.runtime.budgets.uses())
        polls = {state.source: state for state in await store.list_poll_states()}
        scheduler = self.poller.scheduler if self.poller is not None else None
        sources = []
        for s in summary.sources:
            poll = polls.get(s.name)
            delay_s = scheduler.delay_s(s.name) if scheduler is not None else None
            sources.append(
                {
                    "name": s.name,
                    "events_href": views.events_href({"source": s.name}),
                    "kind": s.kind,
                    "mode": s.mode,
                    "status": s.status,
                    "last_ms": s.last_poll_ms if s.kind == "poll" else s.last_event_ms,
                    "failures": poll.consecutive_failures if poll else 0,
                    "last_error": poll.last_error if poll and poll.consecutive_failures else None,
                    "gaps": s.gaps,
                    "events": s.events,
                    "delay_ms": round(delay_s * 1000) if delay_s is not None else None,
                }
            )
        budgets = [
            {"name": b.name, "use": budget_use_text(b), "sources": b.sources, "waiting": b.waiting}
            for b in summary.budgets
        ]
        return render(
            request,
            self.guard,
            visitor,
            "sources.html",
            here="sources",
            sources=sources,
            budgets=budgets,
            can_poll=self.poller is not None,
        )


def _secrets(config: Config) -> frozenset[str]:
    from bridge.logs import config_secrets

    return frozenset(config_secrets(config))


def _typed(request: Request) -> dict[str, str]:
    """The filters as typed, shown again with the error."""
    return {name: request.query_params.get(name, "") for name in views.FILTER_FIELDS}
