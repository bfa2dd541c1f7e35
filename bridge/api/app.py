"""The API's FastAPI app, mounted by the daemon at `/api/v1`, and its OpenAPI 3.1 spec.

The webhook POSTs never reach it: `daemon/app.py`'s `Dispatch` hands them to the receiver
before Starlette's router, so mounting the API costs them nothing. Every route passes the
guard (guard.py) before its handler; every error is a problem (problems.py). The spec is
generated from the handlers and their models (`spec()`), served at `/api/v1/openapi.json`
behind the same guard, and kept in the repository as `docs/openapi.json` (written by
`docs/gen_reference.py`; tests/api/test_spec.py fails when they differ).
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

from bridge import __version__
from bridge.api import PREFIX, events, problems, sources, stream, targets
from bridge.api.guard import bearer_scheme, check
from bridge.config import Config
from bridge.runtime import Runtime
from bridge.web.auth import Guard

DESCRIPTION = """\
The bridge's HTTP API for scripts and dashboards: events and their deliveries, redelivery,
targets, sources and a stream of new events. Send `Authorization: Bearer <server.admin_token>`
(without a token set, only clients on this machine are served, as for the admin pages).
Errors are `application/problem+json` (RFC 9457); branch on their `type`.
"""


async def _declared(
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> None:
    """Declares the bearer scheme on every operation of the spec; `Guarded` checks it."""


class Guarded:
    """The API app behind the guard: a request is checked before anything else reads it
    (its route, its method, its body), so a caller without the token learns nothing but 401."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            state = self.app.state
            try:
                request.state.visitor = await check(state.runtime, state.guard, request)
            except problems.ApiProblem as exc:
                answer = problems.answer(request, exc.name, exc.detail, exc.headers, exc.extra)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_api(runtime: Runtime | None = None, guard: Guard | None = None) -> FastAPI:
    """The API app (without a runtime: only to write its spec)."""
    app = FastAPI(
        title="bridge API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        servers=[{"url": PREFIX}],
        dependencies=[Depends(_declared)],
        responses=problems.responses(*problems.COMMON),
    )
    app.state.runtime = runtime
    app.state.guard = guard or (Guard(runtime) if runtime is not None else None)
    app.state.stopping = asyncio.Event()
    problems.install(app)
    for module in (events, targets, sources, stream):
        app.include_router(module.router)

    plain_openapi = app.openapi

    def openapi_spec() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = only_declared_types(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi_spec  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return JSONResponse(app.openapi(), headers={"cache-control": "no-store"})

    return app


def only_declared_types(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` without the `application/json` FastAPI adds beside a problem's or a stream's
    own media type (those answers are never plain JSON)."""
    for methods in doc.get("paths", {}).values():
        for op in methods.values():
            for answer in op.get("responses", {}).values():
                content = answer.get("content", {})
                if len(content) > 1 and "application/json" in content:
                    plain = content.pop("application/json")
                    for kind in content.values():
                        if "schema" not in kind and "schema" in plain:
                            kind["schema"] = plain["schema"]
    return doc


def spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API, as served."""
    return build_api().openapi()


class Api:
    """The component that mounts the API at `/api/v1`."""

    def __init__(self, runtime: Runtime, guard: Guard | None = None) -> None:
        self.app = build_api(runtime, guard)

    def routes(self) -> list[BaseRoute]:
        """The API, mounted under `/api/v1`."""
        mount = Mount(PREFIX, app=Guarded(self.app))
        # Starlette's `.*` stops at a newline: a name with one would miss the mount and get
        # the outer app's plain 404 instead of a problem.
        mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
        return [mount]

    async def start(self) -> None:
        """Nothing to start: every request reads the store."""
        self.app.state.stopping.clear()

    async def stop(self, grace_s: float) -> None:
        """End the open streams."""
        self.app.state.stopping.set()

    async def reload(self, config: Config) -> None:
        """Nothing to do: each request reads `runtime.config`."""
