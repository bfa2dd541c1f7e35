"""Bad inbound requests against the real daemon: never a 5xx, never a traceback, and never a
stored event that the reference library (`standardwebhooks`) would not accept as signed.

tests/receive/test_receive.py throws random headers and bodies at the receiver in-process. Here the
requests start validly signed, by the reference library, and hypothesis mutates them the
way a broken or hostile sender would; raw malformed HTTP goes to the socket as well.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.helpers import DaemonProcess
from tests.reliability.parts import INBOUND_SECRET, TARGET_SECRET, query, signed_headers

pytestmark = pytest.mark.reliability

# The events of the requests sent, not the bridge's own (of a target failing).
SENT = "SELECT upstream_id FROM events WHERE source != 'bridge'"

CONFIG = f"""
database: bridge.db
sources:
  orders:
    webhook:
      verify: standard-webhooks
      secrets: [{INBOUND_SECRET}]
      max_body: 4KiB
targets:
  sink:
    url: http://127.0.0.1:9/sink
    secret: {TARGET_SECRET}
"""

# Seconds away from now; the tolerance is 300 s, and nothing lands near its edge.
OFFSETS = [-100_000, -3600, -400, -200, -30, 0, 30, 200, 400, 3600, 10**9]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """A request signed by the reference library, then mutated (or not)."""
    n = draw(st.integers(0, 10**6))
    body = json.dumps({"type": "order.created", "n": n, "x": draw(JSON_VALUES)}).encode()
    at = time.time() + draw(st.sampled_from(OFFSETS))
    headers = signed_headers(INBOUND_SECRET, f"msg_{n}", body, at_s=at)
    method = "POST"
    for _ in range(draw(st.integers(0, 3))):
        what = draw(
            st.sampled_from(
                ["flip", "truncate", "append", "drop", "id", "sig-cut", "sig-extra", "sig-v2",
                 "sig-garbage", "ts-text", "method", "body-random", "content-type", "none"]
            )
        )  # fmt: skip
        if what == "flip" and body:
            i = draw(st.integers(0, len(body) - 1))
            body = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        elif what == "truncate":
            body = body[: draw(st.integers(0, len(body)))]
        elif what == "append":
            body += draw(st.sampled_from([b" ", b"\n", b"x", b"\x00", b"}"]))
        elif what == "drop":
            headers.pop(draw(st.sampled_from(sorted(headers))), None)
        elif what == "id":
            headers["webhook-id"] = draw(st.sampled_from(["", "msg_other", "msg_" + "x" * 300]))
        elif what == "sig-cut" and "webhook-signature" in headers:
            headers["webhook-signature"] = headers["webhook-signature"][:-2]
        elif what == "sig-extra" and "webhook-signature" in headers:
            # A second, bogus signature beside the good one (rotation) is still valid.
            headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
        elif what == "sig-v2" and "webhook-signature" in headers:
            headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
        elif what == "sig-garbage":
            headers["webhook-signature"] = draw(
                st.sampled_from(["", "v1,", "v1,!!!", ",", "v1," + "A" * 5000, "v1, x"])
            )
        elif what == "ts-text":
            headers["webhook-timestamp"] = draw(
                st.sampled_from(["", "soon", "-1", "1e9", "0x10", "9" * 30, "+1700000000"])
            )
        elif what == "method":
            method = draw(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "HEAD"]))
        elif what == "body-random":
            body = draw(st.binary(max_size=300))
        elif what == "content-type":
            headers["content-type"] = draw(st.sampled_from(["text/plain", "", 'x/y; q="', "a"]))
    return method, headers, body


def reference_accepts(headers: dict[str, str], body: bytes) -> bool:
    """Whether the reference library finds the request signed and in time."""
    try:
        Webhook(INBOUND_SECRET).verify(body, dict(headers))
    except (WebhookVerificationError, ValueError, TypeError, KeyError):
        return False
    return True


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def test_mutated_signed_requests(tmp_path: Path, daemon: Callable[..., DaemonProcess]) -> None:
    db = tmp_path / "bridge.db"
    proc = daemon(CONFIG)
    client = httpx.Client(base_url=proc.url, timeout=10)
    proven: set[str] = set()  # webhook-ids of requests the reference library accepted

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=requests())
    def check(request: tuple[str, dict[str, str], bytes]) -> None:
        method, headers, body = request
        signed = method == "POST" and reference_accepts(headers, body)
        if signed:
            proven.add(headers["webhook-id"])
        try:
            r = client.request(method, "/hooks/orders", content=body, headers=headers)
        except httpx.LocalProtocolError:
            return  # the client refuses to send it (a header ending in a space): nothing sent
        assert r.status_code < 500, (r.status_code, r.text)
        if 200 <= r.status_code < 300:
            assert signed, "accepted a request the reference library refuses"
        elif signed and is_json(body) and headers.get("webhook-id"):
            raise AssertionError(f"refused a signed request: {r.status_code} {r.text}")

    try:
        check()
    finally:
        client.close()
    stored = {row[0] for row in query(db, SENT)}
    assert stored <= proven
    assert stored, "some requests were valid"
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


RAW = [
    b"GARBAGE\r\n\r\n",
    b"POST /hooks/orders HTTP/1.1\r\nHost: x\r\nno-colon-here\r\n\r\n",
    b"POST /hooks/orders HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b'POST /hooks/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a":',
    b"POST /hooks/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /hooks/orders HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"POST /hooks/orders HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /hooks/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
]


def test_malformed_http_never_gets_a_5xx(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    proc = daemon(CONFIG)
    for raw in RAW:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, (raw[:60], answer[:200])
    # Still serving, and nothing was stored.
    body = b'{"type": "order.created"}'
    r = httpx.post(
        proc.url + "/hooks/orders", content=body, headers=signed_headers(INBOUND_SECRET, "m", body)
    )
    assert r.status_code == 202
    assert query(tmp_path / "bridge.db", SENT) == [("m",)]
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
