"""The server's pure parts: the loopback judgement, the connection cap, the accept-error log."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging

import pytest

from bridge.daemon.lifespan import event_loop_factory, freeze_heap
from bridge.daemon.server import (
    bind,
    connection_cap,
    is_loopback_address,
    listens_on_loopback,
    quiet_accept_errors,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("fe80::1%eth0", False),
        ("127.0.0.1.nip.io", False),  # a name, whatever it looks like
        ("localhost", False),
    ],
)
def test_loopback_is_decided_from_the_address(address: str, expected: bool) -> None:
    assert is_loopback_address(address) is expected


def test_a_socket_bound_to_loopback_says_so() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert listens_on_loopback(sock)
    finally:
        sock.close()
    sock = bind("0.0.0.0", 0)
    try:
        assert not listens_on_loopback(sock)
    finally:
        sock.close()


def test_the_connection_cap_fits_three_quarters_of_the_descriptors() -> None:
    assert connection_cap(1024, None) == 1024
    assert connection_cap(1024, 2048) == 1024
    assert connection_cap(1024, 1024) == 768
    assert connection_cap(1024, 256) == 192
    assert connection_cap(10, 256) == 10
    assert connection_cap(1024, 1) == 1


def test_accept_errors_are_one_line_a_second_and_the_rest_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        now = [100.0]
        handle = quiet_accept_errors(loop, clock=lambda: now[0])
        emfile = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.WARNING, logger="bridge.server"):
            for step in range(300):  # three seconds of failing accepts, 100 a second
                now[0] = 100.0 + step / 100
                handle(loop, {"message": "socket.accept() out of system resource",
                              "exception": emfile})  # fmt: skip
        lines = [r for r in caplog.records if r.name == "bridge.server"]
        assert len(lines) == 3
        assert all(r.exc_info is None and "Too many open files" in r.getMessage() for r in lines)
        assert "99 more" in lines[1].getMessage()
        # Anything else goes to the handler that was there before.
        other = {"message": "boom", "exception": ValueError("x")}
        handle(loop, other)
        assert seen == [other]
    finally:
        loop.close()


def test_the_heap_is_frozen_once_the_daemon_is_ready() -> None:
    gc.unfreeze()
    try:
        freeze_heap(None)  # type: ignore[arg-type]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_event_loop_is_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    assert event_loop_factory() is uvloop.new_event_loop
