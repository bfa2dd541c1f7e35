"""The demo: its simulated upstream and target, and `bridge demo` end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from bridge.config import load_config
from bridge.demo.run import new_secret, parse_rate
from bridge.demo.target import Target
from bridge.demo.upstream import TARGET_ITEMS, Upstream
from bridge.events import now_ms, parse_time
from tests.helpers import run_cli, serve_app


def test_rates() -> None:
    assert parse_rate("2/s") == 2.0
    assert parse_rate("30/m") == 0.5
    assert parse_rate("3") == 3.0
    assert parse_rate("0.5 / s") == 0.5
    for bad in ("fast", "0/s", "2/fortnight", ""):
        with pytest.raises(ValueError, match="is not a rate"):
            parse_rate(bad)


def test_upstream_lists_items_with_etag_and_304() -> None:
    upstream = Upstream(rate_per_s=1, push_url="http://127.0.0.1:9/", push_secret=new_secret())
    with serve_app(upstream.app()) as url:
        first = httpx.get(url + "/items")
        items = first.json()["items"]
        assert len(items) == TARGET_ITEMS
        assert all(item["id"] and parse_time(item["updated_at"]) for item in items)
        etag = first.headers["etag"]
        again = httpx.get(url + "/items", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        change = upstream.change(now_ms() + 5)
        changed = httpx.get(url + "/items", headers={"if-none-match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
    now = {item["id"]: item for item in changed.json()["items"]}
    key = change["data"]["id"]
    if change["type"] == "item.deleted":
        assert key not in now
    else:
        assert now[key]["updated_at"] == change["data"]["updated_at"] == change["timestamp"]
    assert (upstream.counts.polls, upstream.counts.not_modified) == (3, 1)


def test_every_push_is_signed_and_the_target_checks_signatures(tmp_path: Path) -> None:
    secret = new_secret()
    target = Target(secret, tmp_path / "received.jsonl")
    with serve_app(target.app()) as url:
        upstream = Upstream(rate_per_s=40, push_url=url + "/hook", push_secret=secret, seed=7)

        async def run_briefly() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.6, stop.set)
            await upstream.run(stop)

        asyncio.run(run_briefly())
        forged = httpx.post(
            url + "/hook",
            content=b'{"type":"item.created"}',
            headers={
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(now_ms() // 1000),
                "webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3IgYSB0ZXN0IG9ubHk=",
            },
        )
    target.close()
    assert forged.status_code == 401
    assert upstream.counts.changes >= 5
    assert upstream.counts.pushes == upstream.counts.changes and not upstream.counts.push_failures
    assert (target.received.valid, target.received.invalid) == (upstream.counts.pushes, 1)
    lines = [json.loads(x) for x in (tmp_path / "received.jsonl").read_text().splitlines()]
    kinds = {json.loads(x["body"])["type"] for x in lines if x["valid"]}
    assert "item.created" in kinds and kinds <= {"item.created", "item.updated", "item.deleted"}


def test_demo_leaves_a_folder_it_did_not_write_alone(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("database: bridge.db\n")
    (tmp_path / "bridge.db").write_bytes(b"someone's data")
    result = run_cli("demo", "--duration", "1s", "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "did not write" in result.stderr
    assert (tmp_path / "bridge.db").read_bytes() == b"someone's data"


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    result = run_cli("demo", "--rate", "fast", cwd=tmp_path)
    assert result.returncode == 2 and "is not a rate" in result.stderr
    result = run_cli("demo", "--every", "soon", cwd=tmp_path)
    assert result.returncode == 2 and "duration" in result.stderr


def test_demo_measures_poll_against_push(tmp_path: Path) -> None:
    every_s = 1.0
    folder = tmp_path / "run"
    result = run_cli(
        "demo", "--duration", "6s", "--every", "1s", "--rate", "5/s", "--json",
        "--dir", str(folder),
        cwd=tmp_path,
        timeout_s=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report) == {"sources", "pairs", "merges"}
    assert report["merges"] == []  # the default demo compares; it does not merge
    by_name = {s["source"]: s for s in report["sources"]}
    poll, push = by_name["items-poll"], by_name["items-push"]
    assert poll["events"] > 0 and push["events"] > 0
    # Changes land uniformly between polls: polling finds them half an interval late on average.
    assert 0.15 * every_s * 1000 <= poll["detection_ms"]["p50"] <= 1.5 * every_s * 1000
    assert push["detection_ms"]["p50"] < 500
    assert poll["requests"] > 0 and push["requests"] is None
    (pair,) = report["pairs"]
    assert pair["matched"] > 0 and pair["push_lead_ms"]["p50"] > 0

    # Every delivery the target received verifies again, independently, with the
    # target's secret from the generated config; and every stored event got there.
    config = load_config(folder / "config.yaml")
    secret = config.targets["local-target"].secret[0].get_secret_value()
    verifier = Webhook(secret)
    delivered = set()
    for line in (folder / "received.jsonl").read_text().splitlines():
        request = json.loads(line)
        verifier.verify(request["body"].encode(), request["headers"])
        delivered.add(json.loads(request["body"])["id"])
    stored = run_cli("events", "-c", str(folder / "config.yaml"), "--json", "--limit", "100000")
    assert stored.returncode == 0, stored.stderr
    ids = {e["id"] for e in json.loads(stored.stdout)}
    assert ids and ids <= delivered
    # The picture goes where --dir says, not into the working folder.
    assert (folder / "demo-latency.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "demo-latency.png").exists()
    assert f"picture:  {folder / 'demo-latency.png'}" in result.stderr
    # Each word of the tables explained in one line.
    for word in ("detection", "delivery", "lead"):
        assert sum(line.startswith(f"{word}:") for line in result.stderr.splitlines()) == 1
    # The quiet source's requests, all wasted: the line tells the report's own figures.
    quiet = next(s for s in report["sources"] if s["source"] == "quiet-poll")
    assert quiet["events"] == 0 and quiet["requests"] >= 3
    assert quiet["empty_polls"] == quiet["requests"] - 1  # all but the silent baseline
    assert f"quiet:    quiet-poll never changed: {quiet['requests']} requests in " in (
        result.stderr
    )
    assert str(folder / "config.yaml") in result.stderr
    again = run_cli("latency", "-c", str(folder / "config.yaml"), "--json")
    assert json.loads(again.stdout)["pairs"] == report["pairs"]
    # The daemon's log names uvicorn's lines as `bridge run` does.
    log = (folder / "bridge.log").read_text()
    assert "bridge.http: Started server process" in log and "uvicorn" not in log


def test_demo_runs_without_matplotlib_and_says_the_picture_is_not_drawn(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    # As without the `plot` extra: `import matplotlib` fails in the demo's process.
    blocked = "import sys; sys.modules['matplotlib'] = None; from bridge.cli import cli; cli()"
    result = subprocess.run(
        [sys.executable, "-c", blocked, "demo", "--duration", "2s", "--every", "1s",
         "--dir", str(folder)],
        capture_output=True, text=True, cwd=tmp_path, timeout=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Latency per source" in result.stdout and "What polling cost" in result.stdout
    assert (
        "picture:  not drawn: it needs matplotlib, which is not installed:"
        " pip install '.[plot]' (from the bridge's checkout)" in result.stdout
    )
    assert not list(tmp_path.rglob("*.png"))


def test_demo_with_dropped_pushes_delivers_every_change_once(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    result = run_cli(
        "demo", "--duration", "6s", "--every", "1s", "--rate", "8/s", "--drop", "20%",
        "--json", "--dir", str(folder),
        cwd=tmp_path,
        timeout_s=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (merged,) = json.loads(result.stdout)["merges"]
    delivered = [
        json.loads(line)["headers"]["webhook-id"]
        for line in (folder / "received.jsonl").read_text().splitlines()
    ]
    # One delivery per distinct change either path saw, none twice.
    assert len(delivered) == len(set(delivered)) == merged["changes"] > 0
    assert merged["only_poll"] <= merged["first_poll"]
    line = next(x for x in result.stderr.splitlines() if x.startswith("merge:"))
    dropped = int(line.split()[1])
    assert dropped > 0  # 20% of about 50 pushes
    # Polling caught dropped pushes: each is an only-poll change, unless the item changed
    # again before the next poll (then neither path saw that version).
    assert 0 < merged["only_poll"] <= dropped
    assert f"{merged['changes']} distinct changes either path saw" in result.stderr
    assert "0 duplicate webhook-ids" in result.stderr
