"""Operations: SIGHUP reload, /metrics, /readyz, logs without secrets, and `bridge status`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge import logs, metrics
from bridge.config import Config, load_config, parse_config
from bridge.daemon import Daemon
from bridge.daemon import lifespan as daemon_module
from bridge.daemon.app import build_app
from bridge.daemon.reload import config_changes, restart_needed
from bridge.events import Event, event_id, format_time, now_ms
from bridge.routing import targets_for
from bridge.runtime import Runtime
from bridge.status.summary import source_status, target_health
from bridge.store import NewEvent
from bridge.store.base import PollOutcome, PollState, TargetState
from bridge.store.deliveries import AttemptRecord
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, free_port, run_cli, serve_app, wait_until

TARGET_A = f"""\
  a:
    url: http://127.0.0.1:9/a
    secret: {TEST_SECRET}
"""
TARGET_B = f"""\
  b:
    url: http://127.0.0.1:9/b
    secret: {TEST_SECRET}
    events: ["hook.*"]
"""
HOOK = """\
  hook:
    webhook:
      verify: none
      allow_unsigned: true
"""


def daemon_config(*, targets: str = TARGET_A, sources: str = "") -> str:
    text = "database: ops.db\n"
    if sources:
        text += "sources:\n" + sources
    return text + "targets:\n" + targets


def rewrite(proc: DaemonProcess, body: str) -> None:
    """Replace the running daemon's config file, keeping its server section."""
    server = f"server:\n  listen: 127.0.0.1:{proc.port}\n"
    proc.config_path.write_text(server + body)


def sighup_and_wait(proc: DaemonProcess, word: str) -> str:
    """SIGHUP, then wait for a new log line with `word`; returns that line."""
    seen = proc.log().count(word)
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: proc.log().count(word) > seen, timeout_s=10)
    return [line for line in proc.log().splitlines() if word in line][-1]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics` parsed by prometheus-client: {(sample name, labels): value}."""
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def families(url: str) -> set[str]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {f.name for f in text_string_to_metric_families(text)}


def labelled(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def make_event(source: str, n: int, type: str, origin: str = "push") -> Event:
    return Event(
        id=event_id(source, str(n)),
        source=source,
        type=type,
        origin=origin,  # type: ignore[arg-type]
        data={"n": n},
        recorded_ms=now_ms(),
        subject=f"item-{n}",
        upstream_id=str(n),
    )


def with_store(db: Path, fn: Any) -> Any:
    """Run `await fn(store)` on the SQLite store at `db`."""
    store = SQLiteStore(db)
    store.open()
    try:
        return asyncio.run(fn(store))
    finally:
        store.close()


def record(db: Path, config: Config, events: list[Event]) -> None:
    """Store events routed to the targets `config` names, as an engine of the daemon would."""
    batch = [NewEvent(e, targets_for(config.targets, e.source, e.type)) for e in events]
    with_store(db, lambda store: store.record_events(batch))


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and want <= set(got))


class Inbox:
    """A receiving target on 127.0.0.1 that verifies every Standard Webhooks signature."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Webhook(TEST_SECRET).verify(body, dict(request.headers)))
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/in", self.handle, methods=["POST"])])


class Upstream:
    """A pollable API on 127.0.0.1 whose items the test changes."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = [{"id": "1", "v": 1}]

    async def handle(self, request: Request) -> Response:
        return JSONResponse(self.items)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/items", self.handle)])


# -- reload: the pure parts ----------------------------------------------------------------


def test_config_changes_name_each_added_removed_and_changed_item() -> None:
    old = parse_config(daemon_config(targets=TARGET_A + TARGET_B))
    changed_a = TARGET_A.replace("/a\n", "/a2\n")
    new = parse_config(daemon_config(targets=changed_a, sources=HOOK))
    assert config_changes(old, new) == ["source hook added", "target b removed", "target a changed"]
    assert config_changes(old, old) == []
    assert restart_needed(old, new) == []
    moved = parse_config("database: other.db\nserver:\n  listen: 127.0.0.1:1\n")
    assert restart_needed(old, moved) == ["server.listen", "database"]
    logged = parse_config("server:\n  access_log: true\n")
    assert restart_needed(parse_config(""), logged) == ["server.access_log"]


# -- reload: in process, with components we can observe ------------------------------------


class Recorder:
    """A component that records what the daemon asks of it."""

    def __init__(self, runtime: Runtime, fail: bool = False) -> None:
        self.runtime = runtime
        self.fail = fail
        self.reloads: list[tuple[Config, Config, bool, int]] = []
        self.stopped = False

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self) -> None:
        pass

    async def stop(self, grace_s: float) -> None:
        self.stopped = True

    async def reload(self, config: Config) -> None:
        url = self.runtime.config.server.listen
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://{url}/readyz", timeout=10)
        self.reloads.append((config, self.runtime.config, self.runtime.is_ready, ready.status_code))
        if self.fail:
            raise RuntimeError("this engine cannot reload")


def test_reload_applies_to_every_component_and_swaps_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    path = tmp_path / "c.yaml"
    server = f"server:\n  listen: 127.0.0.1:{port}\n"
    path.write_text(server + daemon_config())
    recorders: list[Recorder] = []

    def build(runtime: Runtime) -> list[Any]:
        recorders.extend([Recorder(runtime, fail=True), Recorder(runtime)])
        return list(recorders)

    monkeypatch.setattr(daemon_module, "build_components", build)
    d = Daemon(load_config(path))
    outcomes: list[bool] = []

    async def main() -> None:
        running = asyncio.create_task(d.run())
        await asyncio.to_thread(wait_until, lambda: d.listening, 10)
        path.write_text(server + daemon_config(targets=TARGET_A + TARGET_B, sources=HOOK))
        outcomes.append(await d.reload())
        path.write_text(server + "targets: [oops\n")
        outcomes.append(await d.reload())
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        d.request_stop()
        await running

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert outcomes == [True, False]
    assert d.config_path == path.resolve()
    for recorder in recorders:
        # Called once (the refused file reached no component), while not ready, with the new
        # config, before the swap.
        assert len(recorder.reloads) == 1
        new, in_force, was_ready, readyz = recorder.reloads[0]
        assert set(new.targets) == {"a", "b"} and set(new.sources) == {"hook"}
        assert set(in_force.targets) == {"a"}
        assert was_ready is False and readyz == 503
        assert recorder.stopped
    # One engine failing its reload does not stop the others; the new config is in force.
    assert set(d.config.targets) == {"a", "b"}
    assert d.runtime is not None and d.runtime.config is d.config
    messages = [r.getMessage() for r in caplog.records]
    assert any("reload of Recorder failed" in m for m in messages)
    assert any("source hook added; target b added" in m for m in messages)
    assert any(m.startswith("reload refused, the config in force is unchanged") for m in messages)


# -- reload: the real daemon ---------------------------------------------------------------


def test_sighup_adds_a_source_and_a_target_and_the_next_event_reaches_it(daemon) -> None:
    upstream, inbox = Upstream(), Inbox()
    with serve_app(upstream.app()) as api, serve_app(inbox.app()) as receiver:
        proc = daemon(daemon_config())
        before = scrape(proc.url)
        assert labelled(before, "bridge_delivery_backlog", target="a") == 0
        assert labelled(before, "bridge_delivery_backlog", target="b") is None

        source = f"  orders:\n    poll:\n      url: {api}/items\n      every: 200ms\n      id: id\n"
        target_b = TARGET_B.replace("http://127.0.0.1:9/b", receiver + "/in")
        rewrite(proc, daemon_config(targets=TARGET_A + target_b.replace("hook.*", "orders.*"),
                                    sources=source))  # fmt: skip
        line = sighup_and_wait(proc, "reloaded")
        assert "source orders added" in line and "target b added" in line
        assert httpx.get(proc.url + "/readyz").status_code == 200

        # The new source polls (its first answer is the silent baseline) ...
        wait_until(lambda: total(scrape(proc.url), "bridge_polls_total", source="orders"), 15)
        # ... and its next change is an event that reaches the new target, signed.
        upstream.items.append({"id": "2", "v": 1})
        # Wait for what is asserted below: the outcome counted once its attempt is stored,
        # not the receiver's copy of the request, which arrives before that.
        wait_until(
            lambda: total(scrape(proc.url), "bridge_deliveries_total", target="b",
                          outcome="delivered") == 1,
            timeout_s=15,
        )  # fmt: skip
        event = inbox.received[0]
        assert event["source"] == "orders" and event["type"] == "orders.created"
        assert event["subject"] == "2" and event["data"]["object"] == {"id": "2", "v": 1}

        samples = scrape(proc.url)
        assert labelled(samples, "bridge_events_total", source="orders", origin="poll") == 1
        assert total(samples, "bridge_deliveries_total", target="b", outcome="delivered") == 1
        assert labelled(samples, "bridge_delivery_latency_seconds_count", target="b") == 1
        assert labelled(samples, "bridge_config_reloads_total", outcome="applied") == 1
        # Target a wants every event too; nothing listens there, so it waits in the backlog.
        assert labelled(samples, "bridge_delivery_backlog", target="a") == 1

        # `bridge status` reads the same story from the store.
        result = run_cli("status", "-c", str(proc.config_path), "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        (orders,) = status["sources"]
        assert orders["name"] == "orders" and orders["status"] == "ok" and orders["events"] == 1
        assert orders["last_poll_ms"] is not None and orders["last_event_ms"] is not None
        targets = {t["name"]: t for t in status["targets"]}
        assert targets["b"]["health"] == "ok" and targets["b"]["backlog"] == 0
        assert targets["a"]["backlog"] == 1

        # A removed target leaves the gauges; its delivery stays in the outbox.
        rewrite(proc, daemon_config(targets=target_b, sources=source))
        assert "target a removed" in sighup_and_wait(proc, "reloaded")
        assert labelled(scrape(proc.url), "bridge_delivery_backlog", target="a") is None
        assert proc.terminate() == 0


def test_sighup_adds_a_webhook_source_that_answers_at_once(daemon) -> None:
    inbox = Inbox()
    with serve_app(inbox.app()) as receiver:
        proc = daemon(daemon_config())
        ping = {"id": "p-1", "type": "hook.ping"}
        assert httpx.post(proc.url + "/hooks/hook", json=ping).status_code == 404

        target_b = TARGET_B.replace("http://127.0.0.1:9/b", receiver + "/in")
        rewrite(proc, daemon_config(targets=TARGET_A + target_b, sources=HOOK))
        assert "source hook added" in sighup_and_wait(proc, "reloaded")

        answer = httpx.post(proc.url + "/hooks/hook", json=ping)
        assert answer.status_code == 202
        # The event and the request are counted before the 202 answer; the receiver's copy
        # is what is asserted next.
        wait_until(lambda: inbox.received, timeout_s=15)
        assert inbox.received[0]["id"] == answer.json()["id"]
        assert inbox.received[0]["data"] == ping

        samples = scrape(proc.url)
        assert labelled(samples, "bridge_events_total", source="hook", origin="push") == 1
        assert total(samples, "bridge_inbound_accepted_total", source="hook") == 1

        # Removed again, its path is gone at once.
        rewrite(proc, daemon_config())
        assert "source hook removed" in sighup_and_wait(proc, "reloaded")
        assert httpx.post(proc.url + "/hooks/hook", json=ping).status_code == 404
        assert proc.terminate() == 0


def test_bad_config_on_sighup_keeps_the_old_one(daemon) -> None:
    proc = daemon(daemon_config())
    bad = daemon_config(targets=TARGET_A + TARGET_B.replace("http://127.0.0.1:9/b", "ftp://b"))
    rewrite(proc, bad)
    line = sighup_and_wait(proc, "reload refused")
    assert (
        f"{proc.config_path}:" in line and 'targets.b.url: "ftp://b" is not an http(s) URL' in line
    )
    assert httpx.get(proc.url + "/healthz").status_code == 200
    assert httpx.get(proc.url + "/readyz").status_code == 200
    samples = scrape(proc.url)
    assert labelled(samples, "bridge_delivery_backlog", target="a") == 0
    assert labelled(samples, "bridge_delivery_backlog", target="b") is None
    assert labelled(samples, "bridge_config_reloads_total", outcome="refused") == 1

    # Fixed, the next SIGHUP applies it.
    rewrite(proc, daemon_config(targets=TARGET_A + TARGET_B))
    assert "target b added" in sighup_and_wait(proc, "reloaded")
    assert labelled(scrape(proc.url), "bridge_delivery_backlog", target="b") == 0
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_parse_and_move_as_events_flow(daemon) -> None:
    inbox = Inbox()
    with serve_app(inbox.app()) as receiver:
        target_a = TARGET_A.replace("http://127.0.0.1:9/a", receiver + "/in")
        # Nothing listens for b, and it has no retries: its deliveries die at once.
        target_b = TARGET_B + "    retry: []\n"
        proc = daemon(daemon_config(targets=target_a + target_b, sources=HOOK))
        defined = {
            m._name
            for m in vars(metrics).values()
            if isinstance(m, metrics.Counter | metrics.Gauge | metrics.Histogram)
        }
        assert len(defined) >= 15
        assert defined <= families(proc.url)

        config = load_config(proc.config_path)
        db = proc.config_path.parent / "ops.db"
        record(db, config, [make_event("hook", n, "hook.ping") for n in range(3)])
        record(db, config, [make_event("hook", 9, "other.thing")])  # only target a wants it

        def settled() -> dict:
            # Settled when the daemon has recorded every outcome, not when the receiver has
            # the requests: a delivered request is counted only once its attempt is stored.
            samples = scrape(proc.url)
            done = labelled(samples, "bridge_deliveries_dead", target="b") == 3
            delivered = total(samples, "bridge_deliveries_total", target="a", outcome="delivered")
            return samples if done and delivered == 4 and len(inbox.received) == 4 else {}

        samples = wait_until(settled, timeout_s=20, interval_s=0.1)
        assert labelled(samples, "bridge_delivery_backlog", target="b") == 0
        assert labelled(samples, "bridge_delivery_backlog", target="a") == 0
        assert total(samples, "bridge_deliveries_total", target="b", outcome="dead") == 3
        assert total(samples, "bridge_delivery_attempts_total", target="b") == 3
        assert total(samples, "bridge_deliveries_total", target="a", outcome="delivered") == 4
        assert labelled(samples, "bridge_delivery_latency_seconds_count", target="a") == 4
        assert {e["id"] for e in inbox.received} == {
            make_event("hook", n, "x").id for n in (0, 1, 2, 9)
        }


# -- /readyz -------------------------------------------------------------------------------


@pytest.fixture
def served_store(tmp_path: Path) -> Iterator[tuple[str, Runtime, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "ready.db")
    store.open()
    runtime = Runtime(config=parse_config(""), store=store, is_ready=True)
    with serve_app(build_app(runtime)) as url:
        yield url, runtime, store
    store.close()


def test_readyz_is_503_while_the_store_cannot_commit(served_store) -> None:
    url, runtime, store = served_store
    assert httpx.get(url + "/readyz").json() == {"status": "ready"}
    store.writer.fault = sqlite3.OperationalError("disk I/O error")
    answer = httpx.get(url + "/readyz", timeout=10)
    assert answer.status_code == 503
    assert answer.json()["problems"] == ["the store cannot be written"]
    assert httpx.get(url + "/healthz").status_code == 200
    store.writer.fault = None
    assert httpx.get(url + "/readyz").status_code == 200
    runtime.is_ready = False
    assert httpx.get(url + "/readyz").json()["problems"] == [
        "not ready (starting, reloading or stopping)"
    ]


def test_readyz_is_503_while_another_process_holds_the_database_lock(daemon) -> None:
    proc = daemon("database: locked.db\n", "--allow-empty")
    assert httpx.get(proc.url + "/readyz").status_code == 200
    conn = sqlite3.connect(proc.config_path.parent / "locked.db", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        answer = httpx.get(proc.url + "/readyz", timeout=10)
        assert answer.status_code == 503
        assert "the store cannot be written" in answer.json()["problems"]
        assert httpx.get(proc.url + "/healthz").status_code == 200
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    wait_until(lambda: httpx.get(proc.url + "/readyz", timeout=10).status_code == 200, 20, 0.2)


# -- logs ----------------------------------------------------------------------------------


def test_the_redaction_net_masks_secrets_in_messages_tracebacks_and_json() -> None:
    secret = 'tok-"quoted"-Secret-1234'
    header = "Bearer header-token-5678"
    logs.redact([secret, header])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.RedactingFormatter(logs.JSONFormatter()))
    logger = logging.getLogger("bridge.test_ops")
    logger.addHandler(handler)
    try:
        logger.error("sent %s and %s", secret, "header-token-5678")
        try:
            raise ValueError(f"bad {secret}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["message"] == "sent *** and ***"
    assert "ValueError: bad ***" in lines[1]["exc"]
    assert "Secret-1234" not in text and "header-token" not in text

    logs.redact([TEST_SECRET])
    assert logs.scrub(f"key {TEST_SECRET.removeprefix('whsec_')}") == "key ***"


def test_config_secrets_include_url_passwords_and_credential_params() -> None:
    text = f"""\
        sources:
          orders:
            poll:
              url: https://reader:pw-in-the-url-1@127.0.0.1:9/orders
              every: 5s
              id: id
              params: {{api_key: key-in-a-param-2, page: "1", per_page: 100}}
              headers: {{Authorization: Bearer header-token-3}}
        targets:
          a:
            url: http://127.0.0.1:9/a
            secret: {TEST_SECRET}
        """
    config = parse_config(textwrap.dedent(text))
    found = set(logs.config_secrets(config))
    assert {"pw-in-the-url-1", "key-in-a-param-2", "Bearer header-token-3", TEST_SECRET} <= found
    assert "1" not in found and "reader" not in found


def test_json_logs_carry_no_secret(daemon, tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    target_secret = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLWJyaWRnZS10ZXN0cw=="
    (creds / "target-secret").write_text(target_secret + "\n")
    admin_token = "admin-token-never-logged-42"
    hook_secret = "hook-secret-never-logged-43"
    body = textwrap.dedent(f"""\
        database: logs.db
        server:
          listen: 127.0.0.1:{{port}}
          admin_token: {admin_token}
        sources:
          hook:
            webhook:
              verify: github
              secrets: ${{HOOK_SECRET}}
        targets:
          a:
            url: http://127.0.0.1:9/a
            secret: ${{credential:target-secret}}
        """)
    env = {"CREDENTIALS_DIRECTORY": str(creds), "HOOK_SECRET": hook_secret}
    proc = daemon(body, "--log-format", "json", "--log-level", "debug", env=env)
    text = proc.config_path.read_text()
    # A mistake that quotes a value: the value happens to be the admin token.
    proc.config_path.write_text(text.replace("http://127.0.0.1:9/a", admin_token))
    sighup_and_wait(proc, "reload refused")
    proc.config_path.write_text(text)
    sighup_and_wait(proc, "reloaded")
    assert proc.terminate() == 0
    lines = [json.loads(line) for line in proc.log().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    refused = [x for x in lines if "reload refused" in x["message"]]
    assert refused and refused[0]["level"] == "error"
    assert 'targets.a.url: "***" is not an http(s) URL' in refused[0]["message"]
    log = proc.log()
    for secret in (admin_token, hook_secret, target_secret):
        assert secret not in log


# -- bridge status -------------------------------------------------------------------------


def test_status_judgements() -> None:
    assert source_status("poll", None, 0) == "never polled"
    polled = PollState("s", last_poll_ms=1, consecutive_failures=3)
    assert source_status("poll", polled, 5) == "failing (3 in a row)"
    assert source_status("poll", PollState("s", last_poll_ms=1), 0) == "ok"
    assert source_status("poll", PollState("s", last_poll_ms=1, gaps=2), 0) == "ok, 2 gaps"
    assert source_status("webhook", None, 0) == "no events yet"
    assert source_status("webhook", None, 1) == "ok"
    assert target_health(TargetState("t"), {}) == "ok"
    assert target_health(TargetState("t"), {"dead": 1}) == "dead letters"
    assert target_health(TargetState("t"), {"failed": 1, "dead": 1}) == "retrying"
    assert target_health(TargetState("t", failures=2), {"failed": 1}) == "failing (2 in a row)"
    assert target_health(TargetState("t", circuit="half_open"), {"failed": 1}) == "probing"
    assert target_health(TargetState("t", circuit="open"), {}) == "circuit open"
    assert target_health(TargetState("t", circuit="open", disabled_ms=1), {}) == "disabled"


STATUS_CONFIG = f"""\
database: status.db
sources:
  orders:
    poll:
      url: http://127.0.0.1:9/orders
      every: 5s
      id: id
{HOOK}targets:
{TARGET_A}{TARGET_B}"""


def test_status_prints_sources_and_targets_from_the_store(write_config) -> None:
    path = write_config(STATUS_CONFIG)
    config = load_config(path)
    db = path.parent / "status.db"
    record(db, config, [make_event("orders", n, "orders.created", "poll") for n in range(2)])
    record(db, config, [make_event("hook", n, "hook.ping") for n in range(3)])
    polled_ms = now_ms()

    async def engines_at_work(store: SQLiteStore) -> None:
        # What the poller and the deliverer keep in the store, through their interfaces.
        failed = PollOutcome(at_ms=polled_ms, duration_ms=12, status=500,
                             error="HTTP 500 from upstream")  # fmt: skip
        await store.record_poll("orders", failed)
        await store.record_poll("orders", failed)
        claimed = await store.claim_due({"b": 1}, now_ms(), now_ms() + 60_000)
        (claim,) = claimed.claims
        await store.record_attempts([AttemptRecord(
            claim.delivery_id, claim.event.id, "b", now_ms(), 5, 404, None, "HTTP 404", "dead",
            now_ms(), TargetState("b", circuit="half_open", failures=5),
        )])  # fmt: skip

    with_store(db, engines_at_work)

    result = run_cli("status", "-c", str(path), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["database"] == str(db)
    sources = {s["name"]: s for s in status["sources"]}
    assert sources["orders"] == {
        "name": "orders",
        "kind": "poll",
        "status": "failing (2 in a row)",
        "events": 2,
        "last_poll_ms": polled_ms,
        "last_event_ms": sources["orders"]["last_event_ms"],
        "last_error": "HTTP 500 from upstream",
        "mode": "snapshot",
        "gaps": 0,
        "faults": [],
        # In no merge.
        "merge": None,
        "sightings": 0,
        "members": [],
        # ISO 8601 beside the milliseconds.
        "last_poll": format_time(polled_ms),
        "last_event": format_time(sources["orders"]["last_event_ms"]),
    }
    assert sources["hook"]["kind"] == "webhook" and sources["hook"]["events"] == 3
    assert sources["hook"]["status"] == "ok" and sources["hook"]["last_poll_ms"] is None
    targets = {t["name"]: t for t in status["targets"]}
    assert targets["a"] == {
        "name": "a",
        "health": "ok",
        "circuit": "closed",
        "backlog": 5,
        "dead": 0,
        "last_error": None,
    }
    assert targets["b"]["health"] == "probing" and targets["b"]["circuit"] == "half_open"
    assert targets["b"]["backlog"] == 2
    assert targets["b"]["dead"] == 1 and targets["b"]["last_error"] == "HTTP 404"

    text = run_cli("status", "-c", str(path))
    assert text.returncode == 0, text.stderr
    assert "failing (2 in a row)" in text.stdout and "probing" in text.stdout
    assert "HTTP 500 from upstream" in text.stdout


def test_status_without_a_database_is_one_line(write_config) -> None:
    path = write_config("database: never.db\n")
    result = run_cli("status", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"bridge: no database at {path.parent / 'never.db'}: "
        "the bridge has not run with this config"
    )
    assert not (path.parent / "never.db").exists()
