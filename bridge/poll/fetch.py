"""Fetching a polled source: one HTTP walk over every page of its answer.

`fetch` sends the source's request with the validators of the previous answer
(`If-None-Match`, `If-Modified-Since`), follows the pagination (`Link: rel="next"`, a next
URL or a cursor found in the body), and returns every page's items, or `not_modified` on a
304. Anything that makes the answer incomplete or unusable raises `FetchError`, so that the
caller never diffs a partial answer: a non-2xx status, a timeout, a connection error,
invalid JSON, an `items` expression that finds no list, a walk longer than `max_pages` or
one that loops. A 429 or 503 carries its `Retry-After` in seconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import jmespath

from bridge import __version__, jsontext
from bridge.config import CursorPages, NextUrlPages, PollConfig
from bridge.errors import FetchError

log = logging.getLogger("bridge.poll")

# Errors of a reused keep-alive connection that the server had just closed.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

USER_AGENT = f"bridge/{__version__}"
# Answers larger than this are parsed in a worker thread, not on the event loop.
LARGE_BODY = 1_000_000


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
    bytes: int = 0


def safe_url(url: str | httpx.URL) -> str:
    """The URL without its query and credentials, for messages (a query may hold a token)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """The delay a `Retry-After` header asks for: seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = datetime.fromtimestamp(now_s if now_s is not None else time.time(), tz=UTC)
    return max(0.0, (when - now).total_seconds())


class _Walk:
    """The state of one walk over the pages of an answer."""

    def __init__(
        self, client: httpx.AsyncClient, poll: PollConfig, validators: Validators, out: Fetched
    ):
        self.client = client
        self.poll = poll
        self.validators = validators
        self.items_expr = jmespath.compile(poll.items) if poll.items else None
        self.out = out
        self.seen: set[str] = set()

    def headers(self, first: bool) -> dict[str, str]:
        headers = {name: value.get_secret_value() for name, value in self.poll.headers.items()}
        if not any(name.lower() == "accept" for name in headers):
            headers["Accept"] = "application/json"
        if first and self.validators.etag:
            headers["If-None-Match"] = self.validators.etag
        if first and self.validators.last_modified:
            headers["If-Modified-Since"] = self.validators.last_modified
        return headers

    async def request(self, url: str, params: dict[str, Any] | None, first: bool) -> httpx.Response:
        try:
            try:
                response = await self._send(url, params, first)
            except _STALE_CONNECTION:
                # A pooled keep-alive connection that the server closed as we reused it:
                # the request never reached the application, so sending it again is safe.
                log.debug("%s: the pooled connection was closed; retrying once", safe_url(url))
                self.out.requests += 1
                response = await self._send(url, params, first)
        except httpx.TimeoutException as exc:
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
        self.out.status = response.status_code
        self.out.bytes += len(response.content)
        return response

    async def _send(self, url: str, params: dict[str, Any] | None, first: bool) -> httpx.Response:
        return await self.client.request(
            self.poll.method,
            url,
            params=params,
            headers=self.headers(first),
            timeout=self.poll.timeout_s,
        )

    async def check(self, response: httpx.Response) -> Any:
        status = response.status_code
        where = safe_url(response.url)
        if status in (429, 503):
            delay = retry_after_s(response.headers.get("retry-after"))
            raise FetchError(
                f"{where}: HTTP {status}", status=status, retry_after_s=delay, reason="throttled"
            )
        if not 200 <= status < 300:
            raise FetchError(f"{where}: HTTP {status}", status=status, reason="status")
        try:
            if len(response.content) > LARGE_BODY:
                return await asyncio.to_thread(jsontext.loads, response.content)
            return jsontext.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FetchError(
                f"{where}: the answer is not valid JSON", status=status, reason="json"
            ) from exc

    def items_of(self, body: Any, where: str) -> list[Any]:
        found = self.items_expr.search(body) if self.items_expr is not None else body
        if not isinstance(found, list):
            what = f"items expression {self.poll.items!r}" if self.poll.items else "the answer"
            problem = "finds nothing" if found is None else "is not a list"
            raise FetchError(f"{where}: {what} {problem}", status=self.out.status, reason="items")
        return found

    def next_page(
        self, response: httpx.Response, body: Any, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None] | None:
        """The next request (URL and params), or None at the last page."""
        pages = self.poll.pages
        if pages is None:
            return None
        if pages == "link":
            link = response.links.get("next", {}).get("url")
            return (urljoin(str(response.url), link), None) if link else None
        if isinstance(pages, NextUrlPages):
            nxt = jmespath.search(pages.next_url, body)
            if not nxt:
                return None
            if not isinstance(nxt, str):
                raise FetchError(
                    f"{safe_url(response.url)}: the next_url is not text", reason="pagination"
                )
            return urljoin(str(response.url), nxt), None
        assert isinstance(pages, CursorPages)
        cursor = jmespath.search(pages.cursor, body)
        if cursor is None or cursor == "" or cursor is False:
            return None
        if isinstance(cursor, dict | list):
            raise FetchError(
                f"{safe_url(response.url)}: the cursor is not a value", reason="pagination"
            )
        return self.poll.url, {**params, pages.param: cursor}

    async def run(self) -> Fetched:
        url, params = self.poll.url, dict(self.poll.params)
        request: tuple[str, dict[str, Any] | None] | None = (url, params)
        page = 0
        while request is not None:
            url, page_params = request
            if page == self.poll.max_pages:
                raise FetchError(
                    f"{safe_url(url)}: the answer has more than max_pages ({page}) pages",
                    status=self.out.status,
                    reason="pagination",
                )
            first = page == 0
            response = await self.request(url, page_params, first)
            if first and response.status_code == 304:
                self.out.not_modified = True
                self.out.validators = self.validators
                return self.out
            if first:
                self.out.validators = Validators(
                    response.headers.get("etag"), response.headers.get("last-modified")
                )
            body = await self.check(response)
            if str(response.url) in self.seen:
                raise FetchError(
                    f"{safe_url(url)}: the pagination loops back to a seen page",
                    reason="pagination",
                )
            self.seen.add(str(response.url))
            self.out.items.extend(self.items_of(body, safe_url(response.url)))
            page += 1
            request = self.next_page(response, body, page_params or {})
        return self.out


async def fetch(
    client: httpx.AsyncClient,
    poll: PollConfig,
    validators: Validators = NO_VALIDATORS,
    out: Fetched | None = None,
) -> Fetched:
    """Fetch every page of a source's answer; raise FetchError if any part of it fails.

    Pass `out` to see what a failed walk cost (its requests and bytes).
    """
    return await _Walk(client, poll, validators, out if out is not None else Fetched()).run()


def new_client() -> httpx.AsyncClient:
    """The HTTP client polls share: redirects followed, the bridge's User-Agent."""
    return httpx.AsyncClient(
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
