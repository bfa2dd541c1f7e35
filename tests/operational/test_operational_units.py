"""The teller of operational events on a real SQLite store: what is news and what is not, where
each event goes, and the config's word on the source name `bridge`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.config import parse_config
from bridge.daemon.reload import reload_config
from bridge.deliver.alerts import tell_attempt
from bridge.deliver.policy import Circuit, Decision, decide
from bridge.events import BRIDGE_SOURCE, Event, event_id, now_ms
from bridge.hub import Hub
from bridge.operational import TYPES, Operational
from bridge.routing import targets_for
from bridge.runtime import Runtime
from bridge.store.base import TargetState
from bridge.store.deliveries import Claim
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.anyio

TARGETS = f"""
targets:
  everything:                     # `*` alone: the configured sources' events only
    url: http://127.0.0.1:9/a
    secret: {TEST_SECRET}
  by_type:
    url: http://127.0.0.1:9/b
    secret: {TEST_SECRET}
    events: ["bridge.source.*"]
  by_source:
    url: http://127.0.0.1:9/c
    secret: {TEST_SECRET}
    sources: [bridge]
  elsewhere:
    url: http://127.0.0.1:9/d
    secret: {TEST_SECRET}
    sources: [orders]
    events: ["bridge.*", "*"]
sources:
  orders:
    webhook: {{verify: none, allow_unsigned: true}}
"""


def test_operational_events_go_only_to_targets_that_ask_for_them() -> None:
    targets = parse_config(TARGETS).targets
    assert targets_for(targets, BRIDGE_SOURCE, "bridge.source.failing") == ["by_source", "by_type"]
    assert targets_for(targets, BRIDGE_SOURCE, "bridge.target.circuit_opened") == ["by_source"]
    # The configured sources' events are routed as before.
    assert targets_for(targets, "orders", "orders.created") == ["elsewhere", "everything"]


@pytest.fixture
def teller(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    config = parse_config(
        TARGETS + "operational: {delivery_failing_after: 2, source_failing_after: 3,"
        " source_failing_for: 1h}\n"
    )
    yield Operational(lambda: config, store, Hub()), store
    store.close()


async def stored(store: SQLiteStore, teller: Operational) -> list[tuple[str, str | None]]:
    await teller.drain(10)
    return [(e.type, e.subject) for e in await store.list_events(source=BRIDGE_SOURCE)][::-1]


async def test_a_spell_is_told_once_and_its_end_only_when_its_start_was(teller: Any) -> None:
    op, store = teller
    op.delivery_failed("by_source", "answered 503", caused_by_bridge=False)
    assert await stored(store, op) == []  # one failure: below the threshold
    for _ in range(5):
        op.delivery_failed("by_source", "answered 503", caused_by_bridge=False)
        op.circuit_opened("by_source", now_ms() + 1000, "answered 503", caused_by_bridge=False)
    op.circuit_closed("by_source")
    op.circuit_closed("by_source")
    assert await stored(store, op) == [
        ("bridge.delivery.failing", "targets/by_source"),
        ("bridge.target.circuit_opened", "targets/by_source"),
        ("bridge.target.circuit_closed", "targets/by_source"),
    ]
    # Opened while delivering an operational event: not told, so neither is its closing.
    op.circuit_opened("by_type", None, "answered 503", caused_by_bridge=True)
    op.circuit_closed("by_type")
    assert len(await stored(store, op)) == 3


async def test_an_event_about_a_target_is_not_queued_for_it(teller: Any) -> None:
    op, store = teller
    for _ in range(2):
        op.delivery_failed("by_source", "answered 500", caused_by_bridge=False)
    await op.drain(10)
    rows = await store.list_deliveries(limit=None)
    assert rows == [], "by_source is the only target of delivery events, and it is the subject"
    op.target_disabled("by_type", "answered 410 Gone", now_ms())
    await op.drain(10)
    assert [r.target for r in await store.list_deliveries(limit=None)] == ["by_source"]


async def test_a_source_is_told_failing_after_the_count_or_the_duration(teller: Any) -> None:
    op, store = teller
    start = now_ms()
    op.poll_failed("a", "HTTP 500", start)
    op.poll_failed("a", "HTTP 500", start + 3_600_000)  # an hour later: long enough
    op.poll_failed("b", "HTTP 500", start)
    op.poll_failed("b", "HTTP 500", start + 1)
    op.poll_succeeded("b")  # never told failing: nothing to recover from
    op.poll_succeeded("a")
    await op.drain(10)
    events = (await store.list_events(source=BRIDGE_SOURCE))[::-1]  # oldest first
    assert [(e.type, e.data["source"], e.data["failures"]) for e in events] == [
        ("bridge.source.failing", "a", 2),
        ("bridge.source.recovered", "a", 2),
    ]
    assert all(e.data["error"] == "HTTP 500" and e.origin == "bridge" for e in events)


async def test_a_dead_operational_event_is_not_news(teller: Any) -> None:
    op, store = teller
    ours = Event(event_id(BRIDGE_SOURCE, "x"), BRIDGE_SOURCE, "bridge.poll.gap", "bridge", {}, 1)
    theirs = Event(event_id("orders", "1"), "orders", "orders.created", "push", {}, 1)
    op.delivery_dead("by_type", ours, 1, 4, "answered 503")
    op.delivery_dead("by_type", theirs, 2, 4, "answered 503")
    assert await stored(store, op) == [("bridge.delivery.dead", "targets/by_type")]
    (dead,) = await store.list_events(source=BRIDGE_SOURCE)
    assert dead.data["event_id"] == theirs.id and dead.data["attempts"] == 4


def test_every_type_is_documented() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs/guides/operational.md").read_text()
    assert [t for t in TYPES if f"`{t}`" not in page] == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("sources:\n  bridge:\n    webhook: {verify: none, allow_unsigned: true}\n", 2,
         "sources.bridge: \"bridge\" is the source of the bridge's own events"),
        ("operational:\n  source_failing_after: 0\n", 2, "operational.source_failing_after:"),
        ("operational:\n  source_failing_for: soon\n", 2,
         'operational.source_failing_for: "soon" is not a duration'),
    ],
)  # fmt: skip
def test_config_mistakes_about_operational_events(
    write_config: Callable[..., Path], text: str, line: int, message: str
) -> None:
    path = write_config(text)
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 2, result.output
    (only,) = result.stderr.strip().splitlines()
    assert only.startswith(f"{path}:{line}: ") and message in only, only


def test_a_target_may_name_the_source_bridge(write_config: Callable[..., Path]) -> None:
    path = write_config(TARGETS)
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.stderr


async def test_a_410_a_gap_and_a_refused_reload_are_told(teller: Any, tmp_path: Path) -> None:
    op, store = teller
    order = Event(event_id("orders", "1"), "orders", "orders.created", "push", {}, 1)
    gone = decide(410, attempts=1, retry_s=[1.0], now_ms=now_ms())
    states = (TargetState("by_type"), TargetState("by_type", 5, "answered 410 Gone"))
    closed = (Circuit(), Circuit())
    tell_attempt(op, "by_type", Claim(1, "by_type", order, 0), gone, closed, states, None)
    # Already disabled: the next 410 is no news.
    tell_attempt(op, "by_type", Claim(1, "by_type", order, 1), gone, closed, states[1:] * 2, None)
    op.poll_gap("orders", "the cursor went back", now_ms())
    bad = tmp_path / "bad.yaml"
    bad.write_text("databse: x.db\n")
    runtime = Runtime(config=parse_config(TARGETS), store=store)
    assert await reload_config(runtime, [], bad) is not None
    await runtime.operational.drain(10)
    assert await stored(store, op) == [
        ("bridge.target.disabled", "targets/by_type"),
        ("bridge.poll.gap", "sources/orders"),
        ("bridge.reload.refused", "config"),
    ]
    disabled, gap, refused = (await store.list_events(source=BRIDGE_SOURCE))[::-1]
    assert disabled.data["reason"] == "answered 410 Gone"
    assert gap.data["error"] == "the cursor went back"
    assert "databse: is not a known key" in refused.data["error"]
    # `disabled` goes to by_source (it asks for every operational event), never to by_type.
    assert [r.target for r in await store.list_deliveries(event_id=disabled.id)] == ["by_source"]


def test_bridge_events_lists_the_bridge_s_own_before_any_is_recorded(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(TARGETS + "database: bridge.db\n")
    store = SQLiteStore(path.parent / "bridge.db")
    store.open()  # a database the bridge has run with, without any event yet
    store.close()
    result = CliRunner().invoke(cli, ["events", "-c", str(path), "--source", BRIDGE_SOURCE])
    assert result.exit_code == 0, result.output


async def test_a_failed_transform_is_a_dead_delivery_not_a_failing_target(teller: Any) -> None:
    op, store = teller
    closed, healthy = (Circuit(), Circuit()), (TargetState("by_type"), TargetState("by_type"))
    for n in range(3):
        order = Event(event_id("orders", str(n)), "orders", "orders.created", "push", {}, 1)
        claim = Claim(n, "by_type", order, 0)
        dead = Decision("dead", now_ms())
        tell_attempt(op, "by_type", claim, dead, closed, healthy, "transform failed", is_final=True)
    told = await stored(store, op)
    assert told == [("bridge.delivery.dead", "targets/by_type")] * 3
