"""The admin API route that polls a source now, guarded like `/api/status` (auth.py).

`POST /api/poll/SOURCE` polls a polled source now (`bridge poll SOURCE`) and answers with the
poll's outcome: 200 when it ran (its `ok` says whether it succeeded), 404 for a name that is
not a polled source, 429 with `Retry-After` when the upstream asked for no request before a
time not yet come (nothing is sent; `held_until` and `error` say until when), 504 when no
poll finished in time (another replica holds the lease or a
budget delays it), 503 when this bridge runs no poller. A request a browser sends (with an
`Origin`) is refused with 403: pages use the sources page's button, which has a CSRF token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.config import Config
from bridge.runtime import Runtime
from bridge.web.auth import Guard, admin_only


def is_from_browser(origin: str | None, fetch_site: str | None) -> bool:
    """True when a request carries what browsers add to a POST (`Origin`, `Sec-Fetch-Site`
    other than `none`): this route is for scripts; a page uses its own form, with a CSRF
    token, so no other site can make a visitor's browser poll."""
    return origin is not None or fetch_site not in (None, "none")


def is_polled(config: Config, name: str) -> bool:
    """True when `name` is a polled source of `config`."""
    source = config.sources.get(name)
    return source is not None and source.poll is not None


class PollNow:
    """The component that serves `POST /api/poll/SOURCE`."""

    def __init__(self, runtime: Runtime, guard: Guard | None = None) -> None:
        self.runtime = runtime
        self.guard = guard

    def routes(self) -> list[BaseRoute]:
        """`POST /api/poll/{source}`, guarded as an admin route."""
        return [
            Route(
                "/api/poll/{source}",
                admin_only(self.runtime, self._poll, self.guard),
                methods=["POST"],
            ),
        ]

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self, grace_s: float) -> None:
        """Nothing to stop."""

    async def reload(self, config: Config) -> None:
        """Nothing to do: each request reads `runtime.config`."""

    async def _poll(self, request: Request) -> Response:
        headers = request.headers
        if is_from_browser(headers.get("origin"), headers.get("sec-fetch-site")):
            message = "this route is for scripts and `bridge poll`: use the sources page's button"
            return JSONResponse({"error": message}, status_code=403)
        name = request.path_params["source"]
        if not is_polled(self.runtime.config, name):
            known = sorted(
                n for n in self.runtime.config.sources if is_polled(self.runtime.config, n)
            )
            return JSONResponse(
                {"error": f"{name!r} is not a polled source", "polled_sources": known},
                status_code=404,
            )
        if self.runtime.poll_now is None:
            return JSONResponse({"error": "this bridge runs no poller"}, status_code=503)
        try:
            result = await self.runtime.poll_now(name)
        except KeyError:  # removed by a reload in the meantime
            return JSONResponse({"error": f"{name!r} is not a polled source"}, status_code=404)
        if "held_until" in result:
            retry = {"Retry-After": str(result["retry_after_s"])}
            return JSONResponse(result, status_code=429, headers=retry)
        return JSONResponse(result, status_code=200 if result["polled"] else 504)
