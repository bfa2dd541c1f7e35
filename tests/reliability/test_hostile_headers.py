"""Headers built to cost the daemon: a signature header with a long list of entries, and
headers without end. On the real daemon: a list past the cap is a 400 before any signature
is checked, and nothing is stored; headers past `server.max_header_bytes` are a 431 and the
connection is closed, so 8 connections sending 48 MiB of headers each leave the daemon's
memory where it was."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bridge.deliver.signing import new_keypair
from bridge.receive.signers import sign_standard_webhooks_v1a
from tests.helpers import DaemonProcess
from tests.reliability.parts import query

pytestmark = pytest.mark.reliability

# The signatures one header may list (docs/guarantees.md).
MAX_SIGNATURES = 16
STRIPE_SECRET = "whsec_stripe-endpoint-secret-of-the-suite"
SEED_SECRET, PUBLIC_KEY = new_keypair()
SIGNED = f"""
database: bridge.db
sources:
  signed:
    webhook:
      verify: standard-webhooks
      secrets: {PUBLIC_KEY}
  payments:
    webhook:
      verify: stripe
      secrets: {STRIPE_SECRET}
"""
BODY = b'{"type": "order.created", "id": "o-1"}'


# The events of the requests sent, not the bridge's own (of a target failing).
SENT_COUNT = "SELECT count(*) FROM events WHERE source != 'bridge'"


def junk_v1a(n: int) -> list[str]:
    """`n` entries shaped like Ed25519 signatures (a valid curve point included, so each
    one costs a full check), none of them valid."""
    return [
        "v1a," + base64.b64encode(hashlib.sha512(b"%d" % i).digest()).decode() for i in range(n)
    ]


def v1a_headers(entries: list[str], msg_id: str = "msg-1") -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": " ".join(entries),
    }


def stored(proc: DaemonProcess) -> int:
    return int(query(proc.config_path.parent / "bridge.db", SENT_COUNT)[0][0])


def test_a_signature_list_past_the_cap_is_400_before_any_check_and_the_first_valid_one_wins(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(SIGNED)
    url = f"{proc.url}/hooks/signed"
    too_many = httpx.post(url, content=BODY, headers=v1a_headers(junk_v1a(MAX_SIGNATURES + 1)))
    assert too_many.status_code == 400
    assert f"more than {MAX_SIGNATURES} entries" in too_many.json()["error"]
    # As many as 64 KiB of headers hold: refused as fast as 17.
    huge = httpx.post(url, content=BODY, headers=v1a_headers(junk_v1a(600)), timeout=30)
    assert huge.status_code == 400
    assert stored(proc) == 0

    now = int(time.time())
    seed = base64.b64decode(SEED_SECRET.removeprefix("whsk_"))
    valid = sign_standard_webhooks_v1a(seed, "msg-1", now, BODY)
    headers = v1a_headers([*junk_v1a(MAX_SIGNATURES - 1), valid])
    headers["webhook-timestamp"] = str(now)
    assert httpx.post(url, content=BODY, headers=headers).status_code == 202
    assert stored(proc) == 1
    assert httpx.get(f"{proc.url}/healthz").status_code == 200
    assert "Traceback" not in proc.log()


def test_stripe_signature_lists_past_the_cap_are_400_and_store_nothing(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(SIGNED)
    now = int(time.time())
    good = hmac.new(STRIPE_SECRET.encode(), f"{now}.".encode() + BODY, "sha256").hexdigest()
    junk = [f"v1={hashlib.sha256(b'%d' % i).hexdigest()}" for i in range(MAX_SIGNATURES + 1)]
    url = f"{proc.url}/hooks/payments"
    header = ",".join([f"t={now}", *junk, f"v1={good}"])
    refused = httpx.post(url, content=BODY, headers={"stripe-signature": header})
    assert refused.status_code == 400
    assert stored(proc) == 0
    header = ",".join([f"t={now}", *junk[: MAX_SIGNATURES - 1], f"v1={good}"])
    assert httpx.post(url, content=BODY, headers={"stripe-signature": header}).status_code == 202


# -- header size ---------------------------------------------------------------------------------


def raw_request(port: int, head: bytes, filler_bytes: int = 0) -> bytes:
    """Send `head` (a request line and headers, unterminated), then `filler_bytes` more of
    one header in 64 KiB pieces, then the end of the headers; the answer's first bytes (or
    b"" when the daemon closed without one). Stops sending once the daemon closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head + b"x-filler: ")
            for _ in range(filler_bytes // 65536):
                sock.sendall(b"a" * 65536)
            sock.sendall(b"a" * (filler_bytes % 65536) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


GET = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"


def test_headers_past_max_header_bytes_are_431_and_those_within_are_served(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(
        "database: bridge.db\nsources:\n  s:\n    webhook: {verify: none, allow_unsigned: true}\n"
    )
    assert raw_request(proc.port, GET, 60 * 1024).startswith(b"HTTP/1.1 200")
    refused = raw_request(proc.port, GET, 65 * 1024)
    assert refused.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert b"larger than 65536 bytes" in refused
    # A body is not a header: a large POST still reaches the app.
    body = b"x" * (512 * 1024)
    answer = httpx.post(f"{proc.url}/hooks/s", content=body)
    assert answer.status_code == 400  # not JSON: the app saw the whole body

    small = daemon(
        "database: b2.db\nserver:\n  listen: 127.0.0.1:{port}\n  max_header_bytes: 4KiB\n"
        "sources:\n  s:\n    webhook: {verify: none, allow_unsigned: true}\n"
    )
    assert raw_request(small.port, GET, 3 * 1024).startswith(b"HTTP/1.1 200")
    assert raw_request(small.port, GET, 5 * 1024).startswith(b"HTTP/1.1 431")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_eight_connections_of_48_mib_headers_leave_the_memory_where_it_was(
    daemon: Callable[..., DaemonProcess],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    proc = daemon(
        "database: bridge.db\nsources:\n  s:\n    webhook: {verify: none, allow_unsigned: true}\n"
    )
    pid = proc.proc.pid
    assert raw_request(proc.port, GET).startswith(b"HTTP/1.1 200")
    before = rss_bytes(pid)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: raw_request(proc.port, GET, 48 << 20), range(8)))
    after = rss_bytes(pid)
    assert all(a.startswith(b"HTTP/1.1 431") or a == b"" for a in answers)
    assert any(a.startswith(b"HTTP/1.1 431") for a in answers)
    # The 8 requests could hold 384 MiB; the cap holds each to 64 KiB (and one read buffer).
    assert after - before < 32 << 20, (before, after)
    assert httpx.get(f"{proc.url}/healthz").status_code == 200


def test_the_cap_counts_each_request_of_a_kept_alive_connection_on_its_own(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(
        "database: bridge.db\nsources:\n  s:\n    webhook: {verify: none, allow_unsigned: true}\n"
    )
    filler = b"x-filler: " + b"a" * (40 * 1024) + b"\r\n"
    request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n" + filler + b"\r\n"
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        for _ in range(3):  # 120 KiB of headers in all, 40 KiB a request
            sock.sendall(request)
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:40]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n" + filler * 2 + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 431")


def read_response(sock: socket.socket) -> bytes:
    """One whole response of a kept-alive connection: its head, then `content-length` bytes
    (a response may come in several reads, its body after its head)."""
    data = b""
    for _ in range(1000):  # bounded: a response of a few hundred bytes
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length is None or len(body) >= int(length.group(1)):
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("no whole response")
