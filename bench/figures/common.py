"""Pieces several figures share: configs for the daemon, and notes about failed requests."""

from __future__ import annotations

import asyncio

from bench.load import TARGET_SECRET, WEBHOOK_SECRET, LoadResult, Prepared, closed_loop
from bench.procs import NotAvailable, Proc

HOOK_PATH = "/hooks/hook"


def webhook_source_yaml() -> str:
    """One Standard Webhooks source named `hook`, listening at /hooks/hook."""
    return (
        "  hook:\n"
        "    webhook:\n"
        "      verify: standard-webhooks\n"
        f'      secrets: ["{WEBHOOK_SECRET}"]\n'
    )


def target_yaml(url: str) -> str:
    """One target named `sink` posting to `url`."""
    return f'targets:\n  sink:\n    url: {url}\n    secret: "{TARGET_SECRET}"\n'


def failures_note(result: LoadResult, side: str) -> str:
    """A short note when some requests did not get a 2xx, else ''."""
    if not result.failed and not result.dropped:
        return ""
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items()))
    first = f"; first error {result.errors[0]}" if result.errors else ""
    return (
        f"{side}: {result.failed} of {result.sent} failed, {result.dropped} dropped "
        f"({codes}){first}"
    )


def check_accepts(proc: Proc, requests: list[Prepared], what: str) -> int:
    """Send a few requests to the daemon's hook; NotAvailable when the route is not there.

    Returns how many were accepted.
    """
    result = asyncio.run(closed_loop(proc.url + HOOK_PATH, requests, concurrency=4, duration_s=10))
    if result.statuses.get(404):
        raise NotAvailable(f"the daemon answers 404 at {HOOK_PATH}: {what}")
    if result.ok == 0:
        raise NotAvailable(
            f"the daemon accepted none of {result.sent} signed requests "
            f"({failures_note(result, 'bridge')})"
        )
    return result.ok
