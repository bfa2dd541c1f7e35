"""What an upstream's rate-limit headers allow: the earliest time of the next poll (pure).

`read_limits(headers, status, now_s)` reads one answer's headers and says when the next
request may be sent, as an epoch time (`not_before_s`, None when nothing holds it back),
with the remaining and limit it saw and the header that asked for the wait (for the log):

- `X-RateLimit-Remaining` / `X-RateLimit-Reset` (GitHub and many others) and
  `RateLimit-Remaining` / `RateLimit-Reset` (GitLab; the IETF draft up to -06): with nothing
  remaining, wait until the reset. A reset larger than `EPOCH_THRESHOLD_S` is a Unix time
  (GitHub, GitLab), a smaller one a delay in seconds (the older IETF drafts);
- the IETF draft's `RateLimit` field: a list of policies with `r` (remaining) and `t` (seconds
  until the quota resets), e.g. `"default";r=0;t=30` (draft -08 and later), or the -07
  dictionary `limit=10, remaining=0, reset=30`; the quota comes from `RateLimit-Policy`
  (`"default";q=100;w=60`) or `RateLimit-Limit`. Any policy with nothing left holds the poll;
- `Retry-After` (seconds or an HTTP date) on an error answer;
- `X-Poll-Interval` (GitHub's events): the least number of seconds before the next poll.

Values that cannot be read are ignored, never a fault and never an exception: numbers are
ASCII digits only (`²` or `٣` is not a number), a number too large to mean anything is taken
as `LARGEST` (a wait then clamped, a count then huge), an HTTP date out of range is ignored.
`Limits.wait_s` is at most `max_wait_s` (the config's `limits.max_wait`, never more than
`MAX_WAIT_S`); `Limits.is_clamped` says when the upstream asked for longer.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC

EPOCH_THRESHOLD_S = 1_000_000_000.0  # 2001-09-09: a reset beyond this is a Unix time
MAX_WAIT_S = 86400.0  # an upstream asking for more than a day gets a day, whatever the config
DEFAULT_MAX_WAIT_S = 3600.0  # `limits.max_wait`
# A number beyond this (about 31 million years in seconds) means nothing more: taken as this.
LARGEST = 1e15

# ASCII digits only: `\d` would take `²` and other Unicode digits that float() refuses.
_NUMBER_RE = re.compile(r"[ \t]*([0-9]+(?:\.[0-9]+)?)[ \t]*\Z")
# One member of a structured-field list: quoted strings may hold commas and semicolons.
_SPLIT_RE = re.compile(r'((?:[^,"]|"(?:[^"\\]|\\.)*")+)')


@dataclass(frozen=True, slots=True)
class Limits:
    """What an upstream's headers said: when the next request may go, and what is left."""

    not_before_s: float | None = None  # epoch seconds; None: nothing holds the next poll
    why: str | None = None  # the header that set `not_before_s`, for the log
    remaining: int | None = None
    limit: int | None = None

    def wait_s(self, now_s: float, max_wait_s: float = MAX_WAIT_S) -> float:
        """Seconds from `now_s` until the next request may be sent (0 when it may now), at
        most `max_wait_s`."""
        if self.not_before_s is None:
            return 0.0
        return min(max(0.0, self.not_before_s - now_s), max_wait_s, MAX_WAIT_S)

    def is_clamped(self, now_s: float, max_wait_s: float) -> bool:
        """True when the upstream asked to wait longer than `max_wait_s` from `now_s`."""
        return self.not_before_s is not None and self.not_before_s - now_s > max_wait_s

    def then(self, later: Limits) -> Limits:
        """These limits followed by those of a later answer of the same walk.

        The latest remaining and limit win; the next poll waits for the later of both times.
        """
        if later.not_before_s is None or (
            self.not_before_s is not None and self.not_before_s >= later.not_before_s
        ):
            when, why = self.not_before_s, self.why
        else:
            when, why = later.not_before_s, later.why
        return Limits(
            not_before_s=when,
            why=why,
            remaining=later.remaining if later.remaining is not None else self.remaining,
            limit=later.limit if later.limit is not None else self.limit,
        )


NO_LIMITS = Limits()


def _number(value: str | None) -> float | None:
    """A non-negative decimal number written in ASCII digits, at most `LARGEST`; else None."""
    if value is None:
        return None
    match = _NUMBER_RE.match(value)
    if not match:
        return None
    number = float(match.group(1))  # 400 digits make `inf`, never an exception
    return min(number, LARGEST) if math.isfinite(number) else LARGEST


def _reset_at(value: str | None, now_s: float) -> float | None:
    """A reset as an epoch time: a Unix time as written, a small number as a delay."""
    reset = _number(value)
    if reset is None:
        return None
    return reset if reset >= EPOCH_THRESHOLD_S else now_s + reset


def retry_after_at(value: str | None, now_s: float) -> float | None:
    """When a `Retry-After` value (seconds or an HTTP date) allows the next request, as an
    epoch time; None when it cannot be read (`²`, `soon`, a date out of range). An HTTP date
    is in GMT: one written with `-0000` is read as GMT too."""
    if value is None:
        return None
    if (seconds := _number(value)) is not None:
        return now_s + seconds
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """The delay a `Retry-After` header asks for: seconds or an HTTP date; None if unusable."""
    now = now_s if now_s is not None else time.time()
    at = retry_after_at(value, now)
    return None if at is None else max(0.0, at - now)


def _members(value: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The members of a structured-field list or dictionary: (item, {param: value})."""
    for member in _SPLIT_RE.findall(value):
        parts = [part.strip() for part in re.split(r';(?=(?:[^"]*"[^"]*")*[^"]*\Z)', member)]
        params = {}
        for part in parts[1:]:
            key, _, val = part.partition("=")
            params[key.strip().lower()] = val.strip().strip('"')
        yield parts[0], params


def _int(value: str | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None  # finite: `_number` caps it


@dataclass(frozen=True, slots=True)
class _Quota:
    """One rate-limit policy as an answer reports it."""

    remaining: int | None
    reset_at: float | None
    limit: int | None
    header: str


def _ietf_quotas(headers: Mapping[str, str], now_s: float) -> Iterator[_Quota]:
    """The policies of the IETF draft's `RateLimit` field (-07 dictionary or -08 list)."""
    field = headers.get("ratelimit")
    if not field:
        return
    quotas = {}
    for item, params in _members(headers.get("ratelimit-policy", "")):
        quotas[item.strip('"')] = _int(params.get("q") or item)
    members = list(_members(field))
    as_dict = {
        item.partition("=")[0].strip().lower(): item.partition("=")[2] for item, _ in members
    }
    if "remaining" in as_dict:  # draft -07: limit=10, remaining=0, reset=30
        reset = _number(as_dict.get("reset"))
        yield _Quota(
            _int(as_dict.get("remaining")),
            now_s + reset if reset is not None else None,
            _int(as_dict.get("limit")),
            "RateLimit",
        )
        return
    for item, params in members:  # draft -08 on: "default";r=0;t=30
        reset = _number(params.get("t"))
        name = item.strip('"')
        yield _Quota(
            _int(params.get("r")),
            now_s + reset if reset is not None else None,
            quotas.get(name),
            "RateLimit",
        )


def _quotas(headers: Mapping[str, str], now_s: float) -> Iterator[_Quota]:
    for prefix in ("x-ratelimit-", "ratelimit-"):
        remaining = _int(headers.get(prefix + "remaining"))
        if remaining is not None:
            header = "X-RateLimit-Remaining" if prefix.startswith("x") else "RateLimit-Remaining"
            reset = _reset_at(headers.get(prefix + "reset"), now_s)
            limit = _int(headers.get(prefix + "limit"))
            yield _Quota(remaining, reset, limit, header)
    yield from _ietf_quotas(headers, now_s)


def read_limits(headers: Mapping[str, str], status: int, now_s: float) -> Limits:
    """When the next request may be sent after an answer with these headers and status.

    `headers` is looked up by lower-case name (httpx's headers are case-insensitive).
    """
    waits: list[tuple[float, str]] = []
    remaining = limit = None
    for quota in _quotas(headers, now_s):
        if remaining is None or (quota.remaining is not None and quota.remaining < remaining):
            remaining, limit = quota.remaining, quota.limit
        if quota.remaining is not None and quota.remaining <= 0 and quota.reset_at is not None:
            waits.append((quota.reset_at, f"{quota.header}: 0"))
    interval = _number(headers.get("x-poll-interval"))
    if interval is not None:
        waits.append((now_s + interval, f"X-Poll-Interval: {interval:g}"))
    if status >= 400:
        retry = retry_after_at(headers.get("retry-after"), now_s)
        if retry is not None:
            waits.append((retry, "Retry-After"))
    if not waits:
        return Limits(remaining=remaining, limit=limit)
    when, why = max(waits)
    if when <= now_s:
        return Limits(remaining=remaining, limit=limit)
    return Limits(min(when, now_s + MAX_WAIT_S), why, remaining, limit)
