"""The inbound endpoint over real HTTP (uvicorn on 127.0.0.1) with a real SQLite file: every
response code, and what is and is not in the store afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.config import Config, parse_config
from bridge.daemon.app import build_app
from bridge.errors import StoreError
from bridge.events import Event, event_id
from bridge.receive import schemes
from bridge.receive.app import Receiver
from bridge.receive.batch import Batcher
from bridge.runtime import Runtime
from bridge.store import Store
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import serve_app, wait_until

GH_SECRET = "gh-secret-for-tests"
SW_KEY = schemes.standard_webhooks_key(TEST_SECRET)

CONFIG = f"""
database: bridge.db
sources:
  gh:
    webhook:
      verify: github
      secrets: [an-old-secret, {GH_SECRET}]
  sw:
    webhook:
      verify: standard-webhooks
      path: /in/standard
      secrets: {TEST_SECRET}
      max_body: 1KiB
      subject: body.data.id
      time: body.timestamp
  open:
    webhook:
      verify: none
      allow_unsigned: true
targets:
  everything:
    url: http://127.0.0.1:9/all
    secret: {TEST_SECRET}
  issues:
    url: http://127.0.0.1:9/issues
    secret: {TEST_SECRET}
    events: ["issues.*"]
"""


@dataclass
class Served:
    """A receiver served over HTTP, and the store behind it."""

    url: str
    store: SQLiteStore
    runtime: Runtime
    receiver: Receiver
    recorded: list[Event]

    def events(self) -> list[Event]:
        return asyncio.run(self.store.list_events(limit=None))

    def deliveries(self) -> list[tuple[str, str]]:
        rows = self.store.read_sync(
            lambda c: c.execute("SELECT event_id, target FROM deliveries ORDER BY target")
        )
        return [tuple(r) for r in rows]


def load(tmp_path: Path, text: str = CONFIG) -> Config:
    return parse_config(textwrap.dedent(text), path=tmp_path / "config.yaml")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = load(tmp_path)
    store = SQLiteStore(config.database_path)
    store.open()
    runtime = Runtime(config=config, store=store, is_ready=True)
    recorded: list[Event] = []
    runtime.hub.subscribe(recorded.extend)
    receiver = Receiver(runtime)
    asyncio.run(receiver.start())
    try:
        with serve_app(build_app(runtime, receiver.routes())) as url:
            yield Served(url, store, runtime, receiver, recorded)
    finally:
        store.close()


def github(
    body: bytes, *, delivery: str = "d-1", event: str = "issues", secret: str = GH_SECRET
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery,
        "x-hub-signature-256": schemes.sign_github(secret, body),
    }


def standard(body: bytes, *, msg_id: str = "msg_1", ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": schemes.sign_standard_webhooks(SW_KEY, msg_id, ts, body),
    }


ISSUE = {"action": "opened", "issue": {"number": 7, "title": "Ünïcode stays"}}
ISSUE_BODY = json.dumps(ISSUE).encode()


# -- accepted ------------------------------------------------------------------------------


def test_a_new_event_is_stored_with_its_deliveries_then_202(served: Served) -> None:
    before_ms = int(time.time() * 1000)
    r = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=github(ISSUE_BODY))
    after_ms = int(time.time() * 1000)
    assert r.status_code == 202
    (event,) = served.events()
    assert r.json() == {"id": event.id}
    assert event.source == "gh" and event.origin == "push" and event.type == "issues.opened"
    assert event.upstream_id == "d-1" and event.data == ISSUE
    assert before_ms <= event.recorded_ms <= after_ms
    # One delivery per matching target, committed with the event.
    assert served.deliveries() == [(event.id, "everything"), (event.id, "issues")]
    assert served.recorded == [event]


def test_standard_webhooks_event_takes_subject_and_time_from_the_source_config(
    served: Served,
) -> None:
    body = json.dumps(
        {"type": "user.created", "timestamp": "2026-01-02T03:04:05Z", "data": {"id": "u_1"}}
    ).encode()
    r = httpx.post(served.url + "/in/standard", content=body, headers=standard(body))
    assert r.status_code == 202
    (event,) = served.events()
    assert (event.type, event.subject, event.time_ms) == ("user.created", "u_1", 1767323045000)
    # Routed by type: the `issues.*` target does not get it.
    assert served.deliveries() == [(event.id, "everything")]


def test_attributes_a_cloudevent_cannot_hold_are_stored_with_u_fffd_on_both_backends(
    backend: Callable[..., Store], tmp_path: Path
) -> None:
    """A NUL (PostgreSQL's text cannot hold one) or another control character in what gives
    the type, subject or upstream id: each becomes U+FFFD, the same on both backends; the
    data stays as sent, and the event's id is derived from the id as sent."""
    store = backend()
    runtime = Runtime(config=load(tmp_path), store=store, is_ready=True)
    receiver = Receiver(runtime)
    asyncio.run(receiver.start())
    typed = json.dumps({"type": "user.\u0000created\n", "data": {"id": "u\u0000\u001f1"}})
    unsigned = json.dumps({"id": "a\u0000b\u0085", "type": "ok"}).encode()
    with serve_app(build_app(runtime, receiver.routes())) as url:
        body = typed.encode()
        r = httpx.post(url + "/in/standard", content=body, headers=standard(body))
        assert r.status_code == 202, r.text
        r = httpx.post(url + "/hooks/open", content=unsigned)
        assert r.status_code == 202, r.text
        again = httpx.post(url + "/hooks/open", content=unsigned)
        assert again.json() == {"id": r.json()["id"], "duplicate": True}
    by_source = {e.source: e for e in asyncio.run(store.list_events(limit=None))}
    sw, opened = by_source["sw"], by_source["open"]
    assert (sw.type, sw.subject) == ("user.\ufffdcreated\ufffd", "u\ufffd\ufffd1")
    assert sw.data == json.loads(typed)
    assert opened.upstream_id == "a\ufffdb\ufffd"
    assert opened.id == event_id("open", "a\x00b\x85")
    assert opened.data == {"id": "a\x00b\x85", "type": "ok"}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_same_upstream_event_again_is_200_duplicate_and_stores_nothing(served: Served) -> None:
    new_before = metric("bridge_inbound_accepted_total", source="gh", outcome="new")
    dup_before = metric("bridge_inbound_accepted_total", source="gh", outcome="duplicate")
    first = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=github(ISSUE_BODY))
    again = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=github(ISSUE_BODY))
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    assert len(served.events()) == 1 and len(served.deliveries()) == 2
    assert len(served.recorded) == 1
    assert metric("bridge_inbound_accepted_total", source="gh", outcome="new") == new_before + 1
    assert (
        metric("bridge_inbound_accepted_total", source="gh", outcome="duplicate") == dup_before + 1
    )
    # Another delivery id is another event.
    other = httpx.post(
        served.url + "/hooks/gh", content=ISSUE_BODY, headers=github(ISSUE_BODY, delivery="d-2")
    )
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


def test_concurrent_duplicates_make_exactly_one_event(served: Served) -> None:
    headers = github(ISSUE_BODY, delivery="same")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20)) as client:
            return await asyncio.gather(
                *[
                    client.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=headers)
                    for _ in range(20)
                ]
            )

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(served.events()) == 1 and len(served.deliveries()) == 2


def test_an_unsigned_source_accepts_without_signature(served: Served) -> None:
    r = httpx.post(served.url + "/hooks/open", json={"id": 5, "type": "thing.made"})
    assert r.status_code == 202
    (event,) = served.events()
    assert (event.type, event.upstream_id) == ("thing.made", "5")


# -- refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        github(ISSUE_BODY, secret="wrong"),
        github(b"another body"),
        {**github(ISSUE_BODY), "x-hub-signature-256": "sha256=zz"},
    ],
    ids=["missing", "wrong-secret", "other-body", "garbage"],
)
def test_a_bad_or_missing_signature_is_401_with_no_reason(
    served: Served, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.receive")
    before = metric("bridge_inbound_rejected_total", source="gh", reason="signature")
    r = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=headers)
    assert r.status_code == 401 and r.content == b""
    assert metric("bridge_inbound_rejected_total", source="gh", reason="signature") == before + 1
    assert served.events() == [] and served.deliveries() == []
    assert "source gh: refused a webhook: the x-hub-signature-256" in caplog.text
    assert GH_SECRET not in caplog.text


@pytest.mark.parametrize("offset_s", [-310, 310])
def test_a_timestamp_outside_the_tolerance_is_401(
    served: Served, offset_s: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.receive")
    body = b'{"type":"user.created"}'
    headers = standard(body, ts=int(time.time()) + offset_s)
    r = httpx.post(served.url + "/in/standard", content=body, headers=headers)
    assert r.status_code == 401 and r.content == b""
    assert served.events() == []
    assert ("old" if offset_s < 0 else "future") in caplog.text


def test_unknown_path_is_404_and_wrong_method_is_405(served: Served) -> None:
    assert httpx.post(served.url + "/hooks/nobody", json={"id": 1}).status_code == 404
    r = httpx.get(served.url + "/hooks/gh")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert httpx.put(served.url + "/hooks/open", json={"id": 1}).status_code == 405
    # The app's own routes still answer.
    assert httpx.get(served.url + "/healthz").status_code == 200
    assert served.events() == []


def test_every_answer_of_a_webhook_path_carries_the_security_headers_once(
    served: Served,
) -> None:
    # A POST to a webhook path skips Starlette's middleware; the receiver adds them itself.
    url = served.url + "/hooks/gh"
    answers = [
        httpx.post(url, content=ISSUE_BODY, headers=github(ISSUE_BODY)),  # 202
        httpx.post(url, content=ISSUE_BODY, headers=github(ISSUE_BODY)),  # 200 duplicate
        httpx.post(url, content=ISSUE_BODY, headers=github(ISSUE_BODY, secret="wrong")),
        httpx.post(served.url + "/in/standard", content=b"x" * 2000, headers=standard(b"x")),
        httpx.get(url),  # 405, through Starlette
        httpx.post(served.url + "/hooks/nobody", json={}),  # 404, through Starlette
    ]
    assert [r.status_code for r in answers] == [202, 200, 401, 413, 405, 404]
    for r in answers:
        assert r.headers.get_list("x-content-type-options") == ["nosniff"], r.status_code
        assert r.headers.get_list("x-frame-options") == ["DENY"]
        assert r.headers.get_list("referrer-policy") == ["same-origin"]
        assert r.headers.get_list("content-security-policy") == [
            "default-src 'none'; frame-ancestors 'none'"
        ]
    # Built as bytes, written as json.dumps writes them (the docs show them so).
    event_id = served.events()[0].id
    assert answers[0].text == json.dumps({"id": event_id})
    assert answers[1].text == json.dumps({"id": event_id, "duplicate": True})


def test_a_body_over_max_body_is_413_by_content_length_or_while_streaming(served: Served) -> None:
    big = b'{"type":"x","pad":"' + b"a" * 2000 + b'"}'
    r = httpx.post(served.url + "/in/standard", content=big, headers=standard(big))
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no content-length: chunked
        for _ in range(8):
            yield b"x" * 256

    r = httpx.post(served.url + "/in/standard", content=chunks(), headers=standard(b""))
    assert r.status_code == 413
    assert served.events() == []


def test_413_is_answered_without_reading_the_whole_body(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /in/standard HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 50000000\r\n\r\n{"
        )
        # Only one byte of the 50 MB was sent, yet the answer comes.
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_signed_body_that_is_not_json_is_400(served: Served) -> None:
    for body in (b"not json", b"", b'{"a": NaN}', b'{"a": "\\ud800"}', b"[" * 100_000):
        r = httpx.post(served.url + "/hooks/gh", content=body, headers=github(body, delivery="x"))
        assert r.status_code == 400, body[:20]
        assert r.json() == {"error": "the body is not valid JSON"}
    assert served.events() == []


def test_an_id_expression_that_finds_nothing_is_422(served: Served) -> None:
    headers = github(ISSUE_BODY)
    del headers["x-github-delivery"]
    r = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=headers)
    assert r.status_code == 422
    assert r.json() == {"error": 'no event id at headers."x-github-delivery"'}
    for body in ({"type": "x"}, {"id": None}, {"id": ""}, [1]):
        assert httpx.post(served.url + "/hooks/open", json=body).status_code == 422
    assert served.events() == []


def test_the_store_unable_to_commit_is_503_with_retry_after_and_nothing_stored(
    served: Served,
) -> None:
    served.store.writer.fault = sqlite3.OperationalError("database or disk is full")
    try:
        r = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=github(ISSUE_BODY))
    finally:
        served.store.writer.fault = None
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) > 0
    assert served.events() == [] and served.deliveries() == [] and served.recorded == []
    # The provider retries once the store can commit again: the event is stored then.
    r = httpx.post(served.url + "/hooks/gh", content=ISSUE_BODY, headers=github(ISSUE_BODY))
    assert r.status_code == 202 and len(served.events()) == 1


def test_slack_url_verification_is_answered_and_not_stored(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        database: slack.db
        sources:
          slack:
            webhook:
              verify: slack
              secrets: slack-signing-secret
        """,
    )
    store = SQLiteStore(config.database_path)
    store.open()
    receiver = Receiver(Runtime(config=config, store=store))
    body = b'{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",'
    body += b'"type":"url_verification"}'

    def signed(payload: bytes) -> dict[str, str]:
        ts = int(time.time())
        return {
            "x-slack-request-timestamp": str(ts),
            "x-slack-signature": schemes.sign_slack("slack-signing-secret", ts, payload),
        }

    try:
        with serve_app(build_app(receiver.runtime, receiver.routes())) as url:
            r = httpx.post(url + "/hooks/slack", content=body, headers=signed(body))
            assert r.status_code == 200
            assert r.json() == {"challenge": json.loads(body)["challenge"]}
            unsigned = httpx.post(url + "/hooks/slack", content=body)
            assert unsigned.status_code == 401
            assert asyncio.run(store.count_events()) == 0
            event = b'{"event_id":"Ev1","event_time":1700000000,"event":{"type":"message"}}'
            r = httpx.post(url + "/hooks/slack", content=event, headers=signed(event))
            assert r.status_code == 202
            (stored,) = asyncio.run(store.list_events())
            assert (stored.type, stored.upstream_id, stored.time_ms) == (
                "message",
                "Ev1",
                1700000000000,
            )
    finally:
        store.close()


# -- reload --------------------------------------------------------------------------------


def test_reload_adds_and_removes_sources_at_once(served: Served, tmp_path: Path) -> None:
    new = load(
        tmp_path,
        """
        database: bridge.db
        sources:
          shop:
            webhook:
              verify: shopify
              secrets: shop-secret
        """,
    )
    asyncio.run(served.receiver.reload(new))
    assert httpx.post(served.url + "/hooks/open", json={"id": 1}).status_code == 404
    body = b'{"id": 1}'
    headers = {
        "x-shopify-hmac-sha256": schemes.sign_shopify("shop-secret", body),
        "x-shopify-webhook-id": "wh-1",
        "x-shopify-topic": "orders/create",
        "x-shopify-triggered-at": "2026-01-02T03:04:05Z",
    }
    r = httpx.post(served.url + "/hooks/shop", content=body, headers=headers)
    assert r.status_code == 202
    (event,) = served.events()
    assert (event.source, event.type, event.upstream_id) == ("shop", "orders/create", "wh-1")


# -- the property: never a 5xx, never an unsigned event ------------------------------------

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(
    str.strip  # HTTP forbids whitespace around a header value
)
_FRAMING = {"host", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer"}
_HEADER_NAMES = st.sampled_from(
    ["x-hub-signature-256", "x-github-event", "x-github-delivery", "webhook-id",
     "webhook-timestamp", "webhook-signature", "svix-id", "svix-signature", "content-length"]
) | _TOKEN.filter(lambda name: name not in _FRAMING)  # fmt: skip
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
)


def test_random_headers_and_bodies_never_give_5xx_nor_store_unsigned_events(
    served: Served,
) -> None:
    client = httpx.Client(base_url=served.url, timeout=10)
    signed_ids: set[str] = set()

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        path=st.sampled_from(["/hooks/gh", "/in/standard"]),
        headers=st.dictionaries(_HEADER_NAMES, _VALUE, max_size=6),
        body=_BODIES,
        sign=st.booleans(),
    )
    def check(path: str, headers: dict[str, str], body: bytes, sign: bool) -> None:
        headers.pop("content-length", None)  # httpx sets the true one
        if sign:
            delivery = headers.get("x-github-delivery") or headers.get("webhook-id") or "i"
            headers |= (
                github(body, delivery=delivery)
                if path == "/hooks/gh"
                else standard(body, msg_id=delivery)
            )
        before = {e.id for e in served.events()}
        r = client.post(path, content=body, headers=headers)
        assert r.status_code < 500
        after = {e.id for e in served.events()}
        if r.status_code in (200, 202):
            assert sign
            signed_ids.add(r.json()["id"])
        else:
            assert after == before
        assert after <= signed_ids

    try:
        check()
    finally:
        client.close()


# -- the real daemon -----------------------------------------------------------------------


def test_the_daemon_receives_with_secrets_from_the_environment_and_delivers(
    daemon: Callable[..., Any],
) -> None:
    delivered: list[tuple[dict[str, str], bytes]] = []

    async def sink(request: Request) -> Response:
        delivered.append((dict(request.headers), await request.body()))
        return Response(status_code=204)

    with serve_app(Starlette(routes=[Route("/sink", sink, methods=["POST"])])) as sink_url:
        proc = daemon(
            f"""
            database: d.db
            sources:
              github:
                webhook:
                  verify: github
                  secrets: ${{GITHUB_WEBHOOK_SECRET}}
              open:
                webhook:
                  verify: none
                  allow_unsigned: true
            targets:
              sink:
                url: {sink_url}/sink
                secret: {TEST_SECRET}
                events: ["issues.*"]
            """,
            env={"GITHUB_WEBHOOK_SECRET": GH_SECRET},
        )
        r = httpx.post(proc.url + "/hooks/github", content=ISSUE_BODY, headers=github(ISSUE_BODY))
        assert r.status_code == 202
        bad = httpx.post(
            proc.url + "/hooks/github", content=ISSUE_BODY, headers=github(ISSUE_BODY, secret="x")
        )
        assert bad.status_code == 401
        # The pushed event joins the stream: delivered, signed, to the matching target.
        wait_until(lambda: delivered, timeout_s=15)
        assert proc.terminate() == 0
    headers, body = delivered[0]
    cloudevent = standardwebhooks.Webhook(TEST_SECRET).verify(body, headers)
    assert cloudevent["id"] == r.json()["id"] and cloudevent["origin"] == "push"
    assert cloudevent["type"] == "issues.opened" and cloudevent["data"] == ISSUE
    store = SQLiteStore(proc.config_path.parent / "d.db")
    store.open()
    try:
        (event,) = asyncio.run(store.list_events())
    finally:
        store.close()
    assert event.id == r.json()["id"] and event.data == ISSUE
    log = proc.log()
    assert "source open accepts unsigned webhooks on /hooks/open" in log
    assert "refused a webhook" in log
    assert GH_SECRET not in log and "Traceback" not in log


# -- the batcher ---------------------------------------------------------------------------


def test_one_event_that_cannot_be_stored_does_not_fail_the_others_of_its_batch(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    store.open()
    batcher = Batcher(store)

    def event(n: int, data: Any) -> Event:
        return Event(id=f"evt_{n}", source="s", type="t", origin="push", data=data, recorded_ms=n)

    async def together() -> list[Any]:
        return await asyncio.gather(
            batcher.record(event(1, {"ok": 1}), ["a"]),
            batcher.record(event(2, {"bad": "\ud800"}), ["a"]),  # no UTF-8 for SQLite
            batcher.record(event(1, {"ok": 1}), ["a"]),
            return_exceptions=True,
        )

    try:
        first, bad, again = asyncio.run(together())
        assert (first, again) == (True, False)
        assert isinstance(bad, StoreError)
        assert [e.id for e in asyncio.run(store.list_events())] == ["evt_1"]
    finally:
        store.close()


def test_the_daemon_socket_answers_without_nagle_delay() -> None:
    # Accepted connections inherit TCP_NODELAY from the listener; asyncio does not set it on
    # sockets made by socket.create_server, and without it small answers wait for ACKs.
    from bridge.daemon.server import bind

    listener = bind("127.0.0.1", 0)
    try:
        listener.setblocking(True)
        with socket.create_connection(listener.getsockname()[:2]) as _client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


def test_stopping_the_receiver_lets_store_calls_in_flight_finish(tmp_path: Path) -> None:
    config = load(tmp_path)
    store = SQLiteStore(config.database_path)
    store.open()
    receiver = Receiver(Runtime(config=config, store=store))
    event = Event(id="evt_x", source="gh", type="t", origin="push", data={}, recorded_ms=1)

    async def scenario() -> bool:
        pending = asyncio.create_task(receiver.batcher.record(event, ["everything"]))
        await asyncio.sleep(0)  # the request reached the batcher
        await receiver.stop(grace_s=5)
        assert pending.done()
        return pending.result()

    try:
        assert asyncio.run(scenario()) is True
        assert asyncio.run(store.count_events()) == 1
    finally:
        store.close()


def test_events_of_concurrent_requests_go_to_the_store_together(tmp_path: Path) -> None:
    # While the writer thread commits, the events that arrive wait, and its next commit
    # takes them all in one store call: one call per commit, not one per request.
    store = SQLiteStore(tmp_path / "g.db")
    store.open()
    batcher = Batcher(store)
    busy, release = threading.Event(), threading.Event()

    def hold(conn: Any) -> None:
        busy.set()
        release.wait(10)

    def event(n: int) -> Event:
        return Event(id=f"evt_{n}", source="s", type="t", origin="push", data={}, recorded_ms=n)

    taken: list[int] = []
    gather_events = store.gather_events

    def counted(take: Any) -> Any:
        def counting() -> Any:
            batch = take()
            taken.append(len(batch))
            return batch

        return gather_events(counting)

    async def burst() -> list[bool]:
        holding = asyncio.wrap_future(store.writer.submit(hold))
        assert await asyncio.to_thread(busy.wait, 10)
        records = [asyncio.create_task(batcher.record(event(n), ["a"])) for n in range(50)]
        await asyncio.sleep(0.05)  # they all reached the batcher, which called the store once
        assert len(taken) == 0
        release.set()
        await holding
        return list(await asyncio.gather(*records))

    store.gather_events = counted  # type: ignore[method-assign]
    try:
        assert asyncio.run(burst()) == [True] * 50
        assert taken == [50]
        assert asyncio.run(store.count_events()) == 50
    finally:
        store.close()


# -- the direct path's two ways ------------------------------------------------------------


def _cases() -> list[tuple[str, str, list[tuple[bytes, bytes]], bytes]]:
    """(method, path, headers, body) of requests of every outcome, each sent twice."""

    def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        return [(k.encode(), v.encode()) for k, v in headers.items()]

    big = json.dumps({"data": {"id": "x"}, "pad": "p" * 2000}).encode()
    no_id = json.dumps({"action": "opened"}).encode()
    form = b"payload=%7B%7D"
    return [
        ("POST", "/hooks/gh", raw(github(ISSUE_BODY)), ISSUE_BODY),  # 202, then 200
        ("POST", "/hooks/gh", raw(github(ISSUE_BODY, secret="wrong")), ISSUE_BODY),  # 401
        ("POST", "/hooks/gh", [(b"x-hub-signature-256", b"sha256=zz")], ISSUE_BODY),  # 401
        ("POST", "/hooks/gh", raw(github(b"{not json")), b"{not json"),  # 400
        ("GET", "/hooks/gh", raw(github(ISSUE_BODY)), ISSUE_BODY),  # 405
        ("POST", "/hooks/gone", [], b"{}"),  # 404
        ("POST", "/in/standard", raw(standard(big)), big),  # 413
        ("POST", "/in/standard", raw(standard(ISSUE_BODY, ts=1)), ISSUE_BODY),  # 401, old
        ("POST", "/in/standard", raw(standard(no_id)), no_id),  # 202: the msg id
        ("POST", "/hooks/open", [(b"content-type", b"text/plain")], form),  # 400
        ("POST", "/hooks/open", [(b"content-type", b"application/json")], no_id),  # 422
    ]


def test_the_direct_way_without_a_task_answers_as_the_coroutine_does(tmp_path: Path) -> None:
    # `Receiver.begin` (the server's hot path) and `Receiver.reply` make the same answers,
    # store the same events and count the same refusals, request by request.
    def run(way: str) -> tuple[list[tuple[int, list[tuple[bytes, bytes]], bytes]], list[Any]]:
        folder = tmp_path / way
        folder.mkdir()
        config = load(folder)
        store = SQLiteStore(config.database_path)
        store.open()
        receiver = Receiver(Runtime(config=config, store=store, is_ready=True))
        extra = [(b"x-extra", b"1")]

        async def answer(method: str, path: str, headers: Any, body: bytes) -> Any:
            if way == "reply":
                return await receiver.reply(method, path, headers, body, None, extra)
            begun = receiver.begin(method, path, headers, body, None, extra)
            assert begun is not None  # every source here can be served without a task
            if len(begun) == 3:
                return begun
            stored, finish = begun
            await asyncio.wait([stored])
            return finish(stored)

        async def all_cases() -> list[Any]:
            return [await answer(*case) for case in _cases() for _ in range(2)]

        try:
            answers = asyncio.run(all_cases())
            events = [(e.id, e.source, e.type, e.data) for e in asyncio.run(store.list_events())]
        finally:
            store.close()
        return answers, events

    answers, events = run("begin")
    assert (answers, events) == run("reply")
    assert [a[0] for a in answers] == [
        202, 200, 401, 401, 401, 401, 400, 400, 405, 405, 404, 404,
        413, 413, 401, 401, 202, 200, 400, 400, 422, 422,
    ]  # fmt: skip
    assert len(events) == 2
