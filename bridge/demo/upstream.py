"""A simulated upstream service: items change at random times, can be polled, and are pushed.

Changes (create, update, delete) arrive as a Poisson process of `rate_per_s` changes per
second. `GET /items` lists the items, each with its `updated_at`, under an ETag that changes
with every change (and answers 304 to a matching `If-None-Match`). `GET /quiet` lists a few
items that never change, the same way: a source with nothing to find, polled all the same.
Each change is also pushed, the moment it happens, as a Standard Webhooks request signed
with the push secret: the same change, seen by both of the bridge's paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.events import format_time, now_ms

log = logging.getLogger("bridge.demo.upstream")

# Keep the list small enough that every poll is cheap, big enough that updates dominate.
TARGET_ITEMS = 20
# The list that never changes, and its validator.
QUIET_ITEMS = [{"id": f"quiet-{n}", "updated_at": "2026-01-01T00:00:00.000Z"} for n in (1, 2, 3)]
QUIET_ETAG = '"quiet"'
_WORDS = ("anchor", "beacon", "copper", "delta", "ember", "fjord", "garnet", "harbor")


@dataclass(slots=True)
class Counts:
    """What the upstream did, for the progress line and the summary."""

    changes: int = 0
    polls: int = 0
    not_modified: int = 0
    pushes: int = 0
    push_failures: int = 0
    dropped: int = 0  # pushes never sent (`drop`)
    delayed: int = 0  # pushes sent more than a poll interval late
    quiet_polls: int = 0  # requests to the list that never changes


class Upstream:
    """The simulated service. Not thread-safe: run it on one event loop."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        push_url: str,
        push_secret: str,
        seed: int | None = None,
        drop: float = 0.0,
        delay_s: float = 0.0,
    ):
        """`drop`: the share of pushes never sent; as many as half that share again are sent
        `delay_s` late. With `drop`, items are created and updated, never deleted (a delete
        carries no version for a merge to match)."""
        self.rate_per_s = rate_per_s
        self.drop = drop
        self.delay_s = delay_s
        self.push_url = push_url
        self._signer = Webhook(push_secret)
        self._rng = random.Random(seed)  # not for security: a simulation
        self.items: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.counts = Counts()
        self._next_id = 1
        self._pushes: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Start with a full list, as a real service would: most changes are then updates
        # spread over many items, rarely two to one item between polls.
        start_ms = now_ms()
        for _ in range(TARGET_ITEMS):
            self._create(format_time(start_ms))

    # -- the pollable API --------------------------------------------------------------------

    def app(self) -> Starlette:
        """The upstream's HTTP API."""
        return Starlette(
            routes=[
                Route("/items", self._list_items, methods=["GET"]),
                Route("/quiet", self._list_quiet, methods=["GET"]),
            ]
        )

    @property
    def etag(self) -> str:
        """The validator of the current list."""
        return f'"v{self.version}"'

    async def _list_items(self, request: Request) -> Response:
        self.counts.polls += 1
        etag = self.etag
        if request.headers.get("if-none-match") == etag:
            self.counts.not_modified += 1
            return Response(status_code=304, headers={"etag": etag})
        items = [self.items[key] for key in sorted(self.items)]
        return JSONResponse({"items": items}, headers={"etag": etag})

    async def _list_quiet(self, request: Request) -> Response:
        self.counts.quiet_polls += 1
        if request.headers.get("if-none-match") == QUIET_ETAG:
            return Response(status_code=304, headers={"etag": QUIET_ETAG})
        return JSONResponse({"items": QUIET_ITEMS}, headers={"etag": QUIET_ETAG})

    # -- changes -----------------------------------------------------------------------------

    def change(self, at_ms: int) -> dict[str, Any]:
        """Make one random change at `at_ms`; returns the webhook payload announcing it."""
        kind = self._pick_change()
        stamp = format_time(at_ms)
        if kind == "created":
            item = self._create(stamp)
        elif kind == "updated":
            key = self._rng.choice(sorted(self.items))
            item = {**self.items[key], "count": self.items[key]["count"] + 1, "updated_at": stamp}
            self.items[key] = item
        else:
            key = self._rng.choice(sorted(self.items))
            del self.items[key]
            item = {"id": key, "updated_at": stamp}
        self.version += 1
        self.counts.changes += 1
        return {"type": f"item.{kind}", "timestamp": stamp, "data": item}

    def _create(self, stamp: str) -> dict[str, Any]:
        key = f"item_{self._next_id:04d}"
        self._next_id += 1
        item = {"id": key, "name": self._rng.choice(_WORDS), "count": 0, "updated_at": stamp}
        self.items[key] = item
        return item

    def _pick_change(self) -> str:
        n = len(self.items)
        if n == 0:
            return "created"
        # Drift towards TARGET_ITEMS: more creations below it, more deletions above.
        create = 0.5 if n < TARGET_ITEMS else 0.15
        delete = 0.05 if n < TARGET_ITEMS else 0.3
        roll = self._rng.random()
        if roll < create:
            return "created"
        if self.drop:
            return "updated"
        return "deleted" if roll < create + delete else "updated"

    async def run(self, stop: asyncio.Event) -> None:
        """Change items at Poisson times until `stop` is set, pushing each change at once."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            self._client = client
            while not stop.is_set():
                wait_s = self._rng.expovariate(self.rate_per_s)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait_s)
                except TimeoutError:
                    payload = self.change(now_ms())
                    task = asyncio.create_task(self._push(payload))
                    self._pushes.add(task)
                    task.add_done_callback(self._pushes.discard)
            if self._pushes:
                await asyncio.wait(set(self._pushes), timeout=10.0 + self.delay_s)
            self._client = None

    async def _push(self, payload: dict[str, Any]) -> None:
        assert self._client is not None
        if self.drop:
            roll = self._rng.random()
            if roll < self.drop:
                self.counts.dropped += 1
                return
            if roll < self.drop * 1.5:
                self.counts.delayed += 1
                await asyncio.sleep(self.delay_s)
        body = json.dumps(payload, separators=(",", ":"))
        msg_id = f"msg_demo_{self.counts.changes:06d}_{self._rng.getrandbits(32):08x}"
        sent_at = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(msg_id, sent_at, body),
        }
        try:
            response = await self._client.post(self.push_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.counts.push_failures += 1
            log.warning("push %s failed: %s", msg_id, exc.__class__.__name__)
            return
        if response.is_success:
            self.counts.pushes += 1
        else:
            self.counts.push_failures += 1
            log.warning("push %s answered %d", msg_id, response.status_code)
