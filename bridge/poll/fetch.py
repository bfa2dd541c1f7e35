"""Fetching a polled source: one HTTP walk over every page of its answer.

`fetch` sends the source's request, follows the pagination (`Link: rel="next"`, a next URL
or a cursor found in the body), and returns every page's items. Anything that makes the
answer incomplete or unusable raises `FetchError`, so that the caller never diffs a partial
answer: a non-2xx status, a timeout, a connection error, an answer larger than `max_bytes`,
invalid JSON, a problem document, an `items` expression that finds no list, a redirect not
followed, a walk longer than `max_pages` or one that loops. A 429 or 503 carries its
`Retry-After` in seconds. More items than `max_items` over all pages is the fault
`too_many_items`, found as they are read. With a `WalkPlan.sink` (a snapshot poll) the items
are not collected: each page's are handed to the sink as they are read, one at a time out of
the page's text where `items` is a plain field path (scan.py). Every answer's rate-limit
headers, on success and on failure, are read into `Fetched.limits` (see limits.py).

A GraphQL source POSTs its query (graphql.py: `data`, `errors`, the `extensions.cost` budget,
which joins the headers' limits and paces the pages). A feed is read into entries (feeds.py).

Conditional requests (`If-None-Match`, `If-Modified-Since`) are sent only for a source
without `pages`: a page's validators say nothing of the other pages, and servers that
paginate with a `Link` header compute the ETag over the body alone, so not even whether a
new page appeared after a page that answers 304. A 304 never stands for a paginated answer.

The request is the configured `url` with its query string kept, `params` merged into it (a
key in both: `params` wins). Relative next URLs resolve against the page that gave them.
Redirects are followed only with `follow_redirects` and only within the origin of the page
redirected. Every URL the upstream names (a `Link`, a `next_url`, a redirect) is judged by
its origin (scheme, host, port): the source's own is requested with the source's headers (and
its user-info, as Basic auth); one listed in `pages.allow_origins` with none of them, without
user-info and without any query parameter the config names (`params` or the `url`'s query,
which often carry keys); any other is the fault `origin`, never requested. So headers and
parameters that carry credentials never reach another host. The source's `auth:` (an
`httpx.Auth`, see auth/) goes with its own origin's requests only, like its headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import count, islice
from typing import Any, NoReturn, Protocol

import httpx
import jmespath

from bridge import jsontext
from bridge.config import CursorPages, GraphQLPages, NextUrlPages, PollConfig
from bridge.errors import FetchError
from bridge.poll import feeds, graphql
from bridge.poll.limits import NO_LIMITS, Limits, read_limits, retry_after_s
from bridge.poll.links import next_link
from bridge.poll.scan import NotAList, NotJSON, PageScan, decode_text, stream_path
from bridge.poll.urls import configured_url, origin, request_url, safe_url

log = logging.getLogger("bridge.poll")

# Errors of a reused keep-alive connection that the server had just closed.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

# Answers larger than this are parsed in a worker thread, not on the event loop.
LARGE_BODY = 1_000_000
# Same-origin redirects followed for one request, at most (with `follow_redirects`).
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True, slots=True)
class Validators:
    """What the previous answer said to send back in a conditional request."""

    etag: str | None = None
    last_modified: str | None = None


NO_VALIDATORS = Validators()


@dataclass(slots=True)
class Fetched:
    """One poll's answer: its items (every page), or `not_modified`, and what it cost."""

    items: list[Any] = field(default_factory=list)
    not_modified: bool = False
    status: int | None = None
    validators: Validators = NO_VALIDATORS
    requests: int = 0
    pages: int = 0  # pages read (a 304 is none)
    bytes: int = 0
    # What the answers' rate-limit headers allow (see limits.py), over every page.
    limits: Limits = NO_LIMITS
    truncated: bool = False  # the walk stopped at max_pages (only with `WalkPlan.partial`)
    item_count: int = 0  # items read over every page (in `items`, or handed to the sink)
    stopped: bool = False  # the walk stopped because `WalkPlan.stop` said so


@dataclass(frozen=True, slots=True)
class WalkPlan:
    """What one poll asks beyond the source's config (incremental and feed polls)."""

    params: Mapping[str, Any] = field(default_factory=dict)  # merged into every request's query
    # Set over a GraphQL query's configured variables (an incremental cursor's).
    variables: Mapping[str, Any] = field(default_factory=dict)
    max_pages: int | None = None  # fewer pages than the source's max_pages
    # Awaited with each page's items: True ends the walk there (a feed reached a seen event).
    stop: Callable[[list[Any]], Awaitable[bool]] | None = None
    partial: bool = False  # reaching max_pages ends the walk, `truncated`, instead of a fault
    # Takes each page's items as they are read, instead of `Fetched.items` (streamed.py).
    sink: PageSink | None = None


class PageSink(Protocol):
    """What takes a walk's items page by page, each with where it starts in its page."""

    def add_page(self, page: str | list[Any], items: Iterable[tuple[Any, int]]) -> int:
        """Take the items of `page` (its JSON text, or its items when it was parsed whole);
        how many it took."""


WHOLE = WalkPlan()


def parse_json(body: bytes, charset: str | None = None) -> Any:
    """Strict JSON: UTF-8 (a BOM allowed) or the charset the content type names.

    `NaN`, `Infinity` and numbers too large for a float (`1e400`) are refused: what the
    bridge stores and sends is strict JSON.
    """
    if charset and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        text: str | bytes = body.decode(charset).lstrip("\ufeff")
    else:
        text = body  # json detects UTF-8, -16 and -32 and a UTF-8 BOM from the bytes
    return jsontext.loads(text)


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(slots=True)
class _Page:
    """One answer read whole: the response (its body consumed) and the body's bytes."""

    response: httpx.Response
    body: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """What one request sends beyond the source's config: another method, a JSON body."""

    method: str | None = None
    body: Any = None


class Walk:
    """The state of one walk over the pages of an answer (delta.py walks its own pages
    with its `request`, `check`, `items_of` and `named`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        poll: PollConfig,
        validators: Validators,
        out: Fetched,
        plan: WalkPlan = WHOLE,
        auth: httpx.Auth | None = None,
    ):
        self.client = client
        self.auth = auth
        self.poll = poll
        self.plan = plan
        self.params = {**poll.params, **plan.params}
        self.max_pages = min(poll.max_pages, plan.max_pages or poll.max_pages)
        # A 304 can stand only for a whole answer: by default only a source without pages.
        self.validators = validators if poll.sends_validators else NO_VALIDATORS
        self.items_expr = jmespath.compile(poll.items) if poll.items else None
        self.out = out
        self.seen: set[str] = set()
        self.url = configured = configured_url(poll.url)
        self.origin = origin(configured)
        self.userinfo = configured.userinfo
        self.allowed = {origin(configured_url(other)) for other in poll.allow_origins}
        # The query parameters the config names: never sent to another origin.
        self.configured_params = set(poll.params) | set(configured.params.keys())
        self.stream_path = stream_path(poll)
        self.graphql = poll.graphql
        self.feed = poll.format == "feed"
        self.variables: dict[str, Any] = dict(plan.variables)
        self.cost = NO_LIMITS  # what the last GraphQL answer's cost budget allows

    def named(self, url: httpx.URL, where: httpx.URL) -> httpx.URL:
        """A next page's URL that the answer at `where` names, as it may be requested; the
        fault `origin` when it is on an origin neither the source's nor allowed."""
        if origin(url) == self.origin:
            # An absolute URL to the same origin keeps the user-info of the configured one.
            keep = self.userinfo and not url.userinfo
            return url.copy_with(userinfo=self.userinfo) if keep else url
        if origin(url) not in self.allowed:
            raise FetchError(
                f"{safe_url(where)}: the next page is on another origin ({safe_url(url)}), never"
                " requested: list it in pages.allow_origins to read it without credentials",
                status=self.out.status,
                reason="origin",
            )
        kept: list[tuple[str, str | int | float | bool | None]] = [
            (k, v) for k, v in url.params.multi_items() if k not in self.configured_params
        ]
        if len(kept) != len(url.params.multi_items()):
            url = url.copy_with(params=httpx.QueryParams(kept))
        return url.copy_with(userinfo=b"") if url.userinfo else url

    def headers(self, first: bool, own_origin: bool = True) -> dict[str, str]:
        """The request's headers; to another origin, none of the configured ones."""
        configured = self.poll.headers.items() if own_origin else ()
        headers = {name: value.get_secret_value() for name, value in configured}
        if not any(name.lower() == "accept" for name in headers):
            headers["Accept"] = (
                graphql.ACCEPT
                if self.graphql
                else feeds.ACCEPT
                if self.feed
                else "application/json"
            )
        if self.graphql is not None:
            headers["Content-Type"] = graphql.CONTENT_TYPE
        if first and self.validators.etag:
            headers["If-None-Match"] = self.validators.etag
        if first and self.validators.last_modified:
            headers["If-Modified-Since"] = self.validators.last_modified
        return headers

    async def request(self, url: httpx.URL, first: bool, send: Send | None = None) -> _Page:
        """One request, with the same-origin redirects it is allowed to follow."""
        for _ in range(MAX_REDIRECTS + 1):
            page = await self._attempt(url, first, send)
            location = page.response.headers.get("location")
            if page.response.status_code not in _REDIRECTS or not location:
                return page
            url = self._redirect(page.response, location)
        raise FetchError(f"{safe_url(url)}: more than {MAX_REDIRECTS} redirects", reason="redirect")

    def _redirect(self, response: httpx.Response, location: str) -> httpx.URL:
        where, status = safe_url(response.url), response.status_code
        target = response.url.join(location)
        if origin(target) != origin(response.url):
            raise FetchError(
                f"{where}: HTTP {status} to another origin ({safe_url(target)}), never followed",
                status=status,
                reason="redirect",
            )
        if not self.poll.follow_redirects:
            raise FetchError(
                f"{where}: HTTP {status} redirect not followed (follow_redirects is off)",
                status=status,
                reason="redirect",
            )
        log.debug("%s: HTTP %d, following to %s", where, status, safe_url(target))
        return target

    async def _attempt(self, url: httpx.URL, first: bool, send: Send | None) -> _Page:
        try:
            try:
                return await self._send(url, first, send)
            except _STALE_CONNECTION:
                # A pooled keep-alive connection that the server closed as we reused it:
                # the request never reached the application, so sending it again is safe.
                log.debug("%s: the pooled connection was closed; retrying once", safe_url(url))
                self.out.requests += 1
                return await self._send(url, first, send)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise FetchError(
                f"{safe_url(url)}: timed out after {self.poll.timeout_s:g} s", reason="timeout"
            ) from exc
        except httpx.HTTPError as exc:
            reason = exc.__class__.__name__
            raise FetchError(
                f"{safe_url(url)}: request failed ({reason})", reason="connection"
            ) from exc
        finally:
            self.out.requests += 1

    async def _send(self, url: httpx.URL, first: bool, send: Send | None = None) -> _Page:
        """Send and read the whole answer within `timeout`, reading at most `max_bytes`."""
        own = origin(url) == self.origin
        headers = self.headers(first and own, own_origin=own)
        if self.graphql is not None:
            query = jsontext.dumps(graphql.request_body(self.graphql, self.variables))
            request = self.client.build_request(
                "POST", url, headers=headers, content=query.encode(), timeout=self.poll.timeout_s
            )
        else:
            method = send.method if send is not None and send.method else self.poll.method
            body = send.body if send is not None else None
            content = jsontext.dumps(body).encode() if body is not None else None
            if content is not None:
                headers["Content-Type"] = "application/json"
            request = self.client.build_request(
                method, url, headers=headers, content=content, timeout=self.poll.timeout_s
            )
        # httpx's timeout bounds each read; this bounds the request from connect to last byte.
        async with asyncio.timeout(self.poll.timeout_s):
            # No auth for another origin: httpx then sends only the URL's user-info, which
            # `named` strips from any URL not on the source's origin.
            response = await self.client.send(request, stream=True, auth=self.auth if own else None)
            try:
                body = await self._read(response)
            finally:
                await response.aclose()
        self.out.status = response.status_code
        self.out.limits = self.out.limits.then(
            read_limits(response.headers, response.status_code, time.time())
        )
        return _Page(response, body)

    async def _read(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        async for chunk in response.aiter_bytes():
            self.out.bytes += len(chunk)
            if self.out.bytes > self.poll.max_bytes:
                raise FetchError(
                    f"{safe_url(response.url)}: the answer is larger than max_bytes "
                    f"({self.poll.max_bytes} bytes over all pages)",
                    status=response.status_code,
                    reason="too_large",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def check(self, page: _Page, *, parse: bool = True) -> Any:
        response = page.response
        status = response.status_code
        where = safe_url(response.url)
        if status in (429, 503):
            delay = retry_after_s(response.headers.get("retry-after"))
            if delay is None and self.graphql is not None:  # Shopify's THROTTLED as a 429
                self.cost = graphql.read_cost(graphql.loads(page.body), time.time())
                self.out.limits = self.out.limits.then(self.cost)
                delay = self.cost.wait_s(time.time()) or None
            raise FetchError(
                f"{where}: HTTP {status}", status=status, retry_after_s=delay, reason="throttled"
            )
        if not 200 <= status < 300:
            # A GraphQL server may answer a request error with a 4xx and its `errors`.
            about = graphql.first_error(page.body) if self.graphql is not None else ""
            raise FetchError(f"{where}: HTTP {status}{about}", status=status, reason="status")
        if not parse:
            return None
        if self.feed:
            return await self._feed(page)
        try:
            if len(page.body) > LARGE_BODY:
                body = await asyncio.to_thread(parse_json, page.body, response.charset_encoding)
            else:
                body = parse_json(page.body, response.charset_encoding)
        except (ValueError, UnicodeDecodeError, LookupError) as exc:
            raise FetchError(
                f"{where}: the answer is not valid JSON", status=status, reason="json"
            ) from exc
        if _media_type(response) == "application/problem+json":
            # An error answered as 200 (RFC 9457): its items, if any, are not the answer.
            title = body.get("title") if isinstance(body, dict) else None
            about = f": {str(title)[:100]!r}" if title else ""
            raise FetchError(
                f"{where}: HTTP {status} with a problem document{about}",
                status=status,
                reason="problem",
            )
        if self.graphql is not None:
            now_s = time.time()
            self.cost = graphql.read_cost(body, now_s)
            self.out.limits = self.out.limits.then(self.cost)
            return graphql.read_answer(body, where, status, now_s)
        return body

    async def _feed(self, page: _Page) -> list[Any]:
        response = page.response
        args = (page.body, response.headers.get("content-type"), str(response.url))
        where = safe_url(response.url)
        if len(page.body) > LARGE_BODY:
            return await asyncio.to_thread(feeds.read_feed, *args, where, response.status_code)
        return feeds.read_feed(*args, where, response.status_code)

    async def _graphql_page(self, url: httpx.URL, page: _Page) -> tuple[_Page, Any]:
        """A GraphQL answer's `data`; a THROTTLED one asked again once, after the wait its
        cost budget names when that is short."""
        try:
            return page, await self.check(page)
        except FetchError as exc:
            wait_s = exc.retry_after_s
            if exc.reason != "throttled" or wait_s is None or wait_s > graphql.MAX_PAGE_WAIT_S:
                raise
        log.debug("%s: THROTTLED; asking again in %.1f s", safe_url(url), wait_s)
        await asyncio.sleep(wait_s)
        page = await self.request(url, False)
        return page, await self.check(page)

    async def _pay_for_page(self, url: httpx.URL) -> None:
        """Wait until the GraphQL cost budget pays for the next page, or end the walk."""
        wait_s = graphql.page_wait_s(self.cost, time.time(), safe_url(url), self.out.status)
        if wait_s:
            log.debug("%s: waiting %.1f s for the cost budget", safe_url(url), wait_s)
            await asyncio.sleep(wait_s)

    def items_of(self, body: Any, where: str) -> list[Any]:
        found = self.items_expr.search(body) if self.items_expr is not None else body
        if not isinstance(found, list):
            self._not_a_list(found, where)
        return found

    def _not_a_list(self, found: Any, where: str) -> NoReturn:
        what = f"items expression {self.poll.items!r}" if self.poll.items else "the answer"
        problem = "finds nothing" if found is None else "is not a list"
        raise FetchError(f"{where}: {what} {problem}", status=self.out.status, reason="items")

    def _hand(self, sink: PageSink, page: str | list[Any], items: Iterator[tuple[Any, int]],
              where: str) -> None:  # fmt: skip
        """Hand a page's items to `sink`, at most one more than `max_items` allows over the
        walk: reading stops there, and the walk is a fault."""
        room = max(0, self.poll.max_items - self.out.item_count)
        self.out.item_count += sink.add_page(page, islice(items, room + 1))
        self.check_count(where)

    def check_count(self, where: str) -> None:
        limit = self.poll.max_items
        if self.out.item_count > limit:
            raise FetchError(
                f"{where}: the answer has more than max_items ({limit}) items over all pages",
                status=self.out.status,
                reason="too_many_items",
            )

    async def take(self, page: _Page, sink: PageSink) -> Any:
        """Hand a page's items to `sink` as they are read; the page's body without them.

        A page whose items are at a plain field path is read item by item out of its text
        (scan.py), so that its items never exist all at once; any other is parsed whole.
        """
        response = page.response
        where = safe_url(response.url)
        path = self.stream_path
        if path is None or _media_type(response) == "application/problem+json":
            body = await self.check(page)
            self._collect(body, where)  # to the sink, which is `sink`
            return body
        await self.check(page, parse=False)

        def read() -> Any:
            try:
                text = decode_text(page.body, response.charset_encoding)
            except (ValueError, LookupError) as exc:  # UnicodeDecodeError is a ValueError
                raise NotJSON(str(exc)) from exc
            page.body = b""  # the text is what the index points into
            scan = PageScan(text, path)
            self._hand(sink, text, scan.items(), where)
            return scan.body

        try:
            if len(page.body) > LARGE_BODY:
                return await asyncio.to_thread(read)
            return read()
        except NotAList as exc:
            self._not_a_list(exc.found, where)
        except NotJSON as exc:
            raise FetchError(
                f"{where}: the answer is not valid JSON", status=response.status_code, reason="json"
            ) from exc

    def _collect(self, body: Any, where: str) -> list[Any]:
        """A parsed page's items: handed to the sink (then none returned), or kept."""
        found = self.items_of(body, where)
        if self.plan.sink is not None:
            self._hand(self.plan.sink, found, zip(found, count()), where)
            return []
        self.out.item_count += len(found)
        self.check_count(where)
        self.out.items.extend(found)
        return found

    def next_page(self, response: httpx.Response, body: Any) -> httpx.URL | None:
        """The URL of the next page, or None at the last page."""
        pages = self.poll.pages
        if pages is None:
            return None
        if self.poll.is_link_paged:
            link = next_link(response.headers.get_list("link"))
            return self.named(response.url.join(link), response.url) if link else None
        if isinstance(pages, NextUrlPages):
            nxt = jmespath.search(pages.next_url, body)
            if not nxt:
                return None
            if not isinstance(nxt, str):
                raise FetchError(
                    f"{safe_url(response.url)}: the next_url is not text", reason="pagination"
                )
            return self.named(response.url.join(nxt), response.url)
        if isinstance(pages, GraphQLPages):
            after = graphql.next_cursor(pages.graphql, body, safe_url(response.url))
            if after is None:
                return None
            self.variables[pages.graphql.variable] = after
            return response.request.url
        assert isinstance(pages, CursorPages)
        cursor = jmespath.search(pages.cursor, body)
        if cursor is None or cursor == "" or cursor is False:
            return None
        if isinstance(cursor, dict | list):
            raise FetchError(
                f"{safe_url(response.url)}: the cursor is not a value", reason="pagination"
            )
        return request_url(self.url, {**self.params, pages.param: cursor})

    async def run(self) -> Fetched:
        url: httpx.URL | None = request_url(self.url, self.params)
        page = 0
        while url is not None:
            if page == self.max_pages:
                if self.plan.partial:
                    self.out.truncated = True
                    return self.out
                raise FetchError(
                    f"{safe_url(url)}: the answer has more than max_pages ({page}) pages",
                    status=self.out.status,
                    reason="pagination",
                )
            # A GraphQL page is its URL and its variables.
            step = str(url) + (jsontext.dumps(self.variables) if self.graphql else "")
            if step in self.seen:
                raise FetchError(
                    f"{safe_url(url)}: the pagination loops back to a seen page",
                    reason="pagination",
                )
            self.seen.add(step)
            first = page == 0
            if self.graphql is not None and not first:
                await self._pay_for_page(url)
            answer = await self.request(url, first)
            response = answer.response
            if first and response.status_code == 304 and self.validators != NO_VALIDATORS:
                self.out.not_modified = True
                self.out.validators = self.validators
                return self.out
            found: list[Any] = []
            if self.graphql is not None:
                answer, body = await self._graphql_page(url, answer)
                response = answer.response
                found = self._collect(body, safe_url(response.url))
            elif self.plan.sink is not None:
                body = await self.take(answer, self.plan.sink)
            else:
                body = await self.check(answer)
                found = self._collect(body, safe_url(response.url))
            if first and self.poll.sends_validators:
                self.out.validators = Validators(
                    response.headers.get("etag"), response.headers.get("last-modified")
                )
            page += 1
            self.out.pages = page
            if self.plan.stop is not None and await self.plan.stop(found):
                self.out.stopped = True
                return self.out
            url = self.next_page(response, body)
        return self.out


async def fetch(
    client: httpx.AsyncClient,
    poll: PollConfig,
    validators: Validators = NO_VALIDATORS,
    out: Fetched | None = None,
    plan: WalkPlan = WHOLE,
    auth: httpx.Auth | None = None,
) -> Fetched:
    """Fetch every page of a source's answer; raise FetchError if any part of it fails.

    Pass `out` to see what a failed walk cost (its requests and bytes), and `plan` for what
    an incremental or feed poll asks beyond the config, and `auth` for what the source's
    requests to its own origin carry. A FetchError carries the time before which the
    upstream's headers asked not to be polled again.
    """
    walk = Walk(client, poll, validators, out if out is not None else Fetched(), plan, auth)
    try:
        return await walk.run()
    except FetchError as exc:
        exc.not_before_s = walk.out.limits.not_before_s
        raise
