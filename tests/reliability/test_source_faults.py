"""A polled source that answers badly, seen from the real daemon: no event, no state change.

tests/poll/test_poll.py covers 500s, timeouts, invalid JSON, an `items` expression that finds
nothing and a failing page 2 on the Poller. Here the daemon polls on its schedule through
each fault in turn, including truncated bodies (cut short of their Content-Length, or JSON
cut off), answers whose shape changed (`data` an object, items without their `id`, an HTML
page) and a pagination whose third page fails; then the real changes arrive exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, serve_app, wait_until
from tests.reliability.parts import TARGET_SECRET, Targets, Upstream, query

pytestmark = pytest.mark.reliability

BASELINE = [{"id": i, "v": 1, "name": f"item {i}"} for i in range(1, 7)]  # three pages of 2
CHANGED = [{"id": 1, "v": 2, "name": "item 1"}, *BASELINE[1:5], {"id": 9, "v": 1, "name": "new"}]
# (fault, page): page 0 is every page.
FAULTS = [
    ("500", 0),
    ("timeout", 0),
    ("json", 0),
    ("truncated", 0),
    ("cut-json", 0),
    ("object", 0),
    ("renamed", 0),
    ("html", 0),
    ("500", 3),
    ("truncated", 3),
]


def snapshot(db: Path) -> dict[str, str]:
    return dict(query(db, "SELECT key, version FROM poll_items WHERE source = 'items'"))


def failures(db: Path) -> int:
    rows = query(db, "SELECT failures FROM poll_state WHERE source = 'items'")
    return int(rows[0][0]) if rows else 0


def events(db: Path) -> list[tuple[str, str]]:
    # The events of the source (not the bridge's own: bridge.source.failing and the like).
    return query(db, "SELECT change, subject FROM events WHERE source = 'items' ORDER BY seq")


def test_each_source_fault_leaves_events_and_state_alone(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    up = Upstream(page_size=2)
    up.set(BASELINE)
    receivers = Targets()
    with serve_app(up.app()) as url, serve_app(receivers.app()) as target_url:
        proc = daemon(
            f"""
            database: bridge.db
            sources:
              items:
                poll:
                  url: {url}/items
                  every: 100ms
                  timeout: 500ms
                  id: id
                  items: data
                  pages: link
            targets:
              t:
                url: {target_url}/t
                secret: {TARGET_SECRET}
            """
        )
        wait_until(lambda: len(snapshot(db)) == len(BASELINE), timeout_s=15)
        baseline = snapshot(db)
        for fault, page in FAULTS:
            before = failures(db)
            with up.lock:
                # Every item changes or goes: a poll that believed the answer would emit.
                up.items = {str(i["id"]): i for i in CHANGED}
                up.faults = {page: fault}
            wait_until(lambda b=before: failures(db) >= b + 2, timeout_s=15)
            assert events(db) == [], (fault, page)
            assert snapshot(db) == baseline, (fault, page)
            with up.lock:
                up.items = {str(i["id"]): i for i in BASELINE}
                up.faults = {}
        # Healthy again: the real changes, exactly once each.
        up.set(CHANGED)
        wait_until(lambda: len(events(db)) >= 3, timeout_s=15)
        wait_until(lambda: receivers.on("t") and len(receivers.ids("t")) == 3, timeout_s=15)
        assert proc.terminate() == 0
    assert sorted(events(db)) == [("created", "9"), ("deleted", "6"), ("updated", "1")]
    assert snapshot(db).keys() == {str(i["id"]) for i in CHANGED}
    assert "Traceback" not in proc.log()
    assert query(db, "SELECT consecutive_failures FROM poll_state") == [(0,)]
