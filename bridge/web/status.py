"""The status page: `GET /` (HTML that redraws itself) and `GET /api/status` (what it draws).

Read-only. The page shows the sources (kind, last poll or receive, status, last error,
events), the targets (health, circuit, backlog, dead), the latest events (type, origin,
latency) and a poll-vs-push chart of detection latencies over the last hour. The figures are
gathered by `collect` through the store interface and shaped by the pure `status_json`.
Both routes are admin routes (see auth.py). The page's data goes into a JSON data block with
`<`, `>` and `&` escaped, never into its code, and the page is served with a
Content-Security-Policy that allows only its own inline script and style, by their hashes.
`/api/status` also lists the request budgets' use, read from the running poller.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge import __version__
from bridge.compare.report import LatencyReport, load_report
from bridge.config import AdaptiveEvery, Config, PollConfig
from bridge.events import Event, format_time, now_ms
from bridge.runtime import Runtime
from bridge.status.summary import Summary
from bridge.status.summary import collect as collect_summary
from bridge.web.auth import Guard, admin_only

log = logging.getLogger("bridge.web")

# The chart covers this last while, and at most this many of the newest events and
# deliveries, so a busy or big database does not slow the page down.
CHART_WINDOW_MS = 3_600_000
CHART_MAX_ROWS = 20_000
RECENT_EVENTS = 15
_NO_CACHE = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
# No page of the bridge sends a Referer anywhere (the admin pages' forms then carry
# `Origin: null`, see auth.py).
PAGE_HEADERS = {**_NO_CACHE, "referrer-policy": "no-referrer"}


@dataclass(slots=True, frozen=True)
class Snapshot:
    """Everything the page shows, as read from the store at one moment."""

    now_ms: int
    started_ms: int
    summary: Summary
    recent: Sequence[Event]
    report: LatencyReport
    # Why the last reload was refused, until one is applied.
    reload_error: str | None = None
    reloads: int = 0  # reloads finished, applied or refused
    # The sources whose polls the upstream holds back now: source -> (until_s, why).
    holds: dict[str, tuple[float, str]] = field(default_factory=dict)


def _every_s(poll: PollConfig) -> float:
    return poll.every.min_s if isinstance(poll.every, AdaptiveEvery) else poll.every


def _sources(config: Config, snap: Snapshot) -> list[dict[str, Any]]:
    polls = {s.source: s.polls for s in snap.report.sources if s.polls is not None}
    out = []
    for s in snap.summary.sources:
        source = config.sources.get(s.name)
        last_ms = s.last_poll_ms if s.kind == "poll" else s.last_event_ms
        entry: dict[str, Any] = {
            "name": s.name,
            "kind": s.kind,
            "status": s.status,
            "events": s.events,
            "last_ms": last_ms,
            "last": format_time(last_ms) if last_ms is not None else None,
            "last_error": s.last_error,
            "mode": s.mode,
            "gaps": s.gaps,
            "faults": s.faults,
            "merge": s.merge,
            "sightings": s.sightings,
            "members": s.members,
        }
        if source is not None and source.poll is not None:
            counters = polls.get(s.name)
            entry |= {
                "every_s": _every_s(source.poll),
                "requests": counters.requests if counters else 0,
                "not_modified": counters.not_modified if counters else 0,
                "empty_polls": counters.empty_polls if counters else 0,
            }
        elif source is not None:
            entry["path"] = config.webhook_path(s.name)
        out.append(entry)
    return out


def _targets(snap: Snapshot) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "health": t.health,
            "circuit": t.circuit,
            "backlog": t.backlog,
            "dead": t.dead,
            "last_error": t.last_error,
        }
        for t in snap.summary.targets
    ]


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
        {"source": s.source, "origin": s.origin, "count": s.detection.count, "events": s.events}
        | s.detection.to_json()
        for s in snap.report.sources
    ]
    return {
        "bridge": {
            "version": __version__,
            "now": format_time(snap.now_ms),
            "uptime_s": max(0, snap.now_ms - snap.started_ms) // 1000,
            "pid": os.getpid(),
            "reloads": snap.reloads,
        },
        "sources": _sources(config, snap),
        "targets": _targets(snap),
        "events": _recent(snap.recent),
        "chart": {"window_s": CHART_WINDOW_MS // 1000, "sources": chart},
        "pairs": [p.to_json() for p in snap.report.pairs],
        "budgets": [asdict(b) for b in snap.summary.budgets],
        "merges": [m.to_dict() for m in snap.report.merges],
        "reload_error": snap.reload_error,
        "holds": [
            {"source": name, "until": format_time(math.ceil(until_s * 1000)), "why": why}
            for name, (until_s, why) in sorted(snap.holds.items())
        ],
    }


async def collect(runtime: Runtime) -> Snapshot:
    """Read what the page shows from the store."""
    store, now = runtime.store, now_ms()
    return Snapshot(
        now_ms=now,
        started_ms=runtime.started_ms,
        summary=await collect_summary(runtime.config, store, runtime.budgets.uses()),
        recent=await store.list_events(limit=RECENT_EVENTS),
        report=await load_report(store, runtime.config, now - CHART_WINDOW_MS, CHART_MAX_ROWS),
        reload_error=runtime.reload_error,
        reloads=runtime.reloads,
        holds=runtime.poll_holds() if runtime.poll_holds is not None else {},
    )


# Characters that mean something to the HTML parser inside a script element (`</script>`,
# `<!--`, `<script`): in embedded JSON they are written as the JSON escapes they stand for.
_HTML_SIGNIFICANT = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
# The page's inline code: a script element without attributes, and its style element.
_INLINE_CODE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def template() -> str:
    """The page as shipped, before the data goes in."""
    return resources.files("bridge.web").joinpath("status.html").read_text("utf-8")


def embed_json(data: Any) -> str:
    """`data` as JSON without `<`, `>` or `&`: safe inside any script element."""
    return json.dumps(data, ensure_ascii=True).translate(_HTML_SIGNIFICANT)


def content_security_policy(page: str, form_action: str = "'none'") -> str:
    """The page's Content-Security-Policy: only its own inline script and style (by hash),
    requests only to its own origin, and no framing or `<base>`; forms may go only where
    `form_action` says (nowhere for the status page, `'self'` for the admin pages)."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE_CODE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    script = " ".join(hashes["script"]) or "'none'"
    style = " ".join(hashes["style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; "
        f"img-src 'self'; base-uri 'none'; form-action {form_action}; frame-ancestors 'none'"
    )


def render_page(data: dict[str, Any], page: str | None = None) -> str:
    """The page with `data` inlined, so it shows at once and then refreshes from the API.

    The data goes into a JSON data block that no script runs, never into the code: the code,
    and so the hash the policy allows, is the same whatever the data.
    """
    return (page or template()).replace("/*INITIAL_STATUS*/null", embed_json(data))


class Status:
    """The status page component."""

    def __init__(self, runtime: Runtime, guard: Guard | None = None) -> None:
        self.runtime = runtime
        self.guard = guard or Guard(runtime)
        self._template = template()
        policy = content_security_policy(self._template)
        self._page_headers = {**PAGE_HEADERS, "content-security-policy": policy}

    def routes(self) -> list[BaseRoute]:
        """`/` and `/api/status`, both guarded as admin routes."""

        return [
            Route("/", admin_only(self.runtime, self._page, self.guard), methods=["GET", "HEAD"]),
            Route("/api/status", admin_only(self.runtime, self._api, self.guard), methods=["GET"]),
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
        page = render_page(await self._data(), self._template)
        return HTMLResponse(page, headers=self._page_headers)

    async def _api(self, request: Request) -> Response:
        return JSONResponse(await self._data(), headers=_NO_CACHE)
