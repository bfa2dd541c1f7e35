"""A hostile or broken upstream against the real daemon: bounded memory, no leaked credential.

An answer without end must not grow the daemon's memory past the poll's `max_bytes` (the
fault is `too_large`, the snapshot is kept, `/healthz` keeps answering); a redirect to
another origin must never carry the source's credential header there, nor replace the
snapshot with what the other host says.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers import DaemonProcess, wait_until
from tests.reliability.parts import query
from tests.scripted_server import Reply, scripted_server

pytestmark = pytest.mark.reliability

API_KEY = "k-9f2c7e1b44d0a6"


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def poll_error(db: Path) -> str:
    rows = query(db, "SELECT last_error FROM poll_state WHERE source = 'items'")
    return str(rows[0][0]) if rows and rows[0][0] else ""


def config(base: str, **extra: str) -> str:
    lines = "".join(f"      {key}: {value}\n" for key, value in extra.items())
    return f"""
database: bridge.db
sources:
  items:
    poll:
      url: {base}/items
      every: 250ms
      id: id
      headers: {{X-Api-Key: "{API_KEY}"}}
{lines}"""


def test_an_endless_answer_leaves_memory_bounded_and_the_daemon_answering(
    daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    with scripted_server() as (script, base):
        script.route("/items", Reply(body=[{"id": 1}, {"id": 2}]))
        proc = daemon(config(base, max_bytes="4MiB", timeout="60s"))
        db = tmp_path / "bridge.db"
        wait_until(lambda: len(query(db, "SELECT key FROM poll_items")) == 2, timeout_s=20)
        before_mb = peak_rss_mb(proc.proc.pid)
        # Each poll now meets an answer that would grow without end for 15 s.
        script.route("/items", Reply(endless_chunk=b"a" * 65536, endless_s=15))
        wait_until(lambda: "larger than max_bytes" in poll_error(db), timeout_s=30)
        failures = query(db, "SELECT consecutive_failures FROM poll_state")[0][0]
        wait_until(
            lambda: query(db, "SELECT consecutive_failures FROM poll_state")[0][0] >= failures + 3,
            timeout_s=30,
        )
        assert httpx.get(proc.url + "/healthz", timeout=5).status_code == 200
        grown_mb = peak_rss_mb(proc.proc.pid) - before_mb
        # Before the cap, the same answer took the daemon past 4 GB; now a few times 4 MiB.
        assert grown_mb < 64, f"peak RSS grew by {grown_mb:.0f} MB"
        assert sorted(k for (k,) in query(db, "SELECT key FROM poll_items")) == ["1", "2"]
        assert query(db, "SELECT count(*) FROM events WHERE source != 'bridge'") == [(0,)]


def test_a_redirect_to_another_host_never_gets_the_credential(
    daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    with scripted_server() as (script, base), scripted_server() as (other, other_base):
        other.route("/items", Reply(body=[]))  # what the other host says: every item gone
        script.route("/items", Reply(body=[{"id": 1}, {"id": 2}]))
        daemon(config(base, follow_redirects="true"))
        db = tmp_path / "bridge.db"
        wait_until(lambda: len(query(db, "SELECT key FROM poll_items")) == 2, timeout_s=20)
        script.route("/items", Reply(302, headers=[("Location", other_base + "/items")]))
        wait_until(lambda: "another origin" in poll_error(db), timeout_s=20)
        count = len(script.seen)
        wait_until(lambda: len(script.seen) >= count + 2, timeout_s=20)
        assert other.seen == [], "the poll followed the redirect to another host"
        assert sorted(k for (k,) in query(db, "SELECT key FROM poll_items")) == ["1", "2"]
        assert query(db, "SELECT count(*) FROM events WHERE source != 'bridge'") == [(0,)]
