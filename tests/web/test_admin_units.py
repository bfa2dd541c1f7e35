"""The admin pages' pure parts: sessions and CSRF tokens, the filters and the cursor, where a
login may lead; the guard of a non-loopback server without a token; `bridge target disable`."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bridge.config import parse_config
from bridge.daemon.app import build_app
from bridge.deliver.circuit import next_attempt
from bridge.events import Event
from bridge.runtime import Runtime
from bridge.store.base import EventCursor, EventListing, TargetState
from bridge.store.deliveries import DeliveryRow
from bridge.store.sqlite import SQLiteStore
from bridge.web import views
from bridge.web.actions import safe_next
from bridge.web.admin import Admin
from bridge.web.auth import Guard, is_allowed_host
from bridge.web.session import Session, Sessions
from bridge.web.throttle import Throttle
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli


def test_a_session_cookie_is_signed_expires_and_can_be_revoked() -> None:
    sessions = Sessions.for_token("t0ken")
    session, cookie = sessions.issue(now_ms := 1_000_000, 60)
    assert session.expires_ms == now_ms + 60_000
    assert sessions.read(cookie, now_ms) == session
    assert sessions.read(cookie, now_ms + 60_000) is None  # expired
    assert Sessions.for_token("other").read(cookie, now_ms) is None  # another key
    sid, expires, signature = cookie.split(".")
    assert sessions.read(f"{sid}.{int(expires) + 1}.{signature}", now_ms) is None
    assert sessions.read("é.1.x", now_ms) is None and sessions.read(None, now_ms) is None
    assert sessions.is_csrf(session, sessions.csrf(session))
    assert not sessions.is_csrf(session, sessions.csrf(Session("other", 1)))
    assert not sessions.is_csrf(session, None) and not sessions.is_csrf(session, "ü")
    sessions.revoke(session, now_ms)
    assert sessions.read(cookie, now_ms) is None
    # Without a token the key is random: nobody can make a cookie in advance.
    assert Sessions.for_token(None).read(cookie, now_ms) is None


def test_filters_and_cursors_from_the_query_string() -> None:
    query = views.query_of(
        {
            "type": "order.*",
            "origin": "push",
            "since": "2026-01-31T08:30",
            "delivery": "dead",
            "after": views.cursor_text(EventCursor(5, "a/b")),
        }
    )
    assert query.where.type == "order.*" and query.where.origin == "push"
    assert query.where.since_ms == 1_769_848_200_000  # read as UTC
    assert query.where.delivery == "dead" and query.after == EventCursor(5, "a/b")
    for bad in (
        {"origin": "mail"},
        {"delivery": "lost"},
        {"since": "yesterday"},
        {"after": "!!"},
        {"after": views.cursor_text(EventCursor(1, "x"))[:-3]},
    ):
        with pytest.raises(views.BadQuery):
            views.query_of(bad)
    href = views.events_href({"subject": "a&b", "type": ""}, EventCursor(7, "x"))
    assert href.startswith("/admin/events?subject=a%26b&after=")
    assert views.event_href("evt_a/b?c") == "/admin/events/evt_a%2Fb%3Fc"


def test_a_page_links_to_the_older_one_only_when_there_is_one() -> None:
    def listing(i: int) -> EventListing:
        return EventListing(Event(f"e{i}", "s", "t", "poll", None, 1_000 - i), None)

    query = views.query_of({"source": "s"})
    full = views.events_page(query, [listing(i) for i in range(views.PAGE_SIZE + 1)])
    assert len(full["rows"]) == views.PAGE_SIZE
    last = views.cursor_text(EventCursor(1_000 - views.PAGE_SIZE + 1, f"e{views.PAGE_SIZE - 1}"))
    assert full["older_href"] == f"/admin/events?source=s&after={last}"
    assert full["first_href"] is None
    assert views.events_page(query, [listing(0)])["older_href"] is None


def test_a_login_leads_only_to_a_path_of_this_server() -> None:
    assert safe_next("/admin/targets?x=1") == "/admin/targets?x=1"
    for bad in (None, "", "https://evil.example/", "//evil.example/", "/\\evil.example", "x"):
        assert safe_next(bad) == "/admin/events"


def test_without_a_token_a_non_loopback_server_refuses_the_pages(tmp_path: Path) -> None:
    config = parse_config(f"""
database: {tmp_path / "b.db"}
targets:
  sink: {{url: "http://127.0.0.1:9/", secret: "{TEST_SECRET}"}}
""")
    store = SQLiteStore(tmp_path / "b.db")
    store.open()
    try:
        runtime = Runtime(config=config, store=store, is_loopback=False)
        app = build_app(runtime, Admin(runtime, Guard(runtime)).routes())

        async def ask() -> list[int]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                return [
                    (await client.get("/admin/events")).status_code,
                    (await client.post("/admin/target/disable", data={"name": "sink"})).status_code,
                ]

        assert asyncio.run(ask()) == [403, 403]
    finally:
        store.close()


def test_the_cli_disables_and_enables_a_target(write_config) -> None:
    path = write_config(f"""
        database: b.db
        targets:
          sink: {{url: "http://127.0.0.1:9/", secret: "{TEST_SECRET}"}}
        """)
    done = run_cli("target", "disable", "-c", str(path), "sink")
    assert done.returncode == 0 and done.stdout.strip() == "target sink disabled", done.stderr
    again = run_cli("target", "disable", "-c", str(path), "sink")
    assert again.stdout.strip() == "target sink was disabled already"
    shown = run_cli("targets", "-c", str(path), "--json")
    assert '"enabled": false' in shown.stdout
    assert run_cli("target", "enable", "-c", str(path), "sink").stdout.strip() == (
        "target sink enabled"
    )
    assert run_cli("target", "disable", "-c", str(path), "nope").returncode == 2


def test_the_throttle_checks_a_window_of_wrong_tokens_per_client_and_overall() -> None:
    throttle = Throttle(per_client=2, overall=3, window_s=60)
    for at_s in (0, 1):
        assert throttle.wait_s("a", at_s) is None
        throttle.failed("a", at_s)
    assert throttle.wait_s("a", 2) == 58  # until the first failure leaves the window
    assert throttle.wait_s("b", 2) is None  # another client still may
    throttle.failed("b", 2)
    assert throttle.wait_s("c", 3) == 57  # overall: three in the window
    assert throttle.wait_s("a", 60) is None and throttle.wait_s("c", 60) is None
    assert throttle.counted == 2  # the first left the window: memory stays bounded


def test_a_host_is_allowed_when_it_names_loopback_or_a_listed_name() -> None:
    listed = ["bridge.lan", "other.lan:8443"]
    for host in ("127.0.0.1:8080", "127.0.0.1", "[::1]:8080", "localhost:1", "LocalHost",
                 "127.0.0.5", "bridge.lan:9", "bridge.lan", "other.lan:8443"):  # fmt: skip
        assert is_allowed_host(host, listed), host
    for host in (None, "", "rebind.attacker.example:8080", "127.0.0.1.evil.example",
                 "localhost.evil.example", "other.lan:8080", "other.lan", "[::2]:80",
                 "10.0.0.1"):  # fmt: skip
        assert not is_allowed_host(host, listed), host


def test_the_next_attempt_is_never_a_time_already_past() -> None:
    at = 1_800_000_000_000

    def row(next_ms: int) -> DeliveryRow:
        return DeliveryRow(1, "evt_1", "me", "failed", 2, next_ms, None, at - 9_000, None, 500, "")

    opened = TargetState("me", None, None, "open", 5, at + 60_000, 60.0)
    # Due on its schedule but held by the circuit: the time the circuit lets it go.
    assert next_attempt(row(at - 5_000), opened, at) == {
        "ms": at + 60_000,
        "text": "",
        "why": "circuit open: Retry now on the Targets page",
    }
    # A retry later than the cool-down keeps its own time.
    assert next_attempt(row(at + 90_000), opened, at)["ms"] == at + 90_000
    # Due, nothing holding it: now, never the past time itself.
    for state in (None, TargetState("me"), replace(opened, open_until_ms=at - 1)):
        assert next_attempt(row(at - 5_000), state, at) == {"ms": None, "text": "now", "why": None}
    disabled = TargetState("me", at - 1, "by hand")
    assert next_attempt(row(at + 90_000), disabled, at)["text"] == "when target me is enabled again"
