"""Local simulations of the REST APIs the poll presets speak, on tests/scripted_server.py.

Each simulation answers as its provider documents (see docs/guides/presets.md and the
providers' API references): its auth and version headers are checked (a request without
them is answered 401 or 400 and kept in `refused`), its pagination is its own (GitHub's
`Link` with `rel="next"` and `rel="last"` carrying the whole query; Stripe's `has_more` with
`starting_after`/`ending_before`; Shopify's `Link` `page_info` URLs that carry no filter and
refuse one; GitLab's `Link` with `X-Next-Page`), it sends its rate-limit headers, and GitHub
answers `If-None-Match` with a 304 that does not count against the limit.

Shopify's GraphQL Admin API (`ShopifyGraphQL`, over the same shop's collections) as its
documentation describes it: a POST of `{query, variables}` to `/admin/api/{version}/graphql.json`;
Relay connections with `nodes` and `pageInfo {hasNextPage endCursor}` paged by `after`;
`first` at most 250; the `query` argument's search syntax (`updated_at:>'2026-12-01T00:00:00Z'`);
a leaky bucket of cost points (`extensions.cost`: `requestedQueryCost`, `actualQueryCost`,
`throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}`, restored per second of
real time), a query it cannot pay for answered with HTTP 200 and an `errors` entry whose
`extensions.code` is `THROTTLED`; other mistakes as `errors` too.

Every collection has an eventual-consistency lag: a change stamped at `t` can become
visible to list queries only `lag_s` later. All share one `Clock` that the test moves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.scripted_server import Reply, Script, Seen

BASE_S = 1_900_000_000  # the upstream clock starts here (2030)
GITHUB_TOKEN = "ghp_simulated0000000000000000000000000"
STRIPE_KEY = "sk_test_simulated000000000000"
SHOPIFY_TOKEN = "shpat_simulated00000000000000000000"
GITLAB_TOKEN = "glpat-simulated000000000000"


@dataclass
class Clock:
    """The upstreams' clock, in whole seconds; tests move it."""

    now_s: int = BASE_S


def iso(at_s: int, offset_h: int = 0) -> str:
    """RFC 3339 text: `Z`, or a fixed offset such as `-04:00` (as Shopify answers)."""
    if not offset_h:
        return datetime.fromtimestamp(at_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    zone = timezone(timedelta(hours=offset_h))
    return datetime.fromtimestamp(at_s, tz=zone).isoformat()


def parse_iso(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def query_of(seen: Seen) -> dict[str, str]:
    return dict(parse_qsl(seen.query, keep_blank_values=True))


def origin_of(seen: Seen) -> str:
    return f"http://{seen.headers['host']}"


@dataclass
class Collection:
    """Items by key, each a list of versions (stamp, visible from, fields)."""

    clock: Clock
    history: dict[str, list[tuple[int, int, dict[str, Any]]]] = field(default_factory=dict)

    def put(self, key: str, lag_s: int = 0, **fields: Any) -> None:
        """A new version of `key` stamped now, with `fields` over its previous ones."""
        before = self.history.get(key, [])
        merged = {**(before[-1][2] if before else {}), **fields}
        now = self.clock.now_s
        self.history.setdefault(key, []).append((now, now + lag_s, merged))

    def delete(self, key: str) -> None:
        self.history.pop(key, None)

    def visible(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(key, stamp, fields) of the newest version visible now of every key."""
        out = []
        for key, versions in self.history.items():
            shown = [v for v in versions if v[1] <= self.clock.now_s]
            if shown:
                out.append((key, shown[-1][0], shown[-1][2]))
        return out


def page_of(items: list[Any], page: int, per_page: int) -> tuple[list[Any], int]:
    """One page (1-based) and the number of the last page (at least 1)."""
    last = max(1, -(-len(items) // per_page))
    return items[(page - 1) * per_page : page * per_page], last


class Simulation:
    """What every provider simulation shares: a clock, a lock, the requests refused."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.refused: list[str] = []
        self.answered: list[Seen] = []

    def guarded(self, handler: Callable[[Seen], Reply]) -> Callable[[Seen], Reply]:
        def route(seen: Seen) -> Reply:
            with self.lock:
                problem = self.check(seen)
                if problem is not None:
                    self.refused.append(f"{seen.path}: {problem.body}")
                    return problem
                self.answered.append(seen)
                return handler(seen)

        return route

    def check(self, seen: Seen) -> Reply | None:
        raise NotImplementedError


# -- GitHub ----------------------------------------------------------------------------------


class GitHub(Simulation):
    """`/repos/{repo}/issues|releases|events` as api.github.com answers them."""

    def __init__(self, clock: Clock, repo: str = "octo/hello", max_per_page: int = 100) -> None:
        super().__init__(clock)
        self.repo = repo
        self.max_per_page = max_per_page
        self.issues = Collection(clock)  # key: the number; `pull_request` marks pull requests
        self.releases = Collection(clock)
        self.events: list[dict[str, Any]] = []
        self.remaining = 5000
        self.not_modified = 0
        self.poll_interval_s = 60  # X-Poll-Interval on events, as GitHub sends it

    def install(self, script: Script) -> None:
        base = f"/repos/{self.repo}"
        script.route(f"{base}/issues", self.guarded(self.issues_route))
        script.route(f"{base}/releases", self.guarded(self.releases_route))
        script.route(f"{base}/events", self.guarded(self.events_route))

    def check(self, seen: Seen) -> Reply | None:
        if seen.headers.get("authorization") != f"Bearer {GITHUB_TOKEN}":
            return Reply(401, {"message": "Bad credentials"})
        if seen.headers.get("accept") != "application/vnd.github+json":
            return Reply(415, {"message": "Unsupported media type"})
        if seen.headers.get("x-github-api-version") != "2022-11-28":
            return Reply(400, {"message": "Unsupported API version"})
        return None

    def add_event(self, kind: str, login: str = "octocat", **payload: Any) -> str:
        event_id = str(30_000_000_000 + len(self.events) + 1)
        self.events.append(
            {
                "id": event_id,
                "type": kind,
                "actor": {"login": login},
                "created_at": iso(self.clock.now_s),
                "payload": payload,
            }
        )
        return event_id

    def _paged(self, seen: Seen, items: list[Any], extra: list[tuple[str, str]]) -> Reply:
        query = query_of(seen)
        per_page = min(int(query.get("per_page", "30")), self.max_per_page)
        page = int(query.get("page", "1"))
        chunk, last = page_of(items, page, per_page)
        path = urlsplit(seen.path).path
        headers = list(extra)
        if page < last:
            # GitHub's links carry the whole query, `since` and all, with the next page.
            link = origin_of(seen) + path + "?"
            nxt = urlencode({**query, "page": page + 1})
            end = urlencode({**query, "page": last})
            headers.append(("Link", f'<{link}{nxt}>; rel="next", <{link}{end}>; rel="last"'))
        body = json.dumps(chunk).encode()
        etag = 'W/"' + hashlib.sha1(body + path.encode()).hexdigest() + '"'
        headers.append(("ETag", etag))
        if seen.headers.get("if-none-match") == etag:
            # An authorized 304 does not count against the primary rate limit.
            self.not_modified += 1
            return Reply(304, headers=[*self._limits(), ("ETag", etag)])
        self.remaining -= 1
        return Reply(body=body, headers=[*self._limits(), *headers])

    def _limits(self) -> list[tuple[str, str]]:
        reset = (self.clock.now_s // 3600 + 1) * 3600
        return [
            ("X-RateLimit-Limit", "5000"),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("X-RateLimit-Reset", str(reset)),
            ("X-RateLimit-Resource", "core"),
        ]

    def issue_items(self) -> list[dict[str, Any]]:
        return [
            {"number": int(key), "state": "open", **fields, "updated_at": iso(stamp)}
            for key, stamp, fields in self.issues.visible()
        ]

    def issues_route(self, seen: Seen) -> Reply:
        query = query_of(seen)
        items = self.issue_items()
        state = query.get("state", "open")
        if state != "all":
            items = [i for i in items if i["state"] == state]
        if "since" in query:
            since = parse_iso(query["since"])
            items = [i for i in items if parse_iso(i["updated_at"]) >= since]
        if query.get("sort") == "updated":
            desc = query.get("direction", "desc") == "desc"
            items.sort(key=lambda i: (i["updated_at"], i["number"]), reverse=desc)
        else:
            items.sort(key=lambda i: i["number"], reverse=True)
        return self._paged(seen, items, [])

    def releases_route(self, seen: Seen) -> Reply:
        items = [
            {"id": int(key), **fields, "published_at": iso(stamp)}
            for key, stamp, fields in self.releases.visible()
        ]
        items.sort(key=lambda r: r["published_at"], reverse=True)
        return self._paged(seen, items, [])

    def events_route(self, seen: Seen) -> Reply:
        newest = list(reversed(self.events))[:300]  # at most 300 events
        return self._paged(seen, newest, [("X-Poll-Interval", str(self.poll_interval_s))])


# -- Stripe ----------------------------------------------------------------------------------


class Stripe(Simulation):
    """`/v1/events` and `/v1/customers` as api.stripe.com answers them: newest first."""

    def __init__(self, clock: Clock, max_limit: int = 100) -> None:
        super().__init__(clock)
        self.max_limit = max_limit
        self.events: list[dict[str, Any]] = []  # in creation order
        self.visible_from: dict[str, int] = {}
        self.customers: list[dict[str, Any]] = []

    def install(self, script: Script) -> None:
        script.route("/v1/events", self.guarded(self.events_route))
        script.route("/v1/customers", self.guarded(self.customers_route))

    def check(self, seen: Seen) -> Reply | None:
        if seen.headers.get("authorization") != f"Bearer {STRIPE_KEY}":
            return Reply(401, {"error": {"type": "invalid_request_error"}})
        query = query_of(seen)
        if "starting_after" in query and "ending_before" in query:
            return Reply(
                400, {"error": {"message": "Received both starting_after and ending_before"}}
            )
        return None

    def add_event(self, kind: str, object_id: str, lag_s: int = 0) -> str:
        event_id = f"evt_{len(self.events) + 1:06d}"
        created = self.clock.now_s
        self.events.append(
            {"id": event_id, "object": "event", "type": kind, "created": created,
             "data": {"object": {"id": object_id}}}
        )  # fmt: skip
        self.visible_from[event_id] = created + lag_s
        return event_id

    def add_customer(self, email: str) -> str:
        customer_id = f"cus_{len(self.customers) + 1:06d}"
        self.customers.append(
            {"id": customer_id, "object": "customer", "created": self.clock.now_s, "email": email}
        )
        return customer_id

    def _list(self, seen: Seen, newest_first: list[dict[str, Any]]) -> Reply:
        query = query_of(seen)
        limit = min(int(query.get("limit", "10")), self.max_limit)
        ids = [o["id"] for o in newest_first]
        if "starting_after" in query:  # older than the object
            at = ids.index(query["starting_after"]) + 1 if query["starting_after"] in ids else 0
            data = newest_first[at : at + limit]
            more = at + limit < len(newest_first)
        elif "ending_before" in query:  # newer than the object: the page just before it
            end = ids.index(query["ending_before"]) if query["ending_before"] in ids else 0
            data = newest_first[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            data, more = newest_first[:limit], limit < len(newest_first)
        url = urlsplit(seen.path).path
        return Reply(body={"object": "list", "url": url, "has_more": more, "data": data})

    def events_route(self, seen: Seen) -> Reply:
        shown = [e for e in self.events if self.visible_from[e["id"]] <= self.clock.now_s]
        return self._list(seen, sorted(shown, key=lambda e: (e["created"], e["id"]), reverse=True))

    def customers_route(self, seen: Seen) -> Reply:
        query = query_of(seen)
        rows = self.customers
        if "created[gte]" in query:
            rows = [c for c in rows if c["created"] >= int(query["created[gte]"])]
        return self._list(seen, sorted(rows, key=lambda c: (c["created"], c["id"]), reverse=True))


# -- Shopify ---------------------------------------------------------------------------------


class Shopify(Simulation):
    """`/admin/api/{version}/{resource}.json` as a shop answers it, with page_info links."""

    FILTERS = ("updated_at_min", "status", "created_at_min", "ids", "since_id")

    def __init__(self, clock: Clock, version: str = "2025-10", max_limit: int = 250) -> None:
        super().__init__(clock)
        self.version = version
        self.max_limit = max_limit
        self.collections = {name: Collection(clock) for name in ("orders", "products", "customers")}
        self.calls = 0

    def install(self, script: Script) -> None:
        for name in self.collections:
            route = self.guarded(lambda seen, name=name: self.list_route(seen, name))
            script.route(f"/admin/api/{self.version}/{name}.json", route)

    def check(self, seen: Seen) -> Reply | None:
        if seen.headers.get("x-shopify-access-token") != SHOPIFY_TOKEN:
            return Reply(401, {"errors": "[API] Invalid API key or access token"})
        query = query_of(seen)
        mixed = [k for k in query if k in self.FILTERS]
        if "page_info" in query and mixed:
            return Reply(400, {"errors": {"page_info": [f"{mixed[0]} cannot be passed"]}})
        return None

    def list_route(self, seen: Seen, name: str) -> Reply:
        query = query_of(seen)
        limit = min(int(query.get("limit", "50")), self.max_limit)
        if "page_info" in query:
            # The cursor holds the filters of the first request and where the page starts.
            state = json.loads(base64.urlsafe_b64decode(query["page_info"]))
            filters, offset = state["filters"], state["offset"]
        else:
            filters, offset = {k: v for k, v in query.items() if k in self.FILTERS}, 0
        rows = [
            {"id": int(key), "status": "open", **fields, "updated_at": iso(stamp, offset_h=-4)}
            for key, stamp, fields in self.collections[name].visible()
        ]
        if name == "orders" and filters.get("status", "open") != "any":
            rows = [r for r in rows if r["status"] == filters.get("status", "open")]
        if "updated_at_min" in filters:
            floor = parse_iso(filters["updated_at_min"])
            rows = [r for r in rows if parse_iso(r["updated_at"]) >= floor]
        rows.sort(key=lambda r: r["id"])
        chunk = rows[offset : offset + limit]
        self.calls += 1
        headers = [("X-Shopify-Shop-Api-Call-Limit", f"{min(self.calls, 40)}/40")]
        links = []
        path = origin_of(seen) + urlsplit(seen.path).path
        for rel, at in (("previous", offset - limit), ("next", offset + limit)):
            if (rel == "next" and at < len(rows)) or (rel == "previous" and offset > 0):
                token = base64.urlsafe_b64encode(
                    json.dumps({"filters": filters, "offset": max(0, at)}).encode()
                ).decode()
                links.append(
                    f'<{path}?{urlencode({"limit": limit, "page_info": token})}>; rel="{rel}"'
                )
        if links:
            headers.append(("Link", ", ".join(links)))
        return Reply(body={name: chunk}, headers=headers)


class ShopifyGraphQL(Simulation):
    """`POST /admin/api/{version}/graphql.json` over the shop's collections (see above)."""

    RESOURCE_RE = re.compile(r"\b(products|orders|customers)\s*\(")
    SEARCH_RE = re.compile(r"updated_at:>'([^']+)'\Z")
    KINDS = {"products": "Product", "orders": "Order", "customers": "Customer"}

    def __init__(self, shop: Shopify, maximum: float = 1000.0, restore_rate: float = 50.0):
        super().__init__(shop.clock)
        self.shop = shop
        self.maximum = maximum
        self.restore_rate = restore_rate
        self.available = maximum
        self.restored_at = time.monotonic()
        self.throttled = 0  # answers THROTTLED
        self.throttled_status = 200  # some shops are reported to answer it with a 429
        self.searches: list[str | None] = []  # the `query` variable of each first page

    def install(self, script: Script) -> None:
        script.route(f"/admin/api/{self.shop.version}/graphql.json", self.guarded(self.route))

    def check(self, seen: Seen) -> Reply | None:
        if seen.method != "POST":
            return Reply(405, {"errors": "use POST"})
        if seen.headers.get("x-shopify-access-token") != SHOPIFY_TOKEN:
            return Reply(401, {"errors": "[API] Invalid API key or access token"})
        if not seen.headers.get("content-type", "").startswith("application/json"):
            return Reply(400, {"errors": "Content-Type must be application/json"})
        return None

    def _restore(self) -> None:
        now = time.monotonic()
        self.available = min(
            self.maximum, self.available + (now - self.restored_at) * self.restore_rate
        )
        self.restored_at = now

    def _cost(self, requested: float, actual: float | None) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": self.maximum,
                "currentlyAvailable": round(self.available, 1),
                "restoreRate": self.restore_rate,
            },
        }

    @staticmethod
    def _error(message: str) -> Reply:
        return Reply(
            200, {"errors": [{"message": message, "locations": [{"line": 1, "column": 1}]}]}
        )

    def route(self, seen: Seen) -> Reply:
        body = seen.json()
        query, variables = body.get("query", ""), body.get("variables") or {}
        found = self.RESOURCE_RE.search(query)
        if found is None or "pageInfo { hasNextPage endCursor }" not in query:
            return self._error("Field must have selections (a connection with pageInfo)")
        name = found.group(1)
        first = variables.get("first")
        if not isinstance(first, int) or not 0 < first <= 250:
            return self._error("The first argument must be between 1 and 250")
        requested = 2.0 + first
        self._restore()
        if self.available < requested:
            self.throttled += 1
            return Reply(self.throttled_status, {
                "errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": self._cost(requested, None)},
            })  # fmt: skip
        search = variables.get("query")
        after = variables.get("after")
        rows = [
            {"id": f"gid://shopify/{self.KINDS[name]}/{key}", **fields, "updatedAt": iso(stamp)}
            for key, stamp, fields in self.shop.collections[name].visible()
        ]
        if search is not None:
            match = self.SEARCH_RE.match(search)
            if match is None:
                return self._error(f"Invalid search syntax: {search}")
            floor = parse_iso(match.group(1))
            rows = [r for r in rows if parse_iso(r["updatedAt"]) > floor]
        rows.sort(key=lambda r: (r["updatedAt"], r["id"]))  # sortKey: UPDATED_AT
        offset = json.loads(base64.b64decode(after))["offset"] if after else 0
        if after is None:
            self.searches.append(search)
        chunk = rows[offset : offset + first]
        actual = 2.0 + len(chunk)
        self.available -= actual
        end = offset + len(chunk)
        cursor = base64.b64encode(json.dumps({"offset": end}).encode()).decode()
        info = {"hasNextPage": end < len(rows), "endCursor": cursor if chunk else None}
        return Reply(200, {
            "data": {name: {"nodes": chunk, "pageInfo": info}},
            "extensions": {"cost": self._cost(requested, actual)},
        })  # fmt: skip


# -- GitLab ----------------------------------------------------------------------------------


class GitLab(Simulation):
    """`/api/v4/projects/{id}/issues|merge_requests` as gitlab.com answers them."""

    def __init__(self, clock: Clock, project: str = "group%2Fproject", max_per_page: int = 100):
        super().__init__(clock)
        self.project = project
        self.max_per_page = max_per_page
        self.collections = {name: Collection(clock) for name in ("issues", "merge_requests")}
        self.remaining = 2000

    def install(self, script: Script) -> None:
        for name in self.collections:
            route = self.guarded(lambda seen, name=name: self.list_route(seen, name))
            script.route(f"/api/v4/projects/{self.project}/{name}", route)

    def check(self, seen: Seen) -> Reply | None:
        if seen.headers.get("private-token") != GITLAB_TOKEN:
            return Reply(401, {"message": "401 Unauthorized"})
        return None

    def list_route(self, seen: Seen, name: str) -> Reply:
        query = query_of(seen)
        rows = [
            {"id": 1000 + int(key), "iid": int(key), "state": "opened", **fields,
             "updated_at": iso(stamp).replace("Z", ".000Z")}
            for key, stamp, fields in self.collections[name].visible()
        ]  # fmt: skip
        if "updated_after" in query:
            floor = parse_iso(query["updated_after"])
            rows = [r for r in rows if parse_iso(r["updated_at"]) >= floor]
        if query.get("state", "all") != "all":
            rows = [r for r in rows if r["state"] == query["state"]]
        desc = query.get("sort", "desc") == "desc"
        order = query.get("order_by", "created_at")
        rows.sort(key=lambda r: r["updated_at"] if order == "updated_at" else r["id"], reverse=desc)
        per_page = min(int(query.get("per_page", "20")), self.max_per_page)
        page = int(query.get("page", "1"))
        chunk, last = page_of(rows, page, per_page)
        self.remaining -= 1
        headers = [
            ("RateLimit-Limit", "2000"),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.clock.now_s + 60)),
            ("X-Page", str(page)),
            ("X-Per-Page", str(per_page)),
            ("X-Next-Page", str(page + 1) if page < last else ""),
            ("X-Total-Pages", str(last)),
        ]
        url = origin_of(seen) + urlsplit(seen.path).path + "?"
        links = [f'<{url}{urlencode({**query, "page": 1})}>; rel="first"']
        if page < last:
            links.insert(0, f'<{url}{urlencode({**query, "page": page + 1})}>; rel="next"')
        links.append(f'<{url}{urlencode({**query, "page": last})}>; rel="last"')
        headers.append(("Link", ", ".join(links)))
        return Reply(body=chunk, headers=headers)


@dataclass
class Providers:
    """All four simulations on one scripted server, sharing one clock."""

    clock: Clock
    github: GitHub
    stripe: Stripe
    shopify: Shopify
    gitlab: GitLab
    shopify_graphql: ShopifyGraphQL

    @classmethod
    def install(cls, script: Script, **limits: int) -> Providers:
        clock = Clock()
        size = limits.get("page_size", 100)
        shopify = Shopify(clock, max_limit=size)
        sims = cls(
            clock,
            GitHub(clock, max_per_page=size),
            Stripe(clock, max_limit=size),
            shopify,
            GitLab(clock, max_per_page=size),
            ShopifyGraphQL(shopify),
        )
        for sim in (sims.github, sims.stripe, sims.shopify, sims.gitlab, sims.shopify_graphql):
            sim.install(script)
        return sims

    def refused(self) -> list[str]:
        return [*self.github.refused, *self.stripe.refused, *self.shopify.refused,
                *self.gitlab.refused, *self.shopify_graphql.refused]  # fmt: skip
