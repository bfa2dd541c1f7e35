"""The real daemon polling a local upstream: events appear; a crash mid-poll duplicates nothing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, serve_app, wait_until
from tests.poll.upstream import Upstream, upstream_app

pytestmark = pytest.mark.slow

CONFIG = """
database: bridge.db
sources:
  items:
    poll:
      url: {url}/items
      every: 200ms
      timeout: 60s
      id: id
      items: data
      pages: link
"""


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    up = Upstream(items=[{"id": i, "n": 0} for i in range(1, 6)], style="link", page_size=3)
    with serve_app(upstream_app(up)) as url:
        yield up, url
    up.release.set()


def stored(db: Path) -> list[tuple[str, str]]:
    """The (change, subject) of every stored event, in order, read without the daemon's help."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return conn.execute("SELECT change, subject FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet


def is_baselined(db: Path) -> bool:
    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT baselined FROM poll_state WHERE source='items'").fetchone()
        except sqlite3.OperationalError:
            return False
    return bool(row and row[0])


def test_daemon_polls_and_a_kill_between_fetch_and_commit_duplicates_nothing(
    daemon: Callable[..., DaemonProcess], upstream: tuple[Upstream, str], tmp_path: Path
) -> None:
    up, url = upstream
    db = tmp_path / "bridge.db"
    first = daemon(CONFIG.replace("{url}", url))
    wait_until(lambda: is_baselined(db), timeout_s=15)

    # A first change is seen once by the running daemon.
    with up.lock:
        up.items.append({"id": 6, "n": 0})  # lands on page 2
    wait_until(lambda: stored(db) == [("created", "6")], timeout_s=15)

    # Now the next poll fetches page 1 with changes and hangs on page 2: kill it there.
    with up.lock:
        up.fault = "hang-page2"
        up.items[0]["n"] = 1  # page 1: updated
        del up.items[1]  # 2: deleted
        up.items.append({"id": 7, "n": 0})  # page 3 after the shift: created
    wait_until(lambda: up.hanging == 1, timeout_s=15)
    assert stored(db) == [("created", "6")]
    first.kill()
    up.fault = None
    up.release.set()

    second = daemon(CONFIG.replace("{url}", url))
    expected = [("created", "6"), ("updated", "1"), ("created", "7"), ("deleted", "2")]
    wait_until(lambda: stored(db) == expected, timeout_s=15)
    count = up.request_count()
    wait_until(lambda: up.request_count() >= count + 6, timeout_s=15)  # several more polls
    assert stored(db) == expected
    assert second.terminate() == 0
    assert "Traceback" not in first.log() + second.log()


def test_sigterm_during_a_hanging_poll_stops_within_the_grace_and_commits_nothing(
    daemon: Callable[..., DaemonProcess], upstream: tuple[Upstream, str], tmp_path: Path
) -> None:
    up, url = upstream
    db = tmp_path / "bridge.db"
    proc = daemon(CONFIG.replace("{url}", url))
    wait_until(lambda: is_baselined(db), timeout_s=15)
    with up.lock:
        up.fault = "hang-page2"
        up.items.pop()
    wait_until(lambda: up.hanging == 1, timeout_s=15)
    started = time.monotonic()
    assert proc.terminate(timeout_s=20) == 0
    assert time.monotonic() - started < 15
    assert stored(db) == []
    assert "cancelled 1 polls" in proc.log()
