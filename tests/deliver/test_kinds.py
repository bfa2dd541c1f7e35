"""A target's kind: the config (exactly one kind), the names filled per event, the message
of structured and binary mode (pure), and what `bridge check` says a config needs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.datastructures import Address
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.cli import cli
from bridge.config import parse_config
from bridge.deliver.kinds import Answer, Backoff, open_kind
from bridge.deliver.kinds import webhook as webhook_kind
from bridge.deliver.kinds.message import build_message, fill, mqtt_level, nats_token, redis_key
from bridge.deliver.kinds.webhook import KEEPALIVE_S, Webhook
from bridge.errors import ConfigError, MissingExtra
from bridge.events import Event
from tests.conftest import TEST_SECRET
from tests.helpers import serve_app


def _event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "id": "e1",
        "source": "github",
        "type": "issues.opened",
        "origin": "push",
        "data": {"n": 1},
        "recorded_ms": 1_700_000_000_000,
        "subject": "repo/a b*c>",
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def _config(target: str) -> str:
    return f"targets:\n  t:\n{target}"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "    events: ['*']\n",
            "needs exactly one of url, nats, amqp, redis, mqtt, notify (found: none)",
        ),
        (
            f"    url: http://127.0.0.1:9/\n    secrets: {TEST_SECRET}\n"
            "    redis: {url: 'redis://127.0.0.1:6379', stream: s}\n",
            "needs exactly one of url, nats, amqp, redis, mqtt, notify (found: url, redis)",
        ),
        ("    url: http://127.0.0.1:9/\n", "a webhook target needs secrets"),
        (
            "    nats: {url: 'nats://127.0.0.1:4222', subject: a.b}\n"
            f"    secrets: {TEST_SECRET}\n",
            "secrets is for webhooks: a nats target has none",
        ),
        (
            "    nats: {url: 'nats://127.0.0.1:4222', subject: a.b}\n    headers: {x: y}\n",
            "headers is for webhooks",
        ),
        ("    nats: {url: 'http://127.0.0.1:4222', subject: a.b}\n", "is not a nats:// or tls://"),
        ("    nats: {url: 'nats://127.0.0.1:4222', subject: 'a.>'}\n", "no wildcard"),
        ("    nats: {url: 'nats://127.0.0.1:4222', subject: 'a..b'}\n", "is not a NATS subject"),
        ("    nats: {url: 'nats://127.0.0.1:4222'}\n", "subject"),
        ("    redis: {url: 'redis://127.0.0.1', stream: s, maxlen: 0}\n", "maxlen"),
        (
            "    amqp: {url: 'http://127.0.0.1', exchange: e, routing_key: k}\n",
            "amqp:// or amqps://",
        ),
        ("    amqp: {url: 'amqp://127.0.0.1', routing_key: k}\n", "exchange"),
        ("    mqtt: {url: 'mqtt://127.0.0.1', topic: 'a/#'}\n", "no wildcard"),
        ("    mqtt: {url: 'mqtt://127.0.0.1', topic: a, qos: 0}\n", "qos"),
        ("    mqtt: {url: 'tcp://127.0.0.1', topic: a}\n", "mqtt:// or mqtts://"),
        ("    notify: []\n", "needs at least one Apprise URL"),
        ("    notify: not-a-url\n", "is not an Apprise URL"),
        ("    notify: 'json://127.0.0.1/'\n    body: '{{ data'\n", "is not a template"),
        (
            f"    url: http://127.0.0.1:9/\n    secrets: {TEST_SECRET}\n    title: x\n",
            "title and body are for notify targets",
        ),
        (
            "    redis: {url: 'redis://127.0.0.1', stream: s}\n    mode: binary\n",
            "a redis target has none",
        ),
    ],
)
def test_a_target_names_exactly_one_valid_kind(target: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(target))
    assert message in str(caught.value)


def test_broker_targets_parse_with_their_kind_and_address() -> None:
    config = parse_config(
        _config("    nats: {url: 'nats://u:pw@127.0.0.1:4222', subject: 'x.{type}', stream: S}\n")
        + "  r:\n    redis: {url: 'redis://127.0.0.1:6379/1', stream: 'ev:{source}', maxlen: 5}\n"
        + f"  w:\n    url: http://127.0.0.1:9/\n    secrets: {TEST_SECRET}\n"
    )
    t, r, w = config.targets["t"], config.targets["r"], config.targets["w"]
    assert (t.kind, r.kind, w.kind) == ("nats", "redis", "webhook")
    assert t.address == "nats://u:pw@127.0.0.1:4222" and t.nats and t.nats.stream == "S"
    assert r.redis is not None and r.redis.maxlen == 5
    assert w.address == "http://127.0.0.1:9/"
    assert "pw" not in repr(t)  # the URL's password is masked in reprs


def test_names_are_filled_from_the_event_and_sanitized_for_the_broker() -> None:
    event = _event()
    assert fill("ev.{type}.{subject}", event, nats_token) == "ev.issues.opened.repo_a_b_c_"
    assert fill("ev:{source}:{subject}", event, redis_key) == "ev:github:repo/a b*c>"
    assert fill("ev.{subject}", _event(subject=None), nats_token) == "ev._"
    # Dots a value carries stay token separators, never an empty token.
    assert nats_token("a..b.") == "a._.b._"
    assert redis_key("a\nb") == "a_b"
    assert fill("ev/{subject}", event, mqtt_level) == "ev/repo/a b*c>"
    assert mqtt_level("a+b#c\x00") == "a_b_c_"
    assert fill("fixed.{unknown}", event, nats_token) == "fixed.{unknown}"


def test_the_message_is_the_cloudevent_or_its_data_and_attributes() -> None:
    event = _event()
    structured = build_message(event, format="structured", transform=None)
    assert structured.content_type == "application/cloudevents+json"
    assert json.loads(structured.body)["id"] == "e1" and structured.attributes == {}
    binary = build_message(event, format="binary", transform=None)
    assert json.loads(binary.body) == {"n": 1}
    assert binary.content_type == "application/json"
    assert binary.attributes["id"] == "e1" and binary.attributes["subject"] == "repo/a b*c>"
    assert "data" not in binary.attributes and "datacontenttype" not in binary.attributes


def test_the_backoff_doubles_up_to_its_cap_and_resets_on_success() -> None:
    backoff = Backoff()
    assert backoff.wait_s() == 0
    backoff.failed("cannot connect")
    assert 0 < backoff.wait_s() <= Backoff.FIRST_S
    for _ in range(20):
        backoff.failed("cannot connect")
    assert backoff.wait_s() <= Backoff.MAX_S
    backoff.succeeded()
    assert backoff.wait_s() == 0


def test_a_kind_whose_library_is_missing_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "nats", None)  # an import of it now fails
    with pytest.raises(MissingExtra) as caught:
        open_kind("nats")
    assert "nats" in str(caught.value) and ".[nats]" in str(caught.value)


def test_bridge_check_says_which_extra_the_config_needs(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        """
        targets:
          events:
            nats: {url: "nats://bob:hunter2-pass@127.0.0.1:4222", subject: "ev.{type}"}
          log:
            redis: {url: "redis://127.0.0.1:6379/0", stream: events}
          people:
            notify: ["tgram://123456:hunter2-token/-100200", "json://127.0.0.1:9/x"]
            events: ["ops.*"]
        """
    )
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "target    events: nats nats://bob:***@127.0.0.1:4222 subject ev.{type}" in result.stdout
    assert "extra     nats for nats targets: installed" in result.stdout
    assert "extra     redis for redis targets: installed" in result.stdout
    assert "hunter2-pass" not in result.output
    assert "target    people: notify tgram://*** 2 Apprise service(s)" in result.stdout
    assert "hunter2-token" not in result.output and "123456" not in result.output
    result = CliRunner().invoke(cli, ["check", "-c", str(path), "--json"])
    summary = json.loads(result.stdout)
    assert {e["extra"] for e in summary["extras"]} == {"nats", "redis", "notify"}
    assert [t["kind"] for t in summary["targets"]] == ["nats", "redis", "notify"]
    assert "hunter2-token" not in result.stdout


def test_a_webhook_connection_idle_near_the_servers_keep_alive_is_not_reused() -> None:
    # uvicorn and Node.js close a keep-alive connection after 5 s idle: a delivery must not
    # take one that old from the pool, or it races the server's close and fails unsent.
    clients: list[Address | None] = []

    async def hook(request: Request) -> Response:
        clients.append(request.client)
        return Response(status_code=204)

    async def deliver(url: str) -> None:
        kind = Webhook()
        try:
            for pause_s in (0.0, 0.5, KEEPALIVE_S + 0.5):
                await asyncio.sleep(pause_s)
                async with kind._session.post(url, data=b"{}") as resp:
                    assert resp.status == 204
        finally:
            await kind.close()

    assert KEEPALIVE_S < 5
    with serve_app(Starlette(routes=[Route("/", hook, methods=["POST"])])) as url:
        asyncio.run(deliver(url + "/"))
    # The second delivery reused the first one's connection; the third, after more than
    # KEEPALIVE_S idle, came on a new one.
    assert clients[0] == clients[1] and clients[2] != clients[1]


class _Dropper:
    """An HTTP/1.1 server on 127.0.0.1 that answers 204 to the first `answered` requests of
    each connection, then, after `delay_s`, closes the connection under the next request
    without answering (as a server closing an idle keep-alive connection races a reuse)."""

    def __init__(self, answered: int, delay_s: float = 0.0) -> None:
        self.answered, self.delay_s = answered, delay_s
        self.requests: list[int] = []  # the connection's number, a request each

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = len(set(self.requests)) + 1
        try:
            for served in range(self.answered + 1):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests.append(connection)
                if served == self.answered:
                    await asyncio.sleep(self.delay_s)
                    return
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def _post_all(server: _Dropper, count: int) -> list[Answer]:
    from bridge.config.models import TargetConfig
    from bridge.deliver.request import Request as Outbound
    from bridge.deliver.worker import Target

    async def run() -> list[Answer]:
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        config = TargetConfig.model_validate(
            {"url": f"http://127.0.0.1:{port}/hook", "secret": TEST_SECRET}
        )
        kind = Webhook()
        try:
            request = Outbound(b"{}", {"content-type": "application/json"})
            return [await kind.post(Target("t", config), request) for _ in range(count)]
        finally:
            await kind.close()
            listening.close()

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_a_request_a_pooled_connection_drops_at_once_is_sent_again_on_a_new_one() -> None:
    server = _Dropper(answered=1)
    answers = _post_all(server, 2)
    assert [a.status_code for a in answers] == [204, 204]
    # The second went on the first one's connection, was dropped, and was sent on a second.
    assert server.requests == [1, 1, 2]


def test_a_target_that_drops_every_request_gets_it_twice_at_most_per_attempt() -> None:
    server = _Dropper(answered=0)
    (answer,) = _post_all(server, 1)
    assert answer.status_code is None
    assert answer.error == "the server closed the connection"
    assert server.requests == [1, 2]


def test_a_request_dropped_after_the_stale_window_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server worked on it for a while before failing: the retry schedule decides.
    monkeypatch.setattr(webhook_kind, "STALE_S", 0.1)
    server = _Dropper(answered=0, delay_s=0.3)
    (answer,) = _post_all(server, 1)
    assert answer.status_code is None and server.requests == [1]


def _scripted_posts(monkeypatch: pytest.MonkeyPatch, first: BaseException, pause_s: float) -> list:
    """Webhook._post replaced (a unit of `post`): the first call waits `pause_s` and raises
    `first`, later ones answer 204; returns the list of each call's timeout."""
    timeouts: list = []

    async def scripted(self: Webhook, target: object, request: object, timeout: object) -> Answer:
        timeouts.append(timeout)
        if len(timeouts) == 1:
            await asyncio.sleep(pause_s)
            raise first
        return Answer(204)

    monkeypatch.setattr(Webhook, "_post", scripted)
    return timeouts


def _post_once(timeout_s: float) -> Answer:
    from bridge.config.models import TargetConfig
    from bridge.deliver.request import Request as Outbound
    from bridge.deliver.worker import Target

    config = TargetConfig.model_validate(
        {"url": "http://127.0.0.1:9/hook", "secret": TEST_SECRET, "timeout": f"{timeout_s}s"}
    )

    async def run() -> Answer:
        kind = Webhook()
        try:
            return await kind.post(Target("t", config), Outbound(b"{}", {}))
        finally:
            await kind.close()

    return asyncio.run(run())


def test_a_connection_that_cannot_be_made_is_not_tried_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))
    timeouts = _scripted_posts(monkeypatch, refused, 0.0)
    answer = _post_once(5.0)
    assert answer.error == "cannot connect: Connection refused" and len(timeouts) == 1


def test_the_request_sent_again_gets_what_is_left_of_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiohttp

    timeouts = _scripted_posts(monkeypatch, aiohttp.ServerDisconnectedError(), 0.3)
    answer = _post_once(5.0)
    assert answer.status_code == 204 and len(timeouts) == 2
    assert timeouts[0].total == 5.0
    assert 0 < timeouts[1].total <= 5.0 - 0.3


def test_no_request_is_sent_again_once_the_timeout_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp reads a total of 0 or less as no timeout: a resend must never get one.
    import aiohttp

    monkeypatch.setattr(webhook_kind, "STALE_S", 10.0)
    timeouts = _scripted_posts(monkeypatch, aiohttp.ServerDisconnectedError(), 0.3)
    answer = _post_once(0.2)
    assert answer.error == "the server closed the connection" and len(timeouts) == 1
