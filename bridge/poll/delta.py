"""Delta sync: the walk of a source whose upstream hands out an opaque delta or sync token.

Microsoft Graph (`@odata.nextLink` pages, then `@odata.deltaLink`), Google Calendar, People
and Drive (`nextPageToken`, then `nextSyncToken` or `newStartPageToken`), Dropbox
(`list_folder/continue` with `cursor` while `has_more`): a poll sends the kept token (as a
query parameter, as the URL itself, or in a JSON body), walks the pages by `delta.next` until
a page has none, and keeps the token at `delta.final` of that last page. The token is part of
the poll's commit, with its events: a walk cut short (a fault, a crash, a restart) stores
nothing, and the next poll walks again from the token before it, so nothing is lost, and
what is seen again compares equal to the stored version and emits nothing.

Without a token (the first poll, or one the upstream rejected) the walk is a full one: from
`url` (or `delta.start`) without a token, every item the upstream lists. A token the upstream
rejects (`delta.resync_on`: a status such as `410`, or an error code anywhere in the error
answer, such as `fullSyncRequired`, `resyncRequired` or Dropbox's `reset`), on the first page
or on a later one, starts that full walk once; detect.py diffs it against the stored snapshot
as a snapshot poll does. A rejection during the full walk is a fault.

The token is kept as it came, in the poll state's cursor (JSON, `DeltaMark`); a Graph
deltaLink carries a credential-like token in its query, so no message, log line or
description ever shows it (URLs through `safe_url`, which drops the query).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import jmespath

from bridge.config import PollConfig
from bridge.config.polling import DeletedField, DeltaConfig, TokenBody, TokenParam, TokenUrl
from bridge.errors import FetchError
from bridge.poll.diff import Indexed, ItemChange, ItemSpec, diff, getter, index_items, key_of
from bridge.poll.fetch import NO_VALIDATORS, Fetched, Send, Walk
from bridge.poll.urls import request_url, safe_url
from bridge.store import Store
from bridge.store.base import PollState

log = logging.getLogger("bridge.poll")

# Text values of an error answer looked at for a `resync_on` code, at most.
_MOST_VALUES = 200
# Walks with more items than this are indexed and diffed in a worker thread (as detect.py's).
THREAD_THRESHOLD = 5_000


@dataclass(frozen=True, slots=True)
class DeltaMark:
    """A delta source's resume point: the token to send next, and how many resyncs were
    made (the token rejected)."""

    token: str | None = None
    resyncs: int = 0

    @classmethod
    def load(cls, text: str | None) -> DeltaMark:
        """The stored mark (none yet: empty)."""
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        token, resyncs = data.get("token"), data.get("resyncs")
        return cls(
            token if isinstance(token, str) and token else None,
            resyncs if isinstance(resyncs, int) and not isinstance(resyncs, bool) else 0,
        )

    def dump(self) -> str:
        """The mark as JSON text for the poll state."""
        return json.dumps(asdict(self), separators=(",", ":"))

    def __repr__(self) -> str:  # the token may carry a credential (a Graph deltaLink)
        return f"DeltaMark(token={'***' if self.token else None}, resyncs={self.resyncs})"


@dataclass(slots=True)
class DeltaWalk:
    """What one delta walk read: its items in order, the token to keep, and what kind of
    walk it was."""

    items: list[Any] = field(default_factory=list)
    token: str = ""
    full: bool = False  # walked without a token: every item the upstream lists
    listed: bool = True  # False: a `delta.start.token` walk, a token and no items
    resynced: str = ""  # why the kept token was given up (empty: it was not)


class _Rejected(Exception):
    """The upstream rejected the token (a `resync_on` status or code)."""


def _text_values(value: Any) -> Iterator[str]:
    """The text values (and dictionary keys) of a JSON value, breadth first."""
    queue = [value]
    while queue:
        current = queue.pop(0)
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            yield from (k for k in current if isinstance(k, str))
            queue.extend(current.values())
        elif isinstance(current, list):
            queue.extend(current)


def rejection(delta: DeltaConfig, status: int, body: bytes) -> str | None:
    """Why an error answer rejects the token (`HTTP 410`, `fullSyncRequired`), or None."""
    if status in delta.resync_on:
        return f"HTTP {status}"
    codes = {code for code in delta.resync_on if isinstance(code, str)}
    if not codes:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    for n, text in enumerate(_text_values(data)):
        if n == _MOST_VALUES:
            break
        if text in codes:
            return f"HTTP {status} {text}"
    return None


def is_deletion(delta: DeltaConfig) -> Any:
    """A function telling whether an item is a deletion, as `delta.deleted` says."""
    rule = delta.deleted
    if rule is None:
        return lambda item: False
    if isinstance(rule, DeletedField):
        get, value = getter(rule.field), rule.value
        return lambda item: get(item) == value
    get = getter(rule)
    return lambda item: get(item) not in (None, False, "", [], {})


def split(poll: PollConfig, items: list[Any]) -> tuple[list[Any], list[str]]:
    """A walk's items as upserts and deleted keys, the last mention of a key winning (an item
    created then deleted in the same walk is a deletion), each in the walk's order."""
    assert poll.delta is not None
    deleted, get_id = is_deletion(poll.delta), getter(poll.id)
    last: dict[str, tuple[bool, Any]] = {}
    unkeyed: list[Any] = []
    for item in items:
        key = key_of(get_id(item)) if isinstance(item, dict) else None
        if key is None:
            unkeyed.append(item)  # counted as skipped by index_items
            continue
        last.pop(key, None)
        last[key] = (deleted(item), item)
    upserts = [item for is_gone, item in last.values() if not is_gone] + unkeyed
    return upserts, [key for key, (is_gone, _) in last.items() if is_gone]


class _DeltaWalk:
    """One walk over a delta source's pages."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        source: str,
        poll: PollConfig,
        out: Fetched,
        auth: httpx.Auth | None = None,
    ):
        assert poll.delta is not None
        self.source = source
        self.poll = poll
        self.delta = poll.delta
        self.out = out
        self.walk = Walk(client, poll, NO_VALIDATORS, out, auth=auth)
        self.pages = 0  # of this walk (a resync's walk starts again from none)

    def _send(
        self, how: TokenParam | TokenUrl | TokenBody, token: str, params: dict[str, Any]
    ) -> tuple[httpx.URL, Send | None, dict[str, Any]]:
        """The request that sends `token` as `how` says, and the parameters later pages keep."""
        if isinstance(how, TokenParam):
            params = {**params, how.param: token}
            return request_url(self.poll.url, params), None, params
        if isinstance(how, TokenBody):
            return request_url(self.poll.url, params), Send(body={how.body: token}), params
        url = self.walk.named(httpx.URL(self.poll.url).join(token), httpx.URL(self.poll.url))
        return url, None, {}

    def _start_params(self) -> dict[str, Any]:
        """The first walk's query: a start URL of its own takes only `start.params` (another
        endpoint may refuse the source's), else the source's with them."""
        start = self.delta.start
        if start is None:
            return dict(self.poll.params)
        return dict(start.params) if start.url else {**self.poll.params, **start.params}

    async def _start_token(self) -> DeltaWalk:
        start = self.delta.start
        assert start is not None and start.token is not None
        url = request_url(start.url or self.poll.url, self._start_params())
        page = await self.walk.request(url, True, Send(start.method, start.body))
        body = await self.walk.check(page)
        self.out.pages += 1
        self.pages += 1
        token = jmespath.search(start.token, body)
        return DeltaWalk([], self._token(token, start.token, url), full=True, listed=False)

    def _token(self, value: Any, where: str, url: httpx.URL) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise FetchError(
                f"{safe_url(url)}: the answer has no token at {where!r}",
                status=self.out.status,
                reason="delta",
            )
        return str(value)

    async def run(self, token: str | None) -> DeltaWalk:
        """Walk from `token` (None: a full walk); raises _Rejected or FetchError."""
        start = self.delta.start
        if token is None and start is not None and start.token is not None:
            return await self._start_token()
        params: dict[str, Any] = dict(self.poll.params)
        send: Send | None
        if token is None:
            base = start.url if start is not None and start.url else self.poll.url
            url = request_url(base, self._start_params())
            send = Send(start.method, start.body) if start is not None else None
        else:
            url, send, params = self._send(self.delta.token, token, params)
        got = DeltaWalk(full=token is None)
        seen: set[str] = set()
        while True:
            if self.pages == self.poll.max_pages:
                raise FetchError(
                    f"{safe_url(url)}: the delta walk has more than max_pages"
                    f" ({self.poll.max_pages}) pages",
                    status=self.out.status,
                    reason="pagination",
                )
            mark = f"{url} {send.body if send is not None else ''}"
            if mark in seen:
                raise FetchError(
                    f"{safe_url(url)}: the delta walk loops back to a seen page",
                    reason="pagination",
                )
            seen.add(mark)
            page = await self.walk.request(url, self.pages == 0, send)
            status = page.response.status_code
            if not 200 <= status < 300 and status not in (429, 503):
                why = rejection(self.delta, status, page.body)
                if why is not None:
                    raise _Rejected(why)
            body = await self.walk.check(page)
            where = safe_url(page.response.url)
            found = self.walk.items_of(body, where)
            self.out.item_count += len(found)
            self.walk.check_count(where)
            got.items.extend(found)
            self.out.pages += 1
            self.pages += 1
            nxt = jmespath.search(self.delta.next, body)
            if nxt is None or nxt == "" or nxt is False:
                final = jmespath.search(self.delta.final, body)
                got.token = self._token(final, self.delta.final, url)
                return got
            nxt = self._token(nxt, self.delta.next, url)
            url, send, params = self._send(self.delta.page_send, nxt, params)


async def walk_delta(
    client: httpx.AsyncClient,
    source: str,
    poll: PollConfig,
    token: str | None,
    out: Fetched,
    auth: httpx.Auth | None = None,
) -> DeltaWalk:
    """Walk a delta source from `token` (None: a full walk); a rejected token starts one full
    walk instead (`DeltaWalk.resynced` says why). Raises FetchError when the answer is
    unusable, or when the full walk is rejected too."""
    try:
        return await _DeltaWalk(client, source, poll, out, auth).run(token)
    except _Rejected as exc:
        if token is None:
            raise FetchError(
                f"{source}: the upstream rejected a full walk, which sends no token ({exc})",
                status=out.status,
                reason="delta",
            ) from None
        why = str(exc)
    log.warning(
        "%s: the upstream rejected the delta token (%s): a full resync against the stored snapshot",
        source,
        why,
    )
    try:
        got = await _DeltaWalk(client, source, poll, out, auth).run(None)
    except _Rejected as exc:
        raise FetchError(
            f"{source}: the upstream rejected the full resync too ({exc})",
            status=out.status,
            reason="delta",
        ) from None
    got.resynced = why
    return got


@dataclass(slots=True)
class DeltaFound:
    """What a delta poll found: the upserts indexed, the changes, the mark to store."""

    indexed: Indexed
    changes: list[ItemChange]
    cursor: str | None = None  # the new mark (None: unchanged)
    gap_why: str = ""  # why changes may be missing (a resync with nothing to diff against)


async def _index(upserts: list[Any], spec: ItemSpec) -> Indexed:
    if len(upserts) > THREAD_THRESHOLD:
        return await asyncio.to_thread(index_items, upserts, spec)
    return index_items(upserts, spec)


def merged(upserts: list[Any], stored: dict[str, Any], get_id: Any) -> list[Any]:
    """Each upsert over its stored item (`delta.merge`: an upstream that sends only the
    changed fields of an updated item, as Graph does for users and groups)."""
    out = []
    for item in upserts:
        before = stored.get(key_of(get_id(item)) or "") if isinstance(item, dict) else None
        out.append({**before, **item} if isinstance(before, dict) else item)
    return out


async def find_delta(
    client: httpx.AsyncClient,
    source: str,
    poll: PollConfig,
    store: Store | None,
    state: PollState,
    out: Fetched,
    auth: httpx.Auth | None = None,
) -> DeltaFound:
    """Walk a delta source from its kept token and find what changed against the stored
    snapshot (none without a store). A full walk (the first, or a resync) is diffed against
    the whole snapshot, as a snapshot poll is: every stored key it lacks is deleted."""
    assert poll.delta is not None
    mark = DeltaMark.load(state.cursor)
    got = await walk_delta(client, source, poll, mark.token, out, auth)
    upserts, deleted = split(poll, got.items)
    spec = ItemSpec.from_config(poll)
    indexed = await _index(upserts, spec)
    if upserts and not indexed.items and not deleted:
        raise FetchError(
            f"{source}: none of the {len(upserts)} items has a key at {poll.id!r}",
            status=out.status,
            reason="items",
        )
    found = DeltaFound(indexed, [])
    if got.full and got.listed:
        old = await store.load_poll_versions(source) if store is not None else {}
        if len(old) + indexed.count > THREAD_THRESHOLD:
            found.changes = await asyncio.to_thread(diff, old, indexed)
        else:
            found.changes = diff(old, indexed)
    elif got.full:
        # A start that hands out a token and no listing (Drive): nothing to diff against.
        found.gap_why = (
            "the delta token was rejected and the start lists no items: changes made"
            " before the new token are missing"
        )
    elif store is not None:
        old = await store.load_poll_versions(source, [*indexed.items, *deleted])
        if poll.delta.merge:
            stored = await store.load_poll_items(source, [k for k in indexed.items if k in old])
            found.indexed = indexed = await _index(merged(upserts, stored, getter(poll.id)), spec)
        found.changes = diff({k: old[k] for k in indexed.items if k in old}, indexed)
        found.changes += [ItemChange("deleted", k, old[k]) for k in deleted if k in old]
    else:
        found.changes = diff({}, indexed)
    resyncs = mark.resyncs + bool(got.resynced)
    if got.token != mark.token or resyncs != mark.resyncs:
        found.cursor = DeltaMark(got.token, resyncs).dump()
    if got.resynced:
        log.warning(
            "%s: resync after %s: %d items, %d changes against the stored snapshot",
            source,
            got.resynced,
            indexed.count,
            len(found.changes),
        )
    return found
