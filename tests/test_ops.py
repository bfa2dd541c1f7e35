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
from starlette.routing import BaseRoute

from bridge import daemon as daemon_module
from bridge import logs, metrics
from bridge.app import build_app
from bridge.config import Config, load_config, parse_config
from bridge.daemon import Daemon
from bridge.events import Event, event_id, now_ms
from bridge.reload import config_changes, restart_needed
from bridge.routing import targets_for
from bridge.runtime import Runtime
from bridge.status.summary import source_status, target_health
from bridge.store import NewEvent, SourceActivity, TargetBacklog
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


def record(db: Path, config: Config, events: list[Event]) -> None:
    """Store events routed to the targets `config` names, as an engine of the daemon would."""
    store = SQLiteStore(db)
    store.open()
    try:
        batch = [NewEvent(e, targets_for(config.targets, e.source, e.type)) for e in events]
        asyncio.run(store.record_events(batch))
    finally:
        store.close()


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


def test_sighup_adds_a_source_and_a_target_that_the_next_event_reaches(daemon) -> None:
    proc = daemon(daemon_config())
    before = scrape(proc.url)
    assert labelled(before, "bridge_delivery_backlog", target="a") == 0
    assert labelled(before, "bridge_delivery_backlog", target="b") is None

    rewrite(proc, daemon_config(targets=TARGET_A + TARGET_B, sources=HOOK))
    line = sighup_and_wait(proc, "reloaded")
    assert "source hook added" in line and "target b added" in line
    assert httpx.get(proc.url + "/readyz").status_code == 200

    # The next event for the new source is queued for the new target (routing by the config
    # in force); the backlog the daemon reports shows it.
    config = load_config(proc.config_path)
    record(proc.config_path.parent / "ops.db", config, [make_event("hook", 1, "hook.ping")])
    after = scrape(proc.url)
    assert labelled(after, "bridge_delivery_backlog", target="b") == 1
    assert labelled(after, "bridge_delivery_backlog", target="a") == 1
    assert labelled(after, "bridge_config_reloads_total", outcome="applied") == 1

    # A removed target leaves the gauges.
    rewrite(proc, daemon_config(targets=TARGET_B, sources=HOOK))
    assert "target a removed" in sighup_and_wait(proc, "reloaded")
    assert labelled(scrape(proc.url), "bridge_delivery_backlog", target="a") is None
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


def test_metrics_parse_and_the_store_gauges_follow_the_deliveries(daemon) -> None:
    proc = daemon(daemon_config(targets=TARGET_A + TARGET_B, sources=HOOK))
    defined = {
        m._name for m in vars(metrics).values() if isinstance(m, metrics.Counter | metrics.Gauge)
    } | {m._name for m in vars(metrics).values() if isinstance(m, metrics.Histogram)}
    assert len(defined) >= 15
    assert defined <= families(proc.url)

    config = load_config(proc.config_path)
    db = proc.config_path.parent / "ops.db"
    record(db, config, [make_event("hook", n, "hook.ping") for n in range(3)])
    record(db, config, [make_event("hook", 9, "other.thing")])  # only target a wants it
    samples = scrape(proc.url)
    assert labelled(samples, "bridge_delivery_backlog", target="a") == 4
    assert labelled(samples, "bridge_delivery_backlog", target="b") == 3
    assert labelled(samples, "bridge_deliveries_dead", target="b") == 0

    # What the delivery engine writes (a delivery dead) shows at the next scrape.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE deliveries SET status = 'dead' WHERE id = (SELECT min(id) FROM"
                     " deliveries WHERE target = 'b')")  # fmt: skip
    samples = scrape(proc.url)
    assert labelled(samples, "bridge_delivery_backlog", target="b") == 2
    assert labelled(samples, "bridge_deliveries_dead", target="b") == 1
    assert labelled(samples, "bridge_delivery_backlog", target="a") == 4


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
    proc = daemon("database: locked.db\n")
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
    assert source_status("poll", SourceActivity("s")) == "never polled"
    polled = SourceActivity("s", last_poll_ms=1, consecutive_failures=3)
    assert source_status("poll", polled) == "failing (3 in a row)"
    assert source_status("poll", SourceActivity("s", last_poll_ms=1)) == "ok"
    assert source_status("webhook", SourceActivity("s")) == "no events yet"
    assert source_status("webhook", SourceActivity("s", events=1, last_event_ms=1)) == "ok"
    assert target_health(TargetBacklog("t")) == "ok"
    assert target_health(TargetBacklog("t", dead=1)) == "dead letters"
    assert target_health(TargetBacklog("t", failed=1, dead=1)) == "retrying"
    assert target_health(TargetBacklog("t", failed=1, circuit="half_open")) == "probing"
    assert target_health(TargetBacklog("t", circuit="open")) == "circuit open"
    assert target_health(TargetBacklog("t", circuit="open", disabled_ms=1)) == "disabled"


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
    # What the poller and the deliverer keep in the store, as they would write it.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO poll_state (source, last_poll_ms, last_status, last_error,"
            " consecutive_failures) VALUES ('orders', ?, 500, 'HTTP 500 from upstream', 2)",
            (polled_ms,),
        )
        conn.execute(
            "UPDATE deliveries SET status = 'dead', last_error = 'HTTP 404'"
            " WHERE id = (SELECT min(id) FROM deliveries WHERE target = 'b')"
        )
        conn.execute("INSERT INTO targets (name, circuit, failures) VALUES ('b', 'half_open', 5)")

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
