"""Connections: idle, slow and too many of them on the real daemon. Idle connections and slow
headers, bodies and keep-alives are closed after their timeout; more connections than the
cap close the oldest waiting one (or, when all are busy, get a 503); running out of file
descriptors is logged once a second, without a traceback; `/healthz` answers throughout."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import DaemonProcess, wait_until

pytestmark = pytest.mark.reliability

FAST_TIMEOUTS = """
database: bridge.db
server:
  listen: 127.0.0.1:{port}
  header_timeout: 1s
  body_timeout: 1s
  idle_timeout: 1s
  %s
sources:
  orders:
    webhook:
      verify: none
      allow_unsigned: true
"""
# The descriptor limit the daemon runs under, and more idle connections than it allows.
NOFILE = 256
CAP = NOFILE * 3 // 4
IDLE_CONNECTIONS = 300


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    """`n` TCP connections to 127.0.0.1:port that send nothing; closed at the end."""
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True once the daemon closed `sock` (EOF or reset); reads and drops what it sent."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    return True


def healthz(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_idle_connections_past_the_descriptor_limit_leave_healthz_answering(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(FAST_TIMEOUTS % "", nofile=NOFILE)
    pid = proc.proc.pid
    baseline = fds(pid)
    started = time.monotonic()
    with connections(proc.port, IDLE_CONNECTIONS) as idle:
        # An accept burst may touch the limit for a moment; then the cap holds (3/4 of it).
        wait_until(lambda: fds(pid) <= CAP + baseline + 8, timeout_s=10)
        # The daemon keeps serving while more connections wait than it has descriptors.
        wait_until(lambda: healthz(proc.url), timeout_s=10)
        # Every idle connection is closed: over the cap, or when its headers are late.
        wait_until(lambda: all(is_closed_by_peer(s) for s in idle), timeout_s=30, interval_s=0.1)
        elapsed_s = time.monotonic() - started
    wait_until(lambda: fds(pid) <= baseline + 4, timeout_s=10)
    assert healthz(proc.url)
    assert proc.terminate() == 0
    log = proc.log()
    assert "Traceback" not in log
    assert len(log) < 64 * 1024, len(log)
    refused = log.count("cannot accept connections")
    assert refused <= elapsed_s / 1.0 + 2, (refused, elapsed_s)
    assert f"at most {CAP} connections" in log


def test_slow_headers_bodies_and_idle_keep_alives_are_closed_after_their_timeout(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(FAST_TIMEOUTS % "")
    with connections(proc.port, 4) as (silent, slow_headers, slow_body, kept_alive):
        started = time.monotonic()
        slow_headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_body.sendall(
            b"POST /hooks/orders HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json"
            b'\r\ncontent-length: 100\r\n\r\n{"type": '
        )
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks = [silent, slow_headers, slow_body, kept_alive]
        for _ in range(10):  # a byte every 0.3 s keeps a slow header going, but not for ever
            if is_closed_by_peer(slow_headers):
                break
            with contextlib.suppress(OSError):
                slow_headers.sendall(b"X")
            time.sleep(0.3)
        wait_until(lambda: all(is_closed_by_peer(s) for s in socks), timeout_s=10)
        # Each after about its 1 s timeout, none right away.
        assert time.monotonic() - started >= 0.9
    assert healthz(proc.url)
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
    # Nothing half-sent was stored.
    assert "cannot store" not in proc.log()


def test_a_body_deadline_shorter_than_the_header_one_closes_a_stalled_body_at_its_own(
    daemon: Callable[..., DaemonProcess],
) -> None:
    # The guard keeps one timer a connection, set for the header deadline (30 s here) when the
    # connection opens; the body's 1 s deadline must move it, or the stalled body would hold
    # the connection for the rest of the 30 s.
    proc = daemon((FAST_TIMEOUTS % "").replace("header_timeout: 1s", "header_timeout: 30s"))
    with connections(proc.port, 1) as (stalled,):
        stalled.sendall(
            b"POST /hooks/orders HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json"
            b'\r\ncontent-length: 100\r\n\r\n{"type": '
        )
        wait_until(lambda: is_closed_by_peer(stalled), timeout_s=10)
    assert healthz(proc.url)
    assert proc.terminate() == 0
    assert "cannot store" not in proc.log()


def test_the_daemon_runs_on_uvloop(daemon: Callable[..., DaemonProcess]) -> None:
    proc = daemon(FAST_TIMEOUTS % "")
    maps = Path(f"/proc/{proc.proc.pid}/maps").read_text()
    assert "uvloop" in maps
    assert proc.terminate() == 0


def test_over_the_cap_with_every_connection_busy_a_new_one_gets_503(
    daemon: Callable[..., DaemonProcess],
) -> None:
    config = FAST_TIMEOUTS % "max_connections: 4"
    proc = daemon(config.replace("body_timeout: 1s", "body_timeout: 5s"))
    head = (
        b"POST /hooks/orders HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    with connections(proc.port, 4) as busy:
        # Each connection is set up (it has had an answer) before its head is sent: the data
        # on open connections is then read before the extra connection is let in.
        for sock in busy:
            sock.setblocking(True)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            sock.setblocking(False)
        for sock in busy:
            sock.sendall(head)  # each now waits for the rest of its body: busy, not idle
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as extra:
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1" in answer.lower()
        assert not any(is_closed_by_peer(s) for s in busy), "a busy connection was closed"
    # Once they are gone, the server serves again.
    wait_until(lambda: healthz(proc.url), timeout_s=10)
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
