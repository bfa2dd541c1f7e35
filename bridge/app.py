"""The daemon's HTTP app: health, readiness, metrics, and the routes the engines bring.

`/healthz` answers while the event loop runs; `/readyz` only while the config is loaded (not
starting, reloading or stopping) and the store can commit; `/metrics` is the Prometheus
text of every metric in bridge/metrics.py, with the backlog and dead gauges counted in the
store at each scrape (right from the first scrape after a start, and for every configured
target). The engines own every other metric; the circuit gauge is the delivery engine's, as
only it knows a half-open probe in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge import metrics
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


def refresh_budget_gauges(runtime: Runtime) -> None:
    """Set the used and limit gauges of every configured budget (removed ones disappear)."""
    for gauge in (metrics.BUDGET_USED, metrics.BUDGET_LIMIT):
        gauge.clear()
    for use in runtime.budgets.uses():
        metrics.BUDGET_USED.labels(use.name).set(use.used)
        metrics.BUDGET_LIMIT.labels(use.name).set(use.limit)


def build_app(runtime: Runtime, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The Starlette app of one running bridge."""

    async def healthz(request: Request) -> Response:
        # Answering at all proves the event loop runs.
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = []
        if not runtime.is_ready:
            problems.append("not ready (starting, reloading or stopping)")
        try:
            writable = await asyncio.wait_for(runtime.store.check_writable(), READY_TIMEOUT_S)
        except TimeoutError:
            writable = False
        if not writable:
            problems.append("the store cannot be written")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
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
        ]
    )
    app.state.runtime = runtime
    return app
