"""Every error of the API as problem details (RFC 9457, `application/problem+json`).

Each answer names its kind in `type`, a URI that stays the same across versions (scripts
branch on it, never on `title` or `detail`): `urn:bridge:problem:NAME`, NAME one of
PROBLEMS. `detail` says what went wrong with this request, in words; `instance` is the
path asked for. A request the models refuse (a bad query value, a bad body) is a 422 whose
`errors` list each field and why.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bridge import jsontext
from bridge.errors import StoreError

log = logging.getLogger("bridge.api")

MEDIA_TYPE = "application/problem+json"

# name -> (status, title); the names are a contract: never renamed, never reused.
PROBLEMS: dict[str, tuple[int, str]] = {
    "bad-cursor": (400, "The cursor cannot be read"),
    "unauthorized": (401, "This API needs Authorization: Bearer <server.admin_token>"),
    "forbidden": (403, "This request may not use the API"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed"),
    "misdirected": (421, "This server does not answer for that host name"),
    "invalid-request": (422, "The request is not valid"),
    "unknown-target": (422, "No target of that name in the config"),
    "too-many-tokens": (429, "Too many wrong admin tokens"),
    "poll-held": (429, "The upstream holds polls back"),
    "store-unavailable": (503, "The database cannot be read or written now"),
    "no-poller": (503, "This bridge runs no poller"),
    "poll-timeout": (504, "No poll finished in time"),
}


def type_uri(name: str) -> str:
    """The `type` of a problem by its name."""
    return f"urn:bridge:problem:{name}"


class Problem(BaseModel):
    """Problem details (RFC 9457)."""

    type: str = Field(description="Stable URI of the kind of problem: urn:bridge:problem:NAME.")
    title: str = Field(description="The kind of problem, in words (the same for every one).")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    instance: str = Field(description="The path asked for.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="invalid-request: each field refused and why."
    )


class ApiProblem(Exception):
    """A problem a handler answers with (raised, turned into the answer by `answer`)."""

    def __init__(
        self,
        name: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.name, self.detail = name, detail
        self.headers = headers or {}
        self.extra = extra or {}


def answer(
    request: Request,
    name: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """The problem `name` as the answer to `request`."""
    status, title = PROBLEMS[name]
    body = {
        "type": type_uri(name),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **(extra or {}),
    }
    return Response(
        jsontext.dumps(body),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers={"cache-control": "no-store", **(headers or {})},
    )


# Every route may answer these (the guard's refusals, a bad request, the store down).
COMMON = (
    "unauthorized",
    "forbidden",
    "misdirected",
    "invalid-request",
    "too-many-tokens",
    "store-unavailable",
)


def responses(*names: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of these problems and COMMON's (merged per status)."""
    out: dict[int | str, dict[str, Any]] = {}
    for name in dict.fromkeys((*COMMON, *names)):
        status, _ = PROBLEMS[name]
        entry = out.setdefault(
            status,
            {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": ""},
        )
        entry["description"] = " or ".join(filter(None, [entry["description"], name]))
    return out


_BY_STATUS = {404: "not-found", 405: "method-not-allowed"}


def install(app: FastAPI) -> None:
    """Answer every error of `app` as a problem."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return answer(request, exc.name, exc.detail, exc.headers, exc.extra)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "why": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['where']}: {e['why']}" for e in errors) or "not valid"
        return answer(request, "invalid-request", detail, extra={"errors": errors})

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        name = _BY_STATUS.get(exc.status_code, "invalid-request")
        headers = dict(exc.headers or {})
        return answer(request, name, str(exc.detail), headers)

    async def on_store(request: Request, exc: Exception) -> Response:
        log.warning("api: %s %s: %s", request.method, request.url.path, exc)
        return answer(request, "store-unavailable", str(exc), {"retry-after": "1"})

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(StoreError, on_store)
