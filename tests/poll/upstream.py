"""A small upstream API for polling tests: a Starlette app whose state the test changes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Upstream:
    """The state behind the app; the test mutates it between polls."""

    items: list[dict[str, Any]] = field(default_factory=list)
    # None: the body is {"data": [...]} on one page; "list": the body is the list itself;
    # "link", "next_url", "cursor": pages of `page_size` items.
    style: str | None = None
    page_size: int = 3
    etag: bool = False
    last_modified: str | None = None
    # A fault for the next requests: "status", "timeout", "json", "shape", "page2", "429",
    # "429-date", "503", "hang-page2" (wait until `release` is set).
    fault: str | None = None
    retry_after: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    hanging: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    # Held by the test while it changes several things that a request must see together.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request_count(self) -> int:
        return len(self.requests)

    def body_etag(self) -> str:
        text = json.dumps(self.items, sort_keys=True).encode()
        return '"' + hashlib.sha1(text, usedforsecurity=False).hexdigest() + '"'


def upstream_app(up: Upstream) -> Starlette:
    """The app serving `up` at /items."""

    async def items(request: Request) -> Response:
        with up.lock:
            up.requests.append(dict(request.headers) | {"query": request.url.query})
            fault, current = up.fault, list(up.items)
        page = int(request.query_params.get("page") or request.query_params.get("after") or 1)
        if fault == "hang-page2" and page == 2:
            up.hanging += 1
            while not up.release.is_set():
                await asyncio.sleep(0.02)
            up.hanging -= 1
        if fault in ("429", "503"):
            headers = {"Retry-After": up.retry_after} if up.retry_after else {}
            return Response("slow down", status_code=int(fault), headers=headers)
        if fault == "status" or (fault == "page2" and page == 2):
            return Response("boom", status_code=500)
        if fault == "timeout":
            await asyncio.sleep(2)
        if fault == "json":
            return Response("{not json", media_type="application/json")
        headers: dict[str, str] = {}
        if up.etag:
            tag = up.body_etag()
            headers["ETag"] = tag
            if request.headers.get("if-none-match") == tag:
                return Response(status_code=304, headers=headers)
        if up.last_modified:
            headers["Last-Modified"] = up.last_modified
            if request.headers.get("if-modified-since") == up.last_modified:
                return Response(status_code=304, headers=headers)
        if up.style == "list":
            return JSONResponse(current, headers=headers)
        if up.style is None:
            body_key = "other" if fault == "shape" else "data"
            return JSONResponse({body_key: current}, headers=headers)
        return _page(up, current, page, headers)

    return Starlette(routes=[Route("/items", items)])


def _page(up: Upstream, items: list[Any], page: int, headers: dict[str, str]) -> Response:
    start = (page - 1) * up.page_size
    chunk = items[start : start + up.page_size]
    has_next = start + up.page_size < len(items)
    body: dict[str, Any] = {"data": chunk}
    if up.style == "link" and has_next:
        headers["Link"] = f'</items?page={page + 1}>; rel="next", </items?page=1>; rel="first"'
    elif up.style == "next_url":
        body["next"] = f"/items?page={page + 1}" if has_next else None
    elif up.style == "cursor":
        body["cursor"] = str(page + 1) if has_next else None
    return JSONResponse(body, headers=headers)
