"""Asking an item's own URL whether a key missing from a walk is gone (`deletes.check`).

A walk of several pages can miss an item the list still holds (see pending.py); waiting for
the next walk to lack it too is right most of the time, but a list that keeps shifting (items
removed in front while every walk runs) can move the same item past a page boundary twice.
Where the API has a URL per item, one request settles it at once: 404 or 410, the item is
gone; a 2xx, it is there. Anything else (another status, a timeout, a refused connection)
settles nothing, and the key stays pending for the next poll to ask again.

The request carries the source's headers and `auth:`, so `check` is held to the origin of `url` (the
config refuses another one) and redirects are never followed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from bridge.config import PollConfig
from bridge.config.polling import check_url
from bridge.poll.urls import safe_url

log = logging.getLogger("bridge.poll")

_GONE = (404, 410)


@dataclass(slots=True)
class Checked:
    """What the item URLs said about some missing keys."""

    gone: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)
    requests: int = 0


async def recheck(
    client: httpx.AsyncClient,
    poll: PollConfig,
    keys: Sequence[str],
    auth: httpx.Auth | None = None,
) -> Checked:
    """Ask `deletes.check` about at most `deletes.max_checks` of `keys`, one at a time, with
    the source's `auth` (the item URL is on the source's origin)."""
    out = Checked()
    headers = {name: value.get_secret_value() for name, value in poll.headers.items()}
    if not any(name.lower() == "accept" for name in headers):
        headers["Accept"] = "application/json"
    for key in keys[: poll.deletes.max_checks]:
        url = check_url(poll, key)
        out.requests += 1
        try:
            response = await client.request(
                "GET",
                url,
                headers=headers,
                timeout=poll.timeout_s,
                follow_redirects=False,
                auth=auth,
            )
        except httpx.HTTPError as exc:
            log.debug("%s: check failed (%s), asked again later", safe_url(url), exc)
            continue
        if response.status_code in _GONE:
            out.gone.add(key)
        elif 200 <= response.status_code < 300:
            out.present.add(key)
        else:
            log.debug(
                "%s: check answered %d, asked again later", safe_url(url), response.status_code
            )
    return out
