"""One poll's detection: fetch, then find what changed, in each of the three modes.

- `snapshot`: the whole list, diffed against the stored snapshot (creates, updates, deletes).
- `incremental`: only what changed since the watermark (creates and updates); every
  `reconcile`, a full snapshot walk that also finds deletions.
- `feed`: an append-only list of upstream events; ids not seen before become events.

Detection changes nothing: it returns what the poller then commits in one transaction (the
events, the snapshot rows and the new resume point). Every mode keeps the first poll a silent
baseline (`baseline: silent`) and turns an unusable answer into a `FetchError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import jmespath.exceptions

from bridge.config import PollConfig
from bridge.errors import FetchError
from bridge.events import Event, event_id, long_attribute, now_ms, parse_time
from bridge.poll.diff import (
    EventSpec,
    Indexed,
    ItemChange,
    ItemSpec,
    build_events,
    diff,
    getter,
    index_items,
    key_of,
)
from bridge.poll.fetch import NO_VALIDATORS, Fetched, Validators, WalkPlan, fetch
from bridge.poll.modes import (
    FeedEntry,
    FeedMark,
    Watermark,
    format_cursor,
    is_reconcile_due,
    next_anchor,
    since_ms,
    start_ms,
)
from bridge.poll.streamed import PageIndex
from bridge.store import Store
from bridge.store.base import PollState

# Answers with more items than this are indexed and diffed in a worker thread, so that a
# large source does not hold up the event loop (webhooks, other polls) for long.
THREAD_THRESHOLD = 5_000


def _encode(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Detection:
    """What one poll found: the answer, the changes and the events they make."""

    fetched: Fetched
    indexed: Indexed = field(default_factory=Indexed)
    changes: list[ItemChange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    is_first: bool = False  # no snapshot yet: this poll makes the baseline
    upserts: Collection[tuple[str, str, str]] = field(default_factory=list)
    cursor: str | None = None  # the new resume point of an incremental or feed source
    gap: bool = False  # a feed poll that did not reach the last event seen
    # A streamed snapshot diff (streamed.py): its counts and deletes, whether or not
    # `changes` lists them (a silent baseline makes no events, so lists none).
    streamed: PageIndex | None = None

    @property
    def change_count(self) -> int:
        """How many keys were created, updated or deleted."""
        if self.streamed is not None:
            return self.streamed.change_count
        return len(self.changes)

    @property
    def deletes(self) -> list[str]:
        """The keys this poll removes from the snapshot."""
        if self.streamed is not None:
            return [key for key, _token in self.streamed.deleted]
        return [c.key for c in self.changes if c.change == "deleted"]


@dataclass(frozen=True, slots=True)
class _Poll:
    """What every mode's detection needs."""

    client: httpx.AsyncClient
    source: str
    poll: PollConfig
    store: Store | None
    state: PollState
    validators: Validators
    out: Fetched | None
    emit_baseline: bool

    @property
    def silent(self) -> bool:
        """Whether this poll's changes make no events (a first poll with `baseline: silent`)."""
        return (
            not self.state.baselined and self.poll.baseline == "silent" and not self.emit_baseline
        )

    async def fetch(self, plan: WalkPlan | None = None) -> Fetched:
        return await fetch(self.client, self.poll, self.validators, self.out, plan or WalkPlan())

    async def versions(self, keys: list[str] | None = None) -> dict[str, str]:
        if self.store is None:
            return {}
        return await self.store.load_poll_versions(self.source, keys)


def _plan(
    old: dict[str, str], items: list[Any], spec: ItemSpec
) -> tuple[Indexed, list[ItemChange], list[tuple[str, str, str]]]:
    indexed = index_items(items, spec)
    changes = diff(old, indexed)
    return indexed, changes, _upserts(changes)


def _upserts(changes: list[ItemChange]) -> list[tuple[str, str, str]]:
    return [(c.key, c.token, _encode(c.item)) for c in changes if c.change != "deleted"]


async def detect(
    client: httpx.AsyncClient,
    source: str,
    poll: PollConfig,
    *,
    store: Store | None,
    state: PollState,
    validators: Validators = NO_VALIDATORS,
    out: Fetched | None = None,
    emit_baseline: bool = False,
) -> Detection:
    """Fetch a source and find what changed against its stored state (none without a store).

    Changes nothing. On a first poll with `baseline: silent` the changes make no events,
    unless `emit_baseline` (for a dry run, which shows what the answer holds).
    Raises FetchError when the answer is unusable.
    """
    p = _Poll(client, source, poll, store, state, validators, out, emit_baseline)
    try:
        if poll.mode == "feed":
            return await _detect_feed(p)
        if poll.mode == "incremental":
            return await _detect_incremental(p)
        return await _with_events(p, await _detect_snapshot(p))
    except jmespath.exceptions.JMESPathError as exc:
        # A function in an expression met a value of the wrong type in the answer.
        raise FetchError(
            f"{source}: an expression failed on the answer: {exc}", reason="expression"
        ) from exc


async def _detect_snapshot(p: _Poll, plan: WalkPlan | None = None) -> Detection:
    if p.poll.mode == "snapshot":
        return await _detect_streamed(p, plan or WalkPlan())
    fetched = await p.fetch(plan)
    if fetched.not_modified:
        return Detection(fetched)
    old = await p.versions()
    spec = ItemSpec.from_config(p.poll)
    if len(fetched.items) > THREAD_THRESHOLD:
        indexed, changes, upserts = await asyncio.to_thread(_plan, old, fetched.items, spec)
    else:
        indexed, changes, upserts = _plan(old, fetched.items, spec)
    if fetched.items and not indexed.items:
        # Items, but not one with a key: the answer's shape changed (a renamed id field),
        # not every item deleted. Believing it would emit a delete for each stored item.
        raise FetchError(
            f"{p.source}: none of the {len(fetched.items)} items has a key at {p.poll.id!r}",
            status=fetched.status,
            reason="items",
        )
    return Detection(fetched, indexed, changes, [], not p.state.baselined, upserts)


async def _detect_streamed(p: _Poll, plan: WalkPlan) -> Detection:
    """The snapshot diff in bounded memory (streamed.py): the answer is indexed as it is
    read and compared with the stored snapshot row by row; only changed items are kept."""
    index = PageIndex(ItemSpec.from_config(p.poll))
    fetched = await p.fetch(replace(plan, sink=index))
    if fetched.not_modified:
        return Detection(fetched)
    if fetched.item_count and not index.indexed.count:
        # Items, but not one with a key: the answer's shape changed (a renamed id field),
        # not every item deleted. Believing it would emit a delete for each stored item.
        raise FetchError(
            f"{p.source}: none of the {fetched.item_count} items has a key at {p.poll.id!r}",
            status=fetched.status,
            reason="items",
        )
    if p.store is not None:
        await p.store.scan_poll_versions(p.source, index.compare)
    detection = Detection(fetched, index.indexed, is_first=not p.state.baselined)
    detection.streamed = index
    detection.upserts = index.upserts()
    if not p.silent:
        if index.change_count > THREAD_THRESHOLD:
            detection.changes = await asyncio.to_thread(index.changes)
        else:
            detection.changes = index.changes()
    return detection


async def _with_events(p: _Poll, detection: Detection) -> Detection:
    """Make the events of the detected changes (none for a silent baseline)."""
    if detection.fetched.not_modified or p.silent:
        return detection
    changes = detection.changes
    wanted = [c.key for c in changes if c.change != "created"]
    stored = (
        await p.store.load_poll_items(p.source, wanted) if p.store is not None and wanted else {}
    )
    detection.events = build_events(
        changes,
        stored,
        ItemSpec.from_config(p.poll),
        EventSpec.from_config(p.source, p.poll),
        generation=p.state.generation,
        recorded_ms=now_ms(),
    )
    return detection


# -- incremental -----------------------------------------------------------------------------


def _cursor_values(
    source: str, indexed: Indexed, poll: PollConfig, floor_ms: int
) -> tuple[int, int]:
    """Drop the items without a cursor value (counted as skipped); the largest value seen.

    A value that is not a time is a fault of the poll: the watermark cannot be trusted.
    """
    assert poll.cursor is not None
    get = getter(poll.cursor.field)
    top, dropped = floor_ms, 0
    for key, (_token, item) in list(indexed.items.items()):
        raw = get(item)
        if raw is None:
            del indexed.items[key]
            dropped += 1
            continue
        at_ms = parse_time(raw)
        if at_ms is None:
            raise FetchError(
                f"{source}: the cursor field {poll.cursor.field!r} of item {key[:64]!r} is not"
                f" a time ({str(raw)[:40]!r})",
                reason="cursor",
            )
        top = max(top, at_ms)
    indexed.skipped += dropped
    return top, dropped


async def _detect_incremental(p: _Poll) -> Detection:
    cursor = p.poll.cursor
    assert cursor is not None
    mark = Watermark.load(p.state.cursor)
    at_ms = now_ms()
    if is_reconcile_due(p.poll, mark, at_ms):
        detection = await _detect_snapshot(p)
        if not detection.fetched.not_modified:
            floor = mark.value_ms if mark.value_ms is not None else start_ms(mark, cursor, at_ms)
            top, _ = _cursor_values(p.source, detection.indexed, p.poll, floor)
            detection.cursor = Watermark(top, at_ms).dump()
        return await _with_events(p, detection)
    param = {cursor.param: format_cursor(since_ms(mark, cursor, at_ms), cursor.format)}
    fetched = await p.fetch(WalkPlan(params=param))
    if fetched.not_modified:
        return Detection(fetched)
    spec = ItemSpec.from_config(p.poll)
    indexed = index_items(fetched.items, spec)
    top, _ = _cursor_values(p.source, indexed, p.poll, start_ms(mark, cursor, at_ms))
    if fetched.items and not indexed.items and indexed.skipped == len(fetched.items):
        raise FetchError(
            f"{p.source}: none of the {len(fetched.items)} items has a key at {p.poll.id!r}"
            f" and a cursor at {cursor.field!r}",
            status=fetched.status,
            reason="items",
        )
    # Only the keys in the answer: an incremental answer says nothing of the others.
    old = await p.versions(list(indexed.items))
    changes = diff(old, indexed)
    detection = Detection(fetched, indexed, changes, [], not p.state.baselined, _upserts(changes))
    detection.cursor = Watermark(top, mark.reconciled_ms).dump()
    return await _with_events(p, detection)


# -- feed ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _FeedItem:
    id: str
    type: str
    item: Any
    time_ms: int | None


def _feed_items(poll: PollConfig, items: list[Any], indexed: Indexed) -> list[_FeedItem]:
    """The answer's events with an id and a type, each id once; the rest counted as skipped."""
    assert poll.feed is not None
    get_id, get_type = getter(poll.id), getter(poll.feed.type)
    get_time = getter(poll.time) if poll.time else None
    out: dict[str, _FeedItem] = {}
    for item in items:
        key = key_of(get_id(item)) if isinstance(item, dict) else None
        kind = get_type(item) if key is not None else None
        if key is None or not isinstance(kind, str) or not kind:
            indexed.skipped += 1
            continue
        if long_attribute(id=key, type=kind) is not None:
            indexed.too_long += 1  # counted and logged by the poller, never an event
            continue
        if key in out:
            indexed.duplicates += 1  # a feed that shifted between two pages: the first counts
            continue
        at_ms = parse_time(get_time(item)) if get_time is not None else None
        out[key] = _FeedItem(key, kind, item, at_ms)
    return list(out.values())


async def _detect_feed(p: _Poll) -> Detection:
    feed = p.poll.feed
    assert feed is not None
    mark = FeedMark.load(p.state.cursor)
    first = not p.state.baselined
    params = {feed.after.param: mark.after} if feed.after and mark.after else {}
    walks_to_seen = feed.after is None and not first and p.store is not None
    get_id = getter(p.poll.id)

    async def reached_seen(page: list[Any]) -> bool:
        ids = [k for k in (key_of(get_id(i)) for i in page if isinstance(i, dict)) if k]
        return bool(await p.versions(ids))

    plan = WalkPlan(
        params=params,
        # The first poll is a baseline: what the feed shows now; older events are history.
        max_pages=1 if first else None,
        stop=reached_seen if walks_to_seen else None,
        partial=True,
    )
    fetched = await p.fetch(plan)
    if fetched.not_modified:
        return Detection(fetched)
    indexed = Indexed()
    entries = _feed_items(p.poll, fetched.items, indexed)
    if fetched.items and not entries:
        raise FetchError(
            f"{p.source}: none of the {len(fetched.items)} feed items has an id at"
            f" {p.poll.id!r} and a type at {feed.type!r}",
            status=fetched.status,
            reason="items",
        )
    seen = await p.versions([e.id for e in entries])
    new = [e for e in entries if e.id not in seen]
    if feed.order == "newest_first":
        new.reverse()  # emitted oldest first
    if all(e.time_ms is not None for e in new):
        # Pages walked towards newer events (Stripe's ending_before) each come newest first:
        # by time, the order holds across pages too (a stable sort keeps ties as they were).
        new.sort(key=lambda e: e.time_ms or 0)
    detection = Detection(fetched, indexed, is_first=first)
    detection.indexed.items = {e.id: ("f", e.item) for e in entries}
    detection.upserts = [(e.id, "f", "null") for e in new]
    anchor = next_anchor([FeedEntry(e.id, e.time_ms) for e in entries], feed, mark.after)
    detection.cursor = FeedMark(anchor).dump()
    # Walking back to a seen event and not reaching it: events between may be lost.
    detection.gap = walks_to_seen and not fetched.stopped and bool(new)
    detection.changes = [ItemChange("created", e.id, "f", e.item) for e in new]
    if not p.silent:
        detection.events = [_feed_event(p, e) for e in new]
    return detection


def _feed_event(p: _Poll, entry: _FeedItem) -> Event:
    get_subject = getter(p.poll.subject) if p.poll.subject else None
    subject = key_of(get_subject(entry.item)) if get_subject is not None else None
    if long_attribute(subject=subject) is not None:
        subject = None  # an event is still an event without a subject
    return Event(
        # The same id a webhook of the same upstream event gets (see receive/app.py).
        id=event_id(p.source, entry.id),
        source=p.source,
        type=entry.type,
        origin="poll",
        data=entry.item,
        recorded_ms=now_ms(),
        subject=subject,
        time_ms=entry.time_ms,
        upstream_id=entry.id,
    )
