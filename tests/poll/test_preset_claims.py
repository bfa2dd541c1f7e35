"""What docs/guides/presets.md says of the presets, held against the real daemon and real
servers.

- The Stripe preset's events feed and a `verify: stripe` webhook source give the same Stripe
  event two different ids (each derives from its own source's name); one id only inside a
  `merge` (tests/compare/test_merge_daemon.py holds that part).
- The rate-limit headers a preset's API sends are honoured: a poll answered with nothing
  remaining holds the next one until the reset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bridge.config import parse_config
from bridge.events import event_id
from bridge.poll.engine import Poller
from bridge.receive.schemes import sign_stripe
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.helpers import DaemonProcess, wait_until
from tests.reliability.parts import query
from tests.scripted_server import Reply, Script, Seen

STRIPE_SECRET = "whsec_claims_test_secret"
T0 = 1_796_119_200  # 2026-12-01T10:00:00Z


def stripe_event(n: int) -> dict[str, Any]:
    return {
        "id": f"evt_{n}",
        "object": "event",
        "type": "invoice.paid",
        "created": T0 + n,
        "data": {"object": {"id": f"in_{n}", "object": "invoice"}},
    }


def test_a_stripe_event_polled_by_the_preset_and_pushed_by_a_webhook_gets_two_ids(
    daemon: Callable[..., DaemonProcess], server: tuple[Script, str], tmp_path: Path
) -> None:
    script, base = server
    events = [stripe_event(0)]

    def listed(seen: Seen) -> Reply:
        before = parse_qs(seen.query).get("ending_before", [None])[0]
        ids = [e["id"] for e in events]
        newer = events[ids.index(before) + 1 :] if before in ids else events
        return Reply(body={"object": "list", "data": newer[::-1], "has_more": False})

    script.route("/v1/events", listed)
    proc = daemon(f"""
database: bridge.db
sources:
  stripe:
    webhook: {{verify: stripe, secrets: [{STRIPE_SECRET}]}}
  stripe-events:
    poll: {{preset: stripe, resource: events, token: sk_test_claims, api_url: "{base}",
            every: 300ms}}
""")
    db = tmp_path / "bridge.db"
    wait_until(lambda: query(db, "SELECT baselined FROM poll_state") == [(1,)], timeout_s=20)
    new = stripe_event(1)
    with script.lock:
        events.append(new)
    body = json.dumps(new).encode()
    now_s = int(time.time())
    signature = f"t={now_s},v1={sign_stripe(STRIPE_SECRET, now_s, body)}"
    answer = httpx.post(
        proc.url + "/hooks/stripe",
        content=body,
        headers={"stripe-signature": signature, "content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 202
    sql = "SELECT source, id FROM events WHERE upstream_id = 'evt_1' ORDER BY source"
    rows = wait_until(lambda: (r := query(db, sql)) and len(r) == 2 and r, timeout_s=20)
    ids = dict(rows)
    assert ids == {"stripe": event_id("stripe", "evt_1"),
                   "stripe-events": event_id("stripe-events", "evt_1")}  # fmt: skip
    assert ids["stripe"] != ids["stripe-events"]


@pytest.mark.anyio
async def test_a_presets_rate_limit_headers_hold_the_next_poll_until_the_reset(
    store: SQLiteStore, server: tuple[Script, str]
) -> None:
    script, base = server
    reset_s = int(time.time()) + 120
    limits = [("X-RateLimit-Limit", "5000"), ("X-RateLimit-Remaining", "0"),
              ("X-RateLimit-Reset", str(reset_s))]  # fmt: skip
    script.route("/repos/octo/hello/issues", Reply(body=[], headers=limits))
    text = f"""
database: bridge.db
sources:
  issues:
    poll: {{preset: github, repo: octo/hello, resource: issues, api_url: "{base}"}}
"""
    poller = Poller(Runtime(config=parse_config(text), store=store))
    try:
        result = await poller.poll_once("issues")
    finally:
        await poller.stop(1.0)
    assert 100 < result.wait_s <= 121
    assert "X-RateLimit-Remaining" in (result.wait_why or "")
