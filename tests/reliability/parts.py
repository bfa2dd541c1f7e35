"""Real parts the reliability suite shares: a recording target, signed inbound requests, an
upstream whose items change, read-only database queries and the secret check of logs."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.config import iter_secrets, load_config

# Secrets of the suite: each distinct, so a leak says which one leaked.
INBOUND_SECRET = "whsec_" + base64.b64encode(b"inbound-secret-of-the-suite-0001").decode()
TARGET_SECRET = "whsec_" + base64.b64encode(b"target-secret-of-the-suite-00002").decode()


# -- signed inbound requests -------------------------------------------------------------------


def signed_headers(secret: str, msg_id: str, body: bytes, at_s: float | None = None) -> dict:
    """Standard Webhooks headers for `body`, signed by the reference library."""
    at = datetime.fromtimestamp(time.time() if at_s is None else at_s, tz=UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


# -- the receiving target ----------------------------------------------------------------------


@dataclass
class Hit:
    """One request a target received."""

    at: float
    path: str
    webhook_id: str
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Targets:
    """Receiving targets on one server: `/NAME` answers by `modes[NAME]` (default 204).

    Modes: "ok", "500", "hang" (sleep `hang_s`), "trickle" (a 200 whose body comes a byte
    every `trickle_s`), "429" (with Retry-After `retry_after`), "302" (to /followed), "410".
    Every request is recorded with whether its signature verifies (standardwebhooks).
    """

    secret: str = TARGET_SECRET
    modes: dict[str, str] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    hang_s: float = 5.0
    trickle_s: float = 0.3
    retry_after: str = "2"
    delay_s: float = 0.0  # how long an "ok" answer takes

    def on(self, name: str) -> list[Hit]:
        return [h for h in list(self.hits) if h.path == name]

    def ids(self, name: str) -> set[str]:
        return {h.webhook_id for h in self.on(name)}

    def app(self) -> Starlette:
        webhook = Webhook(self.secret)

        async def hook(request: Request) -> Response:
            body = await request.body()
            name = request.path_params["name"]
            headers = dict(request.headers)
            try:
                webhook.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
            hit = Hit(time.monotonic(), name, headers.get("webhook-id", ""), body, verified)
            self.hits.append(hit)
            return await self.answer(self.modes.get(name, "ok"))

        return Starlette(routes=[Route("/{name}", hook, methods=["POST", "GET"])])

    async def answer(self, mode: str) -> Response:
        if mode == "500":
            return Response("down for maintenance", status_code=500)
        if mode == "hang":
            await asyncio.sleep(self.hang_s)
            return Response(status_code=204)
        if mode == "trickle":
            delay_s = self.trickle_s

            async def drip() -> Any:
                for _ in range(20):
                    await asyncio.sleep(delay_s)
                    yield b"."

            return StreamingResponse(drip(), status_code=200)
        if mode == "429":
            return Response("slow down", status_code=429, headers={"Retry-After": self.retry_after})
        if mode == "302":
            return Response(status_code=302, headers={"Location": "/followed"})
        if mode == "410":
            return Response("gone", status_code=410)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Response(status_code=204)


# -- an upstream whose items change ------------------------------------------------------------


@dataclass
class Upstream:
    """A polled API: `/items?page=N` serves `items` (`page_size` a page, Link to the next).

    `fault(page)` may return a fault for a page: "500", "timeout", "json", "truncated"
    (a body cut short of its Content-Length), "cut-json" (valid length, JSON cut off),
    "object" (data is an object), "renamed" (items lose their `id` field), "html".
    Every answer that was served whole is logged as (page, keys and versions).
    """

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    page_size: int = 1000
    faults: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: list[dict[str, int]] = field(default_factory=list)
    requests: int = 0

    def set(self, items: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            self.items = {str(i["id"]): dict(i) for i in items}

    def app(self) -> Starlette:
        async def items(request: Request) -> Response:
            page = int(request.query_params.get("page", "1"))
            with self.lock:
                self.requests += 1
                fault = self.faults.get(page) or self.faults.get(0)
                current = list(self.items.values())
            start = (page - 1) * self.page_size
            chunk = current[start : start + self.page_size]
            headers = {}
            if start + self.page_size < len(current):
                headers["Link"] = f'</items?page={page + 1}>; rel="next"'
            if fault:
                return await _faulty(fault, chunk, headers)
            with self.lock:
                self.served.append({str(i["id"]): i.get("v", 0) for i in chunk})
            return JSONResponse({"data": chunk}, headers=headers)

        return Starlette(routes=[Route("/items", items)])


async def _faulty(fault: str, chunk: list[Any], headers: dict[str, str]) -> Response:
    body = json.dumps({"data": chunk}).encode()
    if fault == "500":
        return Response("boom", status_code=500)
    if fault == "timeout":
        await asyncio.sleep(1.5)
        return Response(body, media_type="application/json", headers=headers)
    if fault == "json":
        return Response(b"{not json", media_type="application/json", headers=headers)
    if fault == "cut-json":
        return Response(body[: len(body) // 2], media_type="application/json", headers=headers)
    if fault == "truncated":
        # Promise the whole body, send half, and close: the client must see it cut short.
        return _Truncated(body, headers)
    if fault == "object":
        return JSONResponse({"data": {"items": chunk}}, headers=headers)
    if fault == "renamed":
        renamed = [{("uuid" if k == "id" else k): v for k, v in i.items()} for i in chunk]
        return JSONResponse({"data": renamed}, headers=headers)
    if fault == "html":
        return Response("<html>maintenance</html>", media_type="text/html", headers=headers)
    raise AssertionError(fault)


class _Truncated(Response):
    """A response whose Content-Length is larger than the body sent."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(body, media_type="application/json", headers=headers)
        self.full = body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.full)).encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": self.full[: len(self.full) // 2],
             "more_body": True}
        )  # fmt: skip
        # Returning here, short of the length promised, makes the server close the connection.


# -- the database, read without the daemon -----------------------------------------------------


def query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the bridge's database ([] before it has the tables)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def statuses(db: Path) -> dict[str, int]:
    """How many deliveries are in each status."""
    return dict(query(db, "SELECT status, count(*) FROM deliveries GROUP BY status"))


def integrity(db: Path) -> str:
    """The result of `PRAGMA integrity_check`."""
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# -- secrets and logs --------------------------------------------------------------------------


def leaked_secrets(folder: Path, extra: Iterable[str] = ()) -> list[str]:
    """Which secret of the configs in `folder` (and `extra`) appears in a log there.

    Returns "file: secret-name" lines, never the secret itself.
    """
    secrets: set[str] = set(extra)
    for config in folder.glob("*.yaml"):
        try:
            secrets.update(iter_secrets(load_config(config)))
        except Exception:
            continue
    found = []
    for log in folder.glob("*.log"):
        text = log.read_text(errors="replace")
        for secret in secrets:
            if len(secret) >= 6 and _appears(secret, text):
                found.append(f"{log.name}: a secret of {len(secret)} characters")
    return found


def _appears(secret: str, text: str) -> bool:
    # The key of a whsec_ secret is as secret as the whole value.
    forms = {secret, secret.removeprefix("whsec_")}
    return any(form and form in text for form in forms)
