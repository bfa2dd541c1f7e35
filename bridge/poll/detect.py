"""One poll's detection: fetch, then find what changed, in each of the four modes.

- `snapshot`: the whole list, diffed against the stored snapshot (creates, updates, deletes).
- `incremental`: only what changed since the watermark (creates and updates); every
  `reconcile`, a full snapshot walk that also finds deletions.
- `feed`: an append-only list of upstream events; ids not seen before become events.
- `delta`: what changed since the kept delta or sync token (delta.py), upserts and deletions
  as the upstream marks them; a full walk (the first, or a resync after a rejected token) is
  diffed against the stored snapshot as a snapshot poll is.

Detection changes nothing: it returns what the poller then commits in one transaction (the
events, the snapshot rows and the new resume point). Every mode keeps the first poll a silent
baseline (`baseline: silent`) and turns an unusable answer into a `FetchError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import jmespath.exceptions

from bridge.config import PollConfig
from bridge.errors import FetchError
from bridge.events import Event, attribute_text, event_id, long_attribute, now_ms, parse_time
from bridge.poll.delta import find_delta
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
    advanced,
    is_reconcile_due,
    layout_in_force,
    max_value_ms,
    missed_changes,
    next_anchor,
    scan_cursor,
    since_ms,
    start_ms,
)
from bridge.poll.pending import Confirmation, confirm_checked, confirm_deletes, seen_again
from bridge.poll.recheck import recheck
from bridge.poll.streamed import PageIndex
from bridge.store import Store
from bridge.store.base import PendingDelete, PollState
from bridge.timelayout import RFC3339, Layout, infer

log = logging.getLogger("bridge.poll")

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
    cursor_skewed: int = 0  # cursor values past `max_skew`: they did not move the watermark
    cursor_missed: int = 0  # changes a full walk found that the filtered polls did not return
    gap: bool = False  # a feed poll that did not reach the last event seen
    gap_why: str = ""  # what the gap is, for the log
    # The source's pending deletes after this poll, when it changed them (see pending.py).
    pending: dict[str, PendingDelete] | None = None
    newly_pending: int = 0  # keys this walk lacked that wait for the next walk to confirm
    still_there: int = 0  # keys this walk lacked that their item URL found (deletes.check)
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
    auth: httpx.Auth | None = None

    @property
    def silent(self) -> bool:
        """Whether this poll's changes make no events (a first poll with `baseline: silent`)."""
        return (
            not self.state.baselined and self.poll.baseline == "silent" and not self.emit_baseline
        )

    async def fetch(self, plan: WalkPlan | None = None) -> Fetched:
        return await fetch(
            self.client, self.poll, self.validators, self.out, plan or WalkPlan(), self.auth
        )

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
    auth: httpx.Auth | None = None,
) -> Detection:
    """Fetch a source and find what changed against its stored state (none without a store).

    Changes nothing. On a first poll with `baseline: silent` the changes make no events,
    unless `emit_baseline` (for a dry run, which shows what the answer holds).
    Raises FetchError when the answer is unusable.
    """
    p = _Poll(client, source, poll, store, state, validators, out, emit_baseline, auth)
    try:
        if poll.mode == "feed":
            return await _detect_feed(p)
        if poll.mode == "incremental":
            return await _detect_incremental(p)
        if poll.mode == "delta":
            return await _with_events(p, await _detect_delta(p))
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
    detection = Detection(fetched, indexed, changes, [], not p.state.baselined, upserts)
    await _confirm_deletes(p, detection)
    return detection


async def _confirm_deletes(p: _Poll, detection: Detection) -> None:
    """Keep the deletes this walk confirms; hold the others as pending (see pending.py)."""
    missing = detection.deletes
    if p.store is None or (not missing and not p.state.pending_deletes):
        return
    pending = await p.store.load_poll_pending(p.source)
    if p.poll.deletes.check is not None and missing:
        checked = await recheck(p.client, p.poll, missing, p.auth)
        detection.fetched.requests += checked.requests
        detection.still_there = len(checked.present)
        decided = confirm_checked(missing, pending, checked.gone, checked.present, now_ms())
    else:
        needed = p.poll.deletes.walks_needed(detection.fetched.pages)
        twice = detection.indexed.duplicates > 0
        decided = confirm_deletes(missing, pending, needed, now_ms(), seen_twice=twice)
    if len(decided.deleted) != len(missing):
        confirmed = set(decided.deleted)
        if detection.streamed is not None:  # its changes are made from what stays here
            kept = [d for d in detection.streamed.deleted if d[0] in confirmed]
            detection.streamed.deleted[:] = kept
        detection.changes = [
            c for c in detection.changes if c.change != "deleted" or c.key in confirmed
        ]
    _hold(detection, decided)


def _hold(detection: Detection, decided: Confirmation) -> None:
    if decided.changed:
        detection.pending = decided.pending
    detection.newly_pending = decided.new


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
    if p.poll.keeps_missing:
        # A feed keeps only its newest entries: one that left it was not deleted, and it
        # stays in the snapshot, so that it is not created again should it come back.
        index.deleted.clear()
    detection = Detection(fetched, index.indexed, is_first=not p.state.baselined)
    detection.streamed = index
    # Before the changes are made: a key missing from a shifted walk is only pending.
    await _confirm_deletes(p, detection)
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


async def _learn_layout(p: _Poll, limit_ms: int) -> tuple[Layout, Any]:
    """The layout of the upstream's own values, and the value it is read from, from the
    first page of the unfiltered list (a source whose `format` is not given and that has
    seen no value yet); rfc3339 (and None) when that page has no usable value or the
    request fails."""
    assert p.poll.cursor is not None
    try:
        page = await fetch(
            p.client,
            p.poll,
            NO_VALIDATORS,
            None,
            WalkPlan(max_pages=1, partial=True),
            p.auth,
        )
    except FetchError as exc:
        log.info("%s: the cursor's layout was not learned (%s): rfc3339 for now", p.source, exc)
        return RFC3339, None
    if p.out is not None:
        p.out.requests += page.requests
        p.out.bytes += page.bytes
    get = getter(p.poll.cursor.field)
    values = [(parse_time(raw), raw) for raw in map(get, page.items) if raw is not None]
    usable = [(at_ms, raw) for at_ms, raw in values if at_ms is not None and at_ms <= limit_ms]
    sample = max(usable, key=lambda v: v[0])[1] if usable else None
    layout = infer(sample) if sample is not None else None
    return (layout, sample) if layout is not None else (RFC3339, None)


async def _detect_incremental(p: _Poll) -> Detection:
    cursor = p.poll.cursor
    assert cursor is not None
    mark = Watermark.load(p.state.cursor)
    at_ms = now_ms()
    limit_ms = max_value_ms(cursor, at_ms)
    # A watermark stored past the limit (by a version without `max_skew`) would ask for
    # nothing ever again: a full walk rebuilds it and finds what it hid.
    poisoned = mark.value_ms is not None and mark.value_ms > limit_ms
    if poisoned:
        log.warning(
            "%s: the stored watermark %r is further in the future than cursor.max_skew:"
            " a full walk rebuilds it",
            p.source,
            mark.raw,
        )
        mark = replace(mark, value_ms=None, raw=None)
    if poisoned or is_reconcile_due(p.poll, mark, at_ms):
        detection = await _detect_snapshot(p)
        if not detection.fetched.not_modified:
            floor = start_ms(mark, cursor, at_ms)
            scan = scan_cursor(p.source, detection.indexed, p.poll, floor, limit_ms)
            missed = (
                0
                if detection.is_first
                else missed_changes(detection.changes, scan, mark, p.state, cursor.lookback_s)
            )
            detection.cursor_missed, detection.cursor_skewed = missed, scan.skewed
            detection.cursor = advanced(mark, scan, reconciled_ms=at_ms, missed=missed).dump()
        return await _with_events(p, detection)
    layout = layout_in_force(cursor, mark)
    if layout is None:
        layout, sample = await _learn_layout(p, limit_ms)
        mark = replace(mark, raw=sample)  # kept until an item moves the watermark: learnt once
    since = since_ms(mark, cursor, at_ms)
    try:
        text = layout.render(since)
    except ValueError as exc:
        raise FetchError(
            f"{p.source}: the cursor cannot be written as {layout.name}: {exc}", reason="cursor"
        ) from exc
    sent = cursor.sent(text)
    if cursor.variable is not None:
        fetched = await p.fetch(WalkPlan(variables={cursor.variable: sent}))
    else:
        assert cursor.param is not None
        fetched = await p.fetch(WalkPlan(params={cursor.param: sent}))
    if fetched.not_modified:
        return Detection(fetched)
    spec = ItemSpec.from_config(p.poll)
    indexed = index_items(fetched.items, spec)
    scan = scan_cursor(p.source, indexed, p.poll, start_ms(mark, cursor, at_ms), limit_ms)
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
    detection.cursor_skewed = scan.skewed
    detection.cursor = advanced(mark, scan).dump()
    if p.store is not None and p.state.pending_deletes and indexed.items:
        # A pending key in a changes answer is there after all (see pending.py).
        _hold(detection, seen_again(await p.store.load_poll_pending(p.source), indexed.items))
    return await _with_events(p, detection)


# -- delta -----------------------------------------------------------------------------------


async def _detect_delta(p: _Poll) -> Detection:
    out = p.out if p.out is not None else Fetched()
    found = await find_delta(p.client, p.source, p.poll, p.store, p.state, out, p.auth)
    first = not p.state.baselined
    changes = found.changes
    detection = Detection(out, found.indexed, changes, [], first, _upserts(changes))
    detection.cursor = found.cursor
    detection.gap_why = "" if first else found.gap_why
    detection.gap = bool(detection.gap_why)
    return detection


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
    newest_first = feed.order == "newest_first"
    quiet = p.poll.baseline == "silent" and not p.emit_baseline
    # An oldest-first baseline that max_pages cut short goes on, silently, from where it stopped.
    continuing = mark.baselining and quiet and not newest_first
    params = {feed.after.param: mark.after} if feed.after and mark.after else {}
    # Read from its newest end, a newest-first feed is walked back to the first seen event.
    walks_to_seen = newest_first and not params and not first and p.store is not None
    get_id = getter(p.poll.id)

    async def reached_seen(page: list[Any]) -> bool:
        ids = [k for k in (key_of(get_id(i)) for i in page if isinstance(i, dict)) if k]
        return bool(await p.versions(ids))

    plan = WalkPlan(
        params=params,
        # The baseline is everything the feed holds now. Newest first, that is its first page:
        # later walks stop at the first page with a seen event, before the older ones. Oldest
        # first, the newest events come last: the baseline walks to the end.
        max_pages=1 if first and newest_first else None,
        stop=reached_seen if walks_to_seen else None,
        partial=True,
    )
    fetched = await p.fetch(plan)
    if fetched.not_modified:
        return Detection(fetched)
    if fetched.truncated and not newest_first and feed.after is None:
        # Every poll starts again from the oldest page: the newest events stay out of reach.
        raise FetchError(
            f"{p.source}: the feed is oldest first and has more than max_pages"
            f" ({p.poll.max_pages}) pages: its newest events are out of reach (set feed.after"
            " to ask for what follows the last event seen, or raise max_pages)",
            status=fetched.status,
            reason="pagination",
        )
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
    if newest_first:
        new.reverse()  # emitted oldest first
    if all(e.time_ms is not None for e in new):
        # Pages walked towards newer events (Stripe's ending_before) each come newest first:
        # by time, the order holds across pages too (a stable sort keeps ties as they were).
        new.sort(key=lambda e: e.time_ms or 0)
    detection = Detection(fetched, indexed, is_first=first)
    detection.indexed.items = {e.id: ("f", e.item) for e in entries}
    detection.upserts = [(e.id, "f", "null") for e in new]
    # A walk cut at max_pages goes on from its newest event, lookback aside: held back, the
    # next walk would read the same pages again and never reach the events after them.
    cut = fetched.truncated and feed.after is not None and not (first and newest_first)
    anchor = next_anchor(
        [FeedEntry(e.id, e.time_ms) for e in entries],
        feed.model_copy(update={"lookback_s": 0.0}) if cut else feed,
        mark.after,
    )
    baselining = (first or continuing) and quiet and not newest_first and fetched.truncated
    detection.cursor = FeedMark(anchor, mark.seen or bool(entries), baselining).dump()
    missed_seen = walks_to_seen and not fetched.stopped and bool(new)
    detection.gap_why = _feed_gap(p.poll, mark, fetched, missed_seen, baselining)
    detection.gap = bool(detection.gap_why)
    detection.changes = [ItemChange("created", e.id, "f", e.item) for e in new]
    if not (p.silent or continuing):
        detection.events = [_feed_event(p, e) for e in new]
    return detection


def _feed_gap(
    poll: PollConfig, mark: FeedMark, fetched: Fetched, missed_seen: bool, baselining: bool
) -> str:
    """Why events of this feed poll may be missing (empty: none may be)."""
    if missed_seen and mark.seen:
        if fetched.truncated:
            return f"the feed's last seen event was not reached within max_pages ({poll.max_pages})"
        return "the feed no longer holds the last event seen (it keeps only its newest events)"
    if baselining and not mark.baselining:
        return (
            f"the baseline walk reached max_pages ({poll.max_pages}) before the feed's newest"
            " event: the next polls go on from there, and what appears meanwhile is taken as"
            " history, not emitted"
        )
    return ""


def _feed_event(p: _Poll, entry: _FeedItem) -> Event:
    get_subject = getter(p.poll.subject) if p.poll.subject else None
    subject = key_of(get_subject(entry.item)) if get_subject is not None else None
    if long_attribute(subject=subject) is not None:
        subject = None  # an event is still an event without a subject
    return Event(
        # From the source's name: a webhook source gives the same upstream event another id
        # (see receive/app.py); one id for both only inside a merge (compare/merge.py).
        id=event_id(p.source, entry.id),
        source=p.source,
        type=attribute_text(entry.type),
        origin="poll",
        data=entry.item,
        recorded_ms=now_ms(),
        subject=attribute_text(subject) if subject is not None else None,
        time_ms=entry.time_ms,
        upstream_id=attribute_text(entry.id),
    )
