"""The pure parts of issue 19: v1a signing, transforms, filters, trace context, config keys."""

from __future__ import annotations

import base64
import json
import time

import jmespath
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from bridge import tracing
from bridge.config import parse_config
from bridge.deliver.request import TransformError, build_request
from bridge.deliver.signing import (
    decode_key,
    new_keypair,
    new_secret,
    public_key,
    sign,
    signature,
)
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.routing import is_truthy, passing, route
from tests.conftest import TEST_SECRET

SEED = "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
V1A = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="


def verify_v1a(public: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """An independent verifier: any `v1a` entry of the header checked with cryptography."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    content = f"{msg_id}.{timestamp}.".encode() + body
    for entry in header.split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), content)
            return True
        except InvalidSignature:
            continue
    return False


def make_event(**changes: object) -> Event:
    fields: dict = {
        "id": "evt_1", "source": "stripe", "type": "charge.updated", "origin": "push",
        "data": {"object": {"id": "ch_1", "amount": 2500, "status": "paid", "extra": "x"}},
        "recorded_ms": 1_700_000_000_000, "subject": "ch_1",
    }  # fmt: skip
    fields.update(changes)
    return Event(**fields)


def test_v1a_signature_matches_the_published_vector() -> None:
    assert signature(decode_key(SEED), MSG_ID, TIMESTAMP, BODY) == V1A
    assert verify_v1a(public_key(SEED), MSG_ID, TIMESTAMP, BODY, V1A)
    assert not verify_v1a(public_key(SEED), MSG_ID, TIMESTAMP, BODY + b" ", V1A)


def test_a_mixed_key_list_sends_both_signatures() -> None:
    keys = [decode_key(TEST_SECRET), decode_key(SEED)]
    header = sign(keys, MSG_ID, TIMESTAMP, BODY)
    v1, v1a = header.split(" ")
    assert v1 == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" and v1a == V1A


def test_new_keys_are_valid_and_differ() -> None:
    secret, public = new_keypair()
    assert secret.startswith("whsk_") and public.startswith("whpk_")
    assert public_key(secret) == public
    sig = sign([decode_key(secret)], "m", 1, b"{}")
    assert verify_v1a(public, "m", 1, b"{}", sig)
    assert new_secret() != new_secret() and new_secret().startswith("whsec_")
    Webhook(new_secret())  # the reference library takes it


def test_target_secrets_may_be_whsk_keys_and_bad_ones_are_refused() -> None:
    config = parse_config(
        f"targets:\n  t:\n    url: http://127.0.0.1:1/\n    secret: [{TEST_SECRET}, {SEED}]\n"
    )
    assert len(config.targets["t"].secret) == 2
    with pytest.raises(ConfigError, match=r"config.yaml:4: targets.t.secret.*whsk_"):
        parse_config("targets:\n  t:\n    url: http://127.0.0.1:1/\n    secret:\n      whsk_abc\n")


def test_filter_and_transform_must_be_valid_jmespath() -> None:
    base = f"targets:\n  t:\n    url: http://127.0.0.1:1/\n    secret: {TEST_SECRET}\n"
    with pytest.raises(ConfigError, match=r"^config.yaml:5: targets.t.filter: .*JMESPath"):
        parse_config(base + "    filter: 'data.object.amount >'\n")
    with pytest.raises(ConfigError, match=r"^config.yaml:5: targets.t.transform: .*JMESPath"):
        parse_config(base + "    transform: '{id: '\n")
    with pytest.raises(ConfigError, match=r"targets.t.ordering"):
        parse_config(base + "    ordering: type\n")


def test_filters_decide_on_the_whole_cloudevent_and_errors_count_as_false() -> None:
    config = parse_config(
        f"""
targets:
  big: {{url: "http://127.0.0.1:1/", secret: {TEST_SECRET}, filter: "data.object.amount > `1000`"}}
  paid: {{url: "http://127.0.0.1:1/", secret: {TEST_SECRET},
          filter: "contains(['paid', 'refunded'], data.object.status)"}}
  broken: {{url: "http://127.0.0.1:1/", secret: {TEST_SECRET}, filter: "abs(subject)"}}
  all: {{url: "http://127.0.0.1:1/", secret: {TEST_SECRET}}}
"""
    )
    before = REGISTRY.get_sample_value("bridge_filter_errors_total", {"target": "broken"}) or 0
    assert route(config.targets, make_event()) == ["all", "big", "paid"]
    small = make_event(data={"object": {"amount": 5, "status": "failed"}})
    assert route(config.targets, small) == ["all"]
    after = REGISTRY.get_sample_value("bridge_filter_errors_total", {"target": "broken"})
    assert after == before + 2
    assert passing(config.targets, ["all"], small) == ["all"]


def test_truthiness_is_jmespaths() -> None:
    assert [is_truthy(v) for v in (0, 1, "a", [0], {"a": 1}, True)] == [True] * 6
    assert [is_truthy(v) for v in (None, False, "", [], {})] == [False] * 5


def test_a_transform_replaces_data_in_both_modes_and_is_signed_as_sent() -> None:
    event = make_event()
    transform = jmespath.compile("{id: data.object.id, status: data.object.status}")
    now = int(time.time())
    for format in ("structured", "binary"):
        req = build_request(event, format=format, keys=[decode_key(TEST_SECRET)],
                            extra_headers={}, now_s=now, transform=transform)  # fmt: skip
        Webhook(TEST_SECRET).verify(req.body, req.headers)
        body = json.loads(req.body)
        data = body["data"] if format == "structured" else body
        assert data == {"id": "ch_1", "status": "paid"}
    assert event.data["object"]["extra"] == "x"  # the event itself is unchanged


def test_a_transform_that_fails_or_is_not_json_raises_transform_error() -> None:
    for expression in ("abs(data.object.status)", "to_number('1e400')"):
        with pytest.raises(TransformError):
            build_request(make_event(), format="structured", keys=[], extra_headers={}, now_s=1,
                          transform=jmespath.compile(expression))  # fmt: skip


def test_traceparent_parsing_follows_w3c() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ctx = tracing.parse(good, "congo=t61rcWkgMzE")
    assert ctx is not None and ctx.traceparent == good and ctx.state == "congo=t61rcWkgMzE"
    for bad in ("", "00-xyz", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-" + "0" * 32 + "-00f067aa0ba902b7-01", good + "-extra"):  # fmt: skip
        assert tracing.parse(bad) is None
    future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"
    assert tracing.parse(future) is not None
    kid = tracing.child(ctx)
    assert kid.trace_id == ctx.trace_id and kid.span_id != ctx.span_id and kid.state == ctx.state


def test_a_polled_event_has_a_trace_of_its_own_and_a_pushed_one_keeps_its_callers() -> None:
    polled = make_event(origin="poll")
    assert tracing.of_event(polled) == tracing.of_event(polled)
    assert tracing.of_event(polled).trace_id != tracing.of_event(make_event(id="evt_2")).trace_id
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    pushed = make_event(traceparent=parent)
    assert tracing.of_event(pushed).trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    # Without an exporter, a span is a child id and nothing else.
    span = tracing.Tracer().begin("deliver", tracing.of_event(pushed), "client")
    assert span.context.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    span.end("no effect")
