"""The status page: `GET /` (HTML that redraws itself) and `GET /api/status` (what it draws).

Read-only. The page shows the sources (kind, last poll or receive, status, last error,
events), the targets (health, circuit, backlog, dead), the latest events (type, origin,
latency) and a poll-vs-push chart of detection latencies over the last hour. The figures are
gathered by `collect` through the store interface and shaped by the pure `status_json`.
Both routes are admin routes (see auth.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge import __version__
from bridge.config import AdaptiveEvery, Config, PollConfig
from bridge.events import Event, format_time, now_ms
from bridge.report import LatencyReport, load_report
from bridge.runtime import Runtime
from bridge.store.base import PollState, SourceActivity, TargetState
from bridge.web.auth import admin_only

log = logging.getLogger("bridge.web")

# The chart covers this last while, and at most this many of the newest events and
# deliveries, so a busy or big database does not slow the page down.
CHART_WINDOW_MS = 3_600_000
CHART_MAX_ROWS = 20_000
RECENT_EVENTS = 15
WAITING_AND_DEAD = ("pending", "failed", "dead")
_NO_CACHE = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


@dataclass(slots=True, frozen=True)
class Snapshot:
    """Everything the page shows, as read from the store at one moment."""

    now_ms: int
    started_ms: int
    activity: Sequence[SourceActivity]
    counters: Sequence[PollState]
    targets: Mapping[str, TargetState]
    # Per target: how many deliveries wait or are dead, by status.
    deliveries: Mapping[str, Mapping[str, int]]
    recent: Sequence[Event]
    report: LatencyReport


def _every_s(poll: PollConfig) -> float:
    return poll.every.min_s if isinstance(poll.every, AdaptiveEvery) else poll.every


def _poll_status(counters: PollState | None) -> tuple[str, int | None, str | None]:
    if counters is None or counters.last_poll_ms is None:
        return "waiting", None, None
    if counters.consecutive_failures:
        return "failing", counters.last_poll_ms, counters.last_error
    return "ok", counters.last_poll_ms, None


def _sources(config: Config, snap: Snapshot) -> list[dict[str, Any]]:
    activity = {a.source: a for a in snap.activity}
    counters = {c.source: c for c in snap.counters}
    out = []
    for name, source in config.sources.items():
        seen = activity.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "kind": source.kind,
            "events": seen.events if seen else 0,
        }
        if source.poll is not None:
            status, last_ms, error = _poll_status(counters.get(name))
            c = counters.get(name)
            entry |= {
                "every_s": _every_s(source.poll),
                "requests": c.requests if c else 0,
                "not_modified": c.not_modified if c else 0,
                "empty_polls": c.empty_polls if c else 0,
            }
        else:
            last_ms = seen.last_recorded_ms if seen else None
            status, error = ("receiving" if seen else "waiting"), None
            entry["path"] = config.webhook_path(name)
        entry |= {
            "status": status,
            "last_ms": last_ms,
            "last": format_time(last_ms) if last_ms is not None else None,
            "last_error": error,
        }
        out.append(entry)
    return out


def _health(t: TargetState) -> str:
    if t.disabled_ms is not None:
        return "disabled"
    if t.circuit == "open":
        return "failing"
    if t.circuit == "half_open" or t.failures:
        return "recovering"
    return "ok"


def _targets(config: Config, snap: Snapshot) -> list[dict[str, Any]]:
    out = []
    for name in config.targets:
        t = snap.targets.get(name) or TargetState(name)
        counts = snap.deliveries.get(name, {})
        out.append(
            {
                "name": name,
                "health": _health(t),
                "circuit": t.circuit,
                "backlog": counts.get("pending", 0) + counts.get("failed", 0),
                "dead": counts.get("dead", 0),
            }
        )
    return out


def _recent(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "source": e.source,
            "type": e.type,
            "origin": e.origin,
            "subject": e.subject,
            "recorded": format_time(e.recorded_ms),
            "latency_ms": e.recorded_ms - e.time_ms if e.time_ms is not None else None,
        }
        for e in events
    ]


def status_json(config: Config, snap: Snapshot) -> dict[str, Any]:
    """The JSON object behind the page (pure: from the config and one snapshot)."""
    chart = [
        {"source": s.source, "origin": s.origin, "count": s.detection.count} | s.detection.to_json()
        for s in snap.report.sources
    ]
    return {
        "bridge": {
            "version": __version__,
            "now": format_time(snap.now_ms),
            "uptime_s": max(0, snap.now_ms - snap.started_ms) // 1000,
        },
        "sources": _sources(config, snap),
        "targets": _targets(config, snap),
        "events": _recent(snap.recent),
        "chart": {"window_s": CHART_WINDOW_MS // 1000, "sources": chart},
        "pairs": [p.to_json() for p in snap.report.pairs],
    }


async def collect(runtime: Runtime) -> Snapshot:
    """Read what the page shows from the store."""
    store, now = runtime.store, now_ms()
    return Snapshot(
        now_ms=now,
        started_ms=runtime.started_ms,
        activity=await store.source_activity(),
        counters=await store.list_poll_states(),
        targets=await store.target_states(),
        # Waiting and dead rows are few and indexed; delivered ones are never counted here.
        deliveries=await store.delivery_counts(WAITING_AND_DEAD),
        recent=await store.list_events(limit=RECENT_EVENTS),
        report=await load_report(store, runtime.config, now - CHART_WINDOW_MS, CHART_MAX_ROWS),
    )


def render_page(data: dict[str, Any]) -> str:
    """The page with `data` inlined, so it shows at once and then refreshes from the API."""
    template = resources.files("bridge.web").joinpath("status.html").read_text("utf-8")
    # `</` inside a script element would end it early; JSON allows `<\/` for it.
    inline = json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
    return template.replace("/*INITIAL_STATUS*/null", inline)


class Status:
    """The status page component."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def routes(self) -> list[BaseRoute]:
        """`/` and `/api/status`, both guarded as admin routes."""

        def server() -> Any:
            return self.runtime.config.server

        return [
            Route("/", admin_only(server, self._page), methods=["GET", "HEAD"]),
            Route("/api/status", admin_only(server, self._api), methods=["GET"]),
        ]

    async def start(self) -> None:
        """Nothing to start: the page reads the store per request."""

    async def stop(self, grace_s: float) -> None:
        """Nothing to stop."""

    async def reload(self, config: Config) -> None:
        """Nothing to do: the page reads `runtime.config` per request."""

    async def _data(self) -> dict[str, Any]:
        return status_json(self.runtime.config, await collect(self.runtime))

    async def _page(self, request: Request) -> Response:
        return HTMLResponse(render_page(await self._data()), headers=_NO_CACHE)

    async def _api(self, request: Request) -> Response:
        return JSONResponse(await self._data(), headers=_NO_CACHE)
