"""Where incremental and feed polls resume: pure values kept as JSON in the poll state, and
how an answer's cursor values move an incremental source's watermark (`scan_cursor`,
`advanced`, `missed_changes`).

- An incremental poll asks for what changed since a *watermark*, the largest value of the
  cursor field seen, minus `lookback` (APIs that show a change a little late, clocks that
  differ). Items seen again inside that window are compared with their stored version and
  emit nothing, so items that share the boundary value are never skipped nor repeated. The
  watermark never moves back, nor further than `max_skew` past now (one bad value would hide
  every later change). It keeps the value as the upstream wrote it (`raw`), whose layout is
  how the cursor is written back when `format` is not given (bridge/timelayout.py), and the
  faults a status shows: changes the cursor filter missed, values too far in the future.
- A feed poll asks for what follows an *anchor*, the id of the newest event seen that is at
  least `lookback` older than the newest one, when the feed takes such a parameter. Its first
  poll is a baseline of everything the feed holds: one page of a newest-first feed (later
  polls stop at the first page that holds a seen event), every page of an oldest-first one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.config import FeedConfig, IncrementalCursor, PollConfig
from bridge.errors import FetchError
from bridge.events import parse_time
from bridge.poll.diff import Indexed, ItemChange, getter
from bridge.store.base import PollState
from bridge.timelayout import Layout, infer, named


@dataclass(frozen=True, slots=True)
class Watermark:
    """An incremental source's resume point, and what its last polls found wrong."""

    value_ms: int | None = None  # the largest cursor value seen (or the first poll's start)
    reconciled_ms: int | None = None  # when the last full walk (reconcile) was made
    # The value of `value_ms` as the upstream wrote it (before an item moved the watermark:
    # one of its values), whose layout the cursor is written in when `format` is not given.
    raw: str | int | float | None = None
    # Changes the last full walk found that the filtered polls before it should have
    # returned; kept until a full walk finds none.
    missed: int = 0
    # Values of the last poll further in the future than `max_skew`, and one of them.
    skewed: int = 0
    skewed_raw: str | None = None

    @classmethod
    def load(cls, text: str | None) -> Watermark:
        """The stored watermark (none yet: empty)."""
        data = _load(text)
        raw = data.get("raw")
        skewed_raw = data.get("skewed_raw")
        return cls(
            _int(data.get("value_ms")),
            _int(data.get("reconciled_ms")),
            raw if isinstance(raw, str | int | float) and not isinstance(raw, bool) else None,
            _int(data.get("missed")) or 0,
            _int(data.get("skewed")) or 0,
            skewed_raw if isinstance(skewed_raw, str) else None,
        )

    def dump(self) -> str:
        """As stored."""
        return json.dumps(asdict(self), separators=(",", ":"))

    def faults(self, cursor: IncrementalCursor | None = None) -> list[str]:
        """What `bridge status` shows: the cursor's faults in words (none: empty)."""
        out = []
        if self.missed:
            out.append(MISSED.format(n=self.missed))
        if self.skewed:
            limit = f" ({_duration(cursor.max_skew_s)})" if cursor is not None else ""
            out.append(
                f"{self.skewed} cursor value{'s' * (self.skewed != 1)} further in the future"
                f" than cursor.max_skew{limit} (such as {self.skewed_raw!r}): the watermark"
                " did not move"
            )
        return out


# The fault of a source whose full walk found changes its filtered polls did not return.
MISSED = "the cursor filter missed {n} changes: check cursor.format"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class FeedMark:
    """A feed source's resume point."""

    after: str | None = None  # the id sent as `feed.after.param`
    # Whether any event has been seen: a walk back to seen events that finds none is then a
    # gap (the feed dropped them, or more arrived than max_pages holds), not a first sight.
    seen: bool = False
    # An oldest-first baseline cut at max_pages: the next polls go on walking from `after`,
    # silently, until they reach the feed's newest end.
    baselining: bool = False

    @classmethod
    def load(cls, text: str | None) -> FeedMark:
        """The stored anchor (none yet: empty)."""
        data = _load(text)
        after = data.get("after")
        seen = data.get("seen")
        return cls(
            after if isinstance(after, str) else None,
            # A mark stored before `seen` was kept: take it that something was seen.
            seen if isinstance(seen, bool) else bool(data),
            data.get("baselining") is True,
        )

    def dump(self) -> str:
        """As stored."""
        return json.dumps(asdict(self), separators=(",", ":"))


def _load(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def format_cursor(at_ms: int, fmt: str) -> str:
    """A time as the API takes it; RFC 3339 is cut to whole seconds (earlier is safe)."""
    return named(fmt).render(at_ms)


def layout_in_force(cursor: IncrementalCursor, mark: Watermark) -> Layout | None:
    """How this poll writes the cursor: `format`, else the layout of the watermark's raw
    value; None when neither is known yet (no value seen)."""
    if cursor.format is not None:
        return named(cursor.format)
    return infer(mark.raw) if mark.raw is not None else None


def format_line(cursor: IncrementalCursor) -> str:
    """Which format is in force, in words (`bridge check`)."""
    if cursor.format is not None:
        return cursor.format
    return "as the upstream writes it (inferred from its values; rfc3339 until one is seen)"


def max_value_ms(cursor: IncrementalCursor, now_ms: int) -> int:
    """The largest cursor value that may move the watermark."""
    return now_ms + round(cursor.max_skew_s * 1000)


def start_ms(mark: Watermark, cursor: IncrementalCursor, now_ms: int) -> int:
    """Where this poll's window starts, before the lookback: the watermark, or `start` ago."""
    return mark.value_ms if mark.value_ms is not None else now_ms - round(cursor.start_s * 1000)


def since_ms(mark: Watermark, cursor: IncrementalCursor, now_ms: int) -> int:
    """The value sent as `cursor.param`: the window's start minus `lookback`."""
    return start_ms(mark, cursor, now_ms) - round(cursor.lookback_s * 1000)


def is_reconcile_due(poll: PollConfig, mark: Watermark, now_ms: int) -> bool:
    """Whether this poll is a full walk that finds deletions (the first one always is)."""
    if poll.reconcile_s is None:
        return False
    return mark.reconciled_ms is None or now_ms - mark.reconciled_ms >= poll.reconcile_s * 1000


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One event of a feed answer, as far as choosing the anchor needs it."""

    id: str
    time_ms: int | None


def next_anchor(entries: list[FeedEntry], feed: FeedConfig, previous: str | None) -> str | None:
    """The id to send as `after` next time.

    With times on every entry: the newest entry at least `lookback` older than the newest
    one (events can become visible late, behind it). Without: the newest by the feed's order.
    No entry that old: the previous anchor stays.
    """
    if not entries:
        return previous
    if all(e.time_ms is not None for e in entries):
        newest = max(e.time_ms for e in entries if e.time_ms is not None)
        limit = newest - round(feed.lookback_s * 1000)
        old_enough = [e for e in entries if e.time_ms is not None and e.time_ms <= limit]
        if not old_enough:
            return previous
        if feed.order == "oldest_first":
            old_enough.reverse()  # of events with the same time, the last in the feed is newest
        return max(old_enough, key=lambda e: e.time_ms or 0).id
    return entries[0].id if feed.order == "newest_first" else entries[-1].id


# -- an answer's cursor values, and the watermark they move ----------------------------


@dataclass(slots=True)
class CursorScan:
    """The cursor values of an answer: the largest that may move the watermark, and faults."""

    top_ms: int
    raw: Any = None  # the upstream's text (or number) of `top_ms`; None: `top_ms` is the floor
    values_ms: dict[str, int] = field(default_factory=dict)  # by item key
    skewed: int = 0  # values further in the future than `max_skew`
    skewed_raw: str | None = None  # the first of them, as given


def scan_cursor(
    source: str, indexed: Indexed, poll: PollConfig, floor_ms: int, limit_ms: int
) -> CursorScan:
    """Drop the items without a cursor value (counted as skipped); read the others' values.

    A value that is not a time is a fault of the poll: the watermark cannot be trusted. A
    value past `limit_ms` is counted and does not move the watermark; its item stays, and is
    compared by its version like any other.
    """
    assert poll.cursor is not None
    get = getter(poll.cursor.field)
    scan, dropped = CursorScan(floor_ms), 0
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
        scan.values_ms[key] = at_ms
        if at_ms > limit_ms:
            scan.skewed += 1
            scan.skewed_raw = scan.skewed_raw or str(raw)[:40]
        elif at_ms > scan.top_ms:
            scan.top_ms, scan.raw = at_ms, raw
    indexed.skipped += dropped
    return scan


def missed_changes(
    changes: list[ItemChange],
    scan: CursorScan,
    mark: Watermark,
    state: PollState,
    lookback_s: float,
) -> int:
    """The changes a full walk found that the filtered polls since the last walk should have
    returned: stamped more than `lookback` before the last one that succeeded."""
    polled_ms = state.last_ok_ms
    if polled_ms is None or (mark.reconciled_ms is not None and polled_ms <= mark.reconciled_ms):
        return 0  # no filtered poll succeeded since the last full walk
    horizon_ms = polled_ms - round(lookback_s * 1000)
    return sum(
        1
        for c in changes
        if c.change != "deleted" and c.key in scan.values_ms and scan.values_ms[c.key] < horizon_ms
    )


def advanced(
    mark: Watermark,
    scan: CursorScan,
    *,
    reconciled_ms: int | None = None,
    missed: int | None = None,
) -> Watermark:
    """The watermark after a poll: a full walk (`reconciled_ms`) or a filtered one."""
    return Watermark(
        value_ms=scan.top_ms,
        reconciled_ms=reconciled_ms if reconciled_ms is not None else mark.reconciled_ms,
        raw=scan.raw if scan.raw is not None else mark.raw,
        missed=missed if missed is not None else mark.missed,
        skewed=scan.skewed,
        skewed_raw=scan.skewed_raw,
    )
