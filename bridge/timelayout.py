"""How an incremental source writes a time back to its upstream: the cursor's *layout*.

An API that filters on a column it compares as text (SQLite's `2026-12-06 11:08:12` behind
Datasette, a string column in a document store) only finds what it should when the cursor
comes back in exactly the layout of its own values: `2026-12-06T11:08:12Z` sorts after
every `2026-12-06 ...` value of the same day (`' ' < 'T'`), so a filter on it hides a day of
changes. A layout is named by `cursor.format` (`rfc3339`, `iso8601`, `sqlite`, `unix`,
`unix_ms` or a strftime-style pattern) or, when `format` is not given, inferred from a value
the upstream gave (`infer`): the separator, the seconds, the fraction digits, `Z`, an offset
or no zone. Rendering is exact to the millisecond and never later than the time it is
given, so a window written in a coarser layout only asks for a little more. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

# The named formats and the patterns they stand for (the time in UTC).
NAMED_PATTERNS = {
    "rfc3339": "%Y-%m-%dT%H:%M:%SZ",
    "iso8601": "%Y-%m-%dT%H:%M:%S%:z",
    "sqlite": "%Y-%m-%d %H:%M:%S",
}
# Beyond strftime: `%3f` (a fraction of 1 to 9 digits; `%f` is always 6) and `%:z` (`+02:00`).
_EXTRA = re.compile(r"%(?:([1-9])f|(:z)|.)")
# At and above this a number is in milliseconds (as `bridge.events.parse_time` reads it).
_MS_THRESHOLD = 100_000_000_000
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?P<sep>[Tt ])(?P<hm>\d{2}:\d{2})(?P<s>:\d{2})?"
    r"(?:(?P<dot>[.,])(?P<frac>\d{1,9}))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:?\d{2})?)?"
)


@dataclass(frozen=True, slots=True)
class Layout:
    """How a time is written: Unix seconds, Unix milliseconds, or text in a pattern and zone."""

    kind: Literal["unix", "unix_ms", "text"]
    pattern: str = ""  # strftime-style, with `%Nf` and `%:z` (kind `text` only)
    offset_min: int = 0  # the zone the text is written in, in minutes east of UTC
    name: str = ""  # as `bridge check` shows it

    def render(self, at_ms: int) -> str:
        """`at_ms` in this layout, cut (never rounded up) to what the layout can say.

        Raises ValueError for a time the layout cannot write (before year 1, after 9999).
        """
        if self.kind == "unix_ms":
            return str(at_ms)
        if self.kind == "unix":
            return str(at_ms // 1000)
        seconds, ms = divmod(at_ms, 1000)
        zone = timezone(timedelta(minutes=self.offset_min)) if self.offset_min else UTC
        try:
            at = datetime.fromtimestamp(seconds, tz=zone).replace(microsecond=ms * 1000)
        except (OverflowError, OSError) as exc:
            raise ValueError(f"{at_ms} ms is out of range") from exc
        return at.strftime(_expand(self.pattern, at))


def _expand(pattern: str, at: datetime) -> str:
    """The pattern with `%Nf` and `%:z` written out, ready for strftime."""

    def one(match: re.Match[str]) -> str:
        digits, colon_z = match.group(1), match.group(2)
        if digits:
            return f"{at.microsecond:06d}000"[: int(digits)]
        if colon_z:
            offset = at.utcoffset() or timedelta(0)
            sign = "-" if offset < timedelta(0) else "+"
            minutes = abs(int(offset.total_seconds())) // 60
            return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        return match.group(0)

    return _EXTRA.sub(one, pattern)


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless `pattern` is a strftime-style pattern that writes a time."""
    if "%" not in pattern:
        raise ValueError(
            f"{pattern!r} is not a format: use rfc3339, iso8601, sqlite, unix, unix_ms"
            " or a strftime pattern such as '%Y-%m-%d %H:%M:%S'"
        )
    Layout("text", pattern).render(0)


def named(fmt: str) -> Layout:
    """The layout `cursor.format` names (a named format or a strftime-style pattern)."""
    if fmt == "unix":
        return Layout("unix", name=fmt)
    if fmt == "unix_ms":
        return Layout("unix_ms", name=fmt)
    return Layout("text", NAMED_PATTERNS.get(fmt, fmt), name=fmt)


RFC3339 = named("rfc3339")


def infer(raw: Any) -> Layout | None:
    """The layout of a cursor value as the upstream gave it; None when it has none we know.

    Numbers (and text of digits) are Unix seconds or milliseconds by their size; text in an
    ISO 8601 shape keeps its separator, seconds, fraction digits and zone (`Z`, an offset
    written the same way, or none: then the time is taken and written as UTC).
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return _numeric(raw)
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    try:
        return _numeric(float(text))
    except ValueError:
        pass
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    return _text_layout(match, raw)


def _numeric(value: float) -> Layout:
    kind: Literal["unix", "unix_ms"] = "unix_ms" if abs(value) >= _MS_THRESHOLD else "unix"
    return Layout(kind, name=f"{kind} (inferred)")


def _text_layout(match: re.Match[str], raw: str) -> Layout:
    pattern = "%Y-%m-%d"
    offset_min = 0
    if match["sep"]:
        pattern += match["sep"] + "%H:%M" + (":%S" if match["s"] else "")
        if match["frac"]:
            pattern += match["dot"] + f"%{len(match['frac'])}f"
        zone = match["zone"] or ""
        if zone in ("Z", "z"):
            pattern += zone
        elif zone:
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset_min = sign * (int(digits[:2]) * 60 + int(digits[2:]))
            pattern += "%:z" if ":" in zone else "%z"
    shown = pattern.replace("%:z", "+HH:MM").replace("%z", "+HHMM")
    return Layout("text", pattern, offset_min, f"{shown} (inferred from {raw[:40]!r})")
