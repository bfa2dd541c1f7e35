"""The normalized event: a CloudEvents 1.0 event with the bridge's extensions.

Every source, polled or pushed, produces `Event`s. Their ids are stable: derived from the
source name and the upstream identity (the provider's delivery id for push; the item key,
the change and the version for poll), so seeing the same upstream event twice never makes a
second event. Extensions: `origin` (poll | push), `change` (created | updated | deleted, for
polled events) and `recordedtime` (when the bridge detected or received the event).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, cast

from bridge import jsontext

# `bridge`: an operational event, the bridge's own (see bridge/operational.py).
Origin = Literal["poll", "push", "bridge"]
Change = Literal["created", "updated", "deleted"]

# The source of the bridge's own events (bridge/operational.py): no configured source, merge
# or preset may take this name.
BRIDGE_SOURCE = "bridge"

# Unix times above this are taken as milliseconds (year 5138 in seconds; 1973 in ms).
_MS_THRESHOLD = 100_000_000_000

# The longest upstream id, type or subject an event may have, in UTF-8 bytes. Type and subject
# travel as `ce-type` and `ce-subject` headers in binary mode, percent-encoded (up to 3 bytes
# per byte): 1 KiB stays within the 8 KiB a header line may have in nginx, Apache and Node,
# and leaves room for the other headers. Real ids, types and subjects are far shorter
# (Stripe's `evt_...` and `customer.subscription.updated`, GitHub's GUIDs).
MAX_ATTRIBUTE_BYTES = 1024


def now_ms() -> int:
    """The wall-clock time in whole milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def event_id(source: str, *identity: str) -> str:
    """A stable event id from the source name and the upstream identity."""
    digest = hashlib.blake2b(
        "\x1f".join((source, *identity)).encode("utf-8", "surrogatepass"), digest_size=15
    ).digest()
    # base64.b32encode, lower case, without its pure-Python loop: 120 bits, 12 pairs of letters.
    n = int.from_bytes(digest, "big")
    return "evt_" + "".join([_B32_PAIRS[(n >> shift) & 0x3FF] for shift in _B32_SHIFTS])


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]
_B32_SHIFTS = range(110, -1, -10)


def format_time(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2026-11-29T08:30:00.123Z`."""
    # The second's text is cached: a burst of events shares a few seconds, and strftime is
    # the costly part of a delivery's body after the JSON.
    return _second_text(ms // 1000) + f"{ms % 1000:03d}Z"


@lru_cache(maxsize=256)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def parse_time(value: Any) -> int | None:
    """Milliseconds since the epoch from RFC 3339 text or Unix seconds or milliseconds.

    Returns None when the value is missing or not a time; an event without a time is
    still an event.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 1e16:
            return None
        return int(value) if abs(value) >= _MS_THRESHOLD else round(value * 1000)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return _iso(text)
        return parse_time(number)
    return None


def _iso(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.year < 1971:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def long_attribute(**attributes: str | None) -> str | None:
    """The name of the first attribute longer than `MAX_ATTRIBUTE_BYTES` once stored (as
    `attribute_text` gives it: each character it replaces takes 3 bytes), else None."""
    for name, value in attributes.items():
        # Fewer characters than a quarter of the limit cannot be too many bytes.
        if (
            value is not None
            and len(value) > MAX_ATTRIBUTE_BYTES // 4
            and len(attribute_text(value).encode("utf-8")) > MAX_ATTRIBUTE_BYTES
        ):
            return name
    return None


# What a CloudEvents String may not hold: control characters (U+0000 to U+001F and U+007F to
# U+009F), surrogates and noncharacters (CloudEvents 1.0, "Type System").
_NOT_IN_ATTRIBUTES = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)


def attribute_text(value: str) -> str:
    """`value` as a CloudEvents String: each character it may not hold becomes U+FFFD.

    For the attributes taken from what a provider sent (`type`, `subject`, the upstream id):
    the event stays deliverable as a valid CloudEvent, and PostgreSQL, whose text cannot hold
    NUL, stores the same as SQLite. A source's event `id` is still derived from the text as
    sent; a merged event's from the event's attributes, as this gives them (compare/merge.py)."""
    if value.isprintable():  # the common case, in C; false for more than the class above
        return value
    return _NOT_IN_ATTRIBUTES.sub("\ufffd", value)


# A string as `jsontext.dumps` writes it (its encoder's own function: quotes, backslashes and
# control characters escaped, the rest as it is).
_string = json.encoder.encode_basestring


def render_type(template: str, source: str, change: str = "") -> str:
    """Fill a type template such as `{source}.{change}`."""
    return template.replace("{source}", source).replace("{change}", change)


@dataclass(slots=True, frozen=True)
class Event:
    """A normalized CloudEvent. Times are carried as epoch milliseconds."""

    id: str
    source: str
    type: str
    origin: Origin
    data: Any
    recorded_ms: int
    subject: str | None = None
    time_ms: int | None = None
    change: Change | None = None
    # The identity upstream (delivery id or item key) the id was derived from.
    upstream_id: str | None = field(default=None, compare=False)
    # The W3C trace context of the request that pushed the event (None: polled, or none sent);
    # not part of the CloudEvent: deliveries send it as their own `traceparent` header.
    traceparent: str | None = field(default=None, compare=False)
    tracestate: str | None = field(default=None, compare=False)
    # `data` as the JSON text the store holds, exactly as `jsontext.dumps` wrote it, when the
    # event was read from the store (`restored`): `to_json` splices it into the envelope
    # instead of encoding `data` again. Not an argument, so `dataclasses.replace` (a new
    # `data`) drops it.
    data_json: str | None = field(default=None, init=False, compare=False, repr=False)

    def to_cloudevent(self) -> dict[str, Any]:
        """The event as a CloudEvents 1.0 JSON object (structured mode)."""
        out = self._envelope()
        out["data"] = self.data
        return out

    def _envelope(self) -> dict[str, Any]:
        """The CloudEvent without `data`, which comes last."""
        out: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.time_ms is not None:
            out["time"] = format_time(self.time_ms)
        out["datacontenttype"] = "application/json"
        out["origin"] = self.origin
        if self.change is not None:
            out["change"] = self.change
        out["recordedtime"] = format_time(self.recorded_ms)
        return out

    def to_json(self) -> str:
        """The CloudEvent as compact, strict JSON text (ValueError for a non-finite number)."""
        if self.data_json is None:
            return jsontext.dumps(self.to_cloudevent())
        # The text `jsontext.dumps(self.to_cloudevent())` would give, written directly (once
        # a delivery): the members in `_envelope`'s order, each string as the encoder writes
        # it, and `data` last, the stored text as `dumps` wrote it.
        text = _string
        parts = ['{"specversion":"1.0","id":', text(self.id), ',"source":', text(self.source),
                 ',"type":', text(self.type)]  # fmt: skip
        if self.subject is not None:
            parts += (',"subject":', text(self.subject))
        if self.time_ms is not None:
            parts += (',"time":"', format_time(self.time_ms), '"')
        parts += (',"datacontenttype":"application/json","origin":', text(self.origin))
        if self.change is not None:
            parts += (',"change":', text(self.change))
        parts += (',"recordedtime":"', format_time(self.recorded_ms), '","data":', self.data_json)
        parts.append("}")
        return "".join(parts)

    @classmethod
    def from_cloudevent(cls, ce: dict[str, Any]) -> Event:
        """Rebuild an Event from its CloudEvents JSON object."""
        time_ms = parse_time(ce.get("time"))
        recorded_ms = parse_time(ce.get("recordedtime"))
        return cls(
            id=ce["id"],
            source=ce["source"],
            type=ce["type"],
            origin=ce["origin"],
            data=ce.get("data"),
            recorded_ms=recorded_ms if recorded_ms is not None else 0,
            subject=ce.get("subject"),
            time_ms=time_ms,
            change=ce.get("change"),
        )


# The slots' own setters, in the order of the fields: a frozen dataclass's `__init__` sets
# each field with `object.__setattr__`, which looks the attribute up first; these do not
# (`restored` costs under half of `Event(...)`, and runs for every event claimed).
_SETTERS = tuple(Event.__dict__[f.name].__set__ for f in fields(Event))


def restored(values: Sequence[Any], cls: type[Event] = Event) -> Event:
    """An Event (or a `cls` of it) from the values of all its fields, `data_json` included,
    in their order."""
    event = object.__new__(cls)
    for set_field, value in zip(_SETTERS, values, strict=True):
        set_field(event, value)
    return event


_DATA = Event.__dict__["data"]  # the `data` slot's own descriptor
_UNPARSED: Any = object()  # in the `data` slot of a `StoredEvent` until it is parsed
_DATA_AT = [f.name for f in fields(Event)].index("data")


def _stored_data(event: Event) -> Any:
    value = _DATA.__get__(event, Event)
    if value is _UNPARSED:
        # Two threads at once parse it twice, to the same value.
        value = jsontext.loads_stored(cast(str, event.data_json))
        _DATA.__set__(event, value)
    return value


class StoredEvent(Event):
    """An Event read from the store whose `data` is parsed from the stored text (`data_json`)
    when first asked for. A delivery in structured mode sends that text as it is and never
    asks: a claimed event's JSON was parsed for nothing (34 µs for a 12 KB payload shaped
    like GitHub's).

    Equal to an `Event` of the same fields, with the same hash; `dataclasses.replace` makes
    one whose `data` is the value given."""

    __slots__ = ()

    data = property(_stored_data, _DATA.__set__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return _compared(self) == _compared(other)

    __hash__ = Event.__hash__

    def __repr__(self) -> str:
        return "Event" + Event.__repr__(self).removeprefix("StoredEvent")


_COMPARED = tuple(f.name for f in fields(Event) if f.compare)


def _compared(event: Event) -> tuple[Any, ...]:
    return tuple(getattr(event, name) for name in _COMPARED)


def stored(values: Sequence[Any], text: str | None) -> Event:
    """An Event from the values of its fields in their order, `data` and `data_json` left
    out, and `text`, its `data` as the store holds it (None for none): parsed when first
    asked for, when `to_json` may splice it (`spliceable`), else now."""
    data_json = spliceable(text)
    if data_json is None:
        data = jsontext.loads_stored(text) if text is not None else None
        return restored((*values[:_DATA_AT], data, *values[_DATA_AT:], None))
    return restored((*values[:_DATA_AT], _UNPARSED, *values[_DATA_AT:], data_json), StoredEvent)


def spliceable(text: str | None) -> str | None:
    """`text`, the stored `data` as `jsontext.dumps` wrote it, when `to_json` may send it as
    it is: not text with `NaN` or `Infinity` (older versions wrote such numbers, sent as null)."""
    if text and "NaN" not in text and "Infinity" not in text:
        return text
    return None
