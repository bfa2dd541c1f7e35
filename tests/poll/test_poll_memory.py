"""Memory bounded by items as well as bytes: `max_items`, and the real daemon's peak RSS over
a poll of a million small items (its baseline and a poll with 1% changed)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.poll.engine import Poller
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.helpers import DaemonProcess, run_cli, serve_app, wait_until
from tests.poll.upstream import Upstream, upstream_app
from tests.scripted_server import Reply, Script, Seen

pytestmark = pytest.mark.anyio


def poller(store: SQLiteStore, url: str, path: Path, **poll: Any) -> Poller:
    source = {"url": url + "/items", "every": "1h", "id": "id", "items": "data", **poll}
    text = yaml.safe_dump({"database": str(path / "bridge.db"), "sources": {"s": {"poll": source}}})
    (path / "bridge.yaml").write_text(text)
    return Poller(Runtime(config=parse_config(text), store=store))


@pytest.mark.parametrize("style", [None, "link", "cursor"])
async def test_more_items_than_max_items_over_all_pages_is_a_fault_that_changes_nothing(
    store: SQLiteStore, tmp_path: Path, style: str | None
) -> None:
    up = Upstream(items=[{"id": i} for i in range(1, 8)], style=style, page_size=3)
    pages = {"link": "link", "cursor": {"cursor": "cursor", "param": "page"}}.get(style or "")
    with serve_app(upstream_app(up)) as url:
        poll = poller(store, url, tmp_path, max_items=7, pages=pages, baseline="emit")
        await poll.poll_once("s")
        assert sorted(await store.load_poll_versions("s"), key=int) == [str(i) for i in range(1, 8)]
        with up.lock:
            up.items[0] = {"id": 1, "changed": True}
            up.items.append({"id": 8})  # one more than max_items: on the last page
        await poll.poll_once("s")
        await poll.stop(1.0)
    state = await store.load_poll_state("s")
    assert state.consecutive_failures == 1 and state.items == 7
    assert "more than max_items (7) items over all pages" in (state.last_error or "")
    # Nothing changed: the update on the first page is not emitted, the snapshot is kept.
    assert len(await store.list_events(source="s")) == 7
    assert "8" not in await store.load_poll_versions("s")
    status = run_cli("status", "-c", str(tmp_path / "bridge.yaml"), "--json")
    assert status.returncode == 0, status.stderr
    (source,) = json.loads(status.stdout)["sources"]
    assert source["status"] == "failing (1 in a row)"
    assert "max_items" in source["last_error"]


def test_max_items_is_a_positive_count_and_defaults_to_a_million(tmp_path: Path) -> None:
    poll = {"url": "http://127.0.0.1:9/x", "every": "1m", "id": "id"}
    config = parse_config(yaml.safe_dump({"sources": {"s": {"poll": poll}}}))
    assert config.polled["s"].max_items == 1_000_000
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sources": {"s": {"poll": {**poll, "max_items": 0}}}}))
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "bad.yaml:" in done.stderr and "max_items" in done.stderr


# -- the real daemon -------------------------------------------------------------------------

ITEMS = 1_000_000
LIMIT_MB = 300


def answer(generation: int, count: int = ITEMS) -> bytes:
    """`count` small items; each generation changes 1% of them."""
    items = [{"id": i, "v": generation if i % 100 == 0 else 0} for i in range(count)]
    return json.dumps(items, separators=(",", ":")).encode()


def memory_mb(pid: int) -> dict[str, int]:
    """The process's resident set now (VmRSS) and at its peak so far (VmHWM), in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) // 1024
    return out


def polls_done(db: Path) -> tuple[int, int, str | None]:
    if not db.exists():
        return 0, 0, None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute(
                "SELECT polls, events, last_error FROM poll_state WHERE source = 'big'"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0, 0, None
    return row or (0, 0, None)


# A resource test of the kind `make test-reliability` runs (three polls of a million items
# on the real daemon), so the reliability marker moves it out of `make test`.
@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(600)
def test_a_million_items_poll_within_300_mb_on_the_real_daemon(
    daemon: Callable[..., DaemonProcess], server: tuple[Script, str], tmp_path: Path
) -> None:
    script, url = server
    answers = [answer(0), answer(1), answer(2, ITEMS * 3 // 2)]
    go = threading.Event()
    asked = [0]

    def items(_seen: Seen) -> Reply:
        go.wait(timeout=60)  # the first poll waits until the idle daemon has been measured
        body = answers[min(asked[0], 2)]
        asked[0] += 1
        return Reply(200, body)

    script.route("/items", items)
    proc = daemon(
        f"""
        database: bridge.db
        sources:
          big:
            poll:
              url: {url}/items
              every: 1s
              timeout: 300s
              id: id
        """
    )
    idle = memory_mb(proc.proc.pid)["VmRSS"]
    go.set()
    db = tmp_path / "bridge.db"
    # The baseline, then a poll that finds the 1% changed: 10,000 updates.
    wait_until(lambda: polls_done(db)[0] >= 2, timeout_s=400, interval_s=0.2)
    _polls, events, error = polls_done(db)
    assert error is None and events == ITEMS // 100
    # Then 1.5 million items, more than max_items: a fault found while reading, nothing
    # changed, and memory as bounded as for a million.
    wait_until(lambda: polls_done(db)[2] is not None, timeout_s=400, interval_s=0.2)
    _polls, events, error = polls_done(db)
    assert "more than max_items (1000000) items" in (error or "") and events == ITEMS // 100
    peak = memory_mb(proc.proc.pid)["VmHWM"]
    assert peak - idle < LIMIT_MB, f"peak RSS grew {peak - idle} MB (idle {idle} MB)"
    assert proc.terminate() == 0
