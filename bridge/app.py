"""The daemon's HTTP app: health and readiness, and the routes the engines bring."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.runtime import Runtime


def build_app(runtime: Runtime, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The Starlette app of one running bridge."""

    async def healthz(request: Request) -> Response:
        # Answering at all proves the event loop runs.
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = []
        if not runtime.is_ready:
            problems.append("not ready (starting, reloading or stopping)")
        if not await runtime.store.check_writable():
            problems.append("the store cannot be written")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            *routes,
        ]
    )
    app.state.runtime = runtime
    return app
