"""Standard Webhooks signing and the request of a delivery, checked by the reference library."""

from __future__ import annotations

import base64
import json
import os
import time
from urllib.parse import unquote

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.deliver.request import STRUCTURED_TYPE, USER_AGENT, build_request, ce_header_value
from bridge.deliver.signing import decode_secret, sign, signature, signed_headers
from bridge.events import Event, event_id, now_ms
from tests.conftest import TEST_SECRET

VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def make_event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "id": event_id("orders", "ord_1"),
        "source": "orders",
        "type": "orders.updated",
        "origin": "poll",
        "change": "updated",
        "subject": "ord_1",
        "time_ms": 1_700_000_000_123,
        "data": {"object": {"id": "ord_1", "status": "paid", "note": "café"}},
        "recorded_ms": now_ms(),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def test_public_vector() -> None:
    key = decode_secret(TEST_SECRET)
    assert signature(key, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    assert sign([key], VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_public_vector_tampered_signature_is_rejected_by_the_reference() -> None:
    # The reference library checks the timestamp too: sign the vector's body now.
    ts = int(time.time())
    headers = signed_headers([decode_secret(TEST_SECRET)], VECTOR_ID, ts, VECTOR_BODY)
    assert Webhook(TEST_SECRET).verify(VECTOR_BODY, headers) == {"test": 2432232314}
    # Change a character in the middle: the last one before "=" also carries padding bits,
    # and some changes there decode to the same bytes.
    sig = headers["webhook-signature"]
    middle = len(sig) // 2
    tampered = sig[:middle] + ("A" if sig[middle] != "A" else "B") + sig[middle + 1 :]
    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(VECTOR_BODY, {**headers, "webhook-signature": tampered})


def test_every_secret_signs_during_rotation() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"hello": "world"}'
    ts = int(time.time())
    headers = signed_headers([decode_secret(old), decode_secret(new)], "evt_x", ts, body)
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"hello": "world"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_a_changed_body_or_id_fails_verification() -> None:
    ts = int(time.time())
    headers = signed_headers([decode_secret(TEST_SECRET)], "evt_a", ts, b"{}")
    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(b'{"a":1}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(b"{}", {**headers, "webhook-id": "evt_b"})


def test_decode_secret_rejects_what_is_not_whsec() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert len(decode_secret(TEST_SECRET)) == 24


def test_structured_request_carries_the_whole_cloudevent_signed() -> None:
    event = make_event()
    ts = int(time.time())
    req = build_request(
        event,
        format="structured",
        keys=[decode_secret(TEST_SECRET)],
        extra_headers={"authorization": "Bearer abc"},
        now_s=ts,
    )
    assert req.headers["content-type"] == STRUCTURED_TYPE
    assert req.headers["user-agent"] == USER_AGENT
    assert req.headers["authorization"] == "Bearer abc"
    assert req.headers["webhook-id"] == event.id
    assert req.headers["webhook-timestamp"] == str(ts)
    assert Webhook(TEST_SECRET).verify(req.body, req.headers) == event.to_cloudevent()


def test_binary_request_puts_attributes_in_ce_headers_and_data_in_the_body() -> None:
    event = make_event(subject="ord 1/é")
    req = build_request(
        event,
        format="binary",
        keys=[decode_secret(TEST_SECRET)],
        extra_headers={},
        now_s=int(time.time()),
    )
    assert json.loads(req.body) == event.data
    assert Webhook(TEST_SECRET).verify(req.body, req.headers) == event.data
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["ce-specversion"] == "1.0"
    assert (
        h["ce-id"] == event.id and h["ce-source"] == "orders" and h["ce-type"] == "orders.updated"
    )
    assert h["ce-origin"] == "poll" and h["ce-change"] == "updated"
    assert h["ce-time"] == "2023-11-14T22:13:20.123Z"
    assert "ce-data" not in h and "ce-datacontenttype" not in h
    # Header values are ASCII: space and non-ASCII are percent-encoded, and decode back.
    assert h["ce-subject"] == "ord%201/%C3%A9"
    assert unquote(h["ce-subject"]) == "ord 1/é"
    assert all(v.isascii() for v in h.values())


def test_ce_header_encoding_keeps_printable_ascii_but_quote_and_percent() -> None:
    assert ce_header_value("a-b_c.d:e/f") == "a-b_c.d:e/f"
    assert ce_header_value('say "hi" 100%') == "say%20%22hi%22%20100%25"


def test_extra_headers_cannot_replace_the_signature() -> None:
    req = build_request(
        make_event(),
        format="structured",
        keys=[decode_secret(TEST_SECRET)],
        extra_headers={"webhook-signature": "v1,forged", "webhook-id": "x"},
        now_s=int(time.time()),
    )
    assert req.headers["webhook-signature"] != "v1,forged"
    assert req.headers["webhook-id"] != "x"
    Webhook(TEST_SECRET).verify(req.body, req.headers)
