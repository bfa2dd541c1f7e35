"""GraphQL over HTTP for a polled source: the request's body, the answer's `data`, its errors
and the cost budget it reports (pure).

GraphQL over HTTP needs no client library: a POST of JSON `{"query", "variables"}`, and an
answer of JSON `{"data", "errors", "extensions"}`, usually with HTTP 200 even when the query
failed. So:

- `request_body`: the configured variables, with the page cursor's and the incremental
  cursor's variables over them.
- `read_answer`: an answer whose `errors` is a non-empty list is a fault showing the first
  message (reason `graphql`); one whose first error has `extensions.code: THROTTLED`
  (Shopify's cost limit) is `throttled`, retried once the budget has restored what the query
  asks for. Otherwise its `data`, where `items` and `pages.graphql` are read.
- `read_cost`: a cost budget in the answer's body, `extensions.cost` (Shopify's GraphQL Admin
  API: `requestedQueryCost`, `actualQueryCost`, `throttleStatus {maximumAvailable,
  currentlyAvailable, restoreRate}`), holds the next request until the budget has restored
  what this one asked for, as rate-limit headers do (limits.py). Values that cannot be read
  are ignored, never a fault.
- `next_cursor`: a Relay connection's next page, `has_next` and `cursor` read inside `data`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jmespath

from bridge import jsontext
from bridge.config import GraphQLPageInfo, GraphQLQuery
from bridge.errors import FetchError
from bridge.poll.limits import MAX_WAIT_S, NO_LIMITS, Limits

# The longest a GraphQL walk waits in the middle for its cost budget to pay for a page (or
# after a THROTTLED answer, before asking once again); a longer wait ends the walk as
# `throttled`, the next poll held until the budget allows it.
MAX_PAGE_WAIT_S = 10.0
# The longest text of an upstream's error message shown in a fault.
MAX_MESSAGE = 300
CONTENT_TYPE = "application/json"
ACCEPT = "application/graphql-response+json, application/json;q=0.9"


def request_body(query: GraphQLQuery, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON POSTed: the query, and its variables with `variables` over the configured."""
    return {"query": query.query, "variables": {**query.variables, **variables}}


def _number(value: Any) -> float | None:
    """A finite non-negative JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _field(mapping: Any, name: str) -> Any:
    return mapping.get(name) if isinstance(mapping, dict) else None


def read_cost(body: Any, now_s: float) -> Limits:
    """What the answer's `extensions.cost` allows: the next request waits until the budget
    holds what this one asked for (`requestedQueryCost`, else `actualQueryCost`)."""
    cost = _field(_field(body, "extensions"), "cost")
    status = _field(cost, "throttleStatus")
    available = _number(_field(status, "currentlyAvailable"))
    if available is None:
        return NO_LIMITS
    maximum = _number(_field(status, "maximumAvailable"))
    limit = int(min(maximum, 1e15)) if maximum is not None else None
    remaining = int(min(available, 1e15))
    needed = _number(_field(cost, "requestedQueryCost"))
    if needed is None:
        needed = _number(_field(cost, "actualQueryCost"))
    rate = _number(_field(status, "restoreRate"))
    if needed is None or needed <= available or not rate:
        return Limits(remaining=remaining, limit=limit)
    wait_s = min((needed - available) / rate, MAX_WAIT_S)
    why = f"extensions.cost: {available:g} of the {needed:g} points a query costs available"
    return Limits(now_s + wait_s, why, remaining, limit)


def page_wait_s(cost: Limits, now_s: float, where: str, status: int | None) -> float:
    """Seconds to wait before the next page of a walk; FetchError `throttled` when the
    budget needs longer than `MAX_PAGE_WAIT_S`."""
    wait_s = cost.wait_s(now_s)
    if wait_s > MAX_PAGE_WAIT_S:
        raise FetchError(
            f"{where}: the cost budget pays for the next page in {wait_s:.0f} s ({cost.why})",
            status=status,
            retry_after_s=wait_s,
            reason="throttled",
        )
    return wait_s


def _message(error: Any) -> str:
    message = _field(error, "message")
    text = message if isinstance(message, str) else repr(error)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def loads(raw: bytes) -> Any:
    """The JSON of a non-2xx answer's body, or None when it is not JSON."""
    try:
        return jsontext.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def first_error(raw: bytes) -> str:
    """`: 'message'` of the first error of a GraphQL answer's body, else nothing (for a
    non-2xx answer: the GraphQL-over-HTTP media type answers a request error with a 4xx)."""
    errors = _field(loads(raw), "errors")
    return f": {_message(errors[0])!r}" if isinstance(errors, list) and errors else ""


def is_throttled(body: Any) -> bool:
    """Whether the answer's first error is THROTTLED (`extensions.code`)."""
    errors = _field(body, "errors")
    if not isinstance(errors, list) or not errors:
        return False
    return _field(_field(errors[0], "extensions"), "code") == "THROTTLED"


def read_answer(body: Any, where: str, status: int, now_s: float) -> Any:
    """The answer's `data`; raises FetchError for an answer with errors or without data.

    A THROTTLED answer carries the seconds until the budget allows the query again.
    """
    if not isinstance(body, dict):
        raise FetchError(
            f"{where}: the answer is not a GraphQL answer (no JSON object)",
            status=status,
            reason="graphql",
        )
    errors = body.get("errors")
    if errors is not None and (not isinstance(errors, list) or errors):
        first = errors[0] if isinstance(errors, list) else errors
        count = len(errors) if isinstance(errors, list) else 1
        more = f" (and {count - 1} more)" if count > 1 else ""
        if is_throttled(body):
            limits = read_cost(body, now_s)
            wait = None if limits.not_before_s is None else limits.not_before_s - now_s
            raise FetchError(
                f"{where}: the GraphQL answer is THROTTLED: {_message(first)!r}",
                status=status,
                retry_after_s=wait,
                reason="throttled",
            )
        raise FetchError(
            f"{where}: the GraphQL answer has errors: {_message(first)!r}{more}",
            status=status,
            reason="graphql",
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise FetchError(
            f"{where}: the GraphQL answer has no data", status=status, reason="graphql"
        )
    return data


def next_cursor(info: GraphQLPageInfo, data: Any, where: str) -> str | None:
    """The value of the next page's cursor variable, or None at the last page."""
    if not jmespath.search(info.has_next, data):
        return None
    cursor = jmespath.search(info.cursor, data)
    if not isinstance(cursor, str) or not cursor:
        raise FetchError(
            f"{where}: {info.has_next} says a next page follows but {info.cursor} holds no cursor",
            reason="pagination",
        )
    return cursor
