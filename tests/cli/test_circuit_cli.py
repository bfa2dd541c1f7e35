"""`bridge target enable|disable|reset` and `bridge targets` on a target whose circuit is
open, without a daemon: what each says, in text and JSON, and the line each logs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge.events import Event, event_id, format_time, now_ms
from bridge.store import NewEvent
from bridge.store.base import TargetState
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli


def save(db: Path, state: TargetState) -> None:
    async def go() -> None:
        store = SQLiteStore(db)
        store.open()
        try:
            await store.save_target_state(state)
        finally:
            store.close()

    asyncio.run(go())


def test_enable_and_reset_say_that_they_closed_an_open_circuit(write_config) -> None:
    path = write_config(f"""
        database: b.db
        targets:
          me: {{url: "http://127.0.0.1:9/", secret: "{TEST_SECRET}"}}
        """)
    c = ("-c", str(path))
    assert run_cli("targets", *c).returncode == 0  # the database, migrated
    until = now_ms() + 3_600_000
    opened = TargetState("me", None, None, "open", 5, until, 3600.0)
    save(path.parent / "b.db", opened)

    listed = json.loads(run_cli("targets", *c, "--json").stdout)
    assert (listed[0]["circuit"], listed[0]["open_until"]) == ("open", format_time(until))

    enabled = run_cli("target", "enable", "me", *c)
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.strip() == (
        f"target me was enabled already; its circuit was open until {format_time(until)} and is"
        " now closed: its backlog is sent now"
    )
    # Logged as the admin pages' buttons log theirs: who, and what changed.
    assert "INFO" in enabled.stderr and "cli: " in enabled.stderr
    assert "enabled target me: it was enabled already; its circuit was open" in enabled.stderr

    save(path.parent / "b.db", opened)
    reset = json.loads(run_cli("target", "reset", "me", *c, "--json").stdout)
    assert reset == {
        "target": "me",
        "circuit": "closed",
        "changed": True,
        "was": {"state": "open", "until": format_time(until), "failures": 5},
        "retried": 0,
        "enabled": True,
    }
    again = run_cli("target", "reset", "me", *c)
    assert again.stdout.strip() == (
        "target me: its circuit was closed already: its backlog is sent now"
    )
    assert "reset target me: its circuit was closed already" in again.stderr
    off = run_cli("target", "disable", "me", *c)
    assert off.stdout.strip() == "target me disabled" and "disabled target me" in off.stderr
    on = json.loads(run_cli("target", "enable", "me", *c, "--json").stdout)
    assert on == {"target": "me", "enabled": True, "changed": True, "circuit_closed": False}
    assert run_cli("target", "reset", "nope", *c).returncode == 2


def test_a_waiting_delivery_never_shows_a_next_attempt_already_past(write_config) -> None:
    """`bridge deliveries` and `bridge event show` say when a waiting delivery is tried next
    as the event page does: now when due (not its old due time), until when an open circuit
    holds it, or when its disabled target is enabled again."""
    path = write_config(f"""
        database: b.db
        targets:
          me: {{url: "http://127.0.0.1:9/", secret: "{TEST_SECRET}"}}
        """)
    c = ("-c", str(path))
    assert run_cli("targets", *c).returncode == 0  # the database, migrated
    long_ago = now_ms() - 86_400_000
    ce = Event(id=event_id("hooks", "x1"), source="hooks", type="a.b", origin="push",
               data={"n": 1}, recorded_ms=long_ago)  # fmt: skip

    async def record() -> None:
        store = SQLiteStore(path.parent / "b.db")
        store.open()
        try:
            await store.record_events([NewEvent(ce, ["me"])])
        finally:
            store.close()

    asyncio.run(record())

    def shown() -> tuple[dict, dict]:
        listed = json.loads(run_cli("deliveries", *c, "--json").stdout)[0]
        one = json.loads(run_cli("event", "show", ce.id, *c, "--json").stdout)["deliveries"][0]
        return listed, one

    before = now_ms()
    for d in shown():  # due: now, not a day ago
        assert d["held"] is None and d["next"] >= format_time(before), d
    until = now_ms() + 3_600_000
    save(path.parent / "b.db", TargetState("me", None, None, "open", 5, until, 3600.0))
    for d in shown():
        assert d["next"] == format_time(until)
        assert (
            d["held"]
            == "circuit open; 'bridge target reset me' (or the page's \"Retry now\") sends it now"
        )
    table = run_cli("deliveries", *c).stdout
    assert f"{format_time(until)} (circuit open)" in table
    assert run_cli("target", "disable", "me", *c).returncode == 0
    for d in shown():
        assert (d["next"], d["held"]) == (None, "when target me is enabled again")
    assert "when target me is enabled again" in run_cli("event", "show", ce.id, *c).stdout
