"""The daemon's HTTP app: health, readiness, metrics, and the routes the engines bring.

`/healthz` answers while the event loop runs; `/readyz` only while the config is loaded (not
starting, reloading or stopping) and the store can commit a write that needs new space (a
full disk fails it, as it fails events), with the store's reason in `store_error` when not;
`/metrics` is the Prometheus text of every metric in bridge/metrics.py, with the backlog and
dead gauges counted in the store at each scrape (right from the first scrape after a start,
and for every configured target). The engines own every other metric; the circuit gauge is
the delivery engine's, as only it knows a half-open probe in flight.

Every answer carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, a
`Referrer-Policy` and, unless the route set a stricter one of its own (the status page does),
a Content-Security-Policy that allows nothing: no page of the bridge can be framed or run
anything it did not ship.

A webhook POST is the hot path: `Dispatch` hands it straight to the receiver, without
Starlette's router and middleware (about a tenth of the CPU of an accepted webhook); the
receiver adds the same headers to its answers, as bytes. Everything else goes to Starlette.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import metrics
from bridge.daemon.access import AccessLog
from bridge.daemon.direct import DirectRoute
from bridge.errors import StoreError
from bridge.runtime import Runtime
from bridge.status.summary import WAITING, backlog_of

log = logging.getLogger("bridge.app")

# A readiness probe must answer quickly: a store that cannot commit within this is not ready.
READY_TIMEOUT_S = 2.0


async def refresh_store_gauges(runtime: Runtime) -> None:
    """Set the backlog and dead gauges of every configured target from the store."""
    try:
        counts = await runtime.store.delivery_counts(WAITING)
    except StoreError as exc:
        # The last values stay; /readyz says what is wrong with the store.
        log.debug("metrics: cannot count the deliveries: %s", exc)
        return
    # Targets removed by a reload disappear from the gauges.
    for gauge in (metrics.BACKLOG, metrics.DEAD):
        gauge.clear()
    for name in runtime.config.targets:
        by_status = counts.get(name, {})
        metrics.BACKLOG.labels(name).set(backlog_of(by_status))
        metrics.DEAD.labels(name).set(by_status.get("dead", 0))


# Added to every answer whose route did not set the header itself.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Same-origin requests keep their Referer (and Origin), nobody else gets one.
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` plus each of SECURITY_HEADERS they do not already have."""
    present = {name.lower() for name, _ in headers}
    return headers + [(n, v) for n, v in SECURITY_HEADERS if n not in present]


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def refresh_budget_gauges(runtime: Runtime) -> None:
    """Set the used and limit gauges of every configured budget (removed ones disappear)."""
    for gauge in (metrics.BUDGET_USED, metrics.BUDGET_LIMIT):
        gauge.clear()
    for use in runtime.budgets.uses():
        metrics.BUDGET_USED.labels(use.name).set(use.used)
        metrics.BUDGET_LIMIT.labels(use.name).set(use.limit)


class Dispatch:
    """The daemon's ASGI app: a POST a direct route serves goes to it, the rest to `app`."""

    def __init__(self, app: ASGIApp, direct: Sequence[DirectRoute]) -> None:
        self.app = app
        self.direct = tuple(direct)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for route in self.direct:
                if route.serves(path):
                    await route.answer(scope, receive, send, SECURITY_HEADERS)
                    return
        await self.app(scope, receive, send)


def direct_routes(runtime: Runtime, routes: Sequence[BaseRoute]) -> list[DirectRoute]:
    """The routes whose POSTs the HTTP protocol serves without ASGI (daemon/direct.py): none
    with the access log on, which sees every request through ASGI."""
    if runtime.config.server.access_log:
        return []
    return [route for route in routes if isinstance(route, DirectRoute)]


def build_app(runtime: Runtime, routes: Sequence[BaseRoute] = ()) -> ASGIApp:
    """The ASGI app of one running bridge: Starlette behind `Dispatch` (and the access log,
    when `server.access_log` is on, in front of both)."""

    async def healthz(request: Request) -> Response:
        # Answering at all proves the event loop runs.
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = []
        if not runtime.is_ready:
            problems.append("not ready (starting, reloading or stopping)")
        try:
            store_error = await asyncio.wait_for(runtime.store.write_problem(), READY_TIMEOUT_S)
        except TimeoutError:
            store_error = f"no commit within {READY_TIMEOUT_S:g} s"
        if store_error is not None:
            problems.append("the store cannot be written")
        if problems:
            body: dict[str, object] = {"status": "unavailable", "problems": problems}
            if store_error is not None:
                body["store_error"] = store_error
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_text(request: Request) -> Response:
        await refresh_store_gauges(runtime)
        refresh_budget_gauges(runtime)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            *routes,
        ],
        middleware=[Middleware(SecurityHeaders)],
    )
    # Starlette would answer `/api/status/` with a redirect to a URL built from the Host
    # header (an open redirect, before any auth check): an unknown path is a 404, full stop.
    app.router.redirect_slashes = False
    app.state.runtime = runtime
    direct = [route for route in routes if isinstance(route, DirectRoute)]
    served: ASGIApp = Dispatch(app, direct) if direct else app
    return AccessLog(served) if runtime.config.server.access_log else served
