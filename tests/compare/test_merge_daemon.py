"""Merging push and poll on the real daemon: one event per change, delivered once.

A simulated provider changes items upstream and sends a webhook for each change, except that
it drops some (never sent) and delays some (sent only after a poll has seen the change). The
daemon merges its webhook source and its polled source: every change reaches the target once
(by `webhook-id`), polling catches every dropped push, and the figures equal exactly what the
simulation dropped and delayed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, run_cli, serve_app, wait_until
from tests.reliability.parts import query
from tests.scripted_server import Reply, Script, scripted_server

T0 = 1_796_119_200  # 2026-12-01T10:00:00Z


def iso(at_s: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sink:
    """Targets on 127.0.0.1: what each path received, by webhook-id."""

    received: dict[str, list[str]] = field(default_factory=dict)

    async def handle(self, request: Request) -> Response:
        await request.body()
        name = request.path_params["name"]
        self.received.setdefault(name, []).append(request.headers["webhook-id"])
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{name}", self.handle, methods=["POST"])])

    def ids(self, name: str) -> list[str]:
        return list(self.received.get(name, []))


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    s = Sink()
    with serve_app(s.app()) as url:
        yield s, url


@pytest.fixture
def upstream() -> Iterator[tuple[Script, str]]:
    with scripted_server() as served:
        yield served


def config(upstream: str, sink: str, every: str = "300ms", raw: bool = True) -> str:
    """A merge of `hook` and `api`; with `raw`, a target that names `hook` itself."""
    return f"""
database: bridge.db
sources:
  hook:
    webhook:
      verify: none
      allow_unsigned: true
      id: body.id
      type: body.type
      subject: body.data.object.id
      version: body.data.object.updated_at
  api:
    poll:
      url: {upstream}/items
      every: {every}
      id: id
      version: updated_at
      time: updated_at
      type: "item.{{change}}"
merge:
  - {{name: items, sources: [hook, api], match: version}}
targets:
  merged:
    url: {sink}/merged
    secret: {TEST_SECRET}
    events: ["item.*"]
""" + (RAW.format(sink=sink, secret=TEST_SECRET) if raw else "")


RAW = """  raw:
    url: {sink}/raw
    secret: {secret}
    sources: [hook]
"""


class Provider:
    """The upstream's items (served to polls) and the webhooks it sends for each change."""

    def __init__(self, script: Script, daemon_url: str) -> None:
        self.items = {i: {"id": i, "updated_at": iso(T0), "n": 0} for i in range(1, 21)}
        self.script = script
        self.hook = daemon_url + "/hooks/hook"
        script.route("/items", lambda _seen: Reply(body=list(self.items.values())))

    def change(self, i: int, r: int) -> dict[str, Any]:
        item = {"id": i, "updated_at": iso(T0 + 60 * r), "n": r}
        with self.script.lock:
            self.items[i] = item
        return item

    def push(self, item: dict[str, Any], r: int) -> int:
        body = {"id": f"evt_{r}_{item['id']}", "type": "item.updated", "data": {"object": item}}
        return httpx.post(self.hook, content=json.dumps(body), timeout=10).status_code


def sightings(db: Path, path: str) -> int:
    rows = query(db, "SELECT count(*) FROM sightings WHERE path = ?", (path,))
    return int(rows[0][0]) if rows else 0


def baselined(db: Path) -> bool:
    return query(db, "SELECT baselined FROM poll_state WHERE source = 'api'") == [(1,)]


def metric(url: str, name: str, **labels: str) -> float:
    """A sample of /metrics by its name and labels (in any order); 0 when there is none."""
    text = httpx.get(url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_one_event_per_change_delivered_once_and_polling_catches_dropped_pushes(
    daemon: Callable[..., DaemonProcess],
    sink: tuple[Sink, str],
    upstream: tuple[Script, str],
    tmp_path: Path,
) -> None:
    targets, sink_url = sink
    script, base = upstream
    proc = daemon(config(base, sink_url))
    provider = Provider(script, proc.url)
    db = tmp_path / "bridge.db"
    wait_until(lambda: baselined(db), timeout_s=20)
    rounds, per_round = 5, 20
    fates = ["dropped"] * 10 + ["delayed"] * 5 + ["pushed"] * 85
    random.Random(7).shuffle(fates)
    for r in range(1, rounds + 1):
        delayed = []
        for i in range(1, per_round + 1):
            fate = fates[(r - 1) * per_round + i - 1]
            new = {"id": i, "updated_at": iso(T0 + 60 * r), "n": r}
            if fate == "pushed":
                # Pushed before polling can see it: push is first.
                assert provider.push(new, r) == 202
            provider.change(i, r)
            if fate == "delayed":
                delayed.append(new)
        # Every change of the round is seen by the next poll (each item changed once).
        wait_until(lambda r=r: sightings(db, "poll") == per_round * r, timeout_s=20)
        for item in delayed:  # late webhooks: polling recorded these first
            assert provider.push(item, r) == 200
    wait_until(lambda: len(targets.ids("merged")) >= 100, timeout_s=30)
    wait_until(lambda: len(targets.ids("raw")) >= 90, timeout_s=30)
    merged = targets.ids("merged")
    assert len(merged) == len(set(merged)) == 100, "a change was delivered twice or not at all"
    assert len(set(targets.ids("raw"))) == 90  # the member's own events, as without a merge
    assert set(merged).isdisjoint(targets.ids("raw"))
    assert query(db, "SELECT count(*) FROM events WHERE source = 'items'") == [(100,)]
    assert query(db, "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id"
                     " WHERE e.source = 'items'") == [(100,)]  # fmt: skip

    done = run_cli("latency", "-c", str(proc.config_path), "--json")
    assert done.returncode == 0, done.stderr
    (figures,) = json.loads(done.stdout)["merges"]
    assert figures["merge"] == "items"
    assert (figures["changes"], figures["both"]) == (100, 90)
    assert (figures["only_poll"], figures["only_push"]) == (10, 0)  # the 10 dropped pushes
    assert (figures["first_push"], figures["first_poll"]) == (85, 15)  # 10 dropped, 5 late
    assert figures["push_lead_ms"]["max"] > 0 and figures["push_lead_ms"]["min"] < 0
    status = run_cli("status", "-c", str(proc.config_path), "--json")
    assert json.loads(status.stdout)["merges"][0]["only_poll"] == 10
    assert metric(proc.url, "bridge_merge_polled_first_total", merge="items") == 15
    assert metric(proc.url, "bridge_merge_sightings_total", merge="items", path="push",
                  first="true") == 85  # fmt: skip
    assert metric(proc.url, "bridge_merge_sightings_total", merge="items", path="push",
                  first="false") == 5  # fmt: skip


def test_status_shows_each_merge_and_its_members_sightings_and_the_metric_counts_polled_first(
    daemon: Callable[..., DaemonProcess],
    sink: tuple[Sink, str],
    upstream: tuple[Script, str],
    tmp_path: Path,
) -> None:
    targets, sink_url = sink
    script, base = upstream
    proc = daemon(config(base, sink_url, raw=False))  # no target names the webhook source
    provider = Provider(script, proc.url)
    db = tmp_path / "bridge.db"
    wait_until(lambda: baselined(db), timeout_s=20)
    for i in (1, 2, 3):  # pushed before polling can see them
        item = {"id": i, "updated_at": iso(T0 + 60), "n": 1}
        assert provider.push(item, 1) == 202
        provider.change(i, 1)
    provider.change(4, 1)  # polled first, pushed late
    provider.change(5, 1)  # polled first, never pushed
    wait_until(lambda: sightings(db, "poll") == 5, timeout_s=20)
    assert provider.push({"id": 4, "updated_at": iso(T0 + 60), "n": 1}, 1) == 200
    wait_until(lambda: len(targets.ids("merged")) >= 5, timeout_s=20)

    done = run_cli("status", "-c", str(proc.config_path), "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    sources = {s["name"]: s for s in shown["sources"]}
    hook, api, items = sources["hook"], sources["api"], sources["items"]
    assert (hook["status"], hook["events"]) == ("ok", 0)  # its changes are under `items`
    assert (hook["merge"], hook["sightings"]) == ("items", 4)
    assert hook["last_event_ms"] is not None
    assert (api["merge"], api["sightings"]) == ("items", 5)
    assert (items["kind"], items["status"], items["events"]) == ("merge", "ok", 5)
    assert items["members"] == ["hook", "api"]
    (merge,) = shown["merges"]
    assert [(m["source"], m["path"], m["sightings"]) for m in merge["members"]] == [
        ("hook", "push", 4),
        ("api", "poll", 5),
    ]
    table = run_cli("status", "-c", str(proc.config_path))
    assert "merge of hook + api" in table.stdout and "webhook, in merge items" in table.stdout
    assert "no events yet" not in table.stdout

    # Polling recorded 2 changes first; push brought one of them later: only 1 never came.
    assert metric(proc.url, "bridge_merge_polled_first_total", merge="items") == 2
    assert merge["only_poll"] == 1
    latency = run_cli("latency", "-c", str(proc.config_path), "--json")
    assert json.loads(latency.stdout)["merges"][0]["only_poll"] == 1


def test_a_kill_between_the_two_sightings_still_gives_one_event(
    daemon: Callable[..., DaemonProcess],
    sink: tuple[Sink, str],
    upstream: tuple[Script, str],
    tmp_path: Path,
) -> None:
    targets, sink_url = sink
    script, base = upstream
    text = config(base, sink_url)
    proc = daemon(text)
    provider = Provider(script, proc.url)
    db = tmp_path / "bridge.db"
    wait_until(lambda: baselined(db), timeout_s=20)
    new = {"id": 3, "updated_at": iso(T0 + 60), "n": 1}
    assert provider.push(new, 1) == 202
    proc.kill()  # kill -9 after the push was acknowledged, before polling could see it
    provider.change(3, 1)
    again = daemon(text, port=proc.port)
    wait_until(lambda: sightings(db, "poll") == 1, timeout_s=20)
    wait_until(lambda: len(targets.ids("merged")) >= 1, timeout_s=20)
    assert query(db, "SELECT count(*) FROM events WHERE source = 'items'") == [(1,)]
    assert query(db, "SELECT count(*) FROM deliveries WHERE target = 'merged'") == [(1,)]
    assert sightings(db, "push") == 1
    assert again.terminate() == 0
    assert len(set(targets.ids("merged"))) == 1


def test_match_id_merges_a_feed_with_webhooks_of_the_same_events(
    daemon: Callable[..., DaemonProcess],
    sink: tuple[Sink, str],
    upstream: tuple[Script, str],
    tmp_path: Path,
) -> None:
    targets, sink_url = sink
    script, base = upstream
    feed: list[dict[str, Any]] = [{"id": "evt_0", "type": "charge.succeeded", "created": T0}]
    script.route("/events", lambda _seen: Reply(body={"data": list(reversed(feed))}))
    proc = daemon(f"""
database: bridge.db
sources:
  stripe:
    webhook: {{verify: none, allow_unsigned: true, id: body.id, type: body.type}}
  stripe-events:
    poll:
      url: {base}/events
      every: 300ms
      mode: feed
      items: data
      id: id
      time: created
      feed: {{type: type}}
merge:
  - {{name: payments, sources: [stripe, stripe-events], match: id}}
targets:
  t: {{url: {sink_url}/t, secret: {TEST_SECRET}, sources: [payments]}}
""")
    db = tmp_path / "bridge.db"
    wait_until(lambda: query(db, "SELECT baselined FROM poll_state") == [(1,)], timeout_s=20)
    for n in range(1, 11):
        event = {"id": f"evt_{n}", "type": "charge.succeeded", "created": T0 + n}
        if n % 3:  # every third webhook is lost
            answer = httpx.post(proc.url + "/hooks/stripe", json=event, timeout=10)
            assert answer.status_code == 202
        with script.lock:
            feed.append(event)
    wait_until(lambda: len(set(targets.ids("t"))) >= 10, timeout_s=20)
    wait_until(lambda: sightings(db, "poll") == 10, timeout_s=20)
    assert len(targets.ids("t")) == 10  # each upstream event once, whichever path saw it
    done = run_cli("latency", "-c", str(proc.config_path), "--json")
    (figures,) = json.loads(done.stdout)["merges"]
    assert (figures["changes"], figures["both"], figures["only_poll"]) == (10, 7, 3)


def test_a_webhook_whose_version_finds_nothing_is_422_and_stores_nothing(
    daemon: Callable[..., DaemonProcess],
    sink: tuple[Sink, str],
    upstream: tuple[Script, str],
    tmp_path: Path,
) -> None:
    _targets, sink_url = sink
    script, base = upstream
    proc = daemon(config(base, sink_url))
    Provider(script, proc.url)
    body = {"id": "evt_x", "type": "item.updated", "data": {"object": {"id": 1}}}
    answer = httpx.post(proc.url + "/hooks/hook", json=body, timeout=10)
    assert answer.status_code == 422
    assert "version" in answer.json()["error"]
    db = tmp_path / "bridge.db"
    assert query(db, "SELECT count(*) FROM events WHERE origin = 'push'") == [(0,)]
    assert query(db, "SELECT count(*) FROM sightings") == [(0,)]
    wait_until(
        lambda: metric(proc.url, "bridge_inbound_rejected_total", source="hook",
                       reason="missing_version") == 1,
        timeout_s=10,
    )  # fmt: skip
